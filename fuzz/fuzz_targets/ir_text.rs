//! Arbitrary text as IR: an error, or a graph whose text round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(graph) = kiln_ir::parse_graph(text) {
        let printed = kiln_ir::print_graph(&graph);
        let reparsed = kiln_ir::parse_graph(&printed).expect("printed IR parses");
        assert!(reparsed == graph, "round trip changed the graph");
    }
});
