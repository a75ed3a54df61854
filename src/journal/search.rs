//! Searching a job's whole log where it is kept (the store, then memory), page by
//! page, so that a log of millions of lines is searched without being held: the
//! query ([`LogQuery`], plain text or a size-limited regex), the text a reader
//! sees of a line ([`plain_text`], as the dashboard shows it), and the scan
//! ([`Journal::search_log`]).

use serde::Deserialize;

use super::Journal;
use crate::job::JobId;
use crate::store::StoreError;

/// Log events read per step of a scan.
const SCAN_PAGE: usize = 4_000;
/// Longest query accepted, in bytes.
pub const MAX_QUERY: usize = 1_000;
/// Compiled size limit of a regex query (the `regex` crate's `size_limit`).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Characters of a line given back around a match.
const SNIPPET_CHARS: usize = 240;

/// Why a query cannot be run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("q must not be empty")]
    Empty,
    #[error("q is longer than {MAX_QUERY} bytes")]
    TooLong,
    #[error("invalid regex: {0}")]
    Regex(String),
}

/// What to look for in each line's text.
#[derive(Debug)]
pub enum LogQuery {
    /// A substring, case ignored; kept in lower case.
    Plain(String),
    /// A regular expression, as written (`(?i)` ignores case).
    Regex(regex::Regex),
}

impl LogQuery {
    /// A plain query, or a regex one with `regex`.
    pub fn parse(q: &str, regex: bool) -> Result<Self, QueryError> {
        if q.is_empty() {
            return Err(QueryError::Empty);
        }
        if q.len() > MAX_QUERY {
            return Err(QueryError::TooLong);
        }
        if !regex {
            return Ok(Self::Plain(q.to_lowercase()));
        }
        regex::RegexBuilder::new(q)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(Self::Regex)
            .map_err(|e| QueryError::Regex(e.to_string()))
    }

    /// Where the query first matches `text`: a byte range.
    pub fn find(&self, text: &str) -> Option<(usize, usize)> {
        match self {
            Self::Plain(needle) => {
                if text.is_ascii() && needle.is_ascii() {
                    let hay = text.as_bytes();
                    let n = needle.as_bytes();
                    return hay
                        .windows(n.len())
                        .position(|w| w.eq_ignore_ascii_case(n))
                        .map(|at| (at, at + n.len()));
                }
                // Lower case may change lengths: find the match in the lowered
                // text, then the characters it came from.
                let mut lowered = String::with_capacity(text.len());
                let mut origin = Vec::with_capacity(text.len() + 1);
                for (at, c) in text.char_indices() {
                    for l in c.to_lowercase() {
                        for _ in 0..l.len_utf8() {
                            origin.push(at);
                        }
                        lowered.push(l);
                    }
                }
                origin.push(text.len());
                let start = lowered.find(needle.as_str())?;
                let end = start + needle.len();
                let end_at = text[origin[end - 1]..]
                    .chars()
                    .next()
                    .map_or(text.len(), |c| origin[end - 1] + c.len_utf8());
                Some((origin[start], end_at))
            }
            Self::Regex(re) => re.find(text).map(|m| (m.start(), m.end())),
        }
    }

    /// A substring every line it matches holds (ASCII case ignored), for the
    /// store's prefilter; `None` when there is none to give.
    fn needle(&self) -> Option<&str> {
        match self {
            Self::Plain(needle) if needle.is_ascii() => Some(needle),
            _ => None,
        }
    }
}

/// One line that matched.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hit {
    pub line: u64,
    pub seq: u64,
    pub stream: String,
    /// The line's text (escape sequences removed) around the match.
    pub snippet: String,
}

/// What a search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub hits: Vec<Hit>,
    /// The limit was reached: the search may go on from the line after the last hit.
    pub more: bool,
}

#[derive(Deserialize)]
struct LogPayload<'a> {
    #[serde(borrow)]
    message: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    stream: std::borrow::Cow<'a, str>,
}

impl Journal {
    /// The first `limit` log lines numbered `from_line` or later whose text
    /// matches `query`, read page by page from the store and then memory.
    pub async fn search_log(
        &self,
        id: &JobId,
        query: &LogQuery,
        from_line: u64,
        limit: usize,
    ) -> Result<Found, StoreError> {
        let mut hits = Vec::new();
        let Some(first) = self.seq_of_line(id, from_line.max(1)).await? else {
            return Ok(Found { hits, more: false });
        };
        let mut since = first - 1;
        loop {
            let page = match query.needle() {
                Some(needle) => {
                    self.log_events_containing(id, since, SCAN_PAGE, needle)
                        .await?
                }
                None => self.log_events(id, since, SCAN_PAGE).await?,
            };
            let Some(last) = page.last().map(|e| e.seq) else {
                return Ok(Found { hits, more: false });
            };
            for event in &page {
                let Some(line) = event.line else { continue };
                let Ok(payload) = serde_json::from_str::<LogPayload<'_>>(&event.payload) else {
                    tracing::warn!(job_id = %id, seq = event.seq, "a stored log line is not a log payload");
                    continue;
                };
                let text = plain_text(&payload.message);
                let Some((start, end)) = query.find(&text) else {
                    continue;
                };
                if hits.len() == limit {
                    return Ok(Found { hits, more: true });
                }
                hits.push(Hit {
                    line,
                    seq: event.seq,
                    stream: payload.stream.into_owned(),
                    snippet: snippet(&text, start, end),
                });
            }
            if page.len() < SCAN_PAGE {
                return Ok(Found { hits, more: false });
            }
            since = last;
            // Other requests get their turn between pages of a long scan.
            tokio::task::yield_now().await;
        }
    }
}

