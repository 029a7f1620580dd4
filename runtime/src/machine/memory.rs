//! Memory as the machine holds it: byte regions aligned to 16 bytes, read
//! and written in place by the blocks of a launch, possibly from several
//! threads at once.
//!
//! Global accesses go through relaxed atomics of the access's width (on
//! x86-64 and AArch64 the same instructions as plain loads and stores), so
//! blocks running on different cores may share a region soundly; a race
//! between blocks is a kernel bug the checked mode reports, never undefined
//! behaviour here. Every access is checked against its buffer's bounds and
//! aligned to its size.

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// 64 bytes, 64-byte aligned: the unit [`AlignedBytes`] allocates in.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Owned bytes whose first byte is 64-byte aligned (16 for the widest
/// access; 32 so global 32-byte sectors are counted as a GPU's 256-byte-aligned
/// allocations have them).
#[derive(Clone, Default)]
pub struct AlignedBytes {
    words: Vec<Line>,
    len: usize,
}

impl AlignedBytes {
    /// `len` bytes, each `fill`.
    pub fn filled(len: usize, fill: u8) -> AlignedBytes {
        AlignedBytes { words: vec![Line([fill; 64]); len.div_ceil(64)], len }
    }

    /// A 16-byte-aligned copy of `bytes`.
    pub fn copy_of(bytes: &[u8]) -> AlignedBytes {
        let mut aligned = AlignedBytes::filled(bytes.len(), 0);
        aligned.as_bytes_mut().copy_from_slice(bytes);
        aligned
    }

