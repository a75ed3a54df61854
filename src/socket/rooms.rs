//! The rooms a socket joins, and their names: `job:<id>` (one `job:log` per
//! line), `logs:<id>` (`job:logs` runs) and `project:<id>`. Every join and leave
//! goes through [`join`] and [`leave`], which tell the fan-out that membership
//! changed.

use socketioxide::extract::SocketRef;

use super::session::{Subscription, session};
use crate::job::{JobId, ProjectId};

/// The room of a job's subscribers that take one `job:log` per line.
pub fn job_room(id: &JobId) -> String {
    format!("job:{id}")
}

/// The room of a job's subscribers that take log lines in `job:logs` runs (ids may
/// contain `:`, so this prefix must differ from [`job_room`]'s).
pub fn job_batch_room(id: &JobId) -> String {
    format!("logs:{id}")
}

/// Puts `socket` in `room`, telling the fan-out that membership changed. (Every
/// join and leave goes through here or [`leave`].)
pub fn join(socket: &SocketRef, room: String) {
    socket.join(room.clone());
    session(socket).membership_changed();
    super::admin::room_joined(socket, &room);
}

/// Takes `socket` out of `room`, telling the fan-out that membership changed.
pub fn leave(socket: &SocketRef, room: String) {
    socket.leave(room.clone());
    session(socket).membership_changed();
    super::admin::room_left(socket, &room);
}

/// The room that delivers a subscription's live events.
pub fn room_of(id: &JobId, subscription: Subscription) -> String {
    if subscription.batch {
        job_batch_room(id)
    } else {
        job_room(id)
    }
}

/// The room of a project's subscribers.
pub fn project_room(id: &ProjectId) -> String {
    format!("project:{id}")
}
