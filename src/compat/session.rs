//! The WebSocket session every gateway runs once its handshake is accepted: it
//! sends what the gateway's [`Source`] yields, answers the seed's application
//! ping, sends protocol Pings and drops a peer that stops answering, closes idle
//! connections on finished jobs, and closes with the right code at shutdown.
//!
//! What it deliberately does not do: drop or skip a message. A client that reads
//! slowly slows only its own session: while a write waits, the source is not
//! read, and its live queue (a [`crate::tap`] follower) overflows and goes back
//! to history from the last event it handed out. A client that reads nothing at
//! all for `WEBSOCKET_PING_INTERVAL_MS + WEBSOCKET_PING_TIMEOUT_MS` is dropped;
//! a source that cannot read history any more closes the connection with 1013
//! (try again later) so that the client reconnects.
//!
//! Close codes: 1000 idle timeout, 1001 server shutting down, 1009 a client
//! message over [`MAX_CLIENT_MESSAGE`], 1013 history unreadable. The seed's own
//! refusal codes (1008, 4001, 4003, 4004) are sent by [`close_now`] before a
//! session starts.

use std::future::Future;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::store::StoreError;

/// Largest client message; a larger one closes the connection with 1009.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// How long a close frame may take to go out.
const CLOSE_WRITE: Duration = Duration::from_secs(2);

/// What a gateway sends on one connection, as text frames.
pub trait Source: Send + 'static {
    /// The next frames to send, in order; `Ok(None)` once nothing more will come
    /// (the job completed). Must be cancel-safe: the session drops the future
    /// whenever the client or a timer needs attention, and calls again.
    fn next(&mut self) -> impl Future<Output = Result<Option<Vec<String>>, StoreError>> + Send;
    /// The answer to a client's text message (the seed's ping), if any.
    fn answer(&mut self, text: &str) -> Option<String>;
    /// Whether what the connection watches has finished (for the idle rule).
    fn finished(&self) -> bool;
}

/// The timings and limits of a session, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Between two protocol Pings (`WEBSOCKET_PING_INTERVAL_MS`).
    pub ping_interval: Duration,
    /// Longest wait for a Pong (`WEBSOCKET_PING_TIMEOUT_MS`).
    pub ping_timeout: Duration,
    /// `IDLE_TIMEOUT_SECS`: no client message for this long, on a finished job.
    pub idle: Duration,
    /// `MAX_EVENTS_PER_SECOND`: client messages answered per second at most.
    pub max_per_second: u32,
    /// The gateway, for the metrics of refused messages.
    pub endpoint: crate::metrics::Endpoint,
}

/// A close code and its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close(pub u16, pub &'static str);

pub const IDLE: Close = Close(1000, "idle timeout");
pub const GOING_AWAY: Close = Close(1001, "server shutting down");
pub const TOO_BIG: Close = Close(1009, "message too big");
pub const TRY_AGAIN: Close = Close(1013, "try again later");

/// Sends `close` and ends the connection (a refusal after the upgrade, so that
/// the client can read the code).
pub async fn close_now(mut socket: WebSocket, close: Close) {
    let frame = Message::Close(Some(CloseFrame {
        code: close.0,
        reason: close.1.into(),
    }));
    match timeout(CLOSE_WRITE, socket.send(frame)).await {
        Ok(Ok(())) => {
            // Wait briefly for the client's close, so the code reaches it
            // before the TCP connection ends.
            let _ = timeout(CLOSE_WRITE, async {
                while socket.recv().await.is_some() {}
            })
            .await;
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "could not send a close frame"),
        Err(_) => tracing::debug!("a close frame timed out"),
    }
}

/// Why a session ended.
enum End {
    /// Close with this code.
    Close(Close),
    /// The client closed, went away, or stopped answering: nothing to send.
    Gone,
}

