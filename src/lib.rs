//! # buildcast
//!
//! A Socket.IO-compatible realtime server that runs CI-style builds and streams
//! their progress and logs live to browsers and scripts.
//!
//! # Layout
//!
//! - [`config`]: every setting, parsed once from the environment.
//! - [`telemetry`]: the tracing subscriber.
//! - [`startup`]: [`startup::Application`] builds the server, binds it, runs it until stopped.
//! - [`state`]: [`state::AppState`], what handlers share.
//! - [`auth`]: token verification, principals, per-user connection limits.
//! - [`job`]: the build domain: ids, phases, statuses, [`job::JobEvent`], [`job::JobRecord`].
//! - [`wire`]: the exact JSON clients see.
//! - [`runner`]: pipelines, the queue, child processes, artifacts. Produces `JobEvent`s.
//! - [`ingest`]: events from external workers, validated and turned into `JobEvent`s.
//! - [`artifact`]: the rule for artifact names, and opening an artifact confined to its job's folder.
//! - [`journal`]: numbers, records and hands on every event of a job.
//! - [`cluster`]: several nodes sharing events and history through Redis.
//! - [`store`]: durable jobs and history (SQLite), written in batches.
//! - [`socket`]: the Socket.IO endpoint: subscriptions, replay, fan-out.
//! - [`http`]: the REST API and `/health`.
//! - [`error`]: HTTP errors and their responses.
//! - [`retention`]: deletes expired jobs.
//!
//! An event flows: runner → [`journal::Journal::record`] → store writer and
//! [`socket::fanout::Fanout`] → sockets in the job's and project's rooms.

pub mod artifact;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod error;
pub mod http;
pub mod ingest;
pub mod job;
pub mod journal;
pub mod retention;
pub mod runner;
pub mod socket;
pub mod startup;
pub mod state;
pub mod store;
pub mod tap;
pub mod telemetry;
pub mod watch;
pub mod wire;