/// At most [`SNIPPET_CHARS`] characters of `text` around the match `start..end`,
/// with `…` where it was cut.
fn snippet(text: &str, start: usize, end: usize) -> String {
    if text.chars().count() <= SNIPPET_CHARS {
        return text.to_owned();
    }
    let before = text[..start].chars().count();
    let matched = text[start..end].chars().count();
    let lead = SNIPPET_CHARS.saturating_sub(matched.min(SNIPPET_CHARS)) / 3;
    let skip = before.saturating_sub(lead);
    let mut out = String::new();
    if skip > 0 {
        out.push('…');
    }
    out.extend(text.chars().skip(skip).take(SNIPPET_CHARS));
    if skip + SNIPPET_CHARS < text.chars().count() {
        out.push('…');
    }
    out
}

/// The text of a line as a terminal shows it (and the dashboard searches it):
/// what follows the last carriage return, without escape sequences (CSI, OSC,
/// DCS, APC, PM, two-character ones) or other control characters but tab.
pub fn plain_text(raw: &str) -> std::borrow::Cow<'_, str> {
    let trimmed = raw.trim_end_matches('\r');
    let s = trimmed.rfind('\r').map_or(trimmed, |k| &trimmed[k + 1..]);
    let needs_work = |c: char| (c < ' ' && c != '\t') || c == '\x7f';
    if !s.contains(needs_work) {
        return std::borrow::Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == 0x1b {
            match bytes.get(i + 1) {
                Some(b'[') => {
                    let mut j = i + 2;
                    while j < bytes.len() && (0x30..=0x3f).contains(&bytes[j]) {
                        j += 1;
                    }
                    while j < bytes.len() && (0x20..=0x2f).contains(&bytes[j]) {
                        j += 1;
                    }
                    i = j + 1;
                }
                Some(b']' | b'P' | b'_' | b'^') => {
                    let mut j = i + 2;
                    while j < bytes.len()
                        && bytes[j] != 0x07
                        && !(bytes[j] == 0x1b && bytes.get(j + 1) == Some(&b'\\'))
                    {
                        j += 1;
                    }
                    i = if j >= bytes.len() {
                        j
                    } else if bytes[j] == 0x07 {
                        j + 1
                    } else {
                        j + 2
                    };
                }
                None => i += 1,
                // A two-character escape (its second character may be multibyte).
                Some(_) => {
                    i += 1;
                    let width = s[i..].chars().next().map_or(1, char::len_utf8);
                    i += width;
                }
            }
            continue;
        }
        if (c < 0x20 && c != b'\t') || c == 0x7f {
            i += 1;
            continue;
        }
        // Copy up to the next byte that needs a look.
        let run = bytes[i..]
            .iter()
            .position(|&b| b == 0x1b || (b < 0x20 && b != b'\t') || b == 0x7f)
            .map_or(bytes.len(), |k| i + k);
        out.push_str(&s[i..run]);
        i = run;
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_what_a_terminal_shows() {
        assert_eq!(plain_text("plain"), "plain");
        assert_eq!(plain_text("\x1b[1;31mERROR\x1b[0m: boom"), "ERROR: boom");
        assert_eq!(plain_text("50%\r100%\r"), "100%");
        assert_eq!(plain_text("a\x1b]0;title\x07b\x08c\x7f"), "abc");
        assert_eq!(plain_text("tab\there"), "tab\there");
        // Two-character escapes, as the dashboard reads them.
        assert_eq!(plain_text("é\x1b7ü"), "éü");
        assert_eq!(plain_text("a\x1béb"), "ab");
        // A CSI cut short, an ESC at the end.
        assert_eq!(plain_text("x\x1b[12"), "x");
        assert_eq!(plain_text("x\x1b"), "x");
    }

    #[test]
    fn a_plain_query_ignores_case_and_gives_the_original_range() {
        let q = LogQuery::parse("Error", false).unwrap();
        assert_eq!(q.find("an ERROR here"), Some((3, 8)));
        assert_eq!(q.find("nothing"), None);
        let q = LogQuery::parse("straße", false).unwrap();
        let text = "Ä STRASSE Straße";
        let (a, b) = q.find(text).unwrap();
        assert_eq!(&text[a..b], "Straße");
    }

    #[test]
    fn queries_are_checked() {
        assert_eq!(LogQuery::parse("", false).unwrap_err(), QueryError::Empty);
        assert_eq!(
            LogQuery::parse(&"x".repeat(MAX_QUERY + 1), true).unwrap_err(),
            QueryError::TooLong
        );
        assert!(matches!(
            LogQuery::parse("(unclosed", true).unwrap_err(),
            QueryError::Regex(_)
        ));
        // Too big once compiled.
        assert!(matches!(
            LogQuery::parse(r"\w{1000}\w{1000}\w{1000}", true).unwrap_err(),
            QueryError::Regex(_)
        ));
        let q = LogQuery::parse(r"line \d{3}$", true).unwrap();
        assert_eq!(q.find("a line 123"), Some((2, 10)));
        assert_eq!(q.find("a LINE 123"), None);
    }

    #[test]
    fn a_snippet_keeps_the_match_and_says_where_it_was_cut() {
        let long = format!("{}needle{}", "a".repeat(500), "b".repeat(500));
        let s = snippet(&long, 500, 506);
        assert!(s.contains("needle"), "{s}");
        assert!(s.starts_with('…') && s.ends_with('…'), "{s}");
        assert_eq!(s.chars().count(), SNIPPET_CHARS + 2);
        assert_eq!(snippet("short", 0, 5), "short");
    }
}
