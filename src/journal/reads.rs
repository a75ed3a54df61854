//! Reading jobs and history back, for REST, replays and retention: memory first
//! (live state, the window of recent or unstored events), then the store. Nothing
//! outside the journal reaches the store directly.

use std::sync::Arc;

use time::OffsetDateTime;

use super::{Dropped, Journal, LiveJob, LiveState, RecordedEvent};
use crate::job::{EventKind, JobId, JobRecord};
use crate::store::{JobFilter, StoreError, StoredEvent, WriteOp, run_blocking};

/// Which events a history read wants.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kinds {
    All,
    Logs,
    /// Log lines, of which the store may leave out those that cannot hold this.
    LogsContaining(String),
}

/// What a subscriber sees of a live job while holding its lock.
pub struct LiveView<'a> {
    pub record: &'a JobRecord,
    pub(super) state: &'a LiveState,
}

impl LiveView<'_> {
    /// The first `limit` events with `seq > since` and whether more follow, if
    /// memory still holds all of them; else the lowest seq memory holds (the rest
    /// must come from the store first).
    pub fn events_after(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<(Vec<Arc<RecordedEvent>>, bool), u64> {
        let first = self
            .state
            .window
            .front()
            .map_or(self.record.last_seq + 1, |e| e.seq());
        if since + 1 < first {
            return Err(first);
        }
        // Not an index: lines not kept for history are missing from the window.
        let skip = self.state.window.partition_point(|e| e.seq() <= since);
        let mut after = self
            .state
            .window
            .iter()
            .skip(skip)
            .filter(|e| !self.state.log.is_dropped(e.seq(), e.kind));
        let events: Vec<_> = after.by_ref().take(limit).cloned().collect();
        Ok((events, after.next().is_some()))
    }

    /// The part of the log dropped from history, if any.
    pub fn dropped(&self) -> Option<Dropped> {
        self.state.log.dropped
    }
}

