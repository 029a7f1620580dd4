//! The file layout: a header, a section table, then sections at 256-byte
//! aligned offsets.
//!
//! ```text
//! 0   magic  "KILNART\0"                      8 bytes
//! 8   format version (u32 LE)                  4
//! 12  section count (u32 LE)                   4
//! 16  SHA-256 of the section table            32
//! 48  section table: per section 56 bytes —
//!       kind u32, reserved u32 (0), offset u64, length u64, SHA-256 of the bytes
//! …   sections, each starting at a multiple of 256 (zero padding between)
//! ```
//!
//! Section 0 is always the manifest. Every integer is little-endian.

use sha2::{Digest, Sha256};

use super::ArtifactError;

pub const MAGIC: &[u8; 8] = b"KILNART\0";
/// The format version this build writes and reads. 3: launch variants may
/// carry dim-expression ranges (`Variant::dims`), which a version-2 reader
/// would ignore and so launch a shape-bucket variant outside its bucket.
pub const FORMAT_VERSION: u32 = 3;
/// Sections start at, and weights inside the weights section are aligned to, this.
pub const SECTION_ALIGNMENT: usize = 256;
const HEADER_BYTES: usize = 48;
const ENTRY_BYTES: usize = 56;
/// More sections than this is a corrupted table.
const MAX_SECTIONS: usize = 1024;

/// What a section holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionKind {
    Manifest = 1,
    Weights = 2,
    KernelIr = 3,
    Ptx = 4,
    AmdgpuAssembly = 5,
    Cubin = 6,
    AmdgpuCodeObject = 7,
    KernelIrText = 8,
}

impl SectionKind {
    fn from_u32(value: u32) -> Option<SectionKind> {
        [
            SectionKind::Manifest,
            SectionKind::Weights,
            SectionKind::KernelIr,
            SectionKind::Ptx,
            SectionKind::AmdgpuAssembly,
            SectionKind::Cubin,
            SectionKind::AmdgpuCodeObject,
            SectionKind::KernelIrText,
        ]
        .into_iter()
        .find(|kind| *kind as u32 == value)
    }
}

/// A section found in a file: its kind and byte range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub kind: SectionKind,
    pub offset: usize,
    pub length: usize,
}

/// Where the section table of `count` sections ends.
pub fn table_end(count: usize) -> usize {
    HEADER_BYTES + ENTRY_BYTES * count
}

fn align_up(value: usize) -> usize {
    value.div_ceil(SECTION_ALIGNMENT) * SECTION_ALIGNMENT
}

/// Writes `sections` (kind and bytes, the manifest first) into `out`.
pub fn write_container(sections: &[(SectionKind, &[u8])], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut offset = align_up(table_end(sections.len()));
    let mut table = Vec::with_capacity(ENTRY_BYTES * sections.len());
    let mut offsets = Vec::new();
    for (kind, bytes) in sections {
        table.extend_from_slice(&(*kind as u32).to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes());
        table.extend_from_slice(&(offset as u64).to_le_bytes());
        table.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        table.extend_from_slice(&Sha256::digest(bytes));
        offsets.push(offset);
        offset = align_up(offset + bytes.len());
    }
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    header.extend_from_slice(&Sha256::digest(&table));
    out.write_all(&header)?;
    out.write_all(&table)?;
    let mut written = header.len() + table.len();
    for ((_, bytes), start) in sections.iter().zip(offsets) {
        out.write_all(&vec![0u8; start - written])?;
        out.write_all(bytes)?;
        written = start + bytes.len();
    }
    Ok(())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks the header, the table and every section's checksum; returns the sections.
pub fn read_container(file: &[u8]) -> Result<Vec<Section>, ArtifactError> {
    let corrupt = |message: String| ArtifactError::Corrupt(message);
    if file.len() < 8 || &file[..8] != MAGIC {
        return Err(ArtifactError::NotAnArtifact);
    }
    if file.len() < HEADER_BYTES {
        return Err(corrupt(format!("the file ends inside the header ({} bytes)", file.len())));
    }
    let version = u32_at(file, 8);
    if version != FORMAT_VERSION {
        return Err(ArtifactError::Version { found: version, supported: FORMAT_VERSION });
    }
    let count = u32_at(file, 12) as usize;
    if count == 0 || count > MAX_SECTIONS {
        return Err(corrupt(format!("{count} sections")));
    }
    let table_end = table_end(count);
    if file.len() < table_end {
        return Err(corrupt(format!("the file ends inside the section table ({} bytes)", file.len())));
    }
    let table = &file[HEADER_BYTES..table_end];
    if Sha256::digest(table).as_slice() != &file[16..48] {
        return Err(corrupt("the section table's checksum does not match".into()));
    }
    let mut sections = Vec::with_capacity(count);
    for index in 0..count {
        let entry = &table[index * ENTRY_BYTES..(index + 1) * ENTRY_BYTES];
        let kind = SectionKind::from_u32(u32_at(entry, 0))
            .ok_or_else(|| corrupt(format!("section {index} has unknown kind {}", u32_at(entry, 0))))?;
        let offset = u64_at(entry, 8);
        let length = u64_at(entry, 16);
        let end = offset.checked_add(length).filter(|&end| end <= file.len() as u64).ok_or_else(|| {
            ArtifactError::Truncated(format!(
                "section {index} ({kind:?}) spans bytes {offset}..{} but the file has {}",
                offset.saturating_add(length),
                file.len()
            ))
        })?;
        let (offset, end) = (offset as usize, end as usize);
        if offset % SECTION_ALIGNMENT != 0 || offset < table_end {
            return Err(corrupt(format!("section {index} starts at byte {offset}")));
        }
        if Sha256::digest(&file[offset..end]).as_slice() != &entry[24..56] {
            return Err(corrupt(format!("section {index} ({kind:?}): checksum does not match")));
        }
        sections.push(Section { kind, offset, length: length as usize });
    }
    if sections[0].kind != SectionKind::Manifest {
        return Err(corrupt("section 0 is not the manifest".into()));
    }
    Ok(sections)
}
