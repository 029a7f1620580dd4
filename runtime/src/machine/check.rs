//! The machine's checked mode ([`super::MachineOptions::check`]): the
//! detectors of the interpreter, on the machine's resumable warps.
//!
//! - **Shared-memory races by happens-before**, with a vector clock per
//!   warp: an access races with an earlier one to the same byte by another
//!   warp, one of them a write, unless the earlier one happened before it —
//!   ordered by the synchronization between them (today block-wide barriers:
//!   a release joins every participant's clock; mbarriers and named
//!   barriers will join only theirs). The verdict does not depend on the
//!   order the scheduler happened to run warps in: a race is reported even
//!   when this run's order made it harmless.
//! - **Reads of shared memory no thread of the block has written.**
//! - **Non-atomic global writes of one byte by two blocks** (blocks may run
//!   in any order, so the result would depend on it).
//!
//! Shadow state is per byte (accesses of any width and sub-word arrays are
//! exact); a byte remembers its last write and its reads since: one read
//! while reads are ordered, every warp's latest otherwise (FastTrack's
//! read epochs).

use std::collections::HashMap;

/// An access: the warp and its own clock then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Event {
    warp: u32,
    clock: u32,
}

#[derive(Clone, Debug, Default)]
enum Reads {
    #[default]
    None,
    One(Event),
    /// Per warp, the clock of its latest read (0: none).
    Many(Vec<u32>),
}

#[derive(Clone, Debug, Default)]
struct Shadow {
    write: Option<Event>,
    reads: Reads,
}

/// What a checked access found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Violation {
    /// Unordered with an access of warp `other` (one of the two writes).
    Race {
        other: usize,
    },
    Uninitialized,
    /// A cp.async to the byte is in flight (not yet completed by a wait).
    InFlight,
}

/// One block's vector clocks and shared-memory shadow.
pub(crate) struct SharedChecker {
    /// `clocks[w][u]`: the latest clock of warp `u` that warp `w` has synchronized with.
    clocks: Vec<Vec<u32>>,
    shadow: Vec<Shadow>,
    /// Per byte: cp.async copies to it issued and not yet completed.
    in_flight: Vec<u32>,
    /// Bytes with a copy in flight (so the common case, none, is one test).
    in_flight_bytes: usize,
}

impl SharedChecker {
    pub(crate) fn new(warps: usize, shared_bytes: usize) -> SharedChecker {
        let mut checker =
            SharedChecker { clocks: Vec::new(), shadow: Vec::new(), in_flight: Vec::new(), in_flight_bytes: 0 };
        checker.reset(warps, shared_bytes);
        checker
    }

    /// A new block: every warp at its first epoch, shared memory unwritten.
    pub(crate) fn reset(&mut self, warps: usize, shared_bytes: usize) {
        self.clocks = (0..warps)
            .map(|w| {
                let mut clock = vec![0; warps];
                clock[w] = 1;
                clock
            })
            .collect();
        self.shadow.clear();
        self.shadow.resize(shared_bytes, Shadow::default());
        self.in_flight.clear();
        self.in_flight.resize(shared_bytes, 0);
        self.in_flight_bytes = 0;
    }

    /// `warp` issues a cp.async to bytes `range`: a write from now on (it
    /// races with unordered accesses, and with a copy still in flight
    /// there); until [`SharedChecker::land`], any access to them is a violation.
    pub(crate) fn issue_copy(&mut self, warp: usize, range: std::ops::Range<usize>) -> Result<(), Violation> {
        self.write(warp, range.clone())?;
        for count in &mut self.in_flight[range] {
            self.in_flight_bytes += (*count == 0) as usize;
            *count += 1;
        }
        Ok(())
    }

    /// A cp.async issued by `warp` completes (its wait): it writes `range` now.
    pub(crate) fn land(&mut self, warp: usize, range: std::ops::Range<usize>) -> Result<(), Violation> {
        for count in &mut self.in_flight[range.clone()] {
            if *count > 0 {
                *count -= 1;
                self.in_flight_bytes -= (*count == 0) as usize;
            }
        }
        self.write(warp, range)
    }

    fn check_in_flight(&self, range: &std::ops::Range<usize>) -> Result<(), Violation> {
        if self.in_flight_bytes > 0 && self.in_flight[range.clone()].iter().any(|&count| count > 0) {
            return Err(Violation::InFlight);
        }
        Ok(())
    }

    /// A barrier every warp of `participants` arrived at releases them:
    /// each has seen everything every other did before arriving.
    pub(crate) fn release(&mut self, participants: &[usize]) {
        let warps = self.clocks.len();
        let mut joined = vec![0u32; warps];
        for &w in participants {
            for (slot, &clock) in joined.iter_mut().zip(&self.clocks[w]) {
                *slot = (*slot).max(clock);
            }
        }
        for &w in participants {
            self.clocks[w].copy_from_slice(&joined);
            self.clocks[w][w] += 1;
        }
    }

    fn now(&self, warp: usize) -> Event {
        Event { warp: warp as u32, clock: self.clocks[warp][warp] }
    }

