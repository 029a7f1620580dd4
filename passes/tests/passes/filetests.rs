//! Filetests in the style of Cranelift's: `testdata/passes/<pass>/*.ir` holds
//! an input graph and, after a `// expect:` line, the graph the pass must
//! make of it (the summary text form, each line behind `// `), or `// expect:
//! unchanged` when the pass must not fire. The input is parsed, rewritten by
//! `<pass>` as its phase schedules it (then dead code is removed), verified,
//! compared with the expectation, and evaluated before and after on random
//! inputs — including a fully padded sequence for graphs with an
//! `attention_mask` — which must agree. `KILN_BLESS=1` rewrites the
//! expectations from what the passes produce (review the diff).

use std::collections::HashMap;
use std::path::Path;

use kiln_ir::{evaluate, parse_graph, print_graph_summary, verify, DType, Graph, SymbolBindings, Tensor};
use kiln_passes::registry::{by_name, names, schedule_of, Schedule};
use kiln_passes::{PipelineOptions, Precision};

/// The line before a filetest's expectation.
const EXPECT: &str = "// expect:";

/// What a filetest expects.
#[derive(Debug, PartialEq)]
enum Expectation {
    Unchanged,
    Graph(String),
}

/// Splits a filetest into its input text and its expectation.
fn split_filetest(file: &str, text: &str) -> (String, Expectation) {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| l.starts_with(EXPECT)).unwrap_or_else(|| panic!("{file}: no `{EXPECT}` line"));
    let input = lines[..at].join("\n") + "\n";
    let rest = lines[at].trim_start_matches(EXPECT).trim();
    if rest == "unchanged" {
        return (input, Expectation::Unchanged);
    }
    assert!(rest.is_empty(), "{file}: `{}` (expected `{EXPECT}` or `{EXPECT} unchanged`)", lines[at]);
    let expected: Vec<&str> = lines[at + 1..]
        .iter()
        .map(|l| l.strip_prefix("// ").or_else(|| l.strip_prefix("//")).unwrap_or_else(|| panic!("{file}: `{l}`")))
        .collect();
    (input, Expectation::Graph(expected.join("\n") + "\n"))
}

/// The filetest text with `graph` as its expectation.
fn blessed(input: &str, graph: Option<&str>) -> String {
    match graph {
        None => format!("{input}{EXPECT} unchanged\n"),
        Some(graph) => {
            let lines: Vec<String> = graph.lines().map(|l| format!("// {l}").trim_end().to_string()).collect();
            format!("{input}{EXPECT}\n{}\n", lines.join("\n"))
        }
    }
}

/// Deterministic pseudo-random numbers.
struct Random(u64);

