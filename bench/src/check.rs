//! Sequence checking, per client.
//!
//! Two keys are checked on every client:
//!
//! - the line number `n=<i>` that the line source writes into each line: the range
//!   `0..count` is known, so a line that never arrived (even the last one) is seen;
//! - the server's `seq` on every job event: its start is unknown (a client may
//!   subscribe after the first events), so only holes between the first and the
//!   highest seq seen count as lost.
//!
//! A key seen twice is a duplicate; a key that arrives after a higher one is out of
//! order.

use crate::scan::JobEvent;

/// A growable set of small integers.
#[derive(Debug, Default, Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn with_capacity(n: u64) -> Self {
        Bits(Vec::with_capacity(n.div_ceil(64) as usize))
    }

    /// Sets bit `i`; returns whether it was already set.
    fn set(&mut self, i: u64) -> bool {
        let word = (i / 64) as usize;
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let mask = 1u64 << (i % 64);
        let was = self.0[word] & mask != 0;
        self.0[word] |= mask;
        was
    }
}

/// What a checker found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Anomalies {
    pub lost: u64,
    pub dup: u64,
    pub out_of_order: u64,
}

/// Checks line numbers in a known range `0..expected`.
#[derive(Debug, Clone)]
pub struct LineChecker {
    expected: u64,
    seen: Bits,
    distinct: u64,
    highest: Option<u64>,
    dup: u64,
    out_of_order: u64,
    /// Keys outside `0..expected`.
    stray: u64,
}

impl LineChecker {
    pub fn new(expected: u64) -> Self {
        Self {
            expected,
            seen: Bits::with_capacity(expected),
            distinct: 0,
            highest: None,
            dup: 0,
            out_of_order: 0,
            stray: 0,
        }
    }

    pub fn record(&mut self, n: u64) {
        if n >= self.expected {
            self.stray += 1;
            return;
        }
        if self.seen.set(n) {
            self.dup += 1;
            return;
        }
        self.distinct += 1;
        match self.highest {
            Some(h) if n < h => self.out_of_order += 1,
            _ => self.highest = Some(n),
        }
    }

    /// Distinct lines received.
    pub fn distinct(&self) -> u64 {
        self.distinct
    }

    /// Whether every line of the range arrived.
    pub fn complete(&self) -> bool {
        self.distinct == self.expected
    }

    pub fn stray(&self) -> u64 {
        self.stray
    }

    pub fn anomalies(&self) -> Anomalies {
        Anomalies {
            lost: self.expected - self.distinct,
            dup: self.dup,
            out_of_order: self.out_of_order,
        }
    }
}

/// Checks a server's `seq`, whose first value is not known in advance.
#[derive(Debug, Default, Clone)]
pub struct SeqChecker {
    base: Option<u64>,
    seen: Bits,
    distinct: u64,
    highest: u64,
    dup: u64,
    out_of_order: u64,
}

impl SeqChecker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, seq: u64) {
        let base = *self.base.get_or_insert(seq);
        if seq < base {
            // Arrived after the first one we saw, yet is older.
            self.out_of_order += 1;
            return;
        }
        if self.seen.set(seq - base) {
            self.dup += 1;
            return;
        }
        self.distinct += 1;
        if seq < self.highest {
            self.out_of_order += 1;
        } else {
            self.highest = seq;
        }
    }

    /// The highest seq seen, if any.
    pub fn highest(&self) -> Option<u64> {
        self.base.map(|_| self.highest)
    }

    /// Seqs missing between the first and the highest seen.
    pub fn holes(&self) -> u64 {
        match self.base {
            Some(base) => (self.highest - base + 1) - self.distinct,
            None => 0,
        }
    }

    pub fn anomalies(&self) -> Anomalies {
        Anomalies {
            lost: self.holes(),
            dup: self.dup,
            out_of_order: self.out_of_order,
        }
    }
}

/// One client's checks: its line numbers and the server's seq.
#[derive(Debug, Clone)]
pub struct ClientCheck {
    pub lines: LineChecker,
    pub seq: SeqChecker,
}

