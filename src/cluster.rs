//! Several nodes behind one load balancer, sharing events and history through Redis.
//!
//! Each job is numbered by exactly one node, its *owner*: the node that created it
//! (a build it runs, or the first node to claim an external job). The owner's
//! journal hands every event to the [`Publisher`], which, in one pipelined round
//! trip per batch, appends it to the job's Redis stream `buildcast:history:<id>`
//! (the shared history) and publishes it on `buildcast:events`. Every other node
//! subscribes to that channel and records the event in its own journal as a
//! *mirror*, with the owner's `seq`; from there its own fan-out and replay deliver
//! it exactly like a local event, so a client on any node gets every event once, in
//! order, and can resume with `since` anywhere. A mirror that sees a gap (it joined
//! late, or Redis was away) fills it from the stream first.
//!
//! Workers may also publish `{type, data}` messages on `job:<id>:updates`: the node
//! that wins the job's claim (`SET buildcast:owner:<id> NX`) ingests them; the others
//! get the result through `buildcast:events`.
//!
//! Redis being away never stops a node: it keeps serving its own clients, queues
//! what it must publish, reports `"redis": "down"` in `/health`, and reconnects with
//! backoff; the queue is flushed when Redis returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use crate::ingest::{Ingestor, parse_event};
use crate::job::EventKind;
use crate::job::{JobId, JobRecord, ProjectId};
use crate::journal::{EventSink, Journal, Mirrored, RecordedEvent};
use crate::runner::Runner;
use crate::tasks::Tasks;
use crate::wire::EventPayload;

/// The channel every node's events go out on.
const EVENTS: &str = "buildcast:events";
/// The channel cancel requests for another node's jobs go out on.
const CANCELS: &str = "buildcast:cancel";
/// The pattern of the channels workers publish on.
const WORKER_CHANNELS: &str = "job:*:updates";
/// Hash of live nodes and their client counts.
const NODES: &str = "buildcast:nodes";
/// A node whose heartbeat is older than this is not counted.
const NODE_STALE_MS: i128 = 15_000;
/// How often a node reports its client count.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Most events sent in one pipelined round trip.
const BATCH: usize = 512;

fn history_key(id: &JobId) -> String {
    format!("buildcast:history:{id}")
}

fn job_key(id: &JobId) -> String {
    format!("buildcast:job:{id}")
}

fn owner_key(id: &JobId) -> String {
    format!("buildcast:owner:{id}")
}

/// One event as it travels between nodes.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    node: String,
    #[serde(rename = "jobId")]
    job_id: JobId,
    seq: u64,
    kind: String,
    payload: Box<RawValue>,
}

/// What the owner publishes: the event, and the job's identity on its first event.
struct Outgoing {
    envelope: String,
    job_id: JobId,
    first: Option<JobRecord>,
    last: bool,
}

/// Counters and state shown by `/health`.
#[derive(Debug, Default)]
pub struct ClusterHealth {
    /// Whether the last talk with Redis worked.
    pub up: AtomicBool,
    /// Worker messages from Redis that were invalid (logged and dropped).
    pub rejected_worker_messages: AtomicU64,
    /// Events waiting to be published.
    pub backlog: AtomicU64,
}

/// A node's link to the others.
pub struct Cluster {
    client: redis::Client,
    node: String,
    journal: Arc<Journal>,
    ingestor: Arc<Ingestor>,
    /// To cancel this node's jobs when another node asks.
    runner: Arc<Runner>,
    history_ttl: Duration,
    /// A command connection, made when first needed and remade after failures.
    conn: Mutex<Option<ConnectionManager>>,
    pub health: ClusterHealth,
}

/// Where an external job's events are recorded.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// This node numbers the job.
    Here,
    /// Another node does: pass the events on to it.
    Elsewhere,
}

