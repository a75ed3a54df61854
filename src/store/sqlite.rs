//! The embedded default store: one SQLite file, `buildcast.db` in `DATA_DIR`.
//!
//! WAL mode lets readers run beside the single writer. Schema changes are the
//! numbered files in `migrations/`, applied at open by rusqlite_migration.
//! Readers borrow connections from a small pool so that a replay does not pay for
//! opening the database.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, Row, params};
use rusqlite_migration::{M, Migrations};
use time::OffsetDateTime;

use super::{JobFilter, Store, StoreError, StoredEvent, WriteOp};
use crate::job::EventKind;
use crate::job::{JobId, JobRecord, Phase, ProjectId, Status};

/// The schema, one entry per file in `migrations/`, applied in order.
const MIGRATION_STEPS: &[M<'static>] = &[
    M::up(include_str!("../../migrations/0001_init.sql")),
    M::up(include_str!("../../migrations/0002_job_node.sql")),
    M::up(include_str!("../../migrations/0003_event_line.sql")),
];

fn migrations() -> Migrations<'static> {
    Migrations::from_slice(MIGRATION_STEPS)
}

/// Idle reader connections kept for reuse.
const READER_POOL: usize = 8;

/// A SQLite database file holding jobs and their events.
pub struct SqliteStore {
    path: PathBuf,
    /// The writer's connection; only the writer thread locks it.
    writer: Mutex<Connection>,
    /// Reader connections not in use right now.
    readers: Mutex<Vec<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) `buildcast.db` in `dir` and brings its schema up to date.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("buildcast.db");
        let mut conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations().to_latest(&mut conn)?;
        Ok(Self {
            path,
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
        })
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.readers.lock().expect("reader pool").pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = Connection::open(&self.path)?;
                conn.busy_timeout(std::time::Duration::from_secs(5))?;
                conn
            }
        };
        let result = f(&conn);
        let mut pool = self.readers.lock().expect("reader pool");
        if pool.len() < READER_POOL {
            pool.push(conn);
        }
        result
    }
}

