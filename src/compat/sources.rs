//! What each gateway sends on a connection: a [`Source`] per seed that joins a
//! feed of recorded events ([`super::feed`]) to that seed's translation module.
//!
//! - [`BuildSource`] (000): `connected`, then every event translated.
//! - [`Snapshotted`] (001, 003): the job's events up to the connect-time seq are
//!   folded silently, then the seed's snapshot goes out, then every later event
//!   translated; the snapshot is therefore exactly the state after a known seq,
//!   and what follows it starts at the next one.
//! - [`ProjectSource`] (004): a `connection` message, then the events of every
//!   job of the project: its jobs active at connect (folded silently up to their
//!   connect-time seq) and each job that appears later (from its first event).

use std::collections::{HashMap, HashSet};
use std::pin::Pin;

use futures_util::stream::{self, SelectAll, Stream, StreamExt};
use time::OffsetDateTime;

use super::feed::{JobFeed, job_of, pipeline_steps};
use super::session::Source;
use super::{build, builds, jobs, projects};
use crate::job::{JobId, JobRecord, ProjectId};
use crate::state::AppState;
use crate::store::{JobFilter, StoreError};
use crate::tap::{ProjectNext, ProjectTap};
use crate::wire::{EventPayload, Timestamp};

fn now() -> Timestamp {
    Timestamp(OffsetDateTime::now_utc())
}

/// Seed 000: `connected`, then the whole job translated, then live.
pub struct BuildSource {
    connected: Option<String>,
    feed: JobFeed,
    done: bool,
}

impl BuildSource {
    pub fn new(id: &JobId, feed: JobFeed) -> Self {
        Self {
            connected: Some(build::connected(id)),
            feed,
            done: false,
        }
    }
}

impl Source for BuildSource {
    async fn next(&mut self) -> Result<Option<Vec<String>>, StoreError> {
        if let Some(connected) = self.connected.take() {
            return Ok(Some(vec![connected]));
        }
        match self.feed.next().await? {
            Some(events) => Ok(Some(events.iter().flat_map(build::translate).collect())),
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }

    fn answer(&mut self, text: &str) -> Option<String> {
        build::answer(text)
    }

    fn finished(&self) -> bool {
        self.done
    }
}

/// A seed's fold of one job: its messages per event, and its snapshot.
pub trait Fold: Send + 'static {
    fn apply(&mut self, event: &EventPayload) -> Vec<String>;
    fn snapshot(&self) -> Vec<String>;
    fn answer(&self, text: &str) -> Option<String>;
}

/// Seed 001's fold: the snapshot is `connected`, and for a finished job the
/// `complete` that ended it.
pub struct JobsFold {
    id: JobId,
    updates: jobs::JobUpdates,
    complete: Option<String>,
}

impl JobsFold {
    pub fn new(id: JobId, pipeline: Option<Vec<String>>) -> Self {
        Self {
            id,
            updates: jobs::JobUpdates::new(pipeline),
            complete: None,
        }
    }
}

impl Fold for JobsFold {
    fn apply(&mut self, event: &EventPayload) -> Vec<String> {
        let out = self.updates.apply(event);
        if matches!(event, EventPayload::Completed(_)) {
            self.complete = out.last().cloned();
        }
        out
    }

    fn snapshot(&self) -> Vec<String> {
        let mut out = vec![self.updates.connected(&self.id, now())];
        out.extend(self.complete.clone());
        out
    }

    fn answer(&self, text: &str) -> Option<String> {
        super::is_ping(text).then(|| jobs::JobUpdates::pong(now()))
    }
}

/// Finds the step names of a job's pipeline once the job exists (for a build
/// watched before it existed).
pub type PipelineLookup = Box<dyn FnOnce() -> Option<Vec<String>> + Send>;

/// Seed 003's fold: the snapshot is one `build_update`; no client message is answered.
pub struct BuildsFold {
    build: builds::BuildJob,
    /// For a build that did not exist at connect: its pipeline, looked up at its
    /// first event.
    lookup: Option<PipelineLookup>,
}

