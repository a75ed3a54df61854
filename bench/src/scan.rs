//! Just enough parsing of Engine.IO / Socket.IO packets for the load generator:
//! the packet type, the event name, `"seq":` and the `t=`/`n=` the line source
//! wrote into the line. No JSON is parsed.

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while from + needle.len() <= hay.len() {
        let i = from
            + hay[from..=hay.len() - needle.len()]
                .iter()
                .position(|&b| b == first)?;
        if &hay[i + 1..i + needle.len()] == rest {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

/// Position of the last `needle` in `hay`.
pub fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > hay.len() {
        return None;
    }
    (0..=hay.len() - needle.len())
        .rev()
        .find(|&i| &hay[i..i + needle.len()] == needle)
}

/// The decimal number at the start of `s`, and how many bytes it took.
pub fn leading_u64(s: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut i = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_add(u64::from(s[i] - b'0'))?;
        i += 1;
    }
    (i > 0).then_some((v, i))
}

/// The number right after the last `key` (e.g. `"seq":`).
pub fn u64_after_last(hay: &[u8], key: &[u8]) -> Option<u64> {
    let at = rfind(hay, key)? + key.len();
    leading_u64(&hay[at..]).map(|(v, _)| v)
}

/// The string value right after `key` (e.g. `"sid":"`), up to the next quote.
pub fn str_after<'a>(hay: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = find(hay, key)? + key.len();
    let end = hay[at..].iter().position(|&b| b == b'"')?;
    Some(&hay[at..at + end])
}

