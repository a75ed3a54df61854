//! Seed 000 (VibeAI "Live Build WebSocket System"): the messages of
//! `WS /ws/build/{build_id}` (SPEC 3.3), translated from recorded job events.
//!
//! Stateless: each event gives its messages alone. A connection gets
//! [`connected`], then the job's whole history translated, then live events; the
//! client's text `ping` is answered with the text `pong` ([`answer`]).
//! Timestamps are the event's, as Unix seconds with a millisecond fraction.

use serde::Serialize;

use crate::job::{JobId, Phase, Status, Stream};
use crate::wire::{EventPayload, Timestamp};

/// Unix time in seconds with millisecond precision (`1764662035.081`).
pub fn unix_seconds(at: &Timestamp) -> f64 {
    let ms = at.0.unix_timestamp_nanos() / 1_000_000;
    ms as f64 / 1000.0
}

/// Every message this gateway sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message<'a> {
    Connected {
        build_id: &'a str,
        message: String,
    },
    Log {
        text: &'a str,
        timestamp: f64,
        stream: Stream,
        seq: u64,
    },
    Status {
        status: &'static str,
        progress: u8,
        timestamp: f64,
        seq: u64,
    },
    Error {
        error: &'a str,
        timestamp: f64,
        seq: u64,
    },
    Complete {
        success: bool,
        artifacts: &'a [String],
        timestamp: f64,
        seq: u64,
    },
}

fn json(message: &Message<'_>) -> String {
    serde_json::to_string(message).expect("a message serializes")
}

/// The first message of every connection.
pub fn connected(build_id: &JobId) -> String {
    json(&Message::Connected {
        build_id: build_id.as_str(),
        message: format!("Connected to build {build_id}"),
    })
}

/// The messages of one recorded event, in order.
pub fn translate(event: &EventPayload) -> Vec<String> {
    match event {
        EventPayload::Progress(p) => vec![json(&Message::Status {
            status: if p.phase == Phase::Queued {
                "QUEUED"
            } else {
                "RUNNING"
            },
            progress: p.progress,
            timestamp: unix_seconds(&p.timestamp),
            seq: p.seq,
        })],
        EventPayload::Log(l) => vec![json(&Message::Log {
            text: &l.message,
            timestamp: unix_seconds(&l.timestamp),
            stream: l.stream,
            seq: l.seq,
        })],
        EventPayload::Error(e) => vec![json(&Message::Error {
            error: &e.message,
            timestamp: unix_seconds(&e.timestamp),
            seq: e.seq,
        })],
        EventPayload::Completed(c) => {
            let timestamp = unix_seconds(&c.timestamp);
            vec![
                json(&Message::Status {
                    status: if c.status == Status::Completed {
                        "SUCCESS"
                    } else {
                        "FAILED"
                    },
                    progress: c.progress,
                    timestamp,
                    seq: c.seq,
                }),
                json(&Message::Complete {
                    success: c.success,
                    artifacts: &c.artifacts,
                    timestamp,
                    seq: c.seq,
                }),
            ]
        }
    }
}

/// The answer to a client message: the text `pong` for `ping` (or a JSON
/// `{"type":"ping"}`), nothing for anything else.
pub fn answer(text: &str) -> Option<String> {
    super::is_ping(text).then(|| "pong".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compat::steps::tests::*;

    #[test]
    fn every_message_type_is_pinned() {
        let id = JobId::parse("01a235be-ee85").unwrap();
        assert_eq!(
            connected(&id),
            r#"{"type":"connected","build_id":"01a235be-ee85","message":"Connected to build 01a235be-ee85"}"#
        );
        let all: Vec<String> = demo_success().iter().flat_map(translate).collect();
        assert_eq!(
            all[0],
            r#"{"type":"status","status":"QUEUED","progress":0,"timestamp":1764662035.1,"seq":1}"#
        );
        assert_eq!(
            all[1],
            r#"{"type":"status","status":"RUNNING","progress":10,"timestamp":1764662035.2,"seq":2}"#
        );
        assert_eq!(
            all[2],
            r#"{"type":"log","text":"Running the prepare step","timestamp":1764662035.3,"stream":"system","seq":3}"#
        );
        assert_eq!(
            all[11],
            r#"{"type":"status","status":"SUCCESS","progress":100,"timestamp":1764662036.2,"seq":12}"#
        );
        assert_eq!(
            all[12],
            r#"{"type":"complete","success":true,"artifacts":["app.bin"],"timestamp":1764662036.2,"seq":12}"#
        );
        assert_eq!(all.len(), 13);
        let fail: Vec<String> = demo_fail().iter().flat_map(translate).collect();
        assert_eq!(
            fail[6],
            r#"{"type":"error","error":"The build step exited with code 1","timestamp":1764662035.7,"seq":7}"#
        );
        assert_eq!(
            fail[7],
            r#"{"type":"status","status":"FAILED","progress":50,"timestamp":1764662035.8,"seq":8}"#
        );
        assert_eq!(
            fail[8],
            r#"{"type":"complete","success":false,"artifacts":[],"timestamp":1764662035.8,"seq":8}"#
        );
        let cancelled = translate(&completed(9, Status::Cancelled, 50, &[]));
        assert!(cancelled[0].contains(r#""status":"FAILED""#));
    }

    #[test]
    fn timestamps_keep_milliseconds() {
        assert_eq!(unix_seconds(&at(81)), 1764662035.081);
    }

    #[test]
    fn ping_gets_the_text_pong() {
        assert_eq!(answer("ping").as_deref(), Some("pong"));
        assert_eq!(answer(r#"{"type":"ping"}"#).as_deref(), Some("pong"));
        assert_eq!(answer("hello"), None);
    }
}
