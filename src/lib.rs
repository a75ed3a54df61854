//! # buildcast
//!
//! A Socket.IO-compatible realtime server that runs CI-style builds and streams
//! their progress and logs live to browsers and scripts.
//!
//! # Layout
//!
//! From the bottom layer up (a module imports only modules below it):
//!
//! - [`job`]: the build domain: ids, phases, statuses, event kinds, [`job::JobEvent`], [`job::JobRecord`].
//! - [`wire`]: the exact JSON clients see, and the Socket.IO event names.
//! - [`config`]: every setting, parsed once from the environment.
//! - [`tasks`]: the tracker of every spawned task.
//! - [`metrics`]: the Prometheus recorder and what the server counts.
//! - [`telemetry`]: the tracing subscriber.
//! - [`store`]: durable jobs and history (SQLite), written in batches.
//! - [`journal`]: numbers, records and hands on every event of a job; every read of history.
//! - [`artifact`]: the rule for artifact names, and opening an artifact confined to its job's folder.
//! - [`runner`]: pipelines, the queue, child processes, artifacts. Produces `JobEvent`s.
//! - [`ingest`]: events from external workers, validated and turned into `JobEvent`s.
//! - [`retention`]: deletes expired jobs.
//! - [`auth`]: token verification and principals.
//! - [`connections`]: open Socket.IO connections, in total and per user.
//! - [`cluster`]: several nodes sharing events and history through Redis.
//! - [`readiness`]: what `/ready` checks (store write probe, runner, Redis).
//! - [`state`]: [`state::AppState`], what handlers share, and the Socket.IO counters.
//! - [`error`]: HTTP errors and their responses.
//! - [`socket`]: the Socket.IO endpoint: sessions, subscriptions, replay, fan-out, emits.
//! - [`http`]: the REST API and `/health`.
//! - [`compat`]: the compatibility gateways: the WebSocket and REST endpoints of the other seed systems' frontends.
//! - [`startup`]: [`startup::Application`] builds the server, binds it, runs it until stopped.
//!
//! An event flows: runner → [`journal::Journal::record`] → store writer and
//! [`socket::fanout::Fanout`] → [`socket::emit`] → sockets in the job's and
//! project's rooms.

pub mod artifact;
pub mod auth;
pub mod cluster;
pub mod compat;
pub mod config;
pub mod connections;
pub mod error;
pub mod http;
pub mod ingest;
pub mod job;
pub mod journal;
pub mod metrics;
pub mod readiness;
pub mod retention;
pub mod runner;
pub mod socket;
pub mod startup;
pub mod state;
pub mod store;
pub mod tap;
pub mod tasks;
pub mod telemetry;
pub mod watch;
pub mod wire;
