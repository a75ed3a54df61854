//! The log cap: what history keeps of a long log (a head, a rolling tail and a
//! note of the dropped middle, within `MAX_LOG_BYTES_PER_JOB`), and the run of
//! lines delivered live but not kept while too much waits for the store
//! (`MAX_UNSTORED_BYTES`).
//!
//! Pure bookkeeping: it says which seqs fall out of history; the journal queues
//! the deletions and writes the notes ([`super::payload`]).

use std::collections::VecDeque;

use crate::job::EventKind;

/// A run of log lines delivered live but not kept for history.
#[derive(Debug, Clone, Copy)]
pub(super) struct Unkept {
    pub first_seq: u64,
    pub last_seq: u64,
    pub lines: u64,
    pub bytes: u64,
}

/// What the history keeps of a long log: a head, a rolling tail, and a note of the
/// middle it dropped.
#[derive(Debug, Default)]
pub(super) struct LogBudget {
    /// Bytes the head may still take.
    head_left: u64,
    /// Log events in the tail, oldest first: (seq, bytes).
    tail: VecDeque<(u64, u64)>,
    tail_bytes: u64,
    tail_cap: u64,
    pub(super) dropped: Option<Dropped>,
}

/// The middle of a log that was dropped from history.
#[derive(Debug, Clone, Copy)]
pub struct Dropped {
    pub first_seq: u64,
    pub last_seq: u64,
    pub lines: u64,
    pub bytes: u64,
}

impl LogBudget {
    pub(super) fn new(cap: u64) -> Self {
        Self {
            head_left: cap / 2,
            tail_cap: cap - cap / 2,
            ..Self::default()
        }
    }

    /// Accounts for a new log line; returns the seqs that fall out of history.
    pub(super) fn admit(&mut self, seq: u64, bytes: u64) -> Option<(u64, u64)> {
        if self.tail.is_empty() && bytes <= self.head_left {
            self.head_left -= bytes;
            return None;
        }
        self.head_left = 0;
        self.tail.push_back((seq, bytes));
        self.tail_bytes += bytes;
        let mut range: Option<(u64, u64)> = None;
        while self.tail_bytes > self.tail_cap {
            let Some((old, b)) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= b;
            let d = self.dropped.get_or_insert(Dropped {
                first_seq: old,
                last_seq: old,
                lines: 0,
                bytes: 0,
            });
            d.last_seq = old;
            d.lines += 1;
            d.bytes += b;
            range = Some((range.map_or(old, |r| r.0), old));
        }
        range
    }

    pub(super) fn is_dropped(&self, seq: u64, kind: EventKind) -> bool {
        kind == EventKind::Log
            && self
                .dropped
                .is_some_and(|d| d.first_seq <= seq && seq <= d.last_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_budget_keeps_head_and_rolling_tail() {
        let mut b = LogBudget::new(100);
        // Head: 50 bytes.
        assert_eq!(b.admit(1, 25), None);
        assert_eq!(b.admit(2, 25), None);
        // Tail: 50 bytes.
        assert_eq!(b.admit(3, 25), None);
        assert_eq!(b.admit(4, 25), None);
        assert_eq!(b.admit(5, 25), Some((3, 3)));
        assert_eq!(b.admit(6, 25), Some((4, 4)));
        let d = b.dropped.unwrap();
        assert_eq!((d.first_seq, d.last_seq, d.lines, d.bytes), (3, 4, 2, 50));
        assert!(b.is_dropped(4, EventKind::Log));
        assert!(!b.is_dropped(4, EventKind::Progress));
        assert!(!b.is_dropped(5, EventKind::Log));
    }
}