impl ClientCheck {
    pub fn new(expected_lines: u64) -> Self {
        Self {
            lines: LineChecker::new(expected_lines),
            seq: SeqChecker::new(),
        }
    }

    /// Checks one event (one line of a `job:logs` batch is one event); returns the
    /// time the line source wrote the line, when it is one of its lines.
    pub fn record(&mut self, ev: &JobEvent) -> Option<u64> {
        if let Some(seq) = ev.seq {
            self.seq.record(seq);
        }
        let (Some(t), Some(n)) = (ev.t_ns, ev.n) else {
            return None;
        };
        self.lines.record(n);
        Some(t)
    }

    /// The worse of the two checks, for each kind of anomaly.
    pub fn anomalies(&self) -> Anomalies {
        let a = self.lines.anomalies();
        let b = self.seq.anomalies();
        Anomalies {
            lost: a.lost.max(b.lost),
            dup: a.dup.max(b.dup),
            out_of_order: a.out_of_order.max(b.out_of_order),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(expected: u64, keys: &[u64]) -> Anomalies {
        let mut c = LineChecker::new(expected);
        keys.iter().for_each(|&k| c.record(k));
        c.anomalies()
    }

    fn seqs(keys: &[u64]) -> Anomalies {
        let mut c = SeqChecker::new();
        keys.iter().for_each(|&k| c.record(k));
        c.anomalies()
    }

    const CLEAN: Anomalies = Anomalies {
        lost: 0,
        dup: 0,
        out_of_order: 0,
    };

    #[test]
    fn a_clean_stream_has_no_anomaly() {
        assert_eq!(lines(5, &[0, 1, 2, 3, 4]), CLEAN);
        assert_eq!(seqs(&[7, 8, 9, 10]), CLEAN);
        let mut c = LineChecker::new(300);
        (0..300).for_each(|k| c.record(k));
        assert!(c.complete());
    }

    #[test]
    fn a_lost_line_is_caught() {
        assert_eq!(lines(5, &[0, 1, 3, 4]).lost, 1);
        assert_eq!(lines(5, &[0, 1, 3, 4]), Anomalies { lost: 1, ..CLEAN });
        // The last lines never arriving is loss too.
        assert_eq!(lines(5, &[0, 1, 2]), Anomalies { lost: 2, ..CLEAN });
        assert_eq!(seqs(&[3, 4, 6, 7]), Anomalies { lost: 1, ..CLEAN });
        assert_eq!(seqs(&[3, 100]), Anomalies { lost: 96, ..CLEAN });
    }

    #[test]
    fn a_duplicated_line_is_caught() {
        assert_eq!(lines(3, &[0, 1, 1, 2]), Anomalies { dup: 1, ..CLEAN });
        // A late duplicate (replayed after later lines) is a duplicate, not a reorder.
        assert_eq!(lines(3, &[0, 1, 2, 1]), Anomalies { dup: 1, ..CLEAN });
        assert_eq!(seqs(&[5, 6, 6, 7]), Anomalies { dup: 1, ..CLEAN });
        assert_eq!(seqs(&[5, 6, 7, 5]), Anomalies { dup: 1, ..CLEAN });
    }

    #[test]
    fn a_reordered_line_is_caught() {
        assert_eq!(
            lines(4, &[0, 2, 1, 3]),
            Anomalies {
                out_of_order: 1,
                ..CLEAN
            }
        );
        assert_eq!(
            seqs(&[1, 3, 2, 4]),
            Anomalies {
                out_of_order: 1,
                ..CLEAN
            }
        );
        // Older than the first seq seen.
        assert_eq!(
            seqs(&[5, 4, 6]),
            Anomalies {
                out_of_order: 1,
                ..CLEAN
            }
        );
    }

    #[test]
    fn lines_outside_the_range_are_stray_not_delivered() {
        let mut c = LineChecker::new(2);
        c.record(0);
        c.record(7);
        assert_eq!(c.stray(), 1);
        assert_eq!(c.distinct(), 1);
        assert!(!c.complete());
    }

    #[test]
    fn the_client_check_reports_the_worse_of_lines_and_seq() {
        let mut c = ClientCheck::new(3);
        // Lines 0..3 all arrive, but the server's seq skipped one event.
        for (n, seq) in [(0, 10), (1, 11), (2, 13)] {
            c.lines.record(n);
            c.seq.record(seq);
        }
        assert_eq!(c.anomalies(), Anomalies { lost: 1, ..CLEAN });
    }
    /// Feeds packets through the scanner into one client's check.
    fn client(expected: u64, packets: &[&[u8]]) -> ClientCheck {
        let mut c = ClientCheck::new(expected);
        for p in packets {
            let kind = crate::scan::job_events(p, |ev| {
                c.record(&ev);
            });
            assert_ne!(kind, crate::scan::JobPacket::Other);
        }
        c
    }

    /// A `job:log` payload: line `n` with the server's `seq`.
    fn payload(n: u64, seq: u64) -> String {
        format!(
            r#"{{"jobId":"j1","projectId":"p","stream":"stdout","message":"t={} n={n} xxxx","timestamp":"2024-11-21T10:00:00.123Z","seq":{seq}}}"#,
            1_732_200_000_000_000_000 + n
        )
    }

    /// A `job:logs` batch of the lines `(n, seq)`.
    fn batch(lines: &[(u64, u64)]) -> Vec<u8> {
        let items: Vec<String> = lines.iter().map(|&(n, seq)| payload(n, seq)).collect();
        format!(r#"42["job:logs",[{}]]"#, items.join(",")).into_bytes()
    }

    fn single(n: u64, seq: u64) -> Vec<u8> {
        format!(r#"42["job:log",{}]"#, payload(n, seq)).into_bytes()
    }

    #[test]
    fn every_line_of_a_batch_is_checked() {
        let b1 = batch(&[(0, 1), (1, 2), (2, 3)]);
        let b2 = batch(&[(3, 4), (4, 5)]);
        let c = client(5, &[&b1, &b2]);
        assert_eq!(c.anomalies(), CLEAN);
        assert!(c.lines.complete());
        assert_eq!(c.seq.highest(), Some(5));
        // Batches and single events mixed (a server that ignores `batch`).
        let c = client(5, &[&b1, &single(3, 4), &single(4, 5)]);
        assert_eq!(c.anomalies(), CLEAN);
    }

    #[test]
    fn a_line_lost_inside_a_batch_is_caught() {
        let c = client(4, &[&batch(&[(0, 1), (2, 3), (3, 4)])]);
        assert_eq!(c.anomalies(), Anomalies { lost: 1, ..CLEAN });
        // Between two batches, and at the end.
        let c = client(5, &[&batch(&[(0, 1), (1, 2)]), &batch(&[(3, 4)])]);
        assert_eq!(c.anomalies(), Anomalies { lost: 2, ..CLEAN });
    }

    #[test]
    fn a_line_duplicated_inside_a_batch_is_caught() {
        let c = client(3, &[&batch(&[(0, 1), (1, 2), (1, 2), (2, 3)])]);
        assert_eq!(c.anomalies(), Anomalies { dup: 1, ..CLEAN });
        // Replayed by the next batch (a resume from too early a seq).
        let c = client(3, &[&batch(&[(0, 1), (1, 2)]), &batch(&[(1, 2), (2, 3)])]);
        assert_eq!(c.anomalies(), Anomalies { dup: 1, ..CLEAN });
    }

    #[test]
    fn a_line_reordered_inside_a_batch_is_caught() {
        let c = client(4, &[&batch(&[(0, 1), (2, 3), (1, 2), (3, 4)])]);
        assert_eq!(
            c.anomalies(),
            Anomalies {
                out_of_order: 1,
                ..CLEAN
            }
        );
        // Across batches.
        let c = client(4, &[&batch(&[(0, 1), (2, 3)]), &batch(&[(1, 2), (3, 4)])]);
        assert_eq!(
            c.anomalies(),
            Anomalies {
                out_of_order: 1,
                ..CLEAN
            }
        );
    }
}
