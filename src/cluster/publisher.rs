//! The publisher: this node's own events, to Redis. The journal hands every event
//! of a job this node numbers to `Publisher` (its second sink); a task sends
//! them in pipelined batches to the job's stream `buildcast:history:<id>` and the
//! `buildcast:events` channel, retrying with backoff while Redis is away.
//!
//! **The queue is bounded** (`REDIS_PUBLISH_QUEUE` events), so a long Redis outage
//! under a busy build cannot grow memory without limit. Past the bound nothing is
//! lost: the job whose event found the queue full stops being queued at all and
//! is marked *overflowed from seq N*. Its events are still recorded by the
//! journal, so once the queue has drained (Redis is back) the publisher reads the
//! job's events from N on back from the journal (window, then store) and
//! publishes them, in order, to the same stream and channel; when it has caught
//! up, under the job's lock, the job is queued normally again. Other nodes'
//! mirrors thus see every seq in order, as they would have without the outage
//! (a mirror that saw a gap meanwhile fills it from the stream, which gets the
//! same events). The one exception is lines the journal itself did not keep
//! (`MAX_UNSTORED_BYTES` on a full disk), which cannot be read back.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use super::{BATCH, Cluster, EVENTS, Envelope, history_key, job_key, owner_key};
use crate::job::{EventKind, JobId, JobRecord};
use crate::journal::{EventSink, RecordedEvent};
use crate::store::StoredEvent;

/// How long a stopping node keeps trying to publish what it has left.
const STOP_FLUSH: Duration = Duration::from_secs(3);

/// What the owner publishes: the event, and the job's identity on its first event.
pub(super) struct Outgoing {
    envelope: String,
    job_id: JobId,
    first: Option<JobRecord>,
    last: bool,
}

impl Outgoing {
    fn new(job: &JobRecord, seq: u64, kind: EventKind, payload: Box<RawValue>) -> Option<Self> {
        let envelope = Envelope {
            node: job.node.clone(),
            job_id: job.id.clone(),
            seq,
            kind: kind.name().to_owned(),
            payload,
        };
        match serde_json::to_string(&envelope) {
            Ok(envelope) => Some(Self {
                envelope,
                job_id: job.id.clone(),
                first: (seq == 1).then(|| job.clone()),
                last: kind == EventKind::Completed,
            }),
            Err(e) => {
                tracing::error!(job_id = %job.id, seq, error = %e, "cannot encode a cluster event");
                None
            }
        }
    }
}

/// Jobs whose events are no longer queued because the queue was full, with the
/// first seq not published yet.
type Overflowed = Arc<Mutex<HashMap<JobId, u64>>>;

/// The journal's second sink: queues this node's own events for Redis. Never blocks.
pub(super) struct Publisher {
    tx: mpsc::Sender<Outgoing>,
    cluster: Weak<Cluster>,
    overflowed: Overflowed,
}

impl Publisher {
    /// The sink and the receiving end of its queue of `capacity` events.
    pub(super) fn new(
        cluster: &Arc<Cluster>,
        capacity: usize,
    ) -> (Self, mpsc::Receiver<Outgoing>, Overflowed) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let overflowed = Overflowed::default();
        let publisher = Self {
            tx,
            cluster: Arc::downgrade(cluster),
            overflowed: overflowed.clone(),
        };
        (publisher, rx, overflowed)
    }
}

