//! Which long-polling clients are polling. A request layer ([`track`]) notes, per
//! session id, whether a poll (`GET <path>?…transport=polling&sid=…`) is open and
//! since when, or when the last one ended, and whether it is *parked*: engineioxide
//! found nothing queued for the client and waits, and nothing has been queued
//! since. engineioxide does not say either.
//!
//! Two things need it:
//! - [`sweep_abandoned`] disconnects polling clients that stopped polling without
//!   closing (a closed laptop, a killed tab), so their connection slot is given
//!   back after `WEBSOCKET_POLLING_TIMEOUT_MS` instead of the heartbeat's 45 s;
//! - at shutdown, [`super::close`] closes the sessions once their polls are parked,
//!   so each client has taken everything queued and its parked poll carries the
//!   close packet.
//!
//! A poll is parked when its response future last returned `Pending` and has not
//! been woken since. engineioxide's poll checks the client's queue each time it is
//! polled, and queueing a packet wakes it: so a parked poll proves the queue empty.
//! (How long a poll has been open proves nothing: a poll woken by a packet may not
//! have run yet, and a woken poll takes only the first packet queued.)

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use socketioxide::{SocketIo, TransportType};
use tokio_util::sync::CancellationToken;

/// The polls of every long-polling session, by session id.
pub struct Polls {
    /// The Socket.IO path (`WEBSOCKET_PATH`).
    path: Arc<str>,
    sessions: Mutex<HashMap<String, PollState>>,
}

#[derive(Debug)]
struct PollState {
    /// Polls in progress (engineioxide closes a session that has two).
    waiting: u32,
    /// When the current poll started, or, with none waiting, when the last ended.
    since: Instant,
    /// Whether the session's open poll is parked.
    park: Arc<Park>,
}

impl PollState {
    fn new() -> Self {
        Self {
            waiting: 0,
            since: Instant::now(),
            park: Arc::default(),
        }
    }
}

/// Whether a session's poll is parked, and how often it was woken.
#[derive(Debug, Default)]
struct Park {
    state: Mutex<ParkState>,
}

#[derive(Debug, Default)]
struct ParkState {
    wakes: u64,
    parked: bool,
}

impl Park {
    /// Before the poll's future is polled: it runs, so it is not parked. Returns
    /// the wakes so far.
    fn running(&self) -> u64 {
        let mut state = self.state.lock().expect("park");
        state.parked = false;
        state.wakes
    }

    /// The poll's future returned `Pending`: it is parked unless it was woken
    /// after `wakes` (something was queued while it ran).
    fn pending(&self, wakes: u64) {
        let mut state = self.state.lock().expect("park");
        state.parked = state.wakes == wakes;
    }

    fn woken(&self) {
        let mut state = self.state.lock().expect("park");
        state.wakes += 1;
        state.parked = false;
    }

    fn is_parked(&self) -> bool {
        self.state.lock().expect("park").parked
    }
}

/// The waker a poll's future is given: notes the wake, then wakes the request.
struct Unpark {
    park: Arc<Park>,
    request: Waker,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.park.woken();
        self.request.wake_by_ref();
    }
}

/// A poll in progress; ends (in [`Polls`]) when dropped, whether the poll was
/// answered or its connection went away.
pub struct Poll {
    polls: Arc<Polls>,
    sid: String,
    park: Arc<Park>,
}

impl Drop for Poll {
    fn drop(&mut self) {
        self.park.running();
        let mut sessions = self.polls.sessions.lock().expect("polls");
        if let Some(state) = sessions.get_mut(&self.sid) {
            state.waiting = state.waiting.saturating_sub(1);
            state.since = Instant::now();
        }
    }
}

impl Polls {
    pub fn new(path: &str) -> Arc<Self> {
        Arc::new(Self {
            path: path.into(),
            sessions: Mutex::default(),
        })
    }

    /// Notes that a poll of session `sid` started.
    pub fn start(self: &Arc<Self>, sid: &str) -> Poll {
        let mut sessions = self.sessions.lock().expect("polls");
        let state = sessions
            .entry(sid.to_owned())
            .or_insert_with(PollState::new);
        state.waiting += 1;
        state.since = Instant::now();
        Poll {
            polls: self.clone(),
            sid: sid.to_owned(),
            park: state.park.clone(),
        }
    }

    /// Whether a poll of `sid` is parked: its client has taken everything queued
    /// for it, and will get what is queued next.
    pub fn is_parked(&self, sid: &str) -> bool {
        let sessions = self.sessions.lock().expect("polls");
        sessions
            .get(sid)
            .is_some_and(|s| s.waiting > 0 && s.park.is_parked())
    }

    /// How long the client of `sid` has not been polling (zero while a poll
    /// waits). A session seen for the first time counts from now.
    fn silent_for(&self, sid: &str) -> Duration {
        let mut sessions = self.sessions.lock().expect("polls");
        let state = sessions
            .entry(sid.to_owned())
            .or_insert_with(PollState::new);
        if state.waiting > 0 {
            Duration::ZERO
        } else {
            state.since.elapsed()
        }
    }

