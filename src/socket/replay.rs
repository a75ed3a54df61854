//! Attaching a socket to a job: replay of the events it missed, then live delivery,
//! with no gap and no duplicate.
//!
//! The socket first leaves the job's room, so that live events stop reaching it
//! directly. Old events are then sent from the store, paced by the socket's buffer,
//! without holding the job's lock. Once the events still missing are all in the
//! journal's in-memory window, the socket gets them and joins the room *under the
//! job's lock*: no event can be recorded in between, so the next one it receives
//! live is exactly the one after the last replayed. The fan-out's workers emit
//! asynchronously, so they may still hold events recorded before the join for a
//! socket list taken before the leave: the socket's [`super::session::Gate`],
//! closed while it is replayed and opened at the join's position, keeps those from
//! reaching it a second time.
//!
//! The same path catches up a socket whose buffer overflowed during live delivery
//! ([`super::fanout`]): it is taken out of the room and replayed from the event it
//! missed.
//!
//! A subscription that chose `batch` gets the replayed log lines in `job:logs` runs
//! too ([`super::batch`]), and joins the job's batch room.
//!
//! A catch-up never gives up on a connected socket: however long its client stops
//! reading, delivery goes on once it reads again. A client that never reads again
//! is dropped by Engine.IO's heartbeat (its ping cannot be queued or is never
//! answered), which closes the transport for real, so the client reconnects and
//! resumes. There is no state in which a socket stays connected and is no longer
//! delivered to.

use std::sync::Arc;
use std::time::Duration;

use socketioxide::extract::SocketRef;

use super::batch::{MAX_LINES, run_len};
use super::emit::{Emit, emit_unit};
use super::{Subscription, job_batch_room, job_room, room_of, session};
use crate::job::{JobId, JobRecord};
use crate::journal::{Journal, RecordedEvent};
use crate::store::StoreError;

/// Events read from the store per round trip.
const PAGE: usize = 1000;
/// Pause between bursts of a catch-up.
const PAUSE: Duration = Duration::from_millis(10);
/// Longest pause while the client takes nothing: the pause doubles from [`PAUSE`]
/// up to this, so a stalled client costs a few wake-ups a second, not a hundred.
const STALLED_PAUSE: Duration = Duration::from_millis(320);

/// Where the replay of a job starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// Live events only, from now.
    Now,
    /// Every event with `seq > since`.
    After(u64),
}

/// What attaching found.
#[derive(Debug)]
pub struct Attached {
    /// The job's state when the socket joined its live events (`None`: no such job yet).
    pub job: Option<JobRecord>,
    /// Whether some events after the requested position no longer exist (the dropped
    /// middle of a long log), so the replay skipped over them.
    pub gap: bool,
}

/// Why attaching stopped.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("the connection closed")]
    Closed,
    #[error("a newer subscription replaced this one")]
    Superseded,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Paces a catch-up so that it does not keep the socket's queue full.
///
/// Engine.IO drops a client whose queue is full when a heartbeat ping is due, so
/// a catch-up must leave room. Until the queue first fills, events go out as fast
/// as they can; after that, each burst between pauses is limited to half of what
/// got through before the queue filled, and grows by a quarter after every burst
/// that did not fill it (additive-increase, multiplicative-decrease, as TCP does).
#[derive(Debug, Default)]
struct Pacer {
    /// Events allowed per burst; `None` until the queue first fills.
    budget: Option<usize>,
    /// Events sent in the current burst.
    sent: usize,
    /// Pauses in a row after which the queue was still full.
    stalled: u32,
}

impl Pacer {
    fn may_send(&self) -> bool {
        self.budget.is_none_or(|budget| self.sent < budget)
    }

    /// How many more events the current burst may send (most [`PAGE`] at a time).
    fn room(&self) -> usize {
        self.budget
            .map_or(PAGE, |budget| budget.saturating_sub(self.sent))
            .min(PAGE)
    }

    fn sent_one(&mut self) {
        self.sent += 1;
        self.stalled = 0;
    }

    /// The queue is full: the next bursts are smaller.
    fn full(&mut self) {
        self.budget = Some((self.sent / 2).max(1));
        if self.sent == 0 {
            self.stalled = self.stalled.saturating_add(1);
        }
        self.sent = 0;
    }

    /// Waits between bursts, longer while the client takes nothing. Ends only when
    /// the socket has closed.
    async fn pause(&mut self, socket: &SocketRef) -> Result<(), AttachError> {
        if let Some(budget) = self.budget
            && self.sent >= budget
        {
            self.budget = Some(budget + budget / 4 + 1);
        }
        self.sent = 0;
        tokio::time::sleep(pause_after(self.stalled)).await;
        if session(socket).is_closed() {
            return Err(AttachError::Closed);
        }
        Ok(())
    }