impl BuildsFold {
    /// A build that exists.
    pub fn new(build: builds::BuildJob) -> Self {
        Self {
            build,
            lookup: None,
        }
    }

    /// A build not known yet: `lookup` names its pipeline's steps once it exists.
    pub fn pending(build: builds::BuildJob, lookup: PipelineLookup) -> Self {
        Self {
            build,
            lookup: Some(lookup),
        }
    }
}

impl Fold for BuildsFold {
    fn apply(&mut self, event: &EventPayload) -> Vec<String> {
        if let Some(lookup) = self.lookup.take() {
            self.build.set_pipeline(lookup());
        }
        self.build.apply(event)
    }

    fn snapshot(&self) -> Vec<String> {
        vec![self.build.snapshot()]
    }

    fn answer(&self, _text: &str) -> Option<String> {
        None
    }
}

/// A snapshot at a known seq, then every later event translated.
pub struct Snapshotted<F: Fold> {
    fold: F,
    feed: JobFeed,
    /// The seq the snapshot describes; `None` once sent (or when none is sent:
    /// seed 003 on a job that does not exist yet).
    snapshot_at: Option<u64>,
    /// Highest seq folded.
    cursor: u64,
    done: bool,
}

impl<F: Fold> Snapshotted<F> {
    /// Snapshot after seq `at` (`None`: no snapshot).
    pub fn new(fold: F, feed: JobFeed, at: Option<u64>) -> Self {
        Self {
            fold,
            feed,
            snapshot_at: at,
            cursor: 0,
            done: false,
        }
    }
}

