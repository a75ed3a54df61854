//! `watchers:job`: how many connected clients follow a job, for the "N watching"
//! of a build page: its Socket.IO subscribers on this node, both transports,
//! and the gateway connections and HTTP streams that follow it here. Only a
//! socket that follows the job itself may ask (its subscription already passed
//! the visibility check), so the answer tells a restricted user nothing about
//! jobs it cannot see.

use std::collections::HashSet;

use serde::Serialize;
use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};

use super::subscriptions::parse_id;
use super::{job_batch_room, job_room, session};
use crate::job::JobId;
use crate::state::AppState;
use crate::wire::Ack;

#[derive(Serialize)]
struct Watchers {
    watchers: usize,
}

fn answer(ack: AckSender, reply: Ack<Watchers>) {
    if let Err(e) = ack.send(&reply) {
        tracing::debug!(error = %e, "could not send an acknowledgement");
    }
}

/// `watchers:job` with a job id: `{ ok, watchers }`.
pub async fn watchers(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    State(state): State<AppState>,
) {
    let session = session(&socket);
    if let Err(e) = session.admit_event() {
        return answer(ack, Ack::err(e.to_string()));
    }
    let id = match data
        .map_err(|_| "missing or unreadable payload".to_string())
        .and_then(|v| parse_id(&v, "job id", JobId::parse))
    {
        Ok(id) => id,
        Err(e) => return answer(ack, Ack::err(e)),
    };
    if session.subscription(&id).is_none() {
        return answer(ack, Ack::err("subscribe to the job first"));
    }
    // Either room, once each; the asking socket counts even while it catches up
    // (out of the rooms for that time).
    let mut sids: HashSet<_> = [socket.id].into();
    for room in [job_room(&id), job_batch_room(&id)] {
        sids.extend(socket.within(room).sockets().iter().map(|s| s.id));
    }
    answer(
        ack,
        Ack::ok(Watchers {
            watchers: sids.len() + state.watchers.count(&id),
        }),
    );
}
