//! Snapshots of the imported IR of the tiny models (summary text form). CI
//! runs with `INSTA_UPDATE=no`, so an importer change that alters a graph
//! fails until its snapshot is reviewed.

use kiln_compiler::load_model;
use kiln_ir::print_graph_summary;

use crate::common::models;

#[test]
fn imported_ir_of_every_testdata_model() {
    for model in models() {
        let graph = load_model(&model.model).unwrap_or_else(|e| panic!("{}: {e}", model.name));
        insta::assert_snapshot!(format!("imported_{}", model.name), print_graph_summary(&graph));
    }
}