/// Runs a session until the client leaves, the server shuts down, or a rule
/// closes it.
pub async fn run<S: Source>(
    socket: WebSocket,
    mut source: S,
    timing: Timing,
    closing: CancellationToken,
) {
    let (mut tx, mut rx) = socket.split();
    // A write that takes longer than this means the client reads nothing at all.
    let write_timeout = timing.ping_interval + timing.ping_timeout;
    let mut next_ping = Instant::now() + timing.ping_interval;
    let mut pong_due: Option<Instant> = None;
    let mut last_message = Instant::now();
    let mut idle_check = tokio::time::interval(
        timing
            .idle
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(100)),
    );
    let mut window = (Instant::now(), 0u32);
    let mut ended = false;
    let end = loop {
        tokio::select! {
            biased;
            () = closing.cancelled() => break End::Close(GOING_AWAY),
            incoming = rx.next() => match incoming {
                None => break End::Gone,
                Some(Ok(Message::Close(_))) => {
                    // tungstenite queued the reply to the client's close: send it.
                    let _ = timeout(CLOSE_WRITE, tx.flush()).await;
                    break End::Gone;
                }
                Some(Err(e)) => {
                    if is_too_big(&e) {
                        break End::Close(TOO_BIG);
                    }
                    tracing::debug!(error = %e, "gateway connection read failed");
                    break End::Gone;
                }
                Some(Ok(Message::Pong(_))) => pong_due = None,
                Some(Ok(Message::Ping(_))) => {}
                Some(Ok(Message::Binary(_))) => last_message = Instant::now(),
                Some(Ok(Message::Text(text))) => {
                    last_message = Instant::now();
                    if window.0.elapsed() >= Duration::from_secs(1) {
                        window = (Instant::now(), 0);
                    }
                    window.1 += 1;
                    if window.1 > timing.max_per_second {
                        crate::metrics::limit_refused(timing.endpoint, "max_events_per_second");
                        continue;
                    }
                    if let Some(reply) = source.answer(text.as_str()) {
                        match timeout(write_timeout, tx.send(Message::Text(reply.into()))).await {
                            Ok(Ok(())) => {}
                            _ => break End::Gone,
                        }
                    }
                }
            },
            () = sleep_until(pong_due.unwrap_or(next_ping)), if pong_due.is_some() => {
                tracing::debug!("gateway client answered no ping: dropped");
                break End::Gone;
            }
            () = sleep_until(next_ping) => {
                next_ping = Instant::now() + timing.ping_interval;
                match timeout(write_timeout, tx.send(Message::Ping(Default::default()))).await {
                    Ok(Ok(())) => {
                        pong_due.get_or_insert(Instant::now() + timing.ping_timeout);
                    }
                    _ => break End::Gone,
                }
            }
            _ = idle_check.tick() => {
                if source.finished() && last_message.elapsed() >= timing.idle {
                    break End::Close(IDLE);
                }
            }
            frames = source.next(), if !ended => match frames {
                Ok(Some(frames)) => {
                    let sent = timeout(write_timeout, async {
                        for frame in frames {
                            tx.feed(Message::Text(frame.into())).await?;
                        }
                        tx.flush().await
                    })
                    .await;
                    match sent {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "gateway connection write failed");
                            break End::Gone;
                        }
                        Err(_) => {
                            tracing::info!("gateway client read nothing for the write timeout: dropped");
                            break End::Gone;
                        }
                    }
                }
                Ok(None) => ended = true,
                Err(e) => {
                    tracing::warn!(error = %e, "gateway connection could not read history: closing with 1013");
                    break End::Close(TRY_AGAIN);
                }
            },
        }
    };
    if let End::Close(close) = end {
        let frame = Message::Close(Some(CloseFrame {
            code: close.0,
            reason: close.1.into(),
        }));
        if let Ok(Ok(())) = timeout(CLOSE_WRITE, tx.send(frame)).await {
            let _ = timeout(CLOSE_WRITE, async { while rx.next().await.is_some() {} }).await;
        }
    }
}

/// Whether a read error is a client message over [`MAX_CLIENT_MESSAGE`].
fn is_too_big(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("Space limit exceeded")
        || text.contains("too long")
        || text.contains("Message too big")
}
