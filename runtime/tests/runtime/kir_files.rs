//! The kernel IR filetests of `testdata/kernels/*.kir` (format in that
//! directory's README): each kernel runs on the checked interpreter and on
//! the machine, against the outputs or the error its directives expect.

use std::path::{Path, PathBuf};

use kiln_runtime::kernel::codec::{decode_kernels, encode_kernels};
use kiln_runtime::kernel::filetest::{directives, Directives};
use kiln_runtime::kernel::{parse_kernel, verify_kernel, Kernel, Param};
use kiln_runtime::machine::{run_on_arguments, MachineOptions};
use kiln_runtime::sim::{run_kernel, SimArgument, SimBuffer, SimOptions};
use kiln_runtime::SymbolBindings;

fn kir_files() -> Vec<PathBuf> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/kernels");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&directory)
        .expect("testdata/kernels")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|x| x == "kir"))
        .collect();
    files.sort();
    files
}

fn arguments(kernel: &Kernel, directives: &Directives, file: &str) -> Vec<SimArgument> {
    kernel
        .params
        .iter()
        .map(|param| match param {
            Param::Buffer { name, dtype, .. } => {
                let data = directives.buffers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
                let data = data.unwrap_or_else(|| panic!("{file}: no `// buffer {name}:` line"));
                SimArgument::Buffer(SimBuffer { dtype: *dtype, data })
            }
            Param::Scalar { name, .. } => {
                let value = directives.bindings.get(name).unwrap_or_else(|| panic!("{file}: no binding for `{name}`"));
                SimArgument::Scalar(*value as f64)
            }
        })
        .collect()
}

fn buffer_named<'a>(kernel: &Kernel, arguments: &'a [SimArgument], name: &str) -> &'a [f64] {
    let index = kernel.params.iter().position(|p| p.name() == name).unwrap_or_else(|| panic!("no parameter `{name}`"));
    match &arguments[index] {
        SimArgument::Buffer(buffer) => &buffer.data,
        SimArgument::Scalar(_) => panic!("`{name}` is a scalar"),
    }
}

#[test]
fn every_kir_filetest_holds_on_both_simulators() {
    let files = kir_files();
    assert!(files.len() >= 5, "{} .kir files", files.len());
    for path in files {
        let file = path.file_name().expect("a name").to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).expect("reads");
        let kernel = parse_kernel(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let directives = directives(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let carried = decode_kernels(&encode_kernels(&[&kernel])).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(carried, vec![kernel.clone()], "{file}: the artifact encoding round-trips the kernel");
        match (&directives.verify_error, verify_kernel(&kernel)) {
            (None, Ok(())) => {}
            (Some(expected), Err(error)) => {
                assert!(error.to_string().contains(expected.as_str()), "{file}: verifier said `{error}`")
            }
            (None, Err(error)) => panic!("{file}: {error}"),
            (Some(expected), Ok(())) => panic!("{file}: the verifier accepted it; expected `{expected}`"),
        }
        let warp_size = directives.warp_size.unwrap_or(32);
        let mut checked = arguments(&kernel, &directives, &file);
        let interpreted =
            run_kernel(&kernel, &mut checked, &directives.bindings, SimOptions { warp_size, ..SimOptions::default() });
        let mut fast = arguments(&kernel, &directives, &file);
        let machine = run_on_arguments(
            &kernel,
            &mut fast,
            &directives.bindings,
            MachineOptions { warp_size, ..MachineOptions::default() },
        );
        if let Some(expected) = &directives.error {
            let error =
                interpreted.err().unwrap_or_else(|| panic!("{file}: the interpreter ran; expected `{expected}`"));
            assert!(error.to_string().contains(expected.as_str()), "{file}: the interpreter said `{error}`");
        } else if let Some(expected) = &directives.interpreter_error {
            let error =
                interpreted.err().unwrap_or_else(|| panic!("{file}: the interpreter ran; expected `{expected}`"));
            assert!(error.to_string().contains(expected.as_str()), "{file}: the interpreter said `{error}`");
        } else {
            interpreted.unwrap_or_else(|e| panic!("{file}: interpreter: {e}"));
        }
        if let Some(expected) = &directives.machine_error {
            let error = machine.err().unwrap_or_else(|| panic!("{file}: the machine ran; expected `{expected}`"));
            assert!(error.to_string().contains(expected.as_str()), "{file}: the machine said `{error}`");
        } else if directives.error.is_none() {
            machine.unwrap_or_else(|e| panic!("{file}: machine: {e}"));
        }
        // The machine's checked mode finds what the checked interpreter finds
        // (or the machine's own error), by happens-before.
        let mut checked_fast = arguments(&kernel, &directives, &file);
        let options = MachineOptions { warp_size, check: true, ..MachineOptions::default() };
        let machine_checked = run_on_arguments(&kernel, &mut checked_fast, &directives.bindings, options);
        match directives.machine_error.as_ref().or(directives.error.as_ref()) {
            Some(expected) => {
                let error = machine_checked
                    .err()
                    .unwrap_or_else(|| panic!("{file}: the checked machine ran; expected `{expected}`"));
                assert!(error.to_string().contains(expected.as_str()), "{file}: the checked machine said `{error}`");
            }
            None => {
                machine_checked.unwrap_or_else(|e| panic!("{file}: checked machine: {e}"));
            }
        }
        if directives.error.is_some() {
            continue;
        }
        for (name, expected) in &directives.expected {
            if directives.interpreter_error.is_none() {
                let found = buffer_named(&kernel, &checked, name);
                assert_eq!(found, expected.as_slice(), "{file}: `{name}` (interpreter)");
            }
            assert_eq!(buffer_named(&kernel, &fast, name), expected.as_slice(), "{file}: `{name}` (machine)");
            let found = buffer_named(&kernel, &checked_fast, name);
            assert_eq!(found, expected.as_slice(), "{file}: `{name}` (checked machine)");
        }
    }
}
