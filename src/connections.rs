//! Counting open connections: in total (`MAX_CONNECTIONS`) and per user
//! (`MAX_CONNECTIONS_PER_USER`, when tokens are checked), whatever carries them
//! (Socket.IO, HTTP streams, compatibility gateways). A Socket.IO connection over
//! either limit is refused with `connect_error` "Too many connections".
//!
//! [`GatewayConnections`] also counts the compatibility gateways' WebSocket
//! connections per gateway (for `/health`) and per watched job (for seed 000's
//! `/ws/active-builds`), and holds the token that closes them at shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::job::{JobId, ProjectId};

/// Which limit a refused connection hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitReached {
    #[error("the server holds MAX_CONNECTIONS connections")]
    Total,
    #[error("the user holds MAX_CONNECTIONS_PER_USER connections")]
    PerUser,
}

impl LimitReached {
    /// The limit's variable, lower case (a metric label).
    pub fn label(self) -> &'static str {
        match self {
            Self::Total => "max_connections",
            Self::PerUser => "max_connections_per_user",
        }
    }
}

/// Counts open connections and refuses those over the limits.
pub struct ConnectionLimiter {
    /// `MAX_CONNECTIONS`.
    max_total: usize,
    /// `MAX_CONNECTIONS_PER_USER`.
    max_per_user: usize,
    /// Open connections in total, and per user for those counted per user.
    open: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_user: HashMap<String, usize>,
}

/// One counted connection; released once, explicitly or when dropped.
pub struct ConnectionSlot {
    limiter: Arc<ConnectionLimiter>,
    /// The user it counts against, when counted per user.
    user: Option<String>,
    released: AtomicBool,
}

impl std::fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionSlot")
    }
}

