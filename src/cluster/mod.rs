//! Several nodes behind one load balancer, sharing events and history through Redis.
//!
//! Each job is numbered by exactly one node, its *owner*: the node that created it
//! (a build it runs, or the first node to claim an external job). The owner's
//! journal hands every event to the publisher, which, in one pipelined round
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
//! what it must publish (a bounded queue; past it, events are published from
//! history once Redis returns: see [`publisher`]), reports `"redis": "down"` in
//! `/health`, and reconnects with backoff.
//!
//! - [`publisher`]: this node's events to Redis (bounded queue, overflow rule).
//! - [`subscriber`]: other nodes' events as mirrors, gap filling, worker channels.
//! - [`ownership`]: which node numbers an external job; forwarding to it.
//! - [`nodes`]: heartbeats and the cluster-wide client count.

pub mod nodes;
pub mod ownership;
pub mod publisher;
pub mod subscriber;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::ingest::Ingestor;
use crate::job::JobId;
use crate::journal::Journal;
use crate::runner::Runner;
use crate::tasks::Tasks;
use publisher::Publisher;

/// The channel every node's events go out on.
const EVENTS: &str = "buildcast:events";
/// The channel cancel requests for another node's jobs go out on.
const CANCELS: &str = "buildcast:cancel";
/// The pattern of the channels workers publish on.
const WORKER_CHANNELS: &str = "job:*:updates";
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

/// Counters and state shown by `/health`.
#[derive(Debug, Default)]
pub struct ClusterHealth {
    /// Whether the last talk with Redis worked.
    pub up: AtomicBool,
    /// Worker messages from Redis that were invalid (logged and dropped).
    pub rejected_worker_messages: AtomicU64,
    /// Events waiting to be published.
    /// Events waiting in the publish queue.
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
    /// `REDIS_PUBLISH_QUEUE`: events queued for Redis at most.
    queue: usize,
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
        queue: usize,
    ) -> redis::RedisResult<Arc<Self>> {
        Ok(Arc::new(Self {
            client: redis::Client::open(url)?,
            node: journal.node().to_owned(),
            journal,
            ingestor,
            runner,
            history_ttl,
            queue,
            conn: Mutex::new(None),
            health: ClusterHealth::default(),
        }))
    }

    /// Starts publishing this node's events, mirroring the others', ingesting
    /// worker messages and reporting the client count, until `stop`.
    pub fn start(
        self: &Arc<Self>,
        clients: Arc<AtomicUsize>,
        stop: CancellationToken,
        tasks: &Tasks,
        cluster_tasks: &tokio_util::task::TaskTracker,
    ) {
        let (publisher, rx, overflowed) = Publisher::new(self, self.queue);
        self.journal.set_publisher(Arc::new(publisher));
        tasks.spawn(cluster_tasks.track_future(self.clone().publish(rx, overflowed, stop.clone())));
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

    /// Whether Redis answers `PING` within `timeout`; the error says why not.
    pub async fn ping(&self, timeout: Duration) -> Result<(), String> {
        let answer = tokio::time::timeout(timeout, async {
            let mut conn = self.conn().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await;
        match answer {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("redis is unreachable: {e}")),
            Err(_) => Err(format!("redis did not answer PING within {timeout:?}")),
        }
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
}
