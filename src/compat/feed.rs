//! A job's recorded events for a gateway, in `seq` order, read with a
//! [`Follower`] exactly as the HTTP streams read them ([`crate::tap`]): history
//! first, then live under the job's lock, so no event is missed or repeated; a
//! queue that overflows goes back to history. Events come in batches of those
//! ready at once, parsed back into their payloads for the translators.

use std::sync::Arc;

use serde::Deserialize;

use crate::job::JobId;
use crate::journal::RecordedEvent;
use crate::state::AppState;
use crate::store::StoreError;
use crate::tap::Follower;
use crate::wire::EventPayload;

/// Events handed out at most per batch.
const BATCH: usize = 256;

/// One job's events from a position, then live, until its `job:completed`.
pub struct JobFeed {
    follower: Follower,
}

impl JobFeed {
    /// Job `id`'s events after seq `since`.
    pub fn new(state: &AppState, id: JobId, since: u64) -> Self {
        Self {
            follower: Follower::new(state.journal.clone(), state.taps.clone(), id, since, true),
        }
    }

    /// Job `id`, not known on this node yet, from its first event.
    pub fn pending(state: &AppState, id: JobId) -> Self {
        Self {
            follower: Follower::pending(state.journal.clone(), state.taps.clone(), id),
        }
    }

    /// The next events (at least one), or `None` after the job's last.
    /// Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<Vec<EventPayload>>, StoreError> {
        let Some(first) = self.follower.next().await? else {
            return Ok(None);
        };
        let mut batch = vec![parse(&first)?];
        while batch.len() < BATCH {
            let Some(event) = self.follower.ready() else {
                break;
            };
            batch.push(parse(&event)?);
        }
        Ok(Some(batch))
    }
}

/// A recorded event's payload.
pub fn parse(event: &Arc<RecordedEvent>) -> Result<EventPayload, StoreError> {
    EventPayload::from_json(event.kind, event.json.get())
        .map_err(|e| StoreError::Corrupt(format!("event {}: {e}", event.seq)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobRef {
    job_id: JobId,
}

/// The job a recorded event belongs to.
pub fn job_of(event: &RecordedEvent) -> Option<JobId> {
    serde_json::from_str::<JobRef>(event.json.get())
        .ok()
        .map(|r| r.job_id)
}

/// The step names of the server pipeline `name`, if the server has one by that
/// name (a worker's job names no server pipeline).
pub fn pipeline_steps(state: &AppState, name: &str) -> Option<Vec<String>> {
    state.runner.pipelines().get(name).map(|p| {
        p.steps
            .iter()
            .filter(|s| s.script.is_some())
            .map(|s| s.name.to_owned())
            .collect()
    })
}
