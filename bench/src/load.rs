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
//! Per delivered line a client records receive time minus the `t=` stamp in a
//! shared histogram (sharded, one lock per read, not per message) and checks `n` and
//! `seq` ([`crate::check`]). Nothing else of the JSON is parsed.

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
const CONNECT_ATTEMPTS: u32 = 3;

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
    hists: Vec<Mutex<Hist>>,
    stop_tx: watch::Sender<bool>,
}

impl Shared {
    pub fn new(addr: SocketAddr, path: &str, lines_per_job: u64) -> Arc<Self> {
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
        let mut tx = Some(tx);
        let mut attempt = 0;
        let mut client;
        loop {
            attempt += 1;
            client = Client::new(shared.clone(), id, job.clone());
            client.subscribed_tx = tx.take();
            let outcome = match transport {
                Transport::WebSocket => client.run_ws(&mut stop).await,
                Transport::Polling => client.run_polling(&mut stop).await,
            };
            match outcome {
                Ok(()) => break,
                // Connection bursts can be refused or reset: retry until subscribed.
                Err(_) if !client.subscribed && attempt < CONNECT_ATTEMPTS && !*stop.borrow() => {
                    tx = client.subscribed_tx.take();
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(e) => {
                    client.error = Some(e);
                    break;
                }
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
        }
    });
    (handle, rx)
}

struct Client {
    shared: Arc<Shared>,
    id: usize,
    job: String,
    check: ClientCheck,
    subscribed: bool,
    subscribed_tx: Option<oneshot::Sender<Result<(), String>>>,
    complete: bool,
    /// Latencies and line count of the current read, flushed once per read.
    lat: Vec<u64>,
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
            subscribed_tx: None,
            complete: false,
            lat: Vec::new(),
            error: None,
            rng: Rng::seeded(now_ns() ^ (id as u64).rotate_left(32)),
        }
    }

    /// Handles one packet, queueing the replies it needs in `out`.
    fn on_packet(&mut self, p: &[u8], now: u64, out: &mut Vec<Vec<u8>>) -> Result<(), String> {
        match scan::packet(p) {
            Packet::Event(p) => self.on_event(p, now),
            Packet::Ping => out.push(b"3".to_vec()),
            Packet::Open(_) => out.push(b"40".to_vec()),
            Packet::Connect => {
                out.push(format!("420[\"subscribe:job\",\"{}\"]", self.job).into_bytes());
            }
            Packet::Ack { id: 0, body } => {
                if scan::find(body, b"\"ok\":true").is_none() {
                    return Err(format!(
                        "subscribe:job refused: {}",
                        String::from_utf8_lossy(body)
                    ));
                }
                self.subscribed = true;
                if let Some(tx) = self.subscribed_tx.take() {
                    let _ = tx.send(Ok(()));
                }
            }
            Packet::Disconnect => return Err("the server disconnected the socket (41)".into()),
            Packet::Close => return Err("the server closed the session (1)".into()),
            Packet::ConnectError(b) => {
                return Err(format!(
                    "connect refused (44): {}",
                    String::from_utf8_lossy(b)
                ));
            }
            Packet::Ack { .. } | Packet::Noop | Packet::Other(_) => {}
        }
        Ok(())
    }

    fn on_event(&mut self, p: &[u8], now: u64) {
        let Some(ev) = scan::job_event(p) else {
            return;
        };
        if let Some(seq) = ev.seq {
            self.check.seq.record(seq);
        }
        if let (Some(t), Some(n)) = (ev.t_ns, ev.n) {
            self.check.lines.record(n);
            self.lat.push(now.saturating_sub(t));
            if !self.complete && self.check.lines.complete() {
                self.complete = true;
                self.shared.complete_clients.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Publishes what the last read delivered.
    fn flush(&mut self, now: u64) {
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
        let mut s = TcpStream::connect(self.shared.addr)
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
    let res = http
        .send_request(req)
        .await
        .map_err(|e| format!("http: {e}"))?;
    let status = res.status().as_u16();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("http body: {e}"))?
        .to_bytes();
    driver.abort();
    Ok((status, body))
}
