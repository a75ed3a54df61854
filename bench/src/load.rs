//! The load generator's clients. Each speaks Engine.IO v4 / Socket.IO v5 itself,
//! over a WebSocket (its own framing, no library) or HTTP long-polling (hyper):
//!
//! ```text
//! server: 0{"sid":...}            client: 40
//! server: 40{"sid":...}           client: 420["subscribe:job","<id>"]
//! server: 430[{"ok":true,...}]    (subscribed: reported to the runner)
//! server: 42["job:log",{... "message":"t=<ns> n=<i> ...", ... "seq":N}]
//! server: 2                       client: 3
//! ```
//!
//! With `log_batch` the client subscribes with `{"jobId":"<id>","batch":true}` and
//! accepts `42["job:logs",[{...},{...}]]` (one payload per line) as well as
//! `job:log`. When its connection is closed or fails after it subscribed, it
//! reconnects (a new Engine.IO session) and subscribes again; on buildcast (`resume`)
//! with `since` = the last seq it received and the `epoch` of its first
//! subscription, so nothing is lost; elsewhere lines sent in between are lost.
//!
//! Per delivered line a client records receive time minus the `t=` stamp in a
//! shared histogram (sharded, one lock per read, not per message) and checks `n` and
//! `seq` ([`crate::check`]), across reconnections. Nothing else of the JSON is parsed.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::check::{Anomalies, ClientCheck};
use crate::hist::Hist;
use crate::scan::{self, Packet};
use crate::sys::{Rng, now_ns};
use crate::ws;

const SHARDS: usize = 32;
/// Attempts to connect and subscribe the first time.
const CONNECT_ATTEMPTS: u32 = 3;
/// Attempts in a row to reconnect and subscribe again after a lost connection.
const RECONNECT_ATTEMPTS: u32 = 5;

/// How the clients subscribe and behave.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientOptions {
    /// Subscribe with `batch: true` (buildcast then sends `job:logs`).
    pub log_batch: bool,
    /// The server resumes from `since` (buildcast): reconnect with it.
    pub resume: bool,
    /// Each client drops its connection once, after this many lines (tests resume).
    pub drop_after: Option<u64>,
    /// Slow readers (`--slow-read-ms`): every fifth WebSocket client has a 16 KiB
    /// receive buffer and pauses this long after each read, so the server's queue
    /// for it fills (buildcast then catches it up from history).
    pub slow_read: Option<Duration>,
    /// A stalled reader (`--stall-read-ms`): every fifth WebSocket client has a
    /// 16 KiB receive buffer and stops reading for this long once, right after its
    /// first line, then reads at full speed (a browser tab in the background).
    pub stall_read: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Polling,
}

/// What all clients of a run share.
pub struct Shared {
    pub addr: SocketAddr,
    /// The Socket.IO path with its trailing slash, e.g. `/ws/`.
    pub path: String,
    /// Lines each client expects (the line source's `--count`).
    pub lines_per_job: u64,
    /// Lines delivered so far, duplicates included.
    pub delivered: AtomicU64,
    /// Clients that have every line.
    pub complete_clients: AtomicUsize,
    /// When the latest line arrived (ns since the epoch).
    pub last_rx_ns: AtomicU64,
    /// Reconnections after a lost connection, over all clients.
    pub reconnects: AtomicU64,
    /// `job:logs` batches received, over all clients.
    pub batches: AtomicU64,
    pub opts: ClientOptions,
    hists: Vec<Mutex<Hist>>,
    stop_tx: watch::Sender<bool>,
}

impl Shared {
    pub fn new(addr: SocketAddr, path: &str, lines_per_job: u64, opts: ClientOptions) -> Arc<Self> {
        let path = if path.ends_with('/') {
            path.to_owned()
        } else {
            format!("{path}/")
        };
        Arc::new(Self {
            addr,
            path,
            lines_per_job,
            delivered: AtomicU64::new(0),
            complete_clients: AtomicUsize::new(0),
            last_rx_ns: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            opts,
            hists: (0..SHARDS).map(|_| Mutex::new(Hist::new())).collect(),
            stop_tx: watch::channel(false).0,
        })
    }

    /// Tells every client to close its connection and return.
    pub fn stop(&self) {
        self.stop_tx.send_replace(true);
    }