/// SQLite integers are signed; sequence numbers never come near the limit.
fn seq_in(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn seq_out(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_millis(ms: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {ms}: {e}")))
}

fn kind_from(name: &str) -> Result<EventKind, StoreError> {
    EventKind::from_name(name).ok_or_else(|| StoreError::Corrupt(format!("event kind {name:?}")))
}

const JOB_COLUMNS: &str = "id, project_id, pipeline, status, phase, progress, message, \
     created_at, started_at, finished_at, artifacts, last_seq, epoch, node";

fn job_from_row(row: &Row<'_>) -> Result<JobRecord, StoreError> {
    let text = |i: usize| -> Result<String, StoreError> { Ok(row.get::<_, String>(i)?) };
    let corrupt = |what: &str, v: &str| StoreError::Corrupt(format!("{what} {v:?}"));
    let id = text(0)?;
    let project = text(1)?;
    let status = text(3)?;
    let phase = text(4)?;
    let artifacts = text(10)?;
    Ok(JobRecord {
        id: JobId::parse(&id).map_err(|_| corrupt("job id", &id))?,
        project_id: ProjectId::parse(&project).map_err(|_| corrupt("project id", &project))?,
        pipeline: text(2)?,
        status: status
            .parse::<Status>()
            .ok()
            .ok_or_else(|| corrupt("status", &status))?,
        phase: phase
            .parse::<Phase>()
            .ok()
            .ok_or_else(|| corrupt("phase", &phase))?,
        progress: row.get(5)?,
        message: text(6)?,
        created_at: from_millis(row.get(7)?)?,
        started_at: row.get::<_, Option<i64>>(8)?.map(from_millis).transpose()?,
        finished_at: row.get::<_, Option<i64>>(9)?.map(from_millis).transpose()?,
        artifacts: serde_json::from_str(&artifacts)
            .map_err(|_| corrupt("artifacts", &artifacts))?,
        last_seq: seq_out(row.get(11)?),
        epoch: text(12)?,
        node: text(13)?,
    })
}

fn collect_jobs(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<JobRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut jobs = Vec::new();
    while let Some(row) = rows.next()? {
        jobs.push(job_from_row(row)?);
    }
    Ok(jobs)
}

fn collect_events(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        events.push(StoredEvent {
            seq: seq_out(row.get(0)?),
            kind: kind_from(&row.get::<_, String>(1)?)?,
            payload: row.get(2)?,
            line: row.get::<_, Option<i64>>(3)?.map(seq_out),
        });
    }
    Ok(events)
}

impl Store for SqliteStore {
    fn write_batch(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
        let mut conn = self.writer.lock().expect("writer connection");
        let tx = conn.transaction()?;
        {
            let mut upsert_job = tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO jobs ({JOB_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ))?;
            let mut put_event = tx.prepare_cached(
                "INSERT OR REPLACE INTO events (job_id, seq, kind, payload, line, escaped) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut delete_logs = tx.prepare_cached(
                "DELETE FROM events WHERE job_id = ?1 AND seq BETWEEN ?2 AND ?3 AND kind = 'log'",
            )?;
            let mut delete_events = tx.prepare_cached("DELETE FROM events WHERE job_id = ?1")?;
            let mut delete_job = tx.prepare_cached("DELETE FROM jobs WHERE id = ?1")?;
            for op in ops {
                match op {
                    WriteOp::UpsertJob(job) => {
                        let artifacts = serde_json::to_string(&job.artifacts)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        upsert_job.execute(params![
                            job.id.as_str(),
                            job.project_id.as_str(),
                            job.pipeline,
                            job.status.as_str(),
                            job.phase.as_str(),
                            job.progress,
                            job.message,
                            millis(job.created_at),
                            job.started_at.map(millis),
                            job.finished_at.map(millis),
                            artifacts,
                            seq_in(job.last_seq),
                            job.epoch,
                            job.node,
                        ])?;
                    }
                    WriteOp::PutEvent { job_id, event, .. } => {
                        put_event.execute(params![
                            job_id.as_str(),
                            seq_in(event.seq),
                            event.kind.name(),
                            event.payload,
                            event.line.map(seq_in),
                            event.kind == EventKind::Log && escaped(&event.payload),
                        ])?;
                    }
                    WriteOp::DeleteLogRange { job_id, from, to } => {
                        delete_logs.execute(params![
                            job_id.as_str(),
                            seq_in(*from),
                            seq_in(*to)
                        ])?;
                    }
                    WriteOp::DeleteJob(job_id) => {
                        delete_events.execute(params![job_id.as_str()])?;
                        delete_job.execute(params![job_id.as_str()])?;
                    }
                    WriteOp::Flush(_) | WriteOp::Stop => {}
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?;
            let row = stmt
                .query_row(params![id.as_str()], |row| Ok(job_from_row(row)))
                .optional()?;
            row.transpose()
        })
    }

    fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        let finished = match filter.active {
            None => "",
            Some(true) => " AND finished_at IS NULL",
            Some(false) => " AND finished_at IS NOT NULL",
        };
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL OR project_id = ?1){finished} \
             ORDER BY created_at DESC, id DESC LIMIT ?2"
        );
        let project = filter.project_id.as_ref().map(|p| p.as_str().to_owned());
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        self.read(|conn| collect_jobs(conn, &sql, params![project, limit]))
    }

    fn events(&self, id: &JobId, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            collect_events(
                conn,
                "SELECT seq, kind, payload, line FROM events WHERE job_id = ?1 AND seq > ?2 \
                 ORDER BY seq LIMIT ?3",
                params![id.as_str(), seq_in(after), limit],
            )
        })
    }

    fn log_events(
        &self,
        id: &JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            collect_events(
                conn,
                "SELECT seq, kind, payload, line FROM events WHERE job_id = ?1 AND seq > ?2 \
                 AND kind = 'log' ORDER BY seq LIMIT ?3",
                params![id.as_str(), seq_in(after), limit],
            )
        })
    }

    fn log_events_containing(
        &self,
        id: &JobId,
        after: u64,
        limit: usize,
        needle: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let pattern = like_pattern(needle);
        // Lines whose payload holds an escape (`escaped`) may show a text that
        // holds `needle` where the payload does not: they always go to the caller.
        self.read(|conn| {
            collect_events(
                conn,
                "SELECT seq, kind, payload, line FROM events WHERE job_id = ?1 AND seq > ?2 \
                 AND kind = 'log' AND (escaped OR payload LIKE ?3 ESCAPE '\\') \
                 ORDER BY seq LIMIT ?4",
                params![id.as_str(), seq_in(after), pattern, limit],
            )
        })
    }

    fn seq_of_line(&self, id: &JobId, line: u64) -> Result<Option<u64>, StoreError> {
        self.read(|conn| {
            // Line numbers grow with seq: a binary search over seq, each step one
            // look-up in the primary key, instead of an index on line numbers
            // that every write would pay for.
            let mut first_from = conn.prepare_cached(
                "SELECT seq, line FROM events WHERE job_id = ?1 AND seq >= ?2 \
                 AND line IS NOT NULL ORDER BY seq LIMIT 1",
            )?;
            let mut probe = |from: u64| -> Result<Option<(u64, u64)>, StoreError> {
                Ok(first_from
                    .query_row(params![id.as_str(), seq_in(from)], |row| {
                        Ok((seq_out(row.get(0)?), seq_out(row.get(1)?)))
                    })
                    .optional()?)
            };
            let mut max =
                conn.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id = ?1")?;
            let max_seq: u64 = seq_out(max.query_row(params![id.as_str()], |row| row.get(0))?);
            // The first seq whose next log line is numbered `line` or later.
            let (mut lo, mut hi) = (1u64, max_seq + 1);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                match probe(mid)? {
                    Some((seq, number)) if number < line => lo = seq + 1,
                    _ => hi = mid,
                }
            }
            Ok(probe(lo)?.map(|(seq, _)| seq))
        })
    }

    fn last_line(&self, id: &JobId) -> Result<u64, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT line FROM events WHERE job_id = ?1 AND line IS NOT NULL \
                 ORDER BY seq DESC LIMIT 1",
            )?;
            Ok(stmt
                .query_row(params![id.as_str()], |row| row.get::<_, i64>(0))
                .optional()?
                .map_or(0, seq_out))
        })
    }

    fn max_seq(&self, id: &JobId) -> Result<u64, StoreError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id = ?1")?;
            Ok(seq_out(
                stmt.query_row(params![id.as_str()], |row| row.get(0))?,
            ))
        })
    }

    fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.read(|conn| {
            collect_jobs(
                conn,
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE finished_at IS NULL ORDER BY created_at"
                ),
                [],
            )
        })
    }

    fn finished_before(&self, before: OffsetDateTime) -> Result<Vec<JobId>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?1",
            )?;
            let ids = stmt
                .query_map(params![millis(before)], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            ids.iter()
                .map(|id| {
                    JobId::parse(id).map_err(|_| StoreError::Corrupt(format!("job id {id:?}")))
                })
                .collect()
        })
    }
}