    /// Sends one event or run of lines, pausing as the budget and the queue require.
    async fn send(
        &mut self,
        socket: &SocketRef,
        unit: &[Arc<RecordedEvent>],
        batch: bool,
    ) -> Result<(), AttachError> {
        loop {
            if !self.may_send() {
                self.pause(socket).await?;
                continue;
            }
            match emit_unit(socket, unit, batch) {
                Ok(()) => {
                    crate::metrics::replayed_events(unit.len() as u64);
                    self.sent_one();
                    return Ok(());
                }
                Err(Emit::Closed) => return Err(AttachError::Closed),
                Err(Emit::Full) => {
                    self.full();
                    self.pause(socket).await?;
                }
            }
        }
    }
}

/// How long to pause after `stalled` full pauses in a row: [`PAUSE`], doubling up
/// to [`STALLED_PAUSE`].
pub(super) fn pause_after(stalled: u32) -> Duration {
    PAUSE.saturating_mul(1 << stalled.min(8)).min(STALLED_PAUSE)
}

/// The subscription a replay serves; it stops once a newer one (or an
/// unsubscribe) replaces it.
#[derive(Clone, Copy)]
struct ServedSubscription<'a> {
    socket: &'a SocketRef,
    id: &'a JobId,
    subscription: Subscription,
}

impl ServedSubscription<'_> {
    fn still(&self) -> bool {
        session(self.socket).is_current(self.id, self.subscription.generation)
    }
}

enum Step {
    Done(Box<Attached>),
    /// Replay from the store up to (not including) this seq, then try again.
    FromStore {
        until: u64,
    },
    /// The buffer filled, or the pacing budget ran out, at this position; pause
    /// and go on from it.
    Pause {
        cursor: u64,
    },
    /// Sent all that was taken from the window up to this position; more follows.
    More {
        cursor: u64,
    },
    /// The job is not in memory; look in the store.
    NotLive,
}

/// Attaches `socket` to job `id` from `start`, as `subscription`.
pub async fn attach(
    journal: &Arc<Journal>,
    socket: &SocketRef,
    id: &JobId,
    start: Start,
    subscription: Subscription,
) -> Result<Attached, AttachError> {
    let room = room_of(id, subscription);
    let batch = subscription.batch;
    let generation = subscription.generation;
    let session = session(socket);
    let current = ServedSubscription {
        socket,
        id,
        subscription,
    };
    wait_connected(socket, &session).await?;
    // Out of both rooms, and no live event from a fan-out worker until it is
    // live again: a new subscription may have switched between the rooms.
    session.gate(id).close();
    super::leave(socket, job_room(id));
    super::leave(socket, job_batch_room(id));
    let mut pacer = Pacer::default();
    let mut gap = false;
    let mut cursor = match start {
        Start::Now => None,
        Start::After(since) => Some(since),
    };
    loop {
        if !session.is_current(id, generation) {
            return Err(AttachError::Superseded);
        }
        if session.is_closed() {
            return Err(AttachError::Closed);
        }
        let limit = pacer.room().max(1) * if batch { MAX_LINES } else { 1 };
        let step = journal
            .with_live(id, |view| {
                // Only what this burst may send is taken from the window: a long
                // catch-up must not copy the whole window at every pause.
                let (events, more) = match cursor {
                    None => (Vec::new(), false),
                    Some(since) => match view.events_after(since, limit) {
                        Ok(events) => events,
                        Err(first) => return Step::FromStore { until: first },
                    },
                };
                let mut expected = cursor.map_or(0, |c| c + 1);
                for event in &events {
                    if event.seq() != expected {
                        gap = true;
                    }
                    expected = event.seq() + 1;
                }
                let mut rest = &events[..];
                while !rest.is_empty() {
                    let (unit, after) = rest.split_at(run_len(rest, batch));
                    let paused = Step::Pause {
                        cursor: unit[0].seq() - 1,
                    };
                    if !pacer.may_send() {
                        return paused;
                    }
                    match emit_unit(socket, unit, batch) {
                        Ok(()) => {
                            crate::metrics::replayed_events(unit.len() as u64);
                            pacer.sent_one();
                        }
                        Err(Emit::Full) => {
                            pacer.full();
                            return paused;
                        }
                        Err(Emit::Closed) => return Step::Done(Box::new(detached())),
                    }
                    rest = after;
                }
                if more {
                    return Step::More {
                        cursor: expected - 1,
                    };
                }
                go_live(socket, id, room.clone(), view.record.last_seq);
                if cursor
                    .is_some_and(|c| expected <= view.record.last_seq && c < view.record.last_seq)
                {
                    gap = true;
                }
                Step::Done(Box::new(Attached {
                    job: Some(view.record.clone()),
                    gap,
                }))
            })
            .unwrap_or(Step::NotLive);
        match step {
            Step::Done(mut attached) => {
                attached.gap |= gap;
                return Ok(*attached);
            }
            Step::Pause { cursor: at } => {
                cursor = Some(at);
                pacer.pause(socket).await?;
            }
            Step::More { cursor: at } => {
                cursor = Some(at);
                if !pacer.may_send() {
                    pacer.pause(socket).await?;
                }
            }
            Step::FromStore { until } => {
                let since = cursor.expect("store replay needs a position");
                let (last, skipped) =
                    replay_stored(journal, &current, &mut pacer, since, Some(until)).await?;
                // Every seq below `until` that exists is committed and was sent; the
                // store has no more of them (dropped from history): go on from the window.
                gap |= skipped || last + 1 < until;
                cursor = Some(last.max(until - 1));
            }
            Step::NotLive => {
                let stored = journal.stored_job(id).await?;
                if let Some(job) = stored {
                    // Finished and out of memory: all of it is in the store.
                    if let Some(since) = cursor {
                        let (_, skipped) =
                            replay_stored(journal, &current, &mut pacer, since, None).await?;
                        gap |= skipped;
                    }
                    go_live(socket, id, room.clone(), job.last_seq);
                    return Ok(Attached {
                        job: Some(job),
                        gap,
                    });
                }
                // Not created yet: join now, while no job can be created, so that
                // its first event is not missed.
                let joined = journal.if_not_live(id, || go_live(socket, id, room.clone(), 0));
                if joined.is_some() {
                    return Ok(Attached {
                        job: None,
                        gap: false,
                    });
                }
            }
        }
    }
}