impl Random {
    fn unit(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn random_inputs(graph: &Graph, bindings: &SymbolBindings, seed: u64) -> HashMap<String, Tensor> {
    let mut random = Random(seed);
    graph
        .input_values()
        .into_iter()
        .map(|input| {
            let ty = graph.value_type(input);
            let shape: Vec<usize> = ty.shape.iter().map(|d| d.evaluate(bindings).unwrap() as usize).collect();
            let count = shape.iter().product::<usize>();
            let name = graph.value_name(input).to_string();
            let tensor = match ty.dtype {
                dtype if dtype.is_float() => {
                    Tensor::from_f32(dtype, shape, (0..count).map(|_| random.unit()).collect())
                }
                DType::Bool => Tensor::from_bool(shape, (0..count).map(|_| random.unit() > 0.0).collect()),
                dtype => {
                    // Masks: row 0 full, the last row fully padded, the others right-padded.
                    let (rows, columns) = (shape[0], count / shape[0].max(1));
                    let values = (0..count)
                        .map(|i| {
                            let (row, column) = (i / columns, i % columns);
                            let length = if row == 0 {
                                columns
                            } else if row + 1 == rows {
                                0
                            } else {
                                1 + row % columns
                            };
                            (column < length) as i64
                        })
                        .collect();
                    Tensor::from_i64(dtype, shape, values)
                }
            };
            (name, tensor)
        })
        .collect()
}

fn assert_agree(file: &str, before: &[(String, Tensor)], after: &[(String, Tensor)], tolerance: f64) {
    for ((name, expected), (_, got)) in before.iter().zip(after) {
        assert_eq!(got.shape, expected.shape, "{file}: `{name}` shape");
        let (a, b) = (got.to_f64_vec(), expected.to_f64_vec());
        let scale = b.iter().filter(|v| v.is_finite()).fold(1e-30f64, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(&b) {
            let same = (x.is_nan() && y.is_nan()) || (x - y).abs() <= tolerance * scale;
            assert!(same, "{file}: `{name}` differs after the pass: {x} vs {y}");
        }
    }
}

#[test]
fn every_pass_has_filetests_including_one_where_it_must_not_fire() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/passes");
    let bless = std::env::var_os("KILN_BLESS").is_some_and(|v| v == "1");
    let options = PipelineOptions { precision: Precision::Bf16, ..PipelineOptions::default() };
    let eliminate_dead_code = by_name("eliminate_dead_code", &options).unwrap();
    let mut summary = Vec::new();
    for pass_name in names() {
        let pass = by_name(pass_name, &options).unwrap();
        let directory = root.join(pass_name);
        let mut inputs: Vec<_> = std::fs::read_dir(&directory)
            .unwrap_or_else(|e| panic!("testdata/passes/{pass_name}: {e}"))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "ir"))
            .collect();
        inputs.sort();
        let (mut fired, mut unchanged) = (0, 0);
        for path in inputs {
            let file = format!("{pass_name}/{}", path.file_name().unwrap().to_string_lossy());
            let (text, expectation) = split_filetest(&file, &std::fs::read_to_string(&path).unwrap());
            let before = parse_graph(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
            verify(&before).unwrap_or_else(|e| panic!("{file}: {e}"));
            let mut after = before.clone();
            let mut changed = false;
            for _ in 0..16 {
                let round = pass.run(&mut after).unwrap_or_else(|e| panic!("{file}: {e}"));
                eliminate_dead_code.run(&mut after).unwrap();
                verify(&after).unwrap_or_else(|e| panic!("{file}: the pass left an invalid graph: {e}"));
                changed |= round;
                if !round || schedule_of(pass_name) == Schedule::Once {
                    break;
                }
            }
            let printed = print_graph_summary(&after);
            if bless {
                std::fs::write(&path, blessed(&text, changed.then_some(printed.as_str()))).unwrap();
            } else {
                match &expectation {
                    Expectation::Unchanged => assert!(!changed, "{file}: the pass fired:\n{printed}"),
                    Expectation::Graph(expected) => {
                        assert!(changed, "{file}: the pass changed nothing");
                        assert_eq!(&printed, expected, "{file}: the pass made another graph (KILN_BLESS=1 rewrites)");
                    }
                }
            }
            match expectation {
                Expectation::Unchanged => unchanged += 1,
                Expectation::Graph(_) => fired += 1,
            }
            let tolerance = if pass_name == "lower_precision" { 2e-2 } else { 1e-5 };
            for (seed, bindings) in
                [(1, [("batch", 3), ("seq", 5)]), (2, [("batch", 2), ("seq", 1)])].into_iter().enumerate()
            {
                let bindings: SymbolBindings = bindings.1.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                let inputs = random_inputs(&before, &bindings, seed as u64 + 1);
                let expected = evaluate(&before, &inputs).unwrap_or_else(|e| panic!("{file}: {e}"));
                let got = evaluate(&after, &inputs).unwrap_or_else(|e| panic!("{file}: after: {e}"));
                assert_agree(&file, &expected, &got, tolerance);
            }
        }
        summary.push(format!("{pass_name}: {fired} fire, {unchanged} unchanged"));
        if !bless {
            assert!(
                fired + unchanged >= 3 && unchanged >= 1,
                "{pass_name}: {fired} cases that fire, {unchanged} unchanged"
            );
        }
    }
    eprintln!("{}", summary.join("\n"));
}

#[test]
fn a_filetest_splits_into_its_input_and_expectation() {
    let text = "graph {\n}\n// expect:\n// graph {\n// }\n";
    assert_eq!(split_filetest("t", text), ("graph {\n}\n".into(), Expectation::Graph("graph {\n}\n".into())));
    let (input, expectation) = split_filetest("t", "graph {\n}\n// expect: unchanged\n");
    assert_eq!(expectation, Expectation::Unchanged);
    assert_eq!(blessed(&input, None), "graph {\n}\n// expect: unchanged\n");
    assert_eq!(blessed(&input, Some("graph {\n}\n")), text);
}