impl Journal {
    /// A job's current state, from memory or the store.
    pub async fn job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        if let Some(job) = self.get_live(id) {
            return Ok(Some(job.state.lock().expect("job state").record.clone()));
        }
        let store = self.store.clone();
        let id = id.clone();
        run_blocking(move || store.job(&id)).await
    }

    /// Jobs matching `filter`, newest first, live state taking precedence.
    pub async fn jobs(&self, filter: JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        let mut live: Vec<JobRecord> = {
            let map = self.live.read().expect("journal map");
            map.values()
                .map(|j| j.state.lock().expect("job state").record.clone())
                .filter(|r| {
                    filter
                        .project_id
                        .as_ref()
                        .is_none_or(|p| *p == r.project_id)
                        && filter.active.is_none_or(|a| a != r.is_finished())
                })
                .collect()
        };
        let store = self.store.clone();
        let stored =
            run_blocking(move || store.jobs(&filter).map(|jobs| (jobs, filter.limit))).await?;
        let (stored, limit) = stored;
        let known: std::collections::HashSet<JobId> = live.iter().map(|r| r.id.clone()).collect();
        live.extend(stored.into_iter().filter(|r| !known.contains(&r.id)));
        live.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        live.truncate(limit);
        Ok(live)
    }

    /// Up to `limit` events of a job after `since`, in order: what the store holds,
    /// then what only memory holds yet. Answers at once even while the store cannot
    /// write.
    pub async fn events(
        &self,
        id: &JobId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.history(id, since, limit, Kinds::All).await
    }

    /// Like [`Journal::events`], log lines only.
    pub async fn log_events(
        &self,
        id: &JobId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.history(id, since, limit, Kinds::Logs).await
    }

    /// Like [`Journal::log_events`], but the store may leave out lines that cannot
    /// contain `needle` (ASCII case ignored): a prefilter for a search, which still
    /// checks every line it gets.
    pub async fn log_events_containing(
        &self,
        id: &JobId,
        since: u64,
        limit: usize,
        needle: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.history(id, since, limit, Kinds::LogsContaining(needle.into()))
            .await
    }

    /// The number of a job's last log line and its last seq, taken together (what
    /// a reader starting from line numbers follows on from).
    pub async fn line_total(&self, id: &JobId) -> Result<(u64, u64), StoreError> {
        if let Some(job) = self.get_live(id) {
            let state = job.state.lock().expect("job state");
            return Ok((state.lines, state.record.last_seq));
        }
        let store = self.store.clone();
        let id = id.clone();
        run_blocking(move || Ok((store.last_line(&id)?, store.max_seq(&id)?))).await
    }

    /// The seq of the first kept log line numbered `line` or later (memory, then
    /// the store), if any.
    pub async fn seq_of_line(&self, id: &JobId, line: u64) -> Result<Option<u64>, StoreError> {
        let memory = self.get_live(id).map(|job| {
            let state = job.state.lock().expect("job state");
            let mut lines = state
                .window
                .iter()
                .filter(|e| !state.log.is_dropped(e.seq(), e.kind))
                .filter_map(|e| Some((e.seq(), e.line?)));
            let first = lines.clone().next();
            let hit = lines.find(|&(_, n)| n >= line).map(|(seq, _)| seq);
            // The window holds every line from its first one on.
            (hit, first.is_some_and(|(_, n)| n <= line))
        });
        if let Some((hit, true)) = memory {
            return Ok(hit);
        }
        let store = self.store.clone();
        let key = id.clone();
        let stored = run_blocking(move || store.seq_of_line(&key, line)).await?;
        let in_memory = memory.and_then(|(hit, _)| hit);
        Ok(match (stored, in_memory) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    async fn history(
        &self,
        id: &JobId,
        mut since: u64,
        limit: usize,
        kinds: Kinds,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let wanted = |kind: EventKind| kinds == Kinds::All || kind == EventKind::Log;
        let mut out = Vec::new();
        while out.len() < limit {
            let room = limit - out.len();
            let memory = self.get_live(id).map(|job| {
                let state = job.state.lock().expect("job state");
                let view = LiveView {
                    record: &state.record,
                    state: &state,
                };
                (view.events_after(since, room), view.dropped())
            });
            // Below `until` everything is committed: read it from the store.
            let (until, dropped) = match memory {
                None => (None, None),
                Some((Ok((events, more)), _)) => {
                    let last = events.last().map(|e| e.seq());
                    out.extend(
                        events
                            .iter()
                            .filter(|e| wanted(e.kind))
                            .map(|e| StoredEvent {
                                seq: e.seq(),
                                kind: e.kind,
                                payload: e.json.get().to_owned(),
                                line: e.line,
                            }),
                    );
                    match last {
                        Some(last) if more => {
                            since = last;
                            continue;
                        }
                        _ => return Ok(out),
                    }
                }
                Some((Err(first), dropped)) => (Some(first), dropped),
            };
            let store = self.store.clone();
            let key = id.clone();
            let which = kinds.clone();
            let page = run_blocking(move || match which {
                Kinds::All => store.events(&key, since, room),
                Kinds::Logs => store.log_events(&key, since, room),
                Kinds::LogsContaining(needle) => {
                    store.log_events_containing(&key, since, room, &needle)
                }
            })
            .await?;
            let read = page.len();
            let below: Vec<StoredEvent> = page
                .into_iter()
                .take_while(|e| until.is_none_or(|u| e.seq < u))
                .collect();
            let short = below.len() < read || read < room;
            since = below.last().map_or(since, |e| e.seq);
            // A cut whose deletion is not committed yet is not history any more.
            out.extend(below.into_iter().filter(|e| {
                !(e.kind == EventKind::Log
                    && dropped.is_some_and(|d| d.first_seq <= e.seq && e.seq <= d.last_seq))
            }));
            match until {
                None if short => return Ok(out),
                // The store holds nothing more below the window: go on from it.
                Some(first) if short => since = since.max(first - 1),
                _ => {}
            }
        }
        Ok(out)
    }

    /// A job's stored record, read from the store only (a job out of memory).
    pub async fn stored_job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        let store = self.store.clone();
        let id = id.clone();
        run_blocking(move || store.job(&id)).await
    }

    /// Up to `limit` stored events of a job after `since`, in order, from the store
    /// only (a replay of what memory no longer holds).
    pub async fn stored_events(
        &self,
        id: &JobId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let store = self.store.clone();
        let id = id.clone();
        run_blocking(move || store.events(&id, since, limit)).await
    }

    /// Deletes the jobs that finished before `before`, with their history, from
    /// memory and the store; returns their ids once the deletions are committed.
    pub async fn delete_finished_before(
        &self,
        before: OffsetDateTime,
    ) -> Result<Vec<JobId>, StoreError> {
        let store = self.store.clone();
        let expired = run_blocking(move || store.finished_before(before)).await?;
        for id in &expired {
            self.writer.send(WriteOp::DeleteJob(id.clone()));
            self.forget(id);
        }
        self.writer.flush().await;
        Ok(expired)
    }

    /// Ids of jobs in memory that have not finished.
    pub fn unfinished(&self) -> Vec<JobId> {
        self.unfinished_where(|_| true)
    }

    pub(super) fn unfinished_where(&self, keep: impl Fn(&LiveJob) -> bool) -> Vec<JobId> {
        self.live
            .read()
            .expect("journal map")
            .iter()
            .filter(|(_, job)| {
                keep(job)
                    && job
                        .state
                        .lock()
                        .expect("job state")
                        .record
                        .finished_at
                        .is_none()
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Drops a finished job from memory (retention deleted it from the store).
    pub fn forget(&self, id: &JobId) {
        let mut live = self.live.write().expect("journal map");
        let finished = live
            .get(id)
            .is_some_and(|j| j.state.lock().expect("job state").record.is_finished());
        if finished {
            live.remove(id);
        }
    }

    /// Runs `f` on a job's state with its lock held (no event of it can be
    /// recorded meanwhile), without touching the sinks. `None` if the job is not
    /// in memory.
    pub fn with_record_locked<R>(&self, id: &JobId, f: impl FnOnce(&JobRecord) -> R) -> Option<R> {
        let job = self.get_live(id)?;
        let state = job.state.lock().expect("job state");
        Some(f(&state.record))
    }
}