    /// `warp` reads bytes `range` of shared memory.
    pub(crate) fn read(&mut self, warp: usize, range: std::ops::Range<usize>) -> Result<(), Violation> {
        self.check_in_flight(&range)?;
        let now = self.now(warp);
        let clocks = &self.clocks[warp];
        for shadow in &mut self.shadow[range] {
            let Some(write) = shadow.write else { return Err(Violation::Uninitialized) };
            if !ordered(clocks, write, warp) {
                return Err(Violation::Race { other: write.warp as usize });
            }
            match &mut shadow.reads {
                Reads::Many(each) => each[warp] = now.clock,
                Reads::One(previous) if !ordered(clocks, *previous, warp) => {
                    let mut each = vec![0; clocks.len()];
                    each[previous.warp as usize] = previous.clock;
                    each[warp] = now.clock;
                    shadow.reads = Reads::Many(each);
                }
                reads => *reads = Reads::One(now),
            }
        }
        Ok(())
    }

    /// `warp` writes bytes `range` of shared memory.
    pub(crate) fn write(&mut self, warp: usize, range: std::ops::Range<usize>) -> Result<(), Violation> {
        self.check_in_flight(&range)?;
        let now = self.now(warp);
        let clocks = &self.clocks[warp];
        for shadow in &mut self.shadow[range] {
            if let Some(write) = shadow.write {
                if !ordered(clocks, write, warp) {
                    return Err(Violation::Race { other: write.warp as usize });
                }
            }
            match &shadow.reads {
                Reads::None => {}
                Reads::One(read) => {
                    if !ordered(clocks, *read, warp) {
                        return Err(Violation::Race { other: read.warp as usize });
                    }
                }
                Reads::Many(each) => {
                    let unordered = each
                        .iter()
                        .enumerate()
                        .find(|&(u, &clock)| clock != 0 && !ordered(clocks, Event { warp: u as u32, clock }, warp));
                    if let Some((other, _)) = unordered {
                        return Err(Violation::Race { other });
                    }
                }
            }
            *shadow = Shadow { write: Some(now), reads: Reads::None };
        }
        Ok(())
    }
}

/// Whether `event` is ordered before everything warp `warp` (whose vector
/// clock is `clocks`) does now.
fn ordered(clocks: &[u32], event: Event, warp: usize) -> bool {
    event.warp as usize == warp || event.clock <= clocks[event.warp as usize]
}

/// Which block last wrote each global byte, over one launch.
#[derive(Default)]
pub(crate) struct GlobalWriters {
    writers: HashMap<usize, u64>,
}

impl GlobalWriters {
    /// Block `block` writes the bytes at `address..address + size`; the
    /// block that wrote one of them before, when it is another.
    pub(crate) fn write(&mut self, address: usize, size: usize, block: u64) -> Option<u64> {
        for byte in address..address + size {
            if let Some(previous) = self.writers.insert(byte, block) {
                if previous != block {
                    return Some(previous);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_barrier_orders_a_write_before_another_warps_read() {
        let mut checker = SharedChecker::new(2, 4);
        checker.write(0, 0..4).unwrap();
        assert_eq!(checker.read(1, 0..4), Err(Violation::Race { other: 0 }), "no barrier between them");
        let mut checker = SharedChecker::new(2, 4);
        checker.write(0, 0..4).unwrap();
        checker.release(&[0, 1]);
        assert_eq!(checker.read(1, 0..4), Ok(()));
        assert_eq!(checker.read(0, 0..4), Ok(()), "reads by two warps do not race");
        assert_eq!(checker.write(1, 0..4), Err(Violation::Race { other: 0 }), "warp 0's read is unordered");
        checker.release(&[0, 1]);
        assert_eq!(checker.write(1, 0..4), Ok(()));
    }

    #[test]
    fn an_unwritten_byte_is_uninitialized_and_sub_words_are_separate() {
        let mut checker = SharedChecker::new(2, 4);
        assert_eq!(checker.read(0, 0..2), Err(Violation::Uninitialized));
        checker.write(0, 0..2).unwrap();
        checker.write(1, 2..4).unwrap();
        assert_eq!(checker.read(0, 0..2), Ok(()), "warp 1 wrote the other half");
        assert_eq!(checker.read(0, 2..4), Err(Violation::Race { other: 1 }));
    }

    #[test]
    fn only_the_participants_of_a_release_are_ordered() {
        let mut checker = SharedChecker::new(3, 4);
        checker.write(0, 0..4).unwrap();
        checker.release(&[0, 1]);
        assert_eq!(checker.read(1, 0..4), Ok(()));
        assert_eq!(checker.read(2, 0..4), Err(Violation::Race { other: 0 }), "warp 2 did not synchronize");
    }

    #[test]
    fn two_blocks_writing_one_global_byte_are_reported() {
        let mut writers = GlobalWriters::default();
        assert_eq!(writers.write(64, 4, 0), None);
        assert_eq!(writers.write(64, 4, 0), None, "a block may write its own bytes again");
        assert_eq!(writers.write(66, 4, 1), Some(0));
    }
}
