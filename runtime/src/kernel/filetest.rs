//! The directives of a kernel filetest (`testdata/kernels/*.kir`; the
//! format is in that directory's README): `//` lines before the kernel that
//! give its buffers, symbol values and what it must produce. Read by the
//! filetests and by `kiln kernel`, which runs one such file.

use crate::SymbolBindings;

/// The directives of one file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Directives {
    pub bindings: SymbolBindings,
    /// Each buffer's initial elements.
    pub buffers: Vec<(String, Vec<f64>)>,
    /// Each buffer's elements after the launch.
    pub expected: Vec<(String, Vec<f64>)>,
    pub error: Option<String>,
    pub interpreter_error: Option<String>,
    pub machine_error: Option<String>,
    pub verify_error: Option<String>,
    pub warp_size: Option<usize>,
}

/// `1, 2, 3`, `iota(N)` or `fill(N, V)` as numbers.
pub fn values(text: &str) -> Result<Vec<f64>, String> {
    let text = text.trim();
    let number = |v: &str| v.trim().parse::<f64>().map_err(|_| format!("`{}` is not a number", v.trim()));
    let count = |v: &str| v.trim().parse::<usize>().map_err(|_| format!("`{}` is not a count", v.trim()));
    let call = |name: &str| text.strip_prefix(name).and_then(|rest| rest.strip_prefix('(')?.strip_suffix(')'));
    if let Some(n) = call("iota") {
        return Ok((0..count(n)?).map(|i| i as f64).collect());
    }
    if let Some(arguments) = call("fill") {
        let (n, value) = arguments.split_once(',').ok_or("fill takes (N, V)")?;
        return Ok(vec![number(value)?; count(n)?]);
    }
    text.split(',').map(number).collect()
}

/// The directives of a filetest's text; an error names the line at fault.
pub fn directives(text: &str) -> Result<Directives, String> {
    let mut found = Directives::default();
    for (number, line) in text.lines().enumerate() {
        let Some(line) = line.trim().strip_prefix("//").map(str::trim) else { continue };
        let Some((key, value)) = line.split_once(':') else { continue };
        let at = |message: String| format!("line {}: {message}", number + 1);
        let value = value.trim().to_string();
        match key.trim() {
            "bind" => {
                for pair in value.split(',') {
                    let (name, n) = pair.split_once('=').ok_or_else(|| at(format!("`{pair}` is not NAME=VALUE")))?;
                    let n = n.trim().parse().map_err(|_| at(format!("`{}` is not an integer", n.trim())))?;
                    found.bindings.insert(name.trim().into(), n);
                }
            }
            "expect error" => found.error = Some(value),
            "expect machine error" => found.machine_error = Some(value),
            "expect interpreter error" => found.interpreter_error = Some(value),
            "expect verify error" => found.verify_error = Some(value),
            "expect ptx" => {} // the lowering's directive (compiler/tests/compiler/kernels.rs)
            "warp" => found.warp_size = Some(value.parse().map_err(|_| at(format!("`{value}` is not a warp size")))?),
            key if key.starts_with("buffer ") => {
                found.buffers.push((key[7..].trim().into(), values(&value).map_err(at)?))
            }
            key if key.starts_with("expect ") => {
                found.expected.push((key[7..].trim().into(), values(&value).map_err(at)?))
            }
            _ => {}
        }
    }
    Ok(found)
}