impl ConnectionLimiter {
    pub fn new(max_total: usize, max_per_user: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_user,
            open: Mutex::default(),
        })
    }

    /// Takes a slot, counted against `user` too when given.
    pub fn acquire(self: &Arc<Self>, user: Option<&str>) -> Result<ConnectionSlot, LimitReached> {
        let mut open = self.open.lock().expect("connection counts");
        if open.total >= self.max_total {
            return Err(LimitReached::Total);
        }
        if let Some(user) = user {
            let count = open.per_user.entry(user.to_owned()).or_insert(0);
            if *count >= self.max_per_user {
                if *count == 0 {
                    open.per_user.remove(user);
                }
                return Err(LimitReached::PerUser);
            }
            *count += 1;
        }
        open.total += 1;
        Ok(ConnectionSlot {
            limiter: self.clone(),
            user: user.map(str::to_owned),
            released: false.into(),
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.lock().expect("connection counts").total
    }
}

impl ConnectionSlot {
    pub fn release(&self) {
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut open = self.limiter.open.lock().expect("connection counts");
        open.total -= 1;
        if let Some(user) = &self.user
            && let Some(count) = open.per_user.get_mut(user)
        {
            *count -= 1;
            if *count == 0 {
                open.per_user.remove(user);
            }
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.release();
    }
}

/// The compatibility gateways' open WebSocket connections.
#[derive(Debug, Default)]
pub struct GatewayConnections {
    /// Open connections per gateway, in the order of [`GATEWAY_NAMES`].
    open: [AtomicUsize; 4],
    /// Cancelled when the server shuts down: every gateway connection closes (1001).
    pub closing: CancellationToken,
}

/// The gateways' names, as `COMPAT_GATEWAYS` and `/health` spell them.
pub const GATEWAY_NAMES: [&str; 4] = ["build", "jobs", "builds", "projects"];

/// One open gateway connection, counted until dropped.
pub struct GatewayConnection {
    owner: Arc<GatewayConnections>,
    gateway: usize,
}

impl GatewayConnections {
    /// Counts a connection of gateway number `gateway` (see [`GATEWAY_NAMES`]).
    pub fn open(self: &Arc<Self>, gateway: usize) -> GatewayConnection {
        self.open[gateway].fetch_add(1, Ordering::Relaxed);
        GatewayConnection {
            owner: self.clone(),
            gateway,
        }
    }

    /// Open connections per gateway, named.
    pub fn counts(&self) -> [(&'static str, usize); 4] {
        std::array::from_fn(|i| (GATEWAY_NAMES[i], self.open[i].load(Ordering::Relaxed)))
    }
}

impl Drop for GatewayConnection {
    fn drop(&mut self) {
        self.owner.open[self.gateway].fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connections that watch one job without Socket.IO (gateway connections,
/// HTTP streams), per job, with the job's project so that a listing can leave
/// out projects its caller may not see. Socket.IO subscribers are the members
/// of the job's rooms.
#[derive(Debug, Default)]
pub struct JobWatchers {
    watched: Mutex<HashMap<JobId, (ProjectId, usize)>>,
}

/// One connection counted as watching a job until dropped.
pub struct Watching {
    owner: Arc<JobWatchers>,
    id: JobId,
}

impl JobWatchers {
    /// Counts one more connection watching job `id` of `project`.
    pub fn watch(self: &Arc<Self>, id: &JobId, project: &ProjectId) -> Watching {
        let mut watched = self.watched.lock().expect("watched jobs");
        watched
            .entry(id.clone())
            .or_insert_with(|| (project.clone(), 0))
            .1 += 1;
        Watching {
            owner: self.clone(),
            id: id.clone(),
        }
    }

    /// Connections watching job `id` now.
    pub fn count(&self, id: &JobId) -> usize {
        self.watched
            .lock()
            .expect("watched jobs")
            .get(id)
            .map_or(0, |(_, n)| *n)
    }

    /// Jobs watched by at least one connection, with their project and count.
    pub fn all(&self) -> Vec<(JobId, ProjectId, usize)> {
        self.watched
            .lock()
            .expect("watched jobs")
            .iter()
            .map(|(id, (project, n))| (id.clone(), project.clone(), *n))
            .collect()
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut watched = self.owner.watched.lock().expect("watched jobs");
        if let Some(entry) = watched.get_mut(&self.id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                watched.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_per_user() {
        let limiter = ConnectionLimiter::new(100, 2);
        let a = limiter.acquire(Some("u")).unwrap();
        let _b = limiter.acquire(Some("u")).unwrap();
        assert_eq!(
            limiter.acquire(Some("u")).unwrap_err(),
            LimitReached::PerUser
        );
        assert!(limiter.acquire(Some("v")).is_ok());
        a.release();
        a.release();
        assert!(limiter.acquire(Some("u")).is_ok());
    }

    #[test]
    fn gateway_connections_count_per_gateway() {
        let open = Arc::new(GatewayConnections::default());
        let a = open.open(0);
        let b = open.open(1);
        assert_eq!(open.counts()[0], ("build", 1));
        assert_eq!(open.counts()[1], ("jobs", 1));
        drop(a);
        drop(b);
        assert_eq!(open.counts()[1], ("jobs", 0));
    }

    #[test]
    fn watchers_count_per_job_until_dropped() {
        let watchers = Arc::new(JobWatchers::default());
        let job = JobId::parse("j1").unwrap();
        let project = ProjectId::parse("p1").unwrap();
        let a = watchers.watch(&job, &project);
        let b = watchers.watch(&job, &project);
        assert_eq!(watchers.count(&job), 2);
        assert_eq!(watchers.all(), vec![(job.clone(), project.clone(), 2)]);
        drop(a);
        assert_eq!(watchers.count(&job), 1);
        drop(b);
        assert_eq!(watchers.count(&job), 0);
        assert!(watchers.all().is_empty());
    }

    #[test]
    fn limiter_counts_in_total() {
        let limiter = ConnectionLimiter::new(2, 10);
        let a = limiter.acquire(None).unwrap();
        let _b = limiter.acquire(Some("u")).unwrap();
        assert_eq!(limiter.acquire(None).unwrap_err(), LimitReached::Total);
        drop(a);
        let _c = limiter.acquire(Some("u")).unwrap();
        assert_eq!(limiter.open(), 2);
    }
}