/// A Socket.IO packet (Engine.IO message packets carry Socket.IO packets).
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Engine.IO `0{...}`: handshake.
    Open(&'a [u8]),
    /// Engine.IO `1`.
    Close,
    /// Engine.IO `2`.
    Ping,
    /// Engine.IO `6`.
    Noop,
    /// Socket.IO `40{...}` (default namespace).
    Connect,
    /// Socket.IO `41`.
    Disconnect,
    /// Socket.IO `42[...]`: the whole packet is kept.
    Event(&'a [u8]),
    /// Socket.IO `43<id>[...]`.
    Ack { id: u64, body: &'a [u8] },
    /// Socket.IO `44{...}`.
    ConnectError(&'a [u8]),
    /// Anything else.
    Other(&'a [u8]),
}

pub fn packet(p: &[u8]) -> Packet<'_> {
    match p {
        [b'0', rest @ ..] => Packet::Open(rest),
        [b'1', ..] => Packet::Close,
        [b'2'] => Packet::Ping,
        [b'6', ..] => Packet::Noop,
        [b'4', b'0', ..] => Packet::Connect,
        [b'4', b'1', ..] => Packet::Disconnect,
        [b'4', b'2', ..] => Packet::Event(p),
        [b'4', b'3', rest @ ..] => match leading_u64(rest) {
            Some((id, len)) => Packet::Ack {
                id,
                body: &rest[len..],
            },
            None => Packet::Other(p),
        },
        [b'4', b'4', rest @ ..] => Packet::ConnectError(rest),
        _ => Packet::Other(p),
    }
}

/// What the load generator needs from one event packet.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct JobEvent {
    /// `job:log`, as opposed to the other `job:*` events.
    pub is_log: bool,
    /// The server's `seq`.
    pub seq: Option<u64>,
    /// From the line source: when the line was written (ns since the Unix epoch)...
    pub t_ns: Option<u64>,
    /// ...and its number.
    pub n: Option<u64>,
}

/// The `t=<ns> n=<i>` the line source wrote at the start of a message (`s` starts
/// right after the message's opening quote), and how many bytes that took.
fn stamp(s: &[u8]) -> (Option<u64>, Option<u64>, usize) {
    let Some(rest) = s.strip_prefix(b"t=") else {
        return (None, None, 0);
    };
    let Some((t, len)) = leading_u64(rest) else {
        return (None, None, 0);
    };
    let used = 2 + len;
    match rest[len..].strip_prefix(b" n=").and_then(leading_u64) {
        Some((n, nlen)) => (Some(t), Some(n), used + 3 + nlen),
        None => (Some(t), None, used),
    }
}

/// Reads a `42["job:...",{...}]` packet; `None` for other events. A batch
/// (`job:logs`) is read by [`job_events`].
pub fn job_event(p: &[u8]) -> Option<JobEvent> {
    const PREFIX: &[u8] = b"[\"job:";
    // `42` and an optional ack id or namespace are before the array.
    let start = p.iter().position(|&b| b == b'[')?;
    if !p[start..].starts_with(PREFIX) {
        return None;
    }
    let name = &p[start + PREFIX.len()..];
    let is_log = name.starts_with(b"log\"");
    let mut ev = JobEvent {
        is_log,
        seq: u64_after_last(p, b"\"seq\":"),
        ..JobEvent::default()
    };
    if is_log && let Some(at) = find(p, b"\"message\":\"t=") {
        (ev.t_ns, ev.n, _) = stamp(&p[at + b"\"message\":\"".len()..]);
    }
    Some(ev)
}

/// What [`job_events`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPacket {
    /// Not a `job:*` event.
    Other,
    /// One event.
    Event,
    /// A `job:logs` batch.
    Batch,
}

/// Reads a job event packet and calls `f` once per event: once for
/// `42["job:log",{...}]` and the other `job:*` events, once per line for a batch
/// `42["job:logs",[{...},{...}]]` (in the order of the array).
pub fn job_events(p: &[u8], mut f: impl FnMut(JobEvent)) -> JobPacket {
    const PREFIX: &[u8] = b"[\"job:logs\",";
    let Some(start) = p.iter().position(|&b| b == b'[') else {
        return JobPacket::Other;
    };
    if p[start..].starts_with(PREFIX) {
        batch_lines(&p[start + PREFIX.len()..], f);
        return JobPacket::Batch;
    }
    match job_event(p) {
        Some(ev) => {
            f(ev);
            JobPacket::Event
        }
        None => JobPacket::Other,
    }
}

/// The lines of a `job:logs` array. No JSON is parsed: only the keys `"seq":` and
/// `"message":"` are looked for, and only where a key can be (right after `{` or
/// `,`): inside a string a quote is escaped (`\"seq\":`), so text in a message can
/// never pass for a key. An object ends where the key it already has comes again
/// (or at the end), so the order of the keys within an object does not matter.
fn batch_lines(body: &[u8], mut f: impl FnMut(JobEvent)) {
    const SEQ: &[u8] = b"seq\":";
    const MESSAGE: &[u8] = b"message\":\"";
    let line = || JobEvent {
        is_log: true,
        ..JobEvent::default()
    };
    let mut cur = line();
    let (mut has_seq, mut has_message) = (false, false);
    let mut i = 0;
    while let Some(q) = body[i..].iter().position(|&b| b == b'"') {
        let at = i + q;
        i = at + 1;
        if at == 0 || !matches!(body[at - 1], b'{' | b',') {
            continue;
        }
        let key = &body[i..];
        if let Some(rest) = key.strip_prefix(SEQ) {
            if has_seq {
                f(std::mem::replace(&mut cur, line()));
                has_message = false;
            }
            has_seq = true;
            i += SEQ.len();
            if let Some((seq, len)) = leading_u64(rest) {
                cur.seq = Some(seq);
                i += len;
            }
        } else if let Some(rest) = key.strip_prefix(MESSAGE) {
            if has_message {
                f(std::mem::replace(&mut cur, line()));
                has_seq = false;
            }
            has_message = true;
            let used;
            (cur.t_ns, cur.n, used) = stamp(rest);
            i += MESSAGE.len() + used;
        }
    }
    if has_seq || has_message {
        f(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds() {
        assert_eq!(find(b"abcabc", b"ca"), Some(2));
        assert_eq!(find(b"abc", b"abcd"), None);
        assert_eq!(find(b"aab", b"ab"), Some(1));
        assert_eq!(rfind(b"abcabc", b"bc"), Some(4));
        assert_eq!(
            str_after(br#"0{"sid":"xY-1","upgrades":[]}"#, br#""sid":""#),
            Some(&b"xY-1"[..])
        );
    }

    #[test]
    fn classifies_packets() {
        assert_eq!(packet(br#"0{"sid":"a"}"#), Packet::Open(br#"{"sid":"a"}"#));
        assert_eq!(packet(b"2"), Packet::Ping);
        assert_eq!(packet(br#"40{"sid":"b"}"#), Packet::Connect);
        assert_eq!(
            packet(br#"430[{"ok":true}]"#),
            Packet::Ack {
                id: 0,
                body: br#"[{"ok":true}]"#
            }
        );
        assert!(matches!(packet(br#"42["job:log",{}]"#), Packet::Event(_)));
    }

    #[test]
    fn reads_a_job_log_event() {
        let p = br#"42["job:log",{"jobId":"j1","projectId":"p","stream":"stdout","message":"t=1732200000123456789 n=42 xxxxxxxx","timestamp":"2024-11-21T10:00:00.123Z","seq":44}]"#;
        assert_eq!(
            job_event(p),
            Some(JobEvent {
                is_log: true,
                seq: Some(44),
                t_ns: Some(1_732_200_000_123_456_789),
                n: Some(42),
            })
        );
    }

    #[test]
    fn reads_other_job_events_and_ignores_the_rest() {
        let p = br#"42["job:progress",{"jobId":"j","message":"t=5 n=1","progress":50,"seq":3}]"#;
        let ev = job_event(p).unwrap();
        assert!(!ev.is_log);
        assert_eq!(ev.seq, Some(3));
        assert_eq!(ev.n, None);
        assert_eq!(job_event(br#"42["project:progress",{"seq":3}]"#), None);
        // A log line that is not from the line source.
        let p =
            br#"42["job:log",{"jobId":"j","stream":"system","message":"step started","seq":9}]"#;
        assert_eq!(
            job_event(p),
            Some(JobEvent {
                is_log: true,
                seq: Some(9),
                ..JobEvent::default()
            })
        );
    }
    fn events(p: &[u8]) -> Vec<JobEvent> {
        let mut v = Vec::new();
        assert_ne!(job_events(p, |ev| v.push(ev)), JobPacket::Other);
        v
    }

    fn line(seq: u64, t: u64, n: u64) -> JobEvent {
        JobEvent {
            is_log: true,
            seq: Some(seq),
            t_ns: Some(t),
            n: Some(n),
        }
    }

    #[test]
    fn reads_every_line_of_a_job_logs_batch() {
        let p = br#"42["job:logs",[{"jobId":"j1","projectId":"p","stream":"stdout","message":"t=100 n=0 xxxx","timestamp":"2024-11-21T10:00:00.123Z","seq":5},{"jobId":"j1","projectId":"p","stream":"stdout","message":"t=200 n=1 xxxx","timestamp":"2024-11-21T10:00:00.124Z","seq":6}]]"#;
        assert_eq!(events(p), vec![line(5, 100, 0), line(6, 200, 1)]);
        // One line, and an empty batch.
        assert_eq!(
            events(br#"42["job:logs",[{"message":"t=7 n=3","seq":9}]]"#),
            vec![line(9, 7, 3)]
        );
        assert_eq!(events(br#"42["job:logs",[]]"#), vec![]);
        // job:log and the other events go through job_event.
        assert_eq!(
            events(br#"42["job:log",{"message":"t=7 n=3","seq":9}]"#),
            vec![line(9, 7, 3)]
        );
        assert_eq!(
            events(br#"42["job:completed",{"jobId":"j","seq":10}]"#),
            vec![JobEvent {
                seq: Some(10),
                ..JobEvent::default()
            }]
        );
        assert_eq!(
            job_events(br#"42["project:progress",{"seq":3}]"#, |_| {}),
            JobPacket::Other
        );
        assert_eq!(
            job_events(br#"42["job:logs",[]]"#, |_| {}),
            JobPacket::Batch
        );
    }

    #[test]
    fn a_batch_is_not_fooled_by_keys_inside_messages() {
        // What a message says about seq is escaped; a message may end in `,` or `{`;
        // a system line has no stamp; the keys may come in any order.
        let p = br#"42["job:logs",[{"message":"t=1 n=0 {\"seq\":99,\"message\":\"t=5 n=5","seq":3},{"message":"echo {,","stream":"system","seq":4},{"seq":5,"message":"t=2 n=1 ,\"seq\":77"},{"seq":6,"message":""}]]"#;
        assert_eq!(
            events(p),
            vec![
                line(3, 1, 0),
                JobEvent {
                    is_log: true,
                    seq: Some(4),
                    ..JobEvent::default()
                },
                line(5, 2, 1),
                JobEvent {
                    is_log: true,
                    seq: Some(6),
                    ..JobEvent::default()
                },
            ]
        );
    }
}