    /// Makes it `len` bytes of `fill` (reusing the allocation).
    pub fn refill(&mut self, len: usize, fill: u8) {
        self.words.clear();
        self.words.resize(len.div_ceil(64), Line([fill; 64]));
        self.len = len;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialized bytes; u8 has no alignment needs.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_bytes`, and `&mut self` makes the view unique.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// A window of global memory bound to one buffer parameter for one launch.
///
/// Made from a borrowed region (see [`Window::read_only`], [`Window::read_write`]);
/// the launch that holds it must not outlive that borrow, which the
/// machine's entry points guarantee by scoping every launch inside the call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    base: *mut u8,
    len: usize,
    writable: bool,
}

// SAFETY: every access through a window is an atomic of its width, so
// windows may be used from several threads at once.
unsafe impl Send for Window {}
unsafe impl Sync for Window {}

impl Window {
    /// A read-only window over `bytes`, which must start 16-byte aligned.
    pub(crate) fn read_only(bytes: &[u8]) -> Window {
        debug_assert_eq!(bytes.as_ptr() as usize % 16, 0);
        Window { base: bytes.as_ptr() as *mut u8, len: bytes.len(), writable: false }
    }

    /// A read-write window over `bytes`, which must start 16-byte aligned.
    pub(crate) fn read_write(bytes: &mut [u8]) -> Window {
        debug_assert_eq!(bytes.as_ptr() as usize % 16, 0);
        Window { base: bytes.as_mut_ptr(), len: bytes.len(), writable: true }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The address of the window's first byte (for counting 32-byte sectors;
    /// regions start 64-byte aligned).
    pub(crate) fn address(&self) -> usize {
        self.base as usize
    }

    /// The window of bytes `range` of this one, when in bounds and 16-byte aligned.
    pub(crate) fn sub(&self, range: std::ops::Range<usize>) -> Option<Window> {
        if range.start > range.end || range.end > self.len || !range.start.is_multiple_of(16) {
            return None;
        }
        // SAFETY: in bounds of this window's bytes.
        Some(Window {
            base: unsafe { self.base.add(range.start) },
            len: range.end - range.start,
            writable: self.writable,
        })
    }

    pub(crate) fn writable(&self) -> bool {
        self.writable
    }

    /// The `size`-byte little-endian value at byte `offset`. The caller has
    /// checked `offset + size <= len`, `offset.is_multiple_of(size)` and `size` ∈ {1, 2, 4, 8}.
    #[inline(always)]
    pub(crate) fn load(&self, offset: usize, size: usize) -> u64 {
        debug_assert!(offset + size <= self.len && offset.is_multiple_of(size));
        // SAFETY: in bounds and aligned (checked by the caller; the base is 16-aligned).
        unsafe {
            let at = self.base.add(offset);
            match size {
                1 => AtomicU8::from_ptr(at).load(Ordering::Relaxed) as u64,
                2 => u16::from_le(AtomicU16::from_ptr(at.cast()).load(Ordering::Relaxed)) as u64,
                4 => u32::from_le(AtomicU32::from_ptr(at.cast()).load(Ordering::Relaxed)) as u64,
                _ => u64::from_le(AtomicU64::from_ptr(at.cast()).load(Ordering::Relaxed)),
            }
        }
    }

    /// `out[i]` = the little-endian u32 at byte `offset + 4 i`, for
    /// `out.len()` consecutive words; the caller has checked that they lie
    /// in the window and `offset` is a multiple of 4. A read-only window is
    /// read with plain loads (the compiler vectorizes them): it is made from
    /// a shared borrow, which nothing writes while the launch holds it.
    #[inline(always)]
    pub(crate) fn load_words(&self, offset: usize, out: &mut [u64]) {
        debug_assert!(offset + 4 * out.len() <= self.len && offset.is_multiple_of(4));
        if self.writable {
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = self.load(offset + 4 * i, 4);
            }
            return;
        }
        // SAFETY: in bounds and 4-aligned (checked by the caller, the base
        // 16-aligned); read-only windows come from `&[u8]` borrows only.
        let words = unsafe { std::slice::from_raw_parts(self.base.add(offset).cast::<u32>(), out.len()) };
        for (slot, &word) in out.iter_mut().zip(words) {
            *slot = u32::from_le(word) as u64;
        }
    }

    /// The `count` little-endian u32 words from byte `offset`, borrowed in
    /// place, when the window is read-only (nothing writes it during the
    /// launch), in bounds and 4-aligned there; `None` otherwise.
    #[inline(always)]
    pub(crate) fn frozen_words(&self, offset: usize, count: usize) -> Option<&[u32]> {
        let fits = offset.checked_add(count.checked_mul(4)?)? <= self.len && offset.is_multiple_of(4);
        if self.writable || !fits || cfg!(target_endian = "big") {
            return None;
        }
        // SAFETY: in bounds and aligned (checked above; the base is
        // 16-aligned); read-only windows come from `&[u8]` borrows only.
        Some(unsafe { std::slice::from_raw_parts(self.base.add(offset).cast::<u32>(), count) })
    }

    /// Asks the host to bring bytes `offset..offset + bytes` into its cache
    /// (a hint: addresses past the window are never read, nothing faults).
    /// Affine loads prefetch the run after theirs, which the next iteration
    /// of a streaming loop reads.
    #[inline(always)]
    pub(crate) fn prefetch(&self, offset: usize, bytes: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            let mut line = offset & !63;
            while line < offset + bytes && line < self.len {
                // SAFETY: a prefetch reads nothing and cannot fault; the
                // address stays inside the window.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        self.base.add(line).cast::<i8>(),
                    )
                };
                line += 64;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (offset, bytes);
    }

    /// Writes the low `size` bytes of `bits` at byte `offset`, under the
    /// conditions of [`Window::load`] and on a writable window.
    #[inline(always)]
    pub(crate) fn store(&self, offset: usize, size: usize, bits: u64) {
        debug_assert!(self.writable && offset + size <= self.len && offset.is_multiple_of(size));
        // SAFETY: as in `load`; the window was made from a unique borrow.
        unsafe {
            let at = self.base.add(offset);
            match size {
                1 => AtomicU8::from_ptr(at).store(bits as u8, Ordering::Relaxed),
                2 => AtomicU16::from_ptr(at.cast()).store((bits as u16).to_le(), Ordering::Relaxed),
                4 => AtomicU32::from_ptr(at.cast()).store((bits as u32).to_le(), Ordering::Relaxed),
                _ => AtomicU64::from_ptr(at.cast()).store(bits.to_le(), Ordering::Relaxed),
            }
        }
    }
}

/// A block's shared memory: the kernel's arrays back to back at their offsets.
pub(crate) struct SharedMemory {
    bytes: AlignedBytes,
}

impl SharedMemory {
    pub(crate) fn new(len: usize) -> SharedMemory {
        SharedMemory { bytes: AlignedBytes::filled(len, 0) }
    }

    /// Every byte zero, as each block starts.
    pub(crate) fn clear(&mut self) {
        self.bytes.as_bytes_mut().fill(0);
    }

    /// The `size`-byte (1, 2, 4 or 8) little-endian value at byte `offset`.
    #[inline(always)]
    pub(crate) fn load(&self, offset: usize, size: usize) -> u64 {
        let bytes = self.bytes.as_bytes();
        match size {
            1 => bytes[offset] as u64,
            2 => u16::from_le_bytes(fixed(&bytes[offset..offset + 2])) as u64,
            4 => u32::from_le_bytes(fixed(&bytes[offset..offset + 4])) as u64,
            _ => u64::from_le_bytes(fixed(&bytes[offset..offset + 8])),
        }
    }

    /// The `SIZE`-byte (4 or 8) little-endian value at byte `offset`, unchecked.
    ///
    /// # Safety
    /// `offset + SIZE` must be at most the length.
    #[inline(always)]
    pub(crate) unsafe fn load_unchecked<const SIZE: usize>(&self, offset: usize) -> u64 {
        debug_assert!(offset + SIZE <= self.bytes.as_bytes().len());
        // SAFETY: in bounds by the caller's contract; unaligned reads need no alignment.
        unsafe {
            let at = self.bytes.as_bytes().as_ptr().add(offset);
            match SIZE {
                4 => u32::from_le(at.cast::<u32>().read_unaligned()) as u64,
                _ => u64::from_le(at.cast::<u64>().read_unaligned()),
            }
        }
    }

    /// Writes the low 4 bytes of `bits` at byte `offset`, unchecked.
    ///
    /// # Safety
    /// `offset + 4` must be at most the length.
    #[inline(always)]
    pub(crate) unsafe fn store_unchecked_4(&mut self, offset: usize, bits: u64) {
        debug_assert!(offset + 4 <= self.bytes.as_bytes().len());
        // SAFETY: in bounds by the caller's contract; unaligned writes need no alignment.
        unsafe {
            self.bytes.as_bytes_mut().as_mut_ptr().add(offset).cast::<u32>().write_unaligned((bits as u32).to_le())
        }
    }

    /// Writes the low `size` bytes of `bits` at byte `offset`.
    #[inline(always)]
    pub(crate) fn store(&mut self, offset: usize, size: usize, bits: u64) {
        let bytes = self.bytes.as_bytes_mut();
        match size {
            1 => bytes[offset] = bits as u8,
            2 => bytes[offset..offset + 2].copy_from_slice(&(bits as u16).to_le_bytes()),
            4 => bytes[offset..offset + 4].copy_from_slice(&(bits as u32).to_le_bytes()),
            _ => bytes[offset..offset + 8].copy_from_slice(&bits.to_le_bytes()),
        }
    }
}

/// `N` bytes as an array (the slice has exactly `N`).
#[inline(always)]
fn fixed<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut array = [0u8; N];
    array.copy_from_slice(bytes);
    array
}
