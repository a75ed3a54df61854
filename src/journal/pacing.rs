//! What a producer of job events waits on before its next line: history that
//! falls behind (a slow disk, [`Backpressure`]) and delivery that falls behind
//! ([`DeliveryLag`]: events handed to the sink and not yet sent on).
//!
//! Waiting here paces a build's output to what the server can store and deliver,
//! as a pipe paces a writer to its reader: memory stays bounded, and a fast build
//! cannot push every subscriber into catch-up (which costs more than live
//! delivery). Only the runner's own builds wait; external workers and mirrored
//! events are not paced.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::store::writer::Backpressure;

/// Events handed to the sink and not yet sent on, counted by the sink.
#[derive(Debug)]
pub struct DeliveryLag {
    queued: AtomicUsize,
    /// Producers wait while more than this many are queued.
    limit: usize,
    /// Whether a producer waits (so the sink only notifies when one does).
    waiting: AtomicBool,
    room: Notify,
}

impl DeliveryLag {
    pub fn new(limit: usize) -> Self {
        Self {
            queued: AtomicUsize::new(0),
            limit,
            waiting: AtomicBool::new(false),
            room: Notify::new(),
        }
    }

    /// `n` more items queued for delivery.
    pub fn queued(&self, n: usize) {
        self.queued.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` items sent on.
    pub fn sent(&self, n: usize) {
        let before = self.queued.fetch_sub(n, Ordering::Relaxed);
        if before <= self.limit + n && self.waiting.load(Ordering::Acquire) {
            self.waiting.store(false, Ordering::Release);
            self.room.notify_waiters();
        }
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn wait_for_room(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.waiting.store(true, Ordering::Release);
            if self.queued.load(Ordering::Relaxed) <= self.limit {
                return;
            }
            notified.await;
        }
    }
}

/// What a producer waits on; see the module docs.
#[derive(Clone)]
pub struct Pacing {
    pub(super) history: Backpressure,
    pub(super) delivery: Arc<DeliveryLag>,
}

impl Pacing {
    /// Waits until both history and delivery have room for more.
    pub async fn wait_for_room(&self) {
        self.delivery.wait_for_room().await;
        self.history.wait_for_room().await;
    }
}