    /// All latencies recorded so far, in ns.
    pub fn latencies(&self) -> Hist {
        let mut all = Hist::new();
        for h in &self.hists {
            all.merge(&h.lock().expect("histogram"));
        }
        all
    }
}

/// How one client ended.
#[derive(Debug, Clone, Default)]
pub struct ClientResult {
    pub anomalies: Anomalies,
    /// Distinct lines received.
    pub lines: u64,
    /// Lines whose number was outside the expected range.
    pub stray: u64,
    pub complete: bool,
    /// Why the client ended other than by being stopped.
    pub error: Option<String>,
    pub transport: Option<Transport>,
    /// Times it reconnected after losing its connection.
    pub reconnects: u64,
    /// Why it lost its connection the first time.
    pub first_disconnect: Option<String>,
}

/// Starts one client. The receiver says when it is subscribed (or why not).
pub fn spawn(
    shared: Arc<Shared>,
    id: usize,
    job: String,
    transport: Transport,
) -> (
    JoinHandle<ClientResult>,
    oneshot::Receiver<Result<(), String>>,
) {
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(async move {
        let mut stop = shared.stop_tx.subscribe();
        let mut client = Client::new(shared.clone(), id, job);
        client.subscribed_tx = Some(tx);
        // Attempts in a row that did not get subscribed.
        let mut failures = 0;
        loop {
            client.subscribed = false;
            client.fatal = false;
            let outcome = match transport {
                Transport::WebSocket => client.run_ws(&mut stop).await,
                Transport::Polling => client.run_polling(&mut stop).await,
            };
            // What the last read delivered before an error.
            client.flush(now_ns());
            let e = match outcome {
                Ok(()) => break,
                Err(e) => e,
            };
            if client.subscribed {
                failures = 0;
            } else {
                failures += 1;
            }
            // Connection bursts can be refused or reset: retry until subscribed. Once
            // subscribed, a lost connection is reconnected, like a real client does.
            let retry = if client.ever_subscribed {
                !client.fatal && failures < RECONNECT_ATTEMPTS
            } else {
                failures < CONNECT_ATTEMPTS
            };
            if !retry || *stop.borrow() {
                client.error = Some(e);
                break;
            }
            let delay = if client.ever_subscribed {
                if client.subscribed {
                    client.reconnects += 1;
                    shared.reconnects.fetch_add(1, Ordering::Relaxed);
                    client.first_disconnect.get_or_insert(e);
                }
                // 100 ms, then doubling, plus up to 100 ms of jitter.
                Duration::from_millis((100 << failures.min(4)) + client.rng.next_u64() % 100)
            } else {
                Duration::from_millis(200 * u64::from(failures))
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => break,
            }
        }
        if let Some(tx) = client.subscribed_tx.take() {
            let why = client
                .error
                .clone()
                .unwrap_or_else(|| "stopped before subscribing".into());
            let _ = tx.send(Err(why));
        }
        ClientResult {
            anomalies: client.check.anomalies(),
            lines: client.check.lines.distinct(),
            stray: client.check.lines.stray(),
            complete: client.check.lines.complete(),
            error: client.error,
            transport: Some(transport),
            reconnects: client.reconnects,
            first_disconnect: client.first_disconnect,
        }
    });
    (handle, rx)
}

struct Client {
    shared: Arc<Shared>,
    id: usize,
    job: String,
    check: ClientCheck,
    /// Subscribed in the current session...
    subscribed: bool,
    /// ...or in any.
    ever_subscribed: bool,
    subscribed_tx: Option<oneshot::Sender<Result<(), String>>>,
    /// `lastSeq` and `epoch` of the first subscription's acknowledgement (buildcast).
    ack_last_seq: Option<u64>,
    epoch: Option<String>,
    /// The last error must not be retried (the server refused, or disconnected the
    /// socket on purpose).
    fatal: bool,
    /// `drop_after` done.
    dropped: bool,
    reconnects: u64,
    first_disconnect: Option<String>,
    complete: bool,
    /// Latencies and line count of the current read, flushed once per read...
    lat: Vec<u64>,
    /// ...and the `job:logs` batches it had.
    batches: u64,
    error: Option<String>,
    rng: Rng,
}

