//! Mirrors: jobs another node numbers (see [`crate::cluster`]). Their events are
//! recorded here with the owner's `seq`, never renumbered; a gap is reported so
//! that the caller fetches the missing range first.

use std::sync::Arc;

use super::payload::event_of;
use super::{Journal, Keep, RecordError};
use crate::job::{JobId, JobRecord};
use crate::store::WriteOp;
use crate::wire::EventPayload;

/// What became of an event numbered by another node.
#[derive(Debug, PartialEq, Eq)]
pub enum Mirrored {
    Recorded,
    /// Already recorded (a retried publish).
    Duplicate,
    /// Events before it are missing: fetch from `expected` first.
    Gap {
        expected: u64,
    },
}

impl Journal {
    /// Records an event numbered by another node (its `seq` must be the next one).
    pub fn record_mirrored(
        self: &Arc<Self>,
        id: &JobId,
        payload: EventPayload,
    ) -> Result<Mirrored, RecordError> {
        let job = self
            .get_live(id)
            .ok_or_else(|| RecordError::UnknownJob(id.clone()))?;
        let mut state = job.state.lock().expect("job state");
        let seq = payload.seq();
        let expected = state.record.last_seq + 1;
        if seq < expected {
            return Ok(Mirrored::Duplicate);
        }
        if seq > expected {
            return Ok(Mirrored::Gap { expected });
        }
        let (event, at) = event_of(&payload);
        state.record.last_seq = seq;
        state.record.apply(&event, at);
        self.append(id, &job, &mut state, payload, false, Keep::WithinLimits);
        drop(state);
        crate::metrics::recorded(event.kind().name(), "mirror", event.log_bytes());
        crate::metrics::mirrored((time::OffsetDateTime::now_utc() - at).try_into().ok());
        Ok(Mirrored::Recorded)
    }

    /// Adds a job that another node numbers; its events come through
    /// [`Journal::record_mirrored`].
    pub fn create_mirrored(&self, record: JobRecord) -> Result<(), RecordError> {
        let mut live = self.live.write().expect("journal map");
        if live.contains_key(&record.id) {
            return Err(RecordError::Exists(record.id));
        }
        self.writer.send(WriteOp::UpsertJob(record.clone()));
        live.insert(
            record.id.clone(),
            Arc::new(self.live_job(record, 0, 0, true)),
        );
        Ok(())
    }

    /// Whether the job is in memory, and if so whether another node numbers it.
    pub fn is_mirrored(&self, id: &JobId) -> Option<bool> {
        self.get_live(id).map(|j| j.mirrored)
    }

    /// Ids of mirrored jobs in memory that have not finished.
    pub fn mirrored_unfinished(&self) -> Vec<JobId> {
        self.unfinished_where(|job| job.mirrored)
    }
}