/// Joins the room of the job's live events, whose last recorded event is `last_seq`
/// (under the job's lock, or while it cannot be created): the fan-out workers emit
/// the events after it, and none before, to this socket.
fn go_live(socket: &SocketRef, id: &JobId, room: String, last_seq: u64) {
    session(socket).gate(id).open_after(last_seq);
    super::join(socket, room);
}

fn detached() -> Attached {
    Attached {
        job: None,
        gap: false,
    }
}

/// Sends stored events with `since < seq < until` (or all after `since`); returns
/// the last seq sent (or `since` if none) and whether seqs were missing on the way.
async fn replay_stored(
    journal: &Arc<Journal>,
    current: &ServedSubscription<'_>,
    pacer: &mut Pacer,
    mut since: u64,
    until: Option<u64>,
) -> Result<(u64, bool), AttachError> {
    let ServedSubscription {
        socket,
        id,
        subscription,
    } = *current;
    let mut gap = false;
    loop {
        if !current.still() {
            return Err(AttachError::Superseded);
        }
        let limit = until.map_or(PAGE, |u| {
            usize::try_from(u.saturating_sub(since + 1)).map_or(PAGE, |n| n.min(PAGE))
        });
        if limit == 0 {
            return Ok((since, gap));
        }
        let page = journal.stored_events(id, since, limit).await?;
        if page.is_empty() {
            return Ok((since, gap));
        }
        let mut events = Vec::with_capacity(page.len());
        let mut done = false;
        for stored in page {
            if until.is_some_and(|u| stored.seq >= u) {
                done = true;
                break;
            }
            events.push(Arc::new(RecordedEvent {
                seq: stored.seq,
                kind: stored.kind,
                line: stored.line,
                json: serde_json::value::RawValue::from_string(stored.payload)
                    .map_err(|e| StoreError::Corrupt(format!("event {}: {e}", stored.seq)))?,
            }));
        }
        let mut rest = &events[..];
        while !rest.is_empty() {
            let (unit, after) = rest.split_at(run_len(rest, subscription.batch));
            for event in unit {
                gap |= event.seq != since + 1;
                since = event.seq;
            }
            pacer.send(socket, unit, subscription.batch).await?;
            rest = after;
        }
        if done {
            return Ok((since, gap));
        }
    }
}

/// Waits for socketioxide to finish connecting a socket whose client already sent
/// an event (emits to it fail until then).
async fn wait_connected(socket: &SocketRef, session: &super::Session) -> Result<(), AttachError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !socket.connected() {
        if session.is_closed() || tokio::time::Instant::now() > deadline {
            return Err(AttachError::Closed);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}
