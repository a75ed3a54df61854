//! The opt-in `job:logs` event: runs of log lines sent as one JSON array.
//!
//! A client that subscribes with `{ jobId, batch: true }` gets its job's log lines
//! as `job:logs` events, each an array of `job:log` payloads in `seq` order, instead
//! of one `job:log` per line. Progress, errors and completion still come as their own
//! events, and never overtake a line recorded before them. One emit per run instead
//! of one per line is what lets a high-volume log reach many watchers cheaply.
//!
//! Live lines are held per job in [`Pending`] for at most the configured interval,
//! or until [`MAX_LINES`] lines or [`MAX_BYTES`] bytes accumulate; replays group
//! consecutive lines with [`run_len`] under the same limits.

use std::sync::Arc;

use serde::ser::{Serialize, SerializeSeq, Serializer};

use crate::job::EventKind;
use crate::journal::RecordedEvent;

/// Most lines in one `job:logs` event.
pub const MAX_LINES: usize = 1000;
/// Most payload bytes in one `job:logs` event (a run is cut after the line that
/// reaches it).
pub const MAX_BYTES: usize = 64 * 1024;

/// RecordedEvent log lines, serialized as the JSON array that `job:logs` carries: each
/// element is the line's `job:log` payload, as recorded.
pub struct LogRun<'a>(pub &'a [Arc<RecordedEvent>]);

impl Serialize for LogRun<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for event in self.0 {
            seq.serialize_element(&*event.json)?;
        }
        seq.end()
    }
}

/// How many of `events` go out in the next emit: a run of log lines within the
/// limits when batching, otherwise one event.
pub fn run_len(events: &[Arc<RecordedEvent>], batch: bool) -> usize {
    let Some(first) = events.first() else {
        return 0;
    };
    if !batch || first.kind != EventKind::Log {
        return 1;
    }
    let mut bytes = 0;
    let mut n = 0;
    for event in events.iter().take(MAX_LINES) {
        if event.kind != EventKind::Log || bytes >= MAX_BYTES {
            break;
        }
        bytes += event.json.get().len();
        n += 1;
    }
    n
}

/// Live log lines of one job held back for its batching subscribers.
#[derive(Debug, Default)]
pub struct Pending {
    pub events: Vec<Arc<RecordedEvent>>,
    bytes: usize,
}

impl Pending {
    /// Adds a line; true once the run is as long as one event may carry.
    pub fn push(&mut self, event: Arc<RecordedEvent>) -> bool {
        self.bytes += event.json.get().len();
        self.events.push(event);
        self.events.len() >= MAX_LINES || self.bytes >= MAX_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn event(seq: u64, kind: EventKind, size: usize) -> Arc<RecordedEvent> {
        let json = format!(r#"{{"seq":{seq},"message":"{}"}}"#, "x".repeat(size));
        Arc::new(RecordedEvent {
            seq,
            kind,
            line: None,
            json: RawValue::from_string(json).unwrap(),
        })
    }

    #[test]
    fn a_run_is_the_consecutive_log_lines_within_the_limits() {
        let mut events: Vec<_> = (1..=5).map(|s| event(s, EventKind::Log, 10)).collect();
        events.push(event(6, EventKind::Progress, 10));
        events.push(event(7, EventKind::Log, 10));
        assert_eq!(run_len(&events, true), 5);
        assert_eq!(run_len(&events[5..], true), 1, "progress goes alone");
        assert_eq!(run_len(&events[6..], true), 1);
        assert_eq!(run_len(&events, false), 1, "not batching: one by one");
        assert_eq!(run_len(&[], true), 0);

        let many: Vec<_> = (1..=2500).map(|s| event(s, EventKind::Log, 1)).collect();
        assert_eq!(run_len(&many, true), MAX_LINES);
        let big: Vec<_> = (1..=10).map(|s| event(s, EventKind::Log, 30_000)).collect();
        assert_eq!(
            run_len(&big, true),
            3,
            "cut after the line that reaches MAX_BYTES"
        );
    }

    #[test]
    fn a_run_serializes_as_an_array_of_the_recorded_payloads() {
        let events = [event(1, EventKind::Log, 1), event(2, EventKind::Log, 2)];
        assert_eq!(
            serde_json::to_string(&LogRun(&events)).unwrap(),
            r#"[{"seq":1,"message":"x"},{"seq":2,"message":"xx"}]"#
        );
    }

    #[test]
    fn pending_reports_when_it_is_full() {
        let mut pending = Pending::default();
        for s in 1..MAX_LINES as u64 {
            assert!(!pending.push(event(s, EventKind::Log, 1)));
        }
        assert!(pending.push(event(MAX_LINES as u64, EventKind::Log, 1)));
        let mut pending = Pending::default();
        assert!(!pending.push(event(1, EventKind::Log, MAX_BYTES / 2)));
        assert!(pending.push(event(2, EventKind::Log, MAX_BYTES / 2)));
    }
}