impl Cluster {
    /// Prepares the link; nothing is contacted until [`Cluster::start`].
    pub fn new(
        url: &str,
        journal: Arc<Journal>,
        ingestor: Arc<Ingestor>,
        runner: Arc<Runner>,
        history_ttl: Duration,
    ) -> redis::RedisResult<Arc<Self>> {
        Ok(Arc::new(Self {
            client: redis::Client::open(url)?,
            node: journal.node().to_owned(),
            journal,
            ingestor,
            runner,
            history_ttl,
            conn: Mutex::new(None),
            health: ClusterHealth::default(),
        }))
    }

    /// Starts publishing this node's events, mirroring the others', ingesting
    /// worker messages and reporting the client count, until `stop`.
    pub fn start(
        self: &Arc<Self>,
        clients: Arc<std::sync::atomic::AtomicUsize>,
        stop: CancellationToken,
        tasks: &Tasks,
        cluster_tasks: &tokio_util::task::TaskTracker,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.journal.set_publisher(Arc::new(Publisher {
            tx,
            health: Arc::downgrade(self),
        }));
        tasks.spawn(cluster_tasks.track_future(self.clone().publish(rx, stop.clone())));
        tasks.spawn(cluster_tasks.track_future(self.clone().subscribe(stop.clone())));
        tasks.spawn(cluster_tasks.track_future(self.clone().heartbeat(clients, stop)));
    }

    async fn conn(&self) -> redis::RedisResult<ConnectionManager> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = self
            .client
            .get_connection_manager_with_config(config)
            .await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    fn mark(&self, up: bool) {
        let was = self.health.up.swap(up, Ordering::Relaxed);
        if was != up {
            if up {
                tracing::info!("redis is reachable");
            } else {
                tracing::warn!(
                    "redis is unreachable; serving local clients, queueing cluster events"
                );
            }
        }
    }

