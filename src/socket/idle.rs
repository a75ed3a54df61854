//! Disconnecting idle clients: sockets with no subscription that sent nothing for
//! `IDLE_TIMEOUT_SECS`.

use std::sync::Arc;
use std::time::Duration;

use socketioxide::SocketIo;

use super::session::Session;

/// Disconnects sockets that have had no subscription and sent no event for
/// `timeout`, checking a few times per timeout, until `stop` is cancelled.
pub async fn sweep_idle(
    io: SocketIo,
    timeout: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let every = (timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        for socket in io.sockets() {
            let idle = socket
                .extensions
                .get::<Arc<Session>>()
                .and_then(|s| s.idle_for());
            if idle.is_some_and(|idle| idle >= timeout) {
                tracing::info!(sid = %socket.id, "disconnecting idle client");
                if let Err(e) = socket.clone().disconnect()
                    && !matches!(e, socketioxide::SocketError::Closed)
                {
                    // Its buffer is full: the next round tries again (and a client
                    // that reads nothing is dropped by the heartbeat meanwhile).
                    tracing::warn!(sid = %socket.id, error = %e, "could not disconnect an idle client yet");
                }
            }
        }
    }
}