impl Client {
    fn new(shared: Arc<Shared>, id: usize, job: String) -> Self {
        let lines = shared.lines_per_job;
        Self {
            shared,
            id,
            job,
            check: ClientCheck::new(lines),
            subscribed: false,
            ever_subscribed: false,
            subscribed_tx: None,
            ack_last_seq: None,
            epoch: None,
            fatal: false,
            dropped: false,
            reconnects: 0,
            first_disconnect: None,
            complete: false,
            lat: Vec::new(),
            batches: 0,
            error: None,
            rng: Rng::seeded(now_ns() ^ (id as u64).rotate_left(32)),
        }
    }

    /// Handles one packet, queueing the replies it needs in `out`.
    fn on_packet(&mut self, p: &[u8], now: u64, out: &mut Vec<Vec<u8>>) -> Result<(), String> {
        match scan::packet(p) {
            Packet::Event(p) => return self.on_event(p, now),
            Packet::Ping => out.push(b"3".to_vec()),
            Packet::Open(_) => out.push(b"40".to_vec()),
            Packet::Connect => out.push(self.subscribe_packet()),
            Packet::Ack { id: 0, body } => {
                if scan::find(body, b"\"ok\":true").is_none() {
                    self.fatal = true;
                    return Err(format!(
                        "subscribe:job refused: {}",
                        String::from_utf8_lossy(body)
                    ));
                }
                self.subscribed = true;
                if !self.ever_subscribed {
                    self.ever_subscribed = true;
                    self.ack_last_seq = scan::u64_after_last(body, b"\"lastSeq\":");
                    self.epoch = scan::str_after(body, b"\"epoch\":\"")
                        .map(|e| String::from_utf8_lossy(e).into_owned());
                }
                if let Some(tx) = self.subscribed_tx.take() {
                    let _ = tx.send(Ok(()));
                }
            }
            Packet::Disconnect => {
                // A real client does not reconnect after `io server disconnect`.
                self.fatal = true;
                return Err("the server disconnected the socket (41)".into());
            }
            Packet::Close => return Err("the server closed the session (1)".into()),
            Packet::ConnectError(b) => {
                self.fatal = true;
                return Err(format!(
                    "connect refused (44): {}",
                    String::from_utf8_lossy(b)
                ));
            }
            Packet::Ack { .. } | Packet::Noop | Packet::Other(_) => {}
        }
        Ok(())
    }

    /// `420["subscribe:job",...]`: the job id alone, or `{jobId, batch, since,
    /// epoch}` when batching or resuming.
    fn subscribe_packet(&self) -> Vec<u8> {
        let opts = self.shared.opts;
        let since = if opts.resume && self.ever_subscribed {
            self.check.seq.highest().or(self.ack_last_seq)
        } else {
            None
        };
        if !opts.log_batch && since.is_none() {
            return format!("420[\"subscribe:job\",\"{}\"]", self.job).into_bytes();
        }
        let mut p = format!("420[\"subscribe:job\",{{\"jobId\":\"{}\"", self.job);
        if opts.log_batch {
            p.push_str(",\"batch\":true");
        }
        if let Some(since) = since {
            let _ = write!(p, ",\"since\":{since}");
            if let Some(epoch) = &self.epoch {
                let _ = write!(p, ",\"epoch\":\"{epoch}\"");
            }
        }
        p.push_str("}]");
        p.into_bytes()
    }

