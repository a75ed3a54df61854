//! The raw floor: the least a server can do for the benchmark's workload, to show
//! what the hardware allows. Just enough Engine.IO v4 / Socket.IO v5 for the load
//! generator (WebSocket and HTTP long-polling, `40`, `subscribe:job` with its ack,
//! pings), the same `POST /api/jobs` as buildcast, and the same line source:
//!
//!     PORT=3003 LINE_COMMAND='...' raw-floor [--port-file PATH]
//!
//! With `--port-file`, the port it listens on (`PORT=0`: any free one) is written
//! to PATH once it listens, as buildcast does.
//!
//! Each stdout line of `sh -c "$LINE_COMMAND"` becomes one `job:log` packet,
//! serialized once; its WebSocket frame is built once and the same bytes are queued
//! to every subscriber (unbounded queues: nothing is dropped, memory is the limit).
//! No history, no persistence, no validation beyond what the load generator needs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use buildcast_bench::scan;
use buildcast_bench::sys::{
    iso8601_millis, json_string, now_ns, port_file_arg, raise_nofile, write_port_file,
};
use buildcast_bench::ws;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

/// `WEBSOCKET_PING_INTERVAL_MS` (default 25 s), like buildcast. Pongs are not
/// awaited: the floor never drops a client for a late pong.
fn ping_interval() -> Duration {
    static MS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    Duration::from_millis(*MS.get_or_init(|| {
        std::env::var("WEBSOCKET_PING_INTERVAL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(25_000)
    }))
}
const PING_TIMEOUT_MS: u64 = 20_000;

/// A subscriber of a job.
enum Sub {
    /// Gets ready-made WebSocket frames.
    Ws(u64, mpsc::UnboundedSender<Bytes>),
    /// Gets packet texts, joined with `\x1e` by its next GET.
    Poll(u64, Arc<PollSession>),
}

struct PollSession {
    sid: u64,
    queue: Mutex<Vec<Bytes>>,
    notify: Notify,
    closed: AtomicBool,
}

impl PollSession {
    fn push(&self, p: Bytes) {
        self.queue.lock().expect("queue").push(p);
        self.notify.notify_one();
    }
}

/// Where a connection's replies go.
enum Conn<'a> {
    Ws(u64, &'a mpsc::UnboundedSender<Bytes>),
    Poll(&'a Arc<PollSession>),
}

impl Conn<'_> {
    fn sid(&self) -> u64 {
        match self {
            Conn::Ws(sid, _) => *sid,
            Conn::Poll(s) => s.sid,
        }
    }

    fn send(&self, packet: &[u8]) {
        match self {
            Conn::Ws(_, tx) => {
                let _ = tx.send(frame(packet));
            }
            Conn::Poll(s) => s.push(Bytes::copy_from_slice(packet)),
        }
    }
}

fn frame(packet: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(packet.len() + 4);
    ws::encode(ws::OP_TEXT, packet, None, &mut f);
    Bytes::from(f)
}

struct App {
    line_command: String,
    next_id: AtomicU64,
    /// Subscribers by job id.
    rooms: Mutex<HashMap<String, Vec<Sub>>>,
    polls: Mutex<HashMap<u64, Arc<PollSession>>>,
}

impl App {
    fn open_packet(&self, sid: u64, upgrades: &str) -> String {
        format!(
            "0{{\"sid\":\"{sid}\",\"upgrades\":[{upgrades}],\"pingInterval\":{},\"pingTimeout\":{PING_TIMEOUT_MS},\"maxPayload\":1000000}}",
            ping_interval().as_millis()
        )
    }

    /// One client packet.
    fn on_packet(&self, p: &[u8], conn: &Conn<'_>) {
        match scan::packet(p) {
            scan::Packet::Connect => {
                conn.send(format!("40{{\"sid\":\"s{}\"}}", conn.sid()).as_bytes())
            }
            scan::Packet::Event(p) => self.on_event(p, conn),
            scan::Packet::Close => self.leave_all(conn.sid()),
            _ => {}
        }
    }

    /// `42<ack>["subscribe:job","<id>"]`, or `42<ack>["subscribe:job",{"jobId":"<id>",...}]`
    /// (other keys, such as `batch` or `since`, are ignored).
    fn on_event(&self, p: &[u8], conn: &Conn<'_>) {
        const EVENT: &[u8] = b"[\"subscribe:job\",";
        let ack = scan::leading_u64(&p[2..]).map(|(id, _)| id);
        let job = scan::find(p, EVENT).and_then(|at| {
            let arg = &p[at + EVENT.len()..];
            match arg.first() {
                Some(b'"') => scan::str_after(arg, b"\""),
                Some(b'{') => scan::str_after(arg, b"\"jobId\":\""),
                _ => None,
            }
        });
        let Some(job) = job else {
            if let Some(id) = ack {
                conn.send(
                    format!("43{id}[{{\"ok\":false,\"error\":\"unknown event\"}}]").as_bytes(),
                );
            }
            return;
        };
        let job = String::from_utf8_lossy(job).into_owned();
        let sub = match conn {
            Conn::Ws(sid, tx) => Sub::Ws(*sid, (*tx).clone()),
            Conn::Poll(s) => Sub::Poll(s.sid, (*s).clone()),
        };
        self.rooms
            .lock()
            .expect("rooms")
            .entry(job)
            .or_default()
            .push(sub);
        if let Some(id) = ack {
            conn.send(format!("43{id}[{{\"ok\":true}}]").as_bytes());
        }
    }

    fn leave_all(&self, sid: u64) {
        let mut rooms = self.rooms.lock().expect("rooms");
        for subs in rooms.values_mut() {
            subs.retain(|s| match s {
                Sub::Ws(id, _) | Sub::Poll(id, _) => *id != sid,
            });
        }
        if let Some(s) = self.polls.lock().expect("polls").remove(&sid) {
            s.closed.store(true, Ordering::Relaxed);
            s.notify.notify_one();
        }
    }

    /// Sends one packet to a job's room: serialized once, framed once.
    fn broadcast(&self, job: &str, packet: Bytes) {
        let mut frame_bytes: Option<Bytes> = None;
        let mut rooms = self.rooms.lock().expect("rooms");
        let Some(subs) = rooms.get_mut(job) else {
            return;
        };
        subs.retain(|s| match s {
            Sub::Ws(_, tx) => {
                let f = frame_bytes.get_or_insert_with(|| frame(&packet));
                tx.send(f.clone()).is_ok()
            }
            Sub::Poll(_, s) => {
                s.push(packet.clone());
                !s.closed.load(Ordering::Relaxed)
            }
        });
    }

    fn start_job(self: &Arc<Self>, project: String) -> String {
        let job = format!("raw-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let app = self.clone();
        let id = job.clone();
        tokio::spawn(async move {
            if let Err(e) = app.run_job(&id, &project).await {
                eprintln!("raw-floor: job {id}: {e}");
            }
        });
        job
    }

    async fn run_job(&self, job: &str, project: &str) -> std::io::Result<()> {
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&self.line_command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut head = Vec::new();
        head.extend_from_slice(b"42[\"job:log\",{\"jobId\":");
        json_string(job, &mut head);
        head.extend_from_slice(b",\"projectId\":");
        json_string(project, &mut head);
        let mut seq = 0u64;
        let mut packet = Vec::with_capacity(256);
        while let Some(line) = lines.next_line().await? {
            seq += 1;
            packet.clear();
            packet.extend_from_slice(&head);
            packet.extend_from_slice(b",\"stream\":\"stdout\",\"message\":");
            json_string(&line, &mut packet);
            packet.extend_from_slice(b",\"timestamp\":\"");
            packet.extend_from_slice(iso8601_millis(now_ns()).as_bytes());
            packet.extend_from_slice(format!("\",\"seq\":{seq}}}]").as_bytes());
            self.broadcast(job, Bytes::copy_from_slice(&packet));
        }
        let status = child.wait().await?;
        seq += 1;
        let done = format!(
            "42[\"job:completed\",{{\"jobId\":\"{job}\",\"projectId\":\"{project}\",\"status\":\"{}\",\"success\":{},\"timestamp\":\"{}\",\"seq\":{seq}}}]",
            if status.success() {
                "completed"
            } else {
                "failed"
            },
            status.success(),
            iso8601_millis(now_ns())
        );
        self.broadcast(job, Bytes::from(done));
        Ok(())
    }
}

/// The whole request body (empty if it could not be read).
async fn read_body(req: Request<Incoming>) -> Bytes {
    req.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=UTF-8")
        .body(Full::new(body.into()))
        .expect("response")
}

fn query<'a>(uri: &'a hyper::Uri, key: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    if path == "/api/jobs" && req.method() == hyper::Method::POST {
        let body = read_body(req).await;
        let project = scan::str_after(&body, b"\"projectId\":\"")
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_else(|| "bench".into());
        let pipeline = scan::str_after(&body, b"\"pipeline\":\"")
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let job = app.start_job(project.clone());
        let mut json = Vec::new();
        json.extend_from_slice(b"{\"jobId\":");
        json_string(&job, &mut json);
        json.extend_from_slice(b",\"projectId\":");
        json_string(&project, &mut json);
        json.extend_from_slice(b",\"pipeline\":");
        json_string(&pipeline, &mut json);
        json.extend_from_slice(b",\"status\":\"queued\"}");
        let mut res = respond(StatusCode::CREATED, json);
        res.headers_mut()
            .insert("content-type", "application/json".parse().expect("header"));
        return Ok(res);
    }
    if path == "/health" {
        return Ok(respond(StatusCode::OK, "{\"status\":\"ok\"}"));
    }
    if path != "/ws/" && path != "/ws" {
        return Ok(respond(StatusCode::NOT_FOUND, "not found"));
    }
    match query(req.uri(), "transport") {
        Some("websocket") => Ok(upgrade(app, req)),
        Some("polling") => Ok(polling(app, req).await),
        _ => Ok(respond(
            StatusCode::BAD_REQUEST,
            "{\"code\":0,\"message\":\"Transport unknown\"}",
        )),
    }
}

fn upgrade(app: Arc<App>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return respond(StatusCode::BAD_REQUEST, "not a websocket handshake");
    };
    let accept = ws::accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => websocket(app, parts.io.into_inner(), parts.read_buf.to_vec()).await,
                Err(_) => eprintln!("raw-floor: unexpected upgraded io"),
            },
            Err(e) => eprintln!("raw-floor: upgrade: {e}"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", accept)
        .body(Full::new(Bytes::new()))
        .expect("response")
}

