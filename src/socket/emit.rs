//! Every Socket.IO emit of a job or project event, and what became of it: the one
//! place where recorded events become packets for a socket.
//!
//! The fan-out ([`super::fanout`]) and replays ([`super::replay`]) decide *which*
//! socket gets *what*; this module sends it and reports [`Emit::Full`] (the
//! socket's buffer is full: the caller catches it up from history) or
//! [`Emit::Closed`]. No emit error is ignored. Acknowledgements are answered in
//! [`super::ack`].

use std::sync::Arc;

use socketioxide::extract::SocketRef;
use socketioxide::{SendError, SocketError};

use super::batch::LogRun;
use crate::job::EventKind;
use crate::journal::RecordedEvent;
use crate::wire::events::JOB_LOGS;
use crate::wire::job_event_name;

/// How an emit to one socket can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// Its buffer is full: the client reads slower than events come.
    Full,
    /// It is gone.
    Closed,
}

/// Emits a job event to one socket, as its `job:*` event.
pub fn emit_event(socket: &SocketRef, event: &RecordedEvent) -> Result<(), Emit> {
    outcome(socket.emit(job_event_name(event.kind), &*event.json))
}

/// Emits a run of log lines to one socket as one `job:logs` event.
pub fn emit_run(socket: &SocketRef, run: &[Arc<RecordedEvent>]) -> Result<(), Emit> {
    outcome(socket.emit(JOB_LOGS, &LogRun(run)))
}

/// Emits what [`super::batch::run_len`] grouped: a run of lines when batching,
/// else one event.
pub fn emit_unit(socket: &SocketRef, unit: &[Arc<RecordedEvent>], batch: bool) -> Result<(), Emit> {
    if batch && unit[0].kind == EventKind::Log {
        emit_run(socket, unit)
    } else {
        emit_event(socket, &unit[0])
    }
}

/// Emits a job event to one socket of a project room, as `name` (`project:*`).
pub fn emit_project(
    socket: &SocketRef,
    name: &'static str,
    event: &RecordedEvent,
) -> Result<(), Emit> {
    outcome(socket.emit(name, &*event.json))
}

fn outcome(sent: Result<(), SendError>) -> Result<(), Emit> {
    match sent {
        Ok(()) => Ok(()),
        Err(SendError::Socket(SocketError::InternalChannelFull)) => Err(Emit::Full),
        Err(SendError::Socket(SocketError::Closed)) => Err(Emit::Closed),
        Err(e) => {
            tracing::error!(error = %e, "could not encode an event");
            // Nothing was queued, and sending again would fail the same way.
            Ok(())
        }
    }
}
