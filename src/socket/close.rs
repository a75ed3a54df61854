//! Closing every Socket.IO connection at shutdown so that each client gets what
//! is queued for it (the stopped builds' last events) and then a clean close
//! (`transport close` in socket.io-client, which reconnects by itself).
//!
//! socketioxide's `SocketIo::close` queues an Engine.IO close packet for every
//! session and removes the sessions at once. A WebSocket client still gets its
//! queue and the close, in order. A long-polling client only does if a poll of
//! its is parked at that moment (see [`super::polls`]): its queue is then empty
//! and the poll carries the close. A poll that is woken but has not yet run takes
//! only the first packet queued (the stopped build's last log line, say) and the
//! rest is gone with the session; a client between two polls would find its
//! session gone. So [`close_all`] first waits, for at most half the grace period,
//! until every polling client's poll is parked (which means it took everything
//! queued), then closes. Clients that stopped reading or polling cannot hold the
//! shutdown past its deadline.

use std::time::Duration;

use socketioxide::{SocketIo, TransportType};
use tokio::time::Instant;

use super::polls::Polls;

/// How often the polling clients are checked.
const CHECK_EVERY: Duration = Duration::from_millis(10);

/// Closes every connection, by `deadline` at the latest.
pub async fn close_all(io: &SocketIo, polls: &Polls, deadline: Instant) {
    let now = Instant::now();
    let settle_by = now + deadline.saturating_duration_since(now) / 2;
    loop {
        let unsettled = io
            .sockets()
            .iter()
            .filter(|s| s.transport_type() == TransportType::Polling)
            .filter(|s| !polls.is_parked(&s.id.to_string()))
            .count();
        if unsettled == 0 {
            break;
        }
        if Instant::now() >= settle_by {
            tracing::info!(
                clients = unsettled,
                "closing polling clients that are not polling"
            );
            break;
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
    if tokio::time::timeout_at(deadline, io.close()).await.is_err() {
        tracing::warn!("some clients did not take their close before the grace period ended");
    }
}
