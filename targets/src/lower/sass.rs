//! SASS, the machine code ptxas makes of PTX, read back with nvdisasm: what
//! a kernel really executes (its instructions per function and its loops),
//! for checks that PTX cannot give — that the main loop of a tensor-core
//! matmul issues HMMA, LDSM and LDGSTS and nothing slower.

use std::path::{Path, PathBuf};

/// nvdisasm: `$KILN_NVDISASM`, or the one scripts/setup.sh installs in `.venv`.
pub fn find_nvdisasm() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("KILN_NVDISASM") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    super::nvptx::find_in_venv(&["bin", "nvdisasm"])
}

/// The SASS listing of `cubin` (`nvdisasm -c`), or nvdisasm's complaint.
pub fn disassemble(nvdisasm: &Path, cubin: &[u8]) -> Result<String, String> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("kiln-nvdisasm-{}-{unique}.cubin", std::process::id()));
    std::fs::write(&path, cubin).map_err(|e| format!("{}: {e}", path.display()))?;
    let output = std::process::Command::new(nvdisasm).arg("-c").arg(&path).output();
    let _ = std::fs::remove_file(&path);
    let output = output.map_err(|e| format!("{}: {e}", nvdisasm.display()))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// One SASS instruction: its address and its text (`@P0 BRA `(.L_x_1)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    pub address: u64,
    pub text: String,
}

impl Instruction {
    /// The opcode with its modifiers (`HMMA.16816.F32.BF16`), predicate left out.
    pub fn opcode(&self) -> &str {
        let text = self.text.trim_start();
        let text = if text.starts_with('@') { text.split_once(' ').map_or("", |(_, rest)| rest) } else { text };
        text.split_whitespace().next().unwrap_or("").trim_end_matches(';')
    }

    /// The label a branch goes to.
    fn branch_target(&self) -> Option<&str> {
        if !self.opcode().starts_with("BRA") {
            return None;
        }
        let start = self.text.find("`(")? + 2;
        let end = self.text[start..].find(')')? + start;
        Some(&self.text[start..end])
    }
}

/// One kernel's SASS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    pub instructions: Vec<Instruction>,
    /// Each label and the address it marks.
    pub labels: Vec<(String, u64)>,
}

impl Function {
    /// Instructions whose opcode starts with `prefix`.
    pub fn count(instructions: &[Instruction], prefix: &str) -> usize {
        instructions.iter().filter(|i| i.opcode().starts_with(prefix)).count()
    }

    /// The loops: for each backward branch, the instructions from its target to it.
    pub fn loops(&self) -> Vec<&[Instruction]> {
        let mut loops = Vec::new();
        for (at, instruction) in self.instructions.iter().enumerate() {
            let Some(label) = instruction.branch_target() else { continue };
            let Some(&(_, address)) = self.labels.iter().find(|(name, _)| name == label) else { continue };
            if address > instruction.address {
                continue;
            }
            let start = self.instructions.iter().position(|i| i.address >= address).unwrap_or(at);
            loops.push(&self.instructions[start..=at]);
        }
        loops
    }

    /// The loop with the most instructions starting with `prefix` (a
    /// matmul's main loop, for `HMMA`), if any loop has one.
    pub fn hottest_loop(&self, prefix: &str) -> Option<&[Instruction]> {
        self.loops()
            .into_iter()
            .filter(|body| Function::count(body, prefix) > 0)
            .max_by_key(|body| Function::count(body, prefix))
    }
}

/// The functions of an `nvdisasm -c` listing.
pub fn functions(listing: &str) -> Vec<Function> {
    let mut functions: Vec<Function> = Vec::new();
    for line in listing.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix(".text.").and_then(|rest| rest.strip_suffix(':')) {
            functions.push(Function { name: name.to_string(), instructions: Vec::new(), labels: Vec::new() });
            continue;
        }
        let Some(function) = functions.last_mut() else { continue };
        if let Some(label) = trimmed.strip_suffix(':').filter(|l| l.starts_with(".L")) {
            // A label marks the next instruction's address.
            let next = function.instructions.last().map_or(0, |i| i.address + 16);
            function.labels.push((label.to_string(), next));
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("/*") {
            let Some((address, text)) = rest.split_once("*/") else { continue };
            let Ok(address) = u64::from_str_radix(address.trim(), 16) else { continue };
            let text = text.trim().trim_end_matches(';').trim().to_string();
            // `@!PT` (predicate never true) marks padding ptxas inserts: it never executes.
            if !text.is_empty() && !text.starts_with("@!PT ") {
                function.instructions.push(Instruction { address, text });
            }
        }
    }
    functions
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "
.text.k:
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_0:
        /*0010*/                   LDSM.16.M88.4 R8, [R2] ;
        /*0020*/                   HMMA.16816.F32.BF16 R4, R8.reuse, R6, RZ ;
        /*0030*/              @P0 BRA `(.L_x_0) ;
        /*0040*/              @!PT LDS RZ, [RZ] ;
        /*0050*/                   EXIT ;
";

    #[test]
    fn a_listing_reads_as_functions_with_loops() {
        let functions = functions(LISTING);
        assert_eq!(functions.len(), 1);
        let function = &functions[0];
        assert_eq!(function.name, "k");
        assert_eq!(function.instructions.len(), 5);
        assert_eq!(function.instructions[3].opcode(), "BRA");
        let body = function.hottest_loop("HMMA").expect("a loop");
        assert_eq!(
            body.iter().map(Instruction::opcode).collect::<Vec<_>>(),
            ["LDSM.16.M88.4", "HMMA.16816.F32.BF16", "BRA"]
        );
    }
}
