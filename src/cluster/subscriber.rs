//! The subscriber: listens to `buildcast:events` (other nodes' events, recorded
//! here as mirrors), `buildcast:cancel` and the workers' `job:*:updates`
//! channels, reconnecting with backoff. A mirror that sees a gap fills it from the
//! job's Redis stream; after a reconnect every unfinished mirror is caught up from
//! its stream.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::{CANCELS, Cluster, EVENTS, Envelope, Route, WORKER_CHANNELS, history_key, job_key};
use crate::ingest::parse_event;
use crate::job::{EventKind, JobId, JobRecord, ProjectId};
use crate::journal::Mirrored;
use crate::wire::EventPayload;

impl Cluster {
    /// Listens to other nodes' events and to workers, reconnecting with backoff.
    pub(super) async fn subscribe(self: Arc<Self>, stop: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        loop {
            let connected = async {
                let mut pubsub =
                    tokio::time::timeout(Duration::from_secs(2), self.client.get_async_pubsub())
                        .await
                        .map_err(|_| {
                            redis::RedisError::from((redis::ErrorKind::Io, "connect timed out"))
                        })??;
                pubsub.subscribe(EVENTS).await?;
                pubsub.subscribe(CANCELS).await?;
                pubsub.psubscribe(WORKER_CHANNELS).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub = tokio::select! {
                r = connected => r,
                () = stop.cancelled() => return,
            };
            match pubsub {
                Ok(mut pubsub) => {
                    self.mark(true);
                    delay = Duration::from_millis(100);
                    // Anything missed while away is fetched from the streams.
                    self.resync().await;
                    let mut messages = pubsub.on_message();
                    loop {
                        let message = tokio::select! {
                            m = messages.next() => m,
                            () = stop.cancelled() => return,
                        };
                        let Some(message) = message else { break };
                        self.on_message(&message).await;
                    }
                    self.mark(false);
                }
                Err(e) => {
                    self.mark(false);
                    tracing::debug!(error = %e, "cannot subscribe to redis; retrying");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn on_message(&self, message: &redis::Msg) {
        let channel = message.get_channel_name();
        let Ok(text) = message.get_payload::<String>() else {
            return;
        };
        if channel == EVENTS {
            match serde_json::from_str::<Envelope>(&text) {
                Ok(envelope) if envelope.node != self.node => self.mirror(envelope).await,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed cluster event"),
            }
        } else if channel == CANCELS {
            if let Ok(id) = JobId::parse(&text)
                && self.journal.is_mirrored(&id) == Some(false)
            {
                match self.runner.cancel(&id).await {
                    Ok(()) => tracing::info!(job_id = %id, "cancelled at another node's request"),
                    Err(e) => {
                        tracing::info!(job_id = %id, error = %e, "cannot cancel at another node's request")
                    }
                }
            }
        } else if let Some(id) = channel
            .strip_prefix("job:")
            .and_then(|rest| rest.strip_suffix(":updates"))
        {
            self.on_worker_message(id, &text).await;
        }
    }

    /// Records another node's event, filling any gap from its stream first.
    async fn mirror(&self, envelope: Envelope) {
        let Some(kind) = EventKind::from_name(&envelope.kind) else {
            return;
        };
        let payload = match EventPayload::from_json(kind, envelope.payload.get()) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a cluster event with a bad payload");
                return;
            }
        };
        let id = envelope.job_id;
        if !self.ensure_mirror(&id, &envelope.node).await {
            return;
        }
        for _ in 0..2 {
            match self.journal.record_mirrored(&id, payload.clone()) {
                Ok(Mirrored::Recorded | Mirrored::Duplicate) => return,
                Ok(Mirrored::Gap { expected }) => {
                    self.backfill(&id, expected, payload.seq() - 1).await;
                }
                Err(e) => {
                    tracing::warn!(job_id = %id, error = %e, "cannot mirror an event");
                    return;
                }
            }
        }
        tracing::warn!(job_id = %id, seq = payload.seq(), "events before this one could not be fetched from redis");
    }

    /// Makes sure a mirror of `id` is in memory; false if the job is this node's
    /// own or already finished here.
    async fn ensure_mirror(&self, id: &JobId, owner: &str) -> bool {
        if let Some(mirrored) = self.journal.is_mirrored(id) {
            return mirrored;
        }
        if let Ok(Some(job)) = self.journal.job(id).await {
            if job.is_finished() || job.node == self.node {
                return false;
            }
            return self.journal.create_mirrored(job).is_ok()
                || self.journal.is_mirrored(id) == Some(true);
        }
        let meta: std::collections::HashMap<String, String> = match self.conn().await {
            Ok(mut conn) => match conn.hgetall(job_key(id)).await {
                Ok(meta) => meta,
                Err(e) => {
                    tracing::warn!(job_id = %id, error = %e, "could not read this job's record from redis");
                    return false;
                }
            },
            Err(e) => {
                tracing::warn!(job_id = %id, error = %e, "redis is unreachable; cannot mirror this job yet");
                return false;
            }
        };
        let Some(project) = meta.get("project").and_then(|p| ProjectId::parse(p).ok()) else {
            tracing::warn!(job_id = %id, "no record of this job in redis; cannot mirror it");
            return false;
        };
        let mut record = JobRecord::queued(
            id.clone(),
            project,
            meta.get("pipeline")
                .cloned()
                .unwrap_or_else(|| "external".into()),
        );
        if let Some(epoch) = meta.get("epoch") {
            record.epoch.clone_from(epoch);
        }
        if let Some(created) = meta
            .get("created")
            .and_then(|c| c.parse::<i128>().ok())
            .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).ok())
        {
            record.created_at = created;
        }
        record.node = owner.to_owned();
        record.message = String::new();
        self.journal.create_mirrored(record).is_ok() || self.journal.is_mirrored(id) == Some(true)
    }

    /// Records the events `from..=to` of a mirrored job from its Redis stream.
    async fn backfill(&self, id: &JobId, from: u64, to: u64) {
        crate::metrics::gap_filled();
        let Ok(mut conn) = self.conn().await else {
            return;
        };
        let reply: redis::RedisResult<redis::streams::StreamRangeReply> =
            conn.xrange_all(history_key(id)).await;
        let Ok(reply) = reply else {
            return;
        };
        let mut events: Vec<EventPayload> = reply
            .ids
            .iter()
            .filter_map(|entry| entry.get::<String>("e"))
            .filter_map(|text| serde_json::from_str::<Envelope>(&text).ok())
            .filter(|e| (from..=to).contains(&e.seq))
            .filter_map(|e| {
                EventPayload::from_json(EventKind::from_name(&e.kind)?, e.payload.get()).ok()
            })
            .collect();
        events.sort_by_key(EventPayload::seq);
        events.dedup_by_key(|e| e.seq());
        for payload in events {
            let seq = payload.seq();
            match self.journal.record_mirrored(id, payload) {
                Ok(Mirrored::Recorded | Mirrored::Duplicate) => {}
                Ok(Mirrored::Gap { expected }) => {
                    tracing::warn!(job_id = %id, seq, expected, "the stream lacks events before this one");
                    return;
                }
                Err(e) => {
                    tracing::warn!(job_id = %id, seq, error = %e, "cannot mirror an event from the stream");
                    return;
                }
            }
        }
    }

    /// After a reconnect: catches every unfinished mirror up from its stream.
    async fn resync(&self) {
        for id in self.journal.mirrored_unfinished() {
            let Some(last) = self.journal.with_live(&id, |view| view.record.last_seq) else {
                continue;
            };
            self.backfill(&id, last + 1, u64::MAX).await;
        }
    }

    /// Ingests a worker's message from Redis if this node owns (or claims) the job.
    async fn on_worker_message(&self, raw_id: &str, text: &str) {
        let reject = |why: String| {
            self.health
                .rejected_worker_messages
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(job_id = %raw_id.chars().take(128).collect::<String>(), reason = %why, "rejected a worker message from redis");
        };
        let Ok(id) = JobId::parse(raw_id) else {
            return reject("invalid job id in the channel name".into());
        };
        let event = match serde_json::from_str(text)
            .map_err(|e| e.to_string())
            .and_then(|v| parse_event(&v))
        {
            Ok(event) => event,
            Err(why) => return reject(why),
        };
        if self.route(&id).await == Route::Elsewhere {
            return;
        }
        if let Err(e) = self
            .ingestor
            .apply(
                &id,
                std::slice::from_ref(&event),
                crate::ingest::Source::Redis,
            )
            .await
        {
            reject(e.to_string());
        }
    }
}