impl EventSink for Publisher {
    fn deliver(&self, job: &JobRecord, event: &Arc<RecordedEvent>) {
        let mut overflowed = self.overflowed.lock().expect("overflowed jobs");
        if overflowed.contains_key(&job.id) {
            // Published from the journal once the queue has room.
            return;
        }
        let Some(out) = Outgoing::new(job, event.seq(), event.kind, event.json.clone()) else {
            return;
        };
        match self.tx.try_send(out) {
            Ok(()) => {
                if let Some(cluster) = self.cluster.upgrade() {
                    cluster.health.backlog.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(TrySendError::Full(_)) => {
                tracing::warn!(job_id = %job.id, seq = event.seq(), "cluster publish queue is full; this job's events will be published from history once redis is back");
                overflowed.insert(job.id.clone(), event.seq());
            }
            Err(TrySendError::Closed(_)) => {
                tracing::debug!(job_id = %job.id, seq = event.seq(), "the node is stopping; not publishing");
            }
        }
    }
}

impl Cluster {
    /// Sends queued events in pipelined batches, retrying with backoff; between
    /// batches, once the queue is empty, publishes overflowed jobs from history.
    pub(super) async fn publish(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Outgoing>,
        overflowed: Overflowed,
        stop: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            if rx.is_empty() && !overflowed.lock().expect("overflowed jobs").is_empty() {
                self.publish_overflowed(&overflowed, &stop).await;
            }
            let received = tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => n,
                () = stop.cancelled() => {
                    // Publish what is left, briefly, then stop.
                    rx.close();
                    while rx.recv_many(&mut batch, BATCH).await > 0 {}
                    let last = async {
                        self.send(&batch).await?;
                        self.publish_overflowed(&overflowed, &CancellationToken::new()).await;
                        Ok::<_, redis::RedisError>(())
                    };
                    match tokio::time::timeout(STOP_FLUSH, last).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "could not publish the last events to redis"),
                        Err(_) => tracing::warn!("redis did not take the last events in time"),
                    }
                    return;
                }
            };
            if received == 0 {
                return;
            }
            if !self.send_retrying(&batch, &stop).await {
                return;
            }
            self.health
                .backlog
                .fetch_sub(batch.len() as u64, Ordering::Relaxed);
            batch.clear();
        }
    }

    /// Sends `batch`, retrying with backoff until it is sent (true) or `stop` (false).
    async fn send_retrying(&self, batch: &[Outgoing], stop: &CancellationToken) -> bool {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.send(batch).await {
                Ok(()) => {
                    self.mark(true);
                    return true;
                }
                Err(e) => {
                    self.mark(false);
                    tracing::debug!(error = %e, events = batch.len(), "publishing to redis failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stop.cancelled() => return false,
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Publishes the events of overflowed jobs from the journal, in order, and
    /// queues each job normally again once it has caught up.
    async fn publish_overflowed(&self, overflowed: &Overflowed, stop: &CancellationToken) {
        let jobs: Vec<(JobId, u64)> = overflowed
            .lock()
            .expect("overflowed jobs")
            .iter()
            .map(|(id, from)| (id.clone(), *from))
            .collect();
        for (id, mut from) in jobs {
            let record = match self.journal.job(&id).await {
                Ok(Some(record)) => record,
                Ok(None) => {
                    overflowed.lock().expect("overflowed jobs").remove(&id);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(job_id = %id, error = %e, "cannot read an overflowed job; retrying later");
                    return;
                }
            };
            loop {
                let events = match self.journal.events(&id, from - 1, BATCH).await {
                    Ok(events) => events,
                    Err(e) => {
                        tracing::warn!(job_id = %id, error = %e, "cannot read an overflowed job's events; retrying later");
                        return;
                    }
                };
                if events.is_empty() {
                    // Caught up: queue the job normally again, unless an event was
                    // recorded since (its lock orders this against `deliver`).
                    let caught_up = self
                        .journal
                        .with_record_locked(&id, |job| {
                            let done = job.last_seq < from;
                            if done {
                                overflowed.lock().expect("overflowed jobs").remove(&id);
                            }
                            done
                        })
                        .unwrap_or_else(|| {
                            // Out of memory: finished, every event stored and read.
                            overflowed.lock().expect("overflowed jobs").remove(&id);
                            true
                        });
                    if caught_up {
                        tracing::info!(job_id = %id, "overflowed job published from history");
                        break;
                    }
                    continue;
                }
                let last = events.last().map_or(from, |e| e.seq);
                let batch: Vec<Outgoing> = events
                    .into_iter()
                    .filter_map(|e| to_outgoing(&record, e))
                    .collect();
                if !self.send_retrying(&batch, stop).await {
                    return;
                }
                from = last + 1;
                if let Some(next) = overflowed.lock().expect("overflowed jobs").get_mut(&id) {
                    *next = from;
                }
            }
        }
    }

    pub(super) async fn send(&self, batch: &[Outgoing]) -> redis::RedisResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        let ttl = i64::try_from(self.history_ttl.as_secs()).unwrap_or(i64::MAX);
        for out in batch {
            if let Some(job) = &out.first {
                let key = job_key(&job.id);
                pipe.hset_multiple(
                    &key,
                    &[
                        ("project", job.project_id.as_str().to_owned()),
                        ("pipeline", job.pipeline.clone()),
                        ("epoch", job.epoch.clone()),
                        ("node", job.node.clone()),
                        (
                            "created",
                            (job.created_at.unix_timestamp_nanos() / 1_000_000).to_string(),
                        ),
                    ],
                )
                .ignore();
                pipe.set_nx(owner_key(&job.id), &job.node).ignore();
            }
            pipe.xadd(
                history_key(&out.job_id),
                "*",
                &[("e", out.envelope.as_str())],
            )
            .ignore();
            pipe.publish(EVENTS, out.envelope.as_str()).ignore();
            if out.last {
                pipe.expire(history_key(&out.job_id), ttl).ignore();
                pipe.expire(job_key(&out.job_id), ttl).ignore();
                pipe.expire(owner_key(&out.job_id), ttl).ignore();
            }
        }
        pipe.query_async::<()>(&mut conn).await
    }
}

/// An event read back from history, ready to publish.
fn to_outgoing(job: &JobRecord, event: StoredEvent) -> Option<Outgoing> {
    let payload = match RawValue::from_string(event.payload) {
        Ok(payload) => payload,
        Err(e) => {
            tracing::error!(job_id = %job.id, seq = event.seq, error = %e, "a stored event is not JSON; not publishing it");
            return None;
        }
    };
    Outgoing::new(job, event.seq, event.kind, payload)
}
