//! Node heartbeats: each node reports its client count in `buildcast:nodes`
//! every few seconds, and `/health` adds up the live nodes' counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::AsyncCommands;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::Cluster;

/// Hash of live nodes and their client counts.
const NODES: &str = "buildcast:nodes";
/// A node whose heartbeat is older than this is not counted.
const NODE_STALE_MS: i128 = 15_000;
/// How often a node reports its client count.
const HEARTBEAT: Duration = Duration::from_secs(5);

impl Cluster {
    pub(super) async fn heartbeat(
        self: Arc<Self>,
        clients: Arc<AtomicUsize>,
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
                    if let Ok(mut conn) = self.conn().await
                        && let Err(e) = conn.hdel::<_, _, ()>(NODES, &self.node).await
                    {
                        tracing::debug!(error = %e, "could not remove this node from the node list");
                    }
                    return;
                }
            }
        }
    }

    /// The age of each node's last heartbeat, if Redis answers.
    pub async fn heartbeat_ages(&self) -> Option<Vec<(String, Duration)>> {
        let mut conn = self.conn().await.ok()?;
        let nodes: std::collections::HashMap<String, String> =
            tokio::time::timeout(Duration::from_millis(500), conn.hgetall(NODES))
                .await
                .ok()?
                .ok()?;
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        Some(
            nodes
                .into_iter()
                .filter_map(|(node, v)| {
                    let at = v.split_once(' ')?.1.parse::<i128>().ok()?;
                    let ms = u64::try_from(now - at).unwrap_or(0);
                    Some((node, Duration::from_millis(ms)))
                })
                .collect(),
        )
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
