//! Per-socket state ([`Session`], kept in the socket's extensions): who the
//! socket is, what it follows, its rate limit and its connection slot.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socketioxide::extract::SocketRef;

use crate::auth::Principal;
use crate::config::ClientLimits;
use crate::connections::ConnectionSlot;
use crate::job::{JobId, ProjectId};
use crate::state::SocketStats;

/// One `subscribe:job` of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// Distinguishes it from the socket's earlier subscriptions of the same job: a
    /// replay that is no longer the latest stops.
    pub generation: u64,
    /// Log lines as `job:logs` runs instead of one `job:log` each.
    pub batch: bool,
}

/// Which of a job's live events the fan-out workers may emit to one socket: those
/// with `seq` above the position the socket went live at. Closed while the socket
/// is replayed or caught up (the replay sends those events itself), so that an
/// event a worker still holds from before cannot reach the socket twice or out of
/// order.
#[derive(Debug)]
pub struct Gate(AtomicU64);

impl Gate {
    const CLOSED: u64 = u64::MAX;

    fn closed() -> Self {
        Self(AtomicU64::new(Self::CLOSED))
    }

    /// Live events after `seq` may now be emitted. Called under the job's lock,
    /// as the socket joins the job's room.
    pub fn open_after(&self, seq: u64) {
        self.0.store(seq, Ordering::Release);
    }

    /// No live event may be emitted until the gate opens again.
    pub fn close(&self) {
        self.0.store(Self::CLOSED, Ordering::Release);
    }

    /// Whether the event numbered `seq` may be emitted live.
    pub fn admits(&self, seq: u64) -> bool {
        let after = self.0.load(Ordering::Acquire);
        after != Self::CLOSED && seq > after
    }
}

/// Per-socket state, kept in the socket's extensions.
#[derive(Debug)]
pub struct Session {
    /// Who the socket authenticated as.
    pub principal: Principal,
    /// The socket's place in its user's connection count; released on disconnect.
    slot: Mutex<Option<ConnectionSlot>>,
    /// For each job this socket follows, its latest subscription.
    following: Mutex<HashMap<JobId, Subscription>>,
    /// For each job this socket has followed, the gate the fan-out workers check
    /// before emitting one of its live events ([`Gate`]). One per job for the
    /// socket's life, so a socket list taken before a resubscription sees it close.
    gates: Mutex<HashMap<JobId, Arc<Gate>>>,
    /// Projects this socket follows.
    projects: Mutex<HashSet<ProjectId>>,
    /// Whether it takes `jobs:created` ([`super::feed`]).
    feed: AtomicBool,
    /// Source of generations.
    next_generation: AtomicU64,
    /// When the client last sent an event (or connected).
    last_event: Mutex<Instant>,
    /// Start of the current one-second rate window, and events counted in it.
    rate: Mutex<(Instant, u32)>,
    /// Set when the socket disconnects. (socketioxide's own `connected()` is also
    /// false for a moment right after the CONNECT packet goes out, when a client may
    /// already be subscribing.)
    closed: AtomicBool,
    /// `MAX_SUBSCRIPTIONS_PER_SOCKET`.
    max_subscriptions: usize,
    /// `MAX_EVENTS_PER_SECOND`.
    max_events_per_second: u32,
    /// Where room membership changes are counted.
    stats: Arc<SocketStats>,
}

/// Why a client event was refused before its handler ran.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("rate limited")]
    RateLimited,
    #[error("too many subscriptions (at most {0} per connection)")]
    TooManySubscriptions(usize),
}

impl Refusal {
    /// A short name of the refusal, for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::TooManySubscriptions(_) => "too_many_subscriptions",
        }
    }

    /// Counts the refusal under the limit that caused it.
    pub fn count(&self) {
        crate::metrics::limit_refused(
            crate::metrics::Endpoint::SocketIo,
            match self {
                Self::RateLimited => "max_events_per_second",
                Self::TooManySubscriptions(_) => "max_subscriptions_per_socket",
            },
        );
    }
}

impl Session {
    pub(super) fn new(
        principal: Principal,
        slot: ConnectionSlot,
        limits: &ClientLimits,
        stats: Arc<SocketStats>,
    ) -> Self {
        let now = Instant::now();
        Self {
            principal,
            slot: Mutex::new(Some(slot)),
            following: Mutex::default(),
            gates: Mutex::default(),
            projects: Mutex::default(),
            feed: AtomicBool::new(false),
            next_generation: AtomicU64::new(0),
            last_event: Mutex::new(now),
            rate: Mutex::new((now, 0)),
            closed: AtomicBool::new(false),
            max_subscriptions: limits.max_subscriptions_per_socket,
            max_events_per_second: limits.max_events_per_second,
            stats,
        }
    }

    /// Counts a change of this socket's rooms (see [`SocketStats::membership`]).
    pub(super) fn membership_changed(&self) {
        self.stats.membership.fetch_add(1, Ordering::Release);
    }