    /// Forgets the sessions `keep` says are gone (unless a poll of theirs waits).
    fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.sessions
            .lock()
            .expect("polls")
            .retain(|sid, state| state.waiting > 0 || keep(sid));
    }

    /// The session id of a long-polling `GET` to the Socket.IO path, if it is one.
    fn poll_of(&self, request: &Request) -> Option<String> {
        if request.method() != Method::GET
            || !super::request_head::is_socket_io_path(request.uri().path(), &self.path)
        {
            return None;
        }
        let query = request.uri().query()?;
        let mut sid = None;
        let mut polling = false;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "sid" => sid = Some(value.into_owned()),
                "transport" => polling = value == "polling",
                _ => {}
            }
        }
        sid.filter(|_| polling)
    }
}

/// Request layer (axum middleware, right outside the Socket.IO layer): notes each
/// poll from its start until it is answered or dropped, and when it is parked.
pub async fn track(State(polls): State<Arc<Polls>>, request: Request, next: Next) -> Response {
    let Some(sid) = polls.poll_of(&request) else {
        return next.run(request).await;
    };
    let poll = polls.start(&sid);
    let mut response = pin!(next.run(request));
    poll_fn(|cx| {
        let wakes = poll.park.running();
        let waker = Waker::from(Arc::new(Unpark {
            park: poll.park.clone(),
            request: cx.waker().clone(),
        }));
        let polled = response.as_mut().poll(&mut Context::from_waker(&waker));
        if polled.is_pending() {
            poll.park.pending(wakes);
        }
        polled
    })
    .await
}

/// Disconnects long-polling clients that have not polled for `timeout`, checking a
/// few times per timeout, until `stop` is cancelled. The disconnect gives the
/// connection slot back at once; the Engine.IO session itself ends with the
/// heartbeat, as the client is not there to take the close.
pub async fn sweep_abandoned(
    io: SocketIo,
    polls: Arc<Polls>,
    timeout: Duration,
    stop: CancellationToken,
) {
    let every = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let polling: Vec<_> = io
            .sockets()
            .into_iter()
            .filter(|s| s.transport_type() == TransportType::Polling)
            .map(|s| (s.id.to_string(), s))
            .collect();
        polls.retain(|sid| polling.iter().any(|(id, _)| id == sid));
        for (sid, socket) in polling {
            let silent = polls.silent_for(&sid);
            if silent < timeout {
                continue;
            }
            tracing::info!(%sid, silent_ms = silent.as_millis(), "disconnecting a polling client that stopped polling");
            let session = socket.extensions.get::<Arc<super::Session>>();
            if let Err(e) = socket.disconnect() {
                // Its queue is full: the heartbeat will end the session, but the
                // slot is given back now.
                tracing::info!(%sid, error = %e, "cannot queue the disconnect; releasing the connection slot");
                if let Some(session) = session {
                    session.release();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str) -> Request {
        Request::get(uri).body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn only_polls_to_the_socket_io_path_are_tracked() {
        let polls = Polls::new("/ws");
        assert_eq!(
            polls.poll_of(&get("/ws/?EIO=4&transport=polling&sid=abc")),
            Some("abc".into())
        );
        assert_eq!(polls.poll_of(&get("/ws/?EIO=4&transport=polling")), None);
        assert_eq!(
            polls.poll_of(&get("/ws/?EIO=4&transport=websocket&sid=abc")),
            None
        );
        assert_eq!(
            polls.poll_of(&get("/api/jobs?transport=polling&sid=abc")),
            None
        );
    }

    #[test]
    fn a_session_is_waiting_while_a_poll_is_open_and_silent_after() {
        let polls = Polls::new("/ws");
        let poll = polls.start("s");
        assert_eq!(polls.silent_for("s"), Duration::ZERO);
        let wakes = poll.park.running();
        poll.park.pending(wakes);
        assert!(polls.is_parked("s"));
        drop(poll);
        assert!(!polls.is_parked("s"));
        std::thread::sleep(Duration::from_millis(20));
        assert!(polls.silent_for("s") >= Duration::from_millis(20));
        polls.retain(|_| false);
        assert!(polls.sessions.lock().unwrap().is_empty());
    }

    #[test]
    fn a_poll_woken_while_it_ran_is_not_parked() {
        let polls = Polls::new("/ws");
        let poll = polls.start("s");
        assert!(!polls.is_parked("s"), "open but not yet polled");
        let wakes = poll.park.running();
        // Something is queued while the poll's future runs, after it looked.
        poll.park.woken();
        poll.park.pending(wakes);
        assert!(!polls.is_parked("s"));
        let wakes = poll.park.running();
        poll.park.pending(wakes);
        assert!(polls.is_parked("s"));
        poll.park.woken();
        assert!(!polls.is_parked("s"), "woken, not yet run");
    }
}