/// Whether a payload holds a backslash (JSON's escapes) or DEL: see the
/// `escaped` column in `migrations/0003_event_line.sql`.
fn escaped(payload: &str) -> bool {
    // `<[u8]>::contains` is the standard library's memchr: cheap on the writer
    // thread even in a debug build.
    let bytes = payload.as_bytes();
    bytes.contains(&b'\\') || bytes.contains(&0x7f)
}

/// A LIKE pattern (escape character `\`) matching payloads that hold `needle` as
/// JSON writes it inside a string.
fn like_pattern(needle: &str) -> String {
    let json = serde_json::to_string(needle).unwrap_or_default();
    let inner = json
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_default();
    let mut pattern = String::with_capacity(inner.len() + 2);
    pattern.push('%');
    for c in inner.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        migrations().validate().unwrap();
    }

    #[test]
    fn the_line_migration_numbers_the_logs_stored_before_it() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrations().to_version(&mut conn, 2).unwrap();
        conn.execute_batch(
            r#"INSERT INTO events (job_id, seq, kind, payload) VALUES
                 ('a', 1, 'progress', '{}'),
                 ('a', 2, 'log', '{"message":"x"}'),
                 ('b', 1, 'log', '{"message":"y"}'),
                 ('a', 3, 'log', '{"message":"say \"hi\""}'),
                 ('a', 5, 'log', '{"message":"z"}');"#,
        )
        .unwrap();

        migrations().to_latest(&mut conn).unwrap();

        let mut stmt = conn
            .prepare("SELECT job_id, seq, line, escaped FROM events ORDER BY job_id, seq")
            .unwrap();
        let rows: Vec<(String, i64, Option<i64>, bool)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let row = |job: &str, seq, line, escaped| (job.to_owned(), seq, line, escaped);
        assert_eq!(
            rows,
            [
                row("a", 1, None, false),
                row("a", 2, Some(1), false),
                row("a", 3, Some(2), true),
                row("a", 5, Some(3), false),
                row("b", 1, Some(1), false),
            ]
        );
    }

    #[test]
    fn a_data_dir_that_cannot_be_made_says_why_once() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let Err(e) = SqliteStore::open(&file.join("data")) else {
            panic!("a directory inside a file cannot be made");
        };
        let os = std::io::Error::from_raw_os_error(libc::ENOTDIR).to_string();
        let whole = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(whole.matches(&os).count(), 1, "{whole}");
        assert!(
            whole.starts_with("could not prepare the data directory"),
            "{whole}"
        );
    }
}