    /// Counts a client event against the rate limit and marks the socket active.
    pub fn admit_event(&self) -> Result<(), Refusal> {
        let now = Instant::now();
        *self.last_event.lock().expect("session") = now;
        let mut rate = self.rate.lock().expect("session");
        if now.duration_since(rate.0) >= Duration::from_secs(1) {
            *rate = (now, 0);
        }
        rate.1 += 1;
        if rate.1 > self.max_events_per_second {
            return Err(Refusal::RateLimited);
        }
        Ok(())
    }

    fn subscriptions(&self) -> usize {
        self.following.lock().expect("session").len()
            + self.projects.lock().expect("session").len()
            + usize::from(self.feed.load(Ordering::Relaxed))
    }

    /// How long the socket has had no subscription and sent nothing, if it has none.
    pub fn idle_for(&self) -> Option<Duration> {
        (self.subscriptions() == 0).then(|| self.last_event.lock().expect("session").elapsed())
    }

    /// Starts a new subscription of `job`, superseding any earlier one.
    pub fn follow(&self, job: &JobId, batch: bool) -> Result<Subscription, Refusal> {
        let subscription = Subscription {
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed) + 1,
            batch,
        };
        let mut following = self.following.lock().expect("session");
        if !following.contains_key(job)
            && self.subscriptions_with(&following) >= self.max_subscriptions
        {
            return Err(Refusal::TooManySubscriptions(self.max_subscriptions));
        }
        following.insert(job.clone(), subscription);
        self.gate(job).close();
        Ok(subscription)
    }

    /// The gate of `job`'s live events for this socket (made closed if new).
    pub fn gate(&self, job: &JobId) -> Arc<Gate> {
        self.gates
            .lock()
            .expect("session")
            .entry(job.clone())
            .or_insert_with(|| Arc::new(Gate::closed()))
            .clone()
    }

    fn subscriptions_with(&self, following: &HashMap<JobId, Subscription>) -> usize {
        following.len() + self.projects.lock().expect("session").len()
    }

    /// Starts following `project`.
    pub fn follow_project(&self, project: &ProjectId) -> Result<(), Refusal> {
        let following = self.following.lock().expect("session").len();
        let mut projects = self.projects.lock().expect("session");
        if !projects.contains(project) && following + projects.len() >= self.max_subscriptions {
            return Err(Refusal::TooManySubscriptions(self.max_subscriptions));
        }
        projects.insert(project.clone());
        Ok(())
    }

    pub fn unfollow_project(&self, project: &ProjectId) {
        self.projects.lock().expect("session").remove(project);
    }

    /// Starts taking `jobs:created`; counts as one subscription.
    pub fn follow_feed(&self) -> Result<(), Refusal> {
        if !self.feed.load(Ordering::Relaxed) && self.subscriptions() >= self.max_subscriptions {
            return Err(Refusal::TooManySubscriptions(self.max_subscriptions));
        }
        self.feed.store(true, Ordering::Relaxed);
        Ok(())
    }

    pub fn unfollow_feed(&self) {
        self.feed.store(false, Ordering::Relaxed);
    }

    /// Whether `generation` is still the current subscription of `job`.
    pub fn is_current(&self, job: &JobId, generation: u64) -> bool {
        self.following
            .lock()
            .expect("session")
            .get(job)
            .is_some_and(|s| s.generation == generation)
    }

    /// Ends the subscription of `job`.
    pub fn unfollow(&self, job: &JobId) {
        self.following.lock().expect("session").remove(job);
        if let Some(gate) = self.gates.lock().expect("session").remove(job) {
            gate.close();
        }
    }

    /// The Socket.IO counters this socket reports to.
    pub fn stats(&self) -> &Arc<SocketStats> {
        &self.stats
    }

    /// What this socket follows, by kind.
    pub fn counts(&self) -> Counts {
        let following = self.following.lock().expect("session");
        let batch = following.values().filter(|s| s.batch).count();
        Counts {
            jobs: following.len() - batch,
            batch,
            projects: self.projects.lock().expect("session").len(),
            feed: usize::from(self.feed.load(Ordering::Relaxed)),
        }
    }

    /// The current subscription of `job`, if any.
    pub fn subscription(&self, job: &JobId) -> Option<Subscription> {
        self.following.lock().expect("session").get(job).copied()
    }

    /// Whether the socket has disconnected.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the socket closed and gives its connection slot back; `true` only
    /// the first time, so that a close seen twice is counted once.
    pub(super) fn release(&self) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        if let Some(slot) = self.slot.lock().expect("session").take() {
            slot.release();
        }
        true
    }
}

/// Subscriptions by kind: jobs (one `job:*` event each), jobs in `job:logs`
/// runs, projects, and the new-jobs feed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub jobs: usize,
    pub batch: usize,
    pub projects: usize,
    pub feed: usize,
}

impl Counts {
    pub fn add(&mut self, other: &Self) {
        self.jobs += other.jobs;
        self.batch += other.batch;
        self.projects += other.projects;
        self.feed += other.feed;
    }
}

/// The session of a socket (set up by the connect middleware).
pub fn session(socket: &SocketRef) -> Arc<Session> {
    socket
        .extensions
        .get::<Arc<Session>>()
        .expect("every connected socket has a session")
}