async fn websocket(app: Arc<App>, stream: TcpStream, mut buf: Vec<u8>) {
    let sid = app.next_id.fetch_add(1, Ordering::Relaxed);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    // Writer: drains everything queued into one write, pings on schedule.
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + ping_interval(),
            ping_interval(),
        );
        let mut out = Vec::with_capacity(16 << 10);
        loop {
            tokio::select! {
                first = rx.recv() => {
                    let Some(first) = first else { break };
                    out.clear();
                    out.extend_from_slice(&first);
                    while out.len() < 256 << 10 {
                        match rx.try_recv() {
                            Ok(b) => out.extend_from_slice(&b),
                            Err(_) => break,
                        }
                    }
                    if wr.write_all(&out).await.is_err() {
                        break;
                    }
                }
                _ = ping.tick() => {
                    if wr.write_all(&frame(b"2")).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let _ = tx.send(frame(app.open_packet(sid, "").as_bytes()));
    let conn = Conn::Ws(sid, &tx);
    'read: loop {
        let mut pos = 0;
        loop {
            let h = match ws::header(&buf[pos..]) {
                Ok(Some(h)) if buf.len() - pos >= h.frame_len() => h,
                Ok(_) => break,
                Err(_) => break 'read,
            };
            let payload = &mut buf[pos + h.header_len..pos + h.frame_len()];
            if let Some(k) = h.mask {
                ws::unmask(payload, k);
            }
            match h.opcode {
                ws::OP_TEXT => app.on_packet(payload, &conn),
                ws::OP_CLOSE => break 'read,
                _ => {}
            }
            pos += h.frame_len();
        }
        buf.drain(..pos);
        buf.reserve(4096);
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    app.leave_all(sid);
    drop(tx);
    let _ = writer.await;
}

async fn polling(app: Arc<App>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let sid = query(req.uri(), "sid").and_then(|s| s.parse::<u64>().ok());
    let is_post = req.method() == hyper::Method::POST;
    let Some(sid) = sid else {
        if is_post {
            return respond(StatusCode::BAD_REQUEST, "no sid");
        }
        let sid = app.next_id.fetch_add(1, Ordering::Relaxed);
        let session = Arc::new(PollSession {
            sid,
            queue: Mutex::new(Vec::new()),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        });
        app.polls.lock().expect("polls").insert(sid, session);
        return respond(StatusCode::OK, app.open_packet(sid, ""));
    };
    let Some(session) = app.polls.lock().expect("polls").get(&sid).cloned() else {
        return respond(
            StatusCode::BAD_REQUEST,
            "{\"code\":1,\"message\":\"Session ID unknown\"}",
        );
    };
    if is_post {
        let body = read_body(req).await;
        let conn = Conn::Poll(&session);
        for p in body.split(|&b| b == 0x1e) {
            app.on_packet(p, &conn);
        }
        return respond(StatusCode::OK, "ok");
    }
    // Long-poll: whatever is queued, else wait for something or send a ping.
    let deadline = tokio::time::Instant::now() + ping_interval();
    loop {
        let queued = std::mem::take(&mut *session.queue.lock().expect("queue"));
        if !queued.is_empty() {
            let mut body = Vec::with_capacity(queued.iter().map(|p| p.len() + 1).sum());
            for (i, p) in queued.iter().enumerate() {
                if i > 0 {
                    body.push(0x1e);
                }
                body.extend_from_slice(p);
            }
            return respond(StatusCode::OK, body);
        }
        if session.closed.load(Ordering::Relaxed) {
            return respond(StatusCode::OK, "1");
        }
        if tokio::time::timeout_at(deadline, session.notify.notified())
            .await
            .is_err()
        {
            return respond(StatusCode::OK, "2");
        }
    }
}

#[tokio::main]
async fn main() {
    raise_nofile();
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "3003".into());
    let addr: SocketAddr = format!("{host}:{port}").parse().expect("HOST:PORT");
    let app = Arc::new(App {
        line_command: std::env::var("LINE_COMMAND").unwrap_or_else(|_| "echo hello".into()),
        next_id: AtomicU64::new(1),
        rooms: Mutex::new(HashMap::new()),
        polls: Mutex::new(HashMap::new()),
    });
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket.bind(addr).expect("bind");
    let listener: TcpListener = socket.listen(4096).expect("listen");
    let addr = listener.local_addr().expect("local address");
    if let Some(path) = port_file_arg() {
        write_port_file(&path, addr.port()).expect("write --port-file");
    }
    eprintln!("raw-floor listening on {addr}");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(app.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
