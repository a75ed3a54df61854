//! `subscribe:jobs` / `unsubscribe:jobs`: hear of every new job the caller may see,
//! as `jobs:created`, whatever its project. A list of builds uses it to show a
//! project it did not know of (it then follows that project's room).
//!
//! The fan-out sends `jobs:created` (the job's first event, `queued`) to each socket
//! of [`FEED_ROOM`] whose principal may see the job's project, and nothing else
//! goes to that room: one message per new job.

use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef, TryData};

use super::session;
use crate::wire::{Ack, Empty};

/// The room of sockets that take `jobs:created`. (Every other room name has a `:`.)
pub const FEED_ROOM: &str = "jobs";

/// The event announcing a new job to [`FEED_ROOM`].
pub const JOBS_CREATED: &str = "jobs:created";

fn answer(ack: AckSender, reply: Ack<Empty>) {
    if let Err(e) = ack.send(&reply) {
        tracing::debug!(error = %e, "could not send an acknowledgement");
    }
}

/// `subscribe:jobs` (no payload needed; any is ignored).
pub async fn subscribe_jobs(socket: SocketRef, _: TryData<Value>, ack: AckSender) {
    let session = session(&socket);
    if let Err(e) = session.admit_event().and_then(|()| session.follow_feed()) {
        e.count();
        crate::metrics::subscribe_ack("jobs", e.label());
        return answer(ack, Ack::err(e.to_string()));
    }
    super::join(&socket, FEED_ROOM.to_owned());
    tracing::debug!(sid = %socket.id, "subscribed to new jobs");
    crate::metrics::subscribe_ack("jobs", "ok");
    answer(ack, Ack::ok(Empty {}));
}

pub async fn unsubscribe_jobs(socket: SocketRef, _: TryData<Value>, ack: AckSender) {
    let session = session(&socket);
    if let Err(e) = session.admit_event() {
        return answer(ack, Ack::err(e.to_string()));
    }
    session.unfollow_feed();
    super::leave(&socket, FEED_ROOM.to_owned());
    answer(ack, Ack::ok(Empty {}));
}
