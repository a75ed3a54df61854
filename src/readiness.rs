//! Readiness: whether this node should get traffic, as `GET /ready` answers it.
//!
//! Three parts are checked: the store (a real write of a file in `DATA_DIR`,
//! flushed to disk, and the history writer's last commit), the runner (it takes
//! new jobs: false once the server is stopping) and, on a cluster node, Redis (a
//! `PING` answered within [`REDIS_TIMEOUT`]). The store probe touches the disk,
//! so its result is kept for [`PROBE_TTL`]; concurrent probes wait for the one
//! running.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::journal::Journal;
use crate::runner::Runner;

/// How long a store probe's result is reused.
pub const PROBE_TTL: Duration = Duration::from_secs(1);
/// Longest the store probe may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest Redis may take to answer `PING`.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);

/// One checked part and what was found: `Ok` or why not.
#[derive(Debug, Clone)]
pub struct Check {
    pub part: &'static str,
    pub result: Result<(), String>,
}

/// The readiness checks of one server, with the cached store probe.
pub struct Readiness {
    data_dir: PathBuf,
    /// The last store probe: when, and what it found.
    probe: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Readiness {
    pub fn new(data_dir: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            data_dir,
            probe: tokio::sync::Mutex::new(None),
        })
    }

    /// Runs every check (the store probe from cache when recent).
    pub async fn check(
        &self,
        journal: &Journal,
        runner: &Runner,
        cluster: Option<&Arc<Cluster>>,
    ) -> Vec<Check> {
        let mut checks = vec![Check {
            part: "store",
            result: self.store(journal).await,
        }];
        checks.push(Check {
            part: "runner",
            result: if runner.accepting() {
                Ok(())
            } else {
                Err("the server is stopping and takes no new jobs".into())
            },
        });
        if let Some(cluster) = cluster {
            checks.push(Check {
                part: "redis",
                result: cluster.ping(REDIS_TIMEOUT).await,
            });
        }
        checks
    }

    async fn store(&self, journal: &Journal) -> Result<(), String> {
        if let Some(error) = journal.writer_status().error {
            return Err(format!("history cannot be written: {error}"));
        }
        let mut probe = self.probe.lock().await;
        if let Some((at, result)) = probe.as_ref()
            && at.elapsed() < PROBE_TTL
        {
            return result.clone();
        }
        let dir = self.data_dir.clone();
        let result = match tokio::time::timeout(
            PROBE_TIMEOUT,
            tokio::task::spawn_blocking(move || crate::store::probe::write_probe(&dir)),
        )
        .await
        {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(format!(
                "cannot write to DATA_DIR={}: {e}",
                self.data_dir.display()
            )),
            Ok(Err(e)) => Err(format!("the write probe failed: {e}")),
            Err(_) => Err(format!(
                "writing to DATA_DIR={} took over {PROBE_TIMEOUT:?}",
                self.data_dir.display()
            )),
        };
        *probe = Some((Instant::now(), result.clone()));
        result
    }
}