impl<F: Fold> Source for Snapshotted<F> {
    async fn next(&mut self) -> Result<Option<Vec<String>>, StoreError> {
        loop {
            if self.snapshot_at.is_some_and(|at| self.cursor >= at) {
                self.snapshot_at = None;
                return Ok(Some(self.fold.snapshot()));
            }
            let mut out = Vec::new();
            let Some(events) = self.feed.next().await? else {
                self.done = true;
                if self.snapshot_at.take().is_some() {
                    // History ended before the snapshot's seq (it was cut).
                    return Ok(Some(self.fold.snapshot()));
                }
                return Ok(None);
            };
            for event in &events {
                let messages = self.fold.apply(event);
                self.cursor = self.cursor.max(event.seq());
                match self.snapshot_at {
                    Some(at) if self.cursor >= at => {
                        self.snapshot_at = None;
                        out.extend(self.fold.snapshot());
                    }
                    Some(_) => {}
                    None => out.extend(messages),
                }
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
    }

    fn answer(&mut self, text: &str) -> Option<String> {
        self.fold.answer(text)
    }

    fn finished(&self) -> bool {
        self.done
    }
}

type JobEvents = Pin<Box<dyn Stream<Item = (JobId, Result<Vec<EventPayload>, StoreError>)> + Send>>;

/// One job of a project connection.
struct FollowedJob {
    job: projects::ProjectJob,
    /// Events up to this seq are folded without being sent (they happened before
    /// the connection).
    silent_until: u64,
    done: bool,
}

/// Seed 004: every job of a project.
pub struct ProjectSource {
    state: AppState,
    project: ProjectId,
    connection: Option<String>,
    tap: ProjectTap,
    feeds: SelectAll<JobEvents>,
    jobs: HashMap<JobId, FollowedJob>,
    /// Jobs already followed or known finished before the connection.
    known: HashSet<JobId>,
    /// When the connection started: after a tap overflow, jobs created since are
    /// looked for in the project's listing.
    since: OffsetDateTime,
}

/// Jobs of a project listed at once.
const LISTING: usize = 500;

fn feed_stream(id: JobId, feed: JobFeed) -> JobEvents {
    Box::pin(stream::unfold(Some(feed), move |feed| {
        let id = id.clone();
        async move {
            let mut feed = feed?;
            match feed.next().await {
                Ok(Some(events)) => Some(((id, Ok(events)), Some(feed))),
                Ok(None) => None,
                Err(e) => Some(((id, Err(e)), None)),
            }
        }
    }))
}

impl ProjectSource {
    /// Follows `project` from now: its active jobs and every job that appears.
    pub async fn start(state: AppState, project: ProjectId) -> Result<Self, StoreError> {
        // The tap first: a job that starts while the listing is read is not missed.
        let tap = state.taps.follow_project(&project);
        let since = OffsetDateTime::now_utc();
        let mut active = state
            .journal
            .jobs(JobFilter {
                active: Some(true),
                project_id: Some(project.clone()),
                limit: LISTING,
            })
            .await?;
        active.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        let connection = projects::connection(
            &project,
            active.iter().map(projects::active_job).collect(),
            now(),
        );
        let mut source = Self {
            state,
            project,
            connection: Some(connection),
            tap,
            feeds: SelectAll::new(),
            jobs: HashMap::new(),
            known: HashSet::new(),
            since,
        };
        for job in &active {
            source.follow(job, job.last_seq);
        }
        Ok(source)
    }

    fn follow(&mut self, job: &JobRecord, silent_until: u64) {
        if !self.known.insert(job.id.clone()) {
            return;
        }
        let feed = JobFeed::new(&self.state, job.id.clone(), 0);
        self.feeds.push(feed_stream(job.id.clone(), feed));
        self.jobs.insert(
            job.id.clone(),
            FollowedJob {
                job: projects::ProjectJob::new(pipeline_steps(&self.state, &job.pipeline)),
                silent_until,
                done: false,
            },
        );
    }

    /// A job the tap named: followed from its first event if it is new.
    async fn discover(&mut self, id: JobId) -> Result<(), StoreError> {
        if self.known.contains(&id) {
            return Ok(());
        }
        if let Some(job) = self.state.journal.job(&id).await? {
            self.follow(&job, 0);
        }
        Ok(())
    }

    /// After the tap overflowed: a new tap, and the jobs created meanwhile.
    async fn recover(&mut self) -> Result<(), StoreError> {
        self.tap = self.state.taps.follow_project(&self.project);
        let jobs = self
            .state
            .journal
            .jobs(JobFilter {
                active: None,
                project_id: Some(self.project.clone()),
                limit: LISTING,
            })
            .await?;
        let since = self.since;
        for job in jobs.iter().filter(|j| j.created_at >= since) {
            self.follow(job, 0);
        }
        Ok(())
    }

    fn translate(&mut self, id: &JobId, events: &[EventPayload]) -> Vec<String> {
        let Some(followed) = self.jobs.get_mut(id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for event in events {
            let messages = followed.job.apply(event);
            if matches!(event, EventPayload::Completed(_)) {
                followed.done = true;
            }
            if event.seq() > followed.silent_until {
                out.extend(messages);
            }
        }
        if followed.done {
            self.jobs.remove(id);
        }
        out
    }
}

impl Source for ProjectSource {
    async fn next(&mut self) -> Result<Option<Vec<String>>, StoreError> {
        if let Some(connection) = self.connection.take() {
            return Ok(Some(vec![connection]));
        }
        loop {
            tokio::select! {
                next = self.feeds.next(), if !self.feeds.is_empty() => {
                    if let Some((id, events)) = next {
                        let out = self.translate(&id, &events?);
                        if !out.is_empty() {
                            return Ok(Some(out));
                        }
                    }
                }
                event = self.tap.next() => match event {
                    ProjectNext::Event(event) => {
                        if let Some(id) = job_of(&event) {
                            self.discover(id).await?;
                        }
                    }
                    ProjectNext::Overflowed => self.recover().await?,
                },
            }
        }
    }

    fn answer(&mut self, text: &str) -> Option<String> {
        super::is_ping(text).then(|| projects::pong(now()))
    }

    fn finished(&self) -> bool {
        self.jobs.is_empty()
    }
}