    /// One event packet: a `job:*` event, or a `job:logs` batch of lines.
    fn on_event(&mut self, p: &[u8], now: u64) -> Result<(), String> {
        let Self {
            check,
            lat,
            complete,
            shared,
            ..
        } = self;
        let kind = scan::job_events(p, |ev| {
            if let Some(t) = check.record(&ev) {
                lat.push(now.saturating_sub(t));
                if !*complete && check.lines.complete() {
                    *complete = true;
                    shared.complete_clients.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        if kind == scan::JobPacket::Batch {
            self.batches += 1;
        }
        if let Some(after) = self.shared.opts.drop_after
            && !self.dropped
            && self.check.lines.distinct() >= after
        {
            self.dropped = true;
            return Err(format!("dropped by the load generator after {after} lines"));
        }
        Ok(())
    }

    /// Publishes what the last read delivered.
    fn flush(&mut self, now: u64) {
        if self.batches > 0 {
            self.shared
                .batches
                .fetch_add(self.batches, Ordering::Relaxed);
            self.batches = 0;
        }
        if self.lat.is_empty() {
            return;
        }
        {
            let mut h = self.shared.hists[self.id % SHARDS]
                .lock()
                .expect("histogram");
            for &l in &self.lat {
                h.record(l);
            }
        }
        self.shared
            .delivered
            .fetch_add(self.lat.len() as u64, Ordering::Relaxed);
        self.shared.last_rx_ns.fetch_max(now, Ordering::Relaxed);
        self.lat.clear();
    }

    async fn run_ws(&mut self, stop: &mut watch::Receiver<bool>) -> Result<(), String> {
        let io = |what: &'static str| move |e: std::io::Error| format!("{what}: {e}");
        let slow = self.shared.opts.slow_read.filter(|_| self.id % 5 == 4);
        let mut stall = self.shared.opts.stall_read.filter(|_| self.id % 5 == 4);
        let sock = tokio::net::TcpSocket::new_v4().map_err(io("socket"))?;
        if slow.is_some() || stall.is_some() {
            sock.set_recv_buffer_size(16 << 10).map_err(io("rcvbuf"))?;
        }
        let mut s = sock
            .connect(self.shared.addr)
            .await
            .map_err(io("connect"))?;
        s.set_nodelay(true).map_err(io("nodelay"))?;
        let mut key = [0u8; 16];
        key.iter_mut().for_each(|b| *b = self.rng.next_u64() as u8);
        let req = format!(
            "GET {}?EIO=4&transport=websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            self.shared.path,
            self.shared.addr,
            ws::base64(&key)
        );
        s.write_all(req.as_bytes()).await.map_err(io("handshake"))?;
        let mut buf: Vec<u8> = Vec::with_capacity(2048);
        loop {
            if let Some(end) = scan::find(&buf, b"\r\n\r\n") {
                if !buf.starts_with(b"HTTP/1.1 101") {
                    let head = String::from_utf8_lossy(&buf[..end]);
                    return Err(format!(
                        "websocket upgrade refused: {}",
                        head.lines().next().unwrap_or("")
                    ));
                }
                buf.drain(..end + 4);
                break;
            }
            if buf.len() > 16 << 10 {
                return Err("websocket upgrade: response head too long".into());
            }
            if s.read_buf(&mut buf).await.map_err(io("handshake"))? == 0 {
                return Err("websocket upgrade: connection closed".into());
            }
        }

        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut wbuf: Vec<u8> = Vec::new();
        let mut fragments: Vec<u8> = Vec::new();
        let mut now = now_ns();
        loop {
            let mut pos = 0;
            while let Some(h) =
                ws::header(&buf[pos..]).map_err(|e| format!("frame of {} bytes", e.0))?
            {
                if buf.len() - pos < h.frame_len() {
                    break;
                }
                let payload = &mut buf[pos + h.header_len..pos + h.frame_len()];
                if let Some(k) = h.mask {
                    ws::unmask(payload, k);
                }
                match h.opcode {
                    ws::OP_TEXT | ws::OP_BINARY if h.fin => {
                        self.on_packet(payload, now, &mut out)?
                    }
                    ws::OP_TEXT | ws::OP_BINARY => {
                        fragments.clear();
                        fragments.extend_from_slice(payload);
                    }
                    ws::OP_CONT => {
                        fragments.extend_from_slice(payload);
                        if h.fin {
                            let whole = std::mem::take(&mut fragments);
                            self.on_packet(&whole, now, &mut out)?;
                        }
                    }
                    ws::OP_PING => {
                        let mask = self.mask();
                        ws::encode(ws::OP_PONG, payload, Some(mask), &mut wbuf);
                    }
                    ws::OP_CLOSE => {
                        let code = (payload.len() >= 2)
                            .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                        let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                        return Err(match code {
                            Some(code) => {
                                format!("the server closed the WebSocket ({code} {reason})")
                            }
                            None => "the server closed the WebSocket".into(),
                        });
                    }
                    _ => {}
                }
                pos += h.frame_len();
            }
            buf.drain(..pos);
            self.flush(now);
            for p in out.drain(..) {
                let mask = self.mask();
                ws::encode(ws::OP_TEXT, &p, Some(mask), &mut wbuf);
            }
            if !wbuf.is_empty() {
                s.write_all(&wbuf).await.map_err(io("write"))?;
                wbuf.clear();
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096);
            }
            if self.check.lines.distinct() > 0
                && let Some(pause) = stall.take()
            {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
            if let Some(pause) = slow.filter(|_| self.subscribed) {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
            tokio::select! {
                r = s.read_buf(&mut buf) => match r {
                    Ok(0) => return Err("the server closed the connection".into()),
                    Ok(_) => now = now_ns(),
                    Err(e) => return Err(format!("read: {e}")),
                },
                _ = stop.changed() => {
                    let mut close = Vec::new();
                    ws::encode(ws::OP_CLOSE, &1000u16.to_be_bytes(), Some(self.mask()), &mut close);
                    let _ = tokio::time::timeout(Duration::from_millis(100), s.write_all(&close)).await;
                    return Ok(());
                }
            }
        }
    }

    fn mask(&mut self) -> [u8; 4] {
        (self.rng.next_u64() as u32).to_ne_bytes()
    }

    async fn run_polling(&mut self, stop: &mut watch::Receiver<bool>) -> Result<(), String> {
        let s = TcpStream::connect(self.shared.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        let (mut http, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .map_err(|e| format!("http handshake: {e}"))?;
        let driver = tokio::spawn(conn);
        let result = self.poll_loop(&mut http, stop).await;
        drop(http);
        driver.abort();
        result
    }

    async fn poll_loop(
        &mut self,
        http: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        let host = self.shared.addr.to_string();
        let base = format!("{}?EIO=4&transport=polling", self.shared.path);
        let open = request(http, &host, &base, None).await?;
        let now = now_ns();
        let sid = scan::str_after(&open, b"\"sid\":\"")
            .ok_or_else(|| format!("no sid in {}", String::from_utf8_lossy(&open)))?;
        let url = format!("{base}&sid={}", String::from_utf8_lossy(sid));
        let mut out = Vec::new();
        for p in open.split(|&b| b == 0x1e) {
            self.on_packet(p, now, &mut out)?;
        }
        loop {
            if !out.is_empty() {
                let body = out.join(&0x1e);
                out.clear();
                let reply = request(http, &host, &url, Some(body)).await?;
                if &reply[..] != b"ok" {
                    return Err(format!("POST answered {}", String::from_utf8_lossy(&reply)));
                }
            }
            let body = tokio::select! {
                r = request(http, &host, &url, None) => r?,
                _ = stop.changed() => {
                    let _ = tokio::time::timeout(
                        Duration::from_millis(100),
                        request(http, &host, &url, Some(b"1".to_vec())),
                    ).await;
                    return Ok(());
                }
            };
            let now = now_ns();
            for p in body.split(|&b| b == 0x1e) {
                if !p.is_empty() {
                    self.on_packet(p, now, &mut out)?;
                }
            }
            self.flush(now);
        }
    }
}

/// One HTTP/1.1 request on a kept-alive connection: GET, or POST with `body`.
async fn request(
    http: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    uri: &str,
    body: Option<Vec<u8>>,
) -> Result<Bytes, String> {
    http.ready().await.map_err(|e| format!("http: {e}"))?;
    let builder = hyper::Request::builder().uri(uri).header("host", host);
    let req = match body {
        Some(b) => builder
            .method("POST")
            .header("content-type", "text/plain;charset=UTF-8")
            .body(Full::new(Bytes::from(b))),
        None => builder.method("GET").body(Full::new(Bytes::new())),
    }
    .map_err(|e| format!("request: {e}"))?;
    let (status, body) = send(http, req).await?;
    if !status.is_success() {
        return Err(format!(
            "{uri}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(body)
}

/// A one-off HTTP/1.1 request on a new connection (REST calls, health checks).
pub async fn http_once(
    addr: SocketAddr,
    method: &str,
    uri: &str,
    json: Option<&str>,
) -> Result<(u16, Bytes), String> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut http, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| format!("http handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", addr.to_string());
    if json.is_some() {
        b = b.header("content-type", "application/json");
    }
    let req = b
        .body(Full::new(Bytes::from(json.unwrap_or("").to_owned())))
        .map_err(|e| format!("request: {e}"))?;
    let sent = send(&mut http, req).await;
    driver.abort();
    let (status, body) = sent?;
    Ok((status.as_u16(), body))
}

/// Sends `req` and reads the whole response body.
async fn send(
    http: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: hyper::Request<Full<Bytes>>,
) -> Result<(hyper::StatusCode, Bytes), String> {
    let res = http
        .send_request(req)
        .await
        .map_err(|e| format!("http: {e}"))?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("http body: {e}"))?
        .to_bytes();
    Ok((status, body))
}