    /// Sends queued events in pipelined batches, retrying with backoff.
    async fn publish(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<Outgoing>,
        stop: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let received = tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => n,
                () = stop.cancelled() => {
                    // Flush what is left, briefly, then stop.
                    rx.close();
                    while rx.recv_many(&mut batch, BATCH).await > 0 {}
                    if !batch.is_empty() {
                        let _ = tokio::time::timeout(Duration::from_secs(3), self.send(&batch)).await;
                    }
                    return;
                }
            };
            if received == 0 {
                return;
            }
            let mut delay = Duration::from_millis(100);
            loop {
                match self.send(&batch).await {
                    Ok(()) => {
                        self.mark(true);
                        break;
                    }
                    Err(e) => {
                        self.mark(false);
                        tracing::debug!(error = %e, events = batch.len(), "publishing to redis failed; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = stop.cancelled() => return,
                        }
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
            self.health
                .backlog
                .fetch_sub(batch.len() as u64, Ordering::Relaxed);
            batch.clear();
        }
    }

    async fn send(&self, batch: &[Outgoing]) -> redis::RedisResult<()> {
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

    /// Listens to other nodes' events and to workers, reconnecting with backoff.
    async fn subscribe(self: Arc<Self>, stop: CancellationToken) {
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
                let _ = self.runner.cancel(&id).await;
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
            Ok(mut conn) => conn.hgetall(job_key(id)).await.unwrap_or_default(),
            Err(_) => Default::default(),
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
            let _ = self.journal.record_mirrored(id, payload);
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

    /// Decides which node records an external job's events, claiming it for this
    /// node if nobody has.
    pub async fn route(&self, id: &JobId) -> Route {
        match self.journal.is_mirrored(id) {
            Some(true) => return Route::Elsewhere,
            Some(false) => return Route::Here,
            None => {}
        }
        if let Ok(Some(job)) = self.journal.job(id).await {
            return if job.node == self.node || job.node.is_empty() {
                Route::Here
            } else {
                Route::Elsewhere
            };
        }
        let ttl = self.history_ttl.as_secs();
        match self.conn().await {
            Ok(mut conn) => {
                let claimed: redis::RedisResult<bool> = redis::cmd("SET")
                    .arg(owner_key(id))
                    .arg(&self.node)
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl)
                    .query_async::<Option<String>>(&mut conn)
                    .await
                    .map(|r| r.is_some());
                match claimed {
                    Ok(true) => Route::Here,
                    Ok(false) => {
                        let owner: Option<String> = conn.get(owner_key(id)).await.ok().flatten();
                        if owner.as_deref() == Some(self.node.as_str()) {
                            Route::Here
                        } else {
                            Route::Elsewhere
                        }
                    }
                    // Redis is away: record here rather than lose the events.
                    Err(_) => Route::Here,
                }
            }
            Err(_) => Route::Here,
        }
    }

    /// Asks the node that runs job `id` to cancel it.
    pub async fn forward_cancel(&self, id: &JobId) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        conn.publish(CANCELS, id.as_str()).await
    }

    /// Passes worker messages on to the job's owner, through its worker channel.
    pub async fn forward(&self, id: &JobId, messages: &[String]) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for message in messages {
            pipe.publish(format!("job:{id}:updates"), message).ignore();
        }
        pipe.query_async::<()>(&mut conn).await
    }

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
        if let Err(e) = self.ingestor.apply(&id, std::slice::from_ref(&event)).await {
            reject(e.to_string());
        }
    }

    async fn heartbeat(
        self: Arc<Self>,
        clients: Arc<std::sync::atomic::AtomicUsize>,
        stop: CancellationToken,
    ) {
        loop {
            if let Ok(mut conn) = self.conn().await {
                let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
                let value = format!("{} {now}", clients.load(Ordering::Relaxed));
                let result: redis::RedisResult<()> = conn.hset(NODES, &self.node, value).await;
                self.mark(result.is_ok());
            } else {
                self.mark(false);
            }
            tokio::select! {
                () = tokio::time::sleep(HEARTBEAT) => {}
                () = stop.cancelled() => {
                    if let Ok(mut conn) = self.conn().await {
                        let _: redis::RedisResult<()> = conn.hdel(NODES, &self.node).await;
                    }
                    return;
                }
            }
        }
    }

    /// Clients connected to every live node (this one's counted now, the others'
    /// from their last heartbeat), if Redis answers.
    pub async fn cluster_clients(&self, here: u64) -> Option<u64> {
        let mut conn = self.conn().await.ok()?;
        let nodes: std::collections::HashMap<String, String> =
            tokio::time::timeout(Duration::from_millis(500), conn.hgetall(NODES))
                .await
                .ok()?
                .ok()?;
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        Some(
            here + nodes
                .iter()
                .filter(|(node, _)| **node != self.node)
                .filter_map(|(_, v)| v.split_once(' '))
                .filter_map(|(count, at)| {
                    Some((count.parse::<u64>().ok()?, at.parse::<i128>().ok()?))
                })
                .filter(|(_, at)| now - at < NODE_STALE_MS)
                .map(|(count, _)| count)
                .sum::<u64>(),
        )
    }
}

/// The journal's second sink: queues this node's own events for Redis. Never blocks.
struct Publisher {
    tx: mpsc::UnboundedSender<Outgoing>,
    health: std::sync::Weak<Cluster>,
}

impl EventSink for Publisher {
    fn deliver(&self, job: &JobRecord, event: &Arc<RecordedEvent>) {
        let payload = event.json.clone();
        let envelope = Envelope {
            node: job.node.clone(),
            job_id: job.id.clone(),
            seq: event.seq(),
            kind: event.kind.name().to_owned(),
            payload,
        };
        let Ok(envelope) = serde_json::to_string(&envelope) else {
            return;
        };
        if let Some(cluster) = self.health.upgrade() {
            cluster.health.backlog.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.tx.send(Outgoing {
            envelope,
            job_id: job.id.clone(),
            first: (event.seq() == 1).then(|| job.clone()),
            last: event.kind == EventKind::Completed,
        });
    }
}
