//! Prometheus metrics: the recorder (the `metrics` crate's facade, rendered by
//! `metrics-exporter-prometheus`, process figures by `metrics-process`) and one
//! small function per thing the server counts, so that call sites stay one line.
//!
//! Every name starts with `buildcast_`; the README lists them with their labels.
//! Counters of events on the delivery path are recorded once per event and room
//! (never once per socket), and timers read the clock only while metrics are on
//! (`METRICS_ENABLED`); with no recorder installed every function here is a
//! no-op. Gauges that describe current state (connections, queue depths, jobs
//! waiting) are set when `/metrics` is scraped, by `http::metrics`, not kept up to
//! date on the hot path.
//!
//! This module is at the bottom of the layers: it knows no other module of the
//! crate; callers pass labels as `&'static str`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Whether a recorder is installed (timers read the clock only then).
static ENABLED: AtomicBool = AtomicBool::new(false);
/// The one recorder of the process (tests build several servers in one process).
static RECORDER: OnceLock<Option<Exporter>> = OnceLock::new();

/// Histogram buckets of durations on the delivery path, in seconds.
const FAST_SECONDS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 1.0,
];
/// Histogram buckets of store commits and Redis lag, in seconds.
const IO_SECONDS: &[f64] = &[
    0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Histogram buckets of job durations and queue waits, in seconds.
const JOB_SECONDS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Histogram buckets of store batch sizes, in writes.
const BATCH_SIZES: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 8192.0,
];

/// Renders the metrics of the process.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

impl Exporter {
    /// Installs the process's recorder the first time; later calls share it.
    /// `None` if another recorder was installed first (then nothing is counted
    /// through this module).
    pub fn install() -> Option<Self> {
        RECORDER
            .get_or_init(|| {
                let recorder = buckets(PrometheusBuilder::new()).ok()?.build_recorder();
                let handle = recorder.handle();
                if let Err(e) = ::metrics::set_global_recorder(recorder) {
                    tracing::error!(error = %e, "cannot install the metrics recorder");
                    return None;
                }
                ENABLED.store(true, Ordering::Relaxed);
                let process = metrics_process::Collector::new("buildcast_");
                process.describe();
                describe();
                ::metrics::gauge!("buildcast_build_info", "version" => env!("CARGO_PKG_VERSION"))
                    .set(1.0);
                Some(Self { handle, process })
            })
            .clone()
    }

    /// The Prometheus text of every metric, process figures read now.
    pub fn render(&self) -> String {
        self.process.collect();
        self.handle.render()
    }

    /// Drains histogram samples into their buckets; run every few seconds so
    /// that samples do not pile up between scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

fn buckets(
    builder: PrometheusBuilder,
) -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    builder
        .set_buckets_for_metric(
            Matcher::Full("buildcast_fanout_duration_seconds".into()),
            FAST_SECONDS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("buildcast_store_commit_seconds".into()),
            IO_SECONDS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("buildcast_cluster_pubsub_lag_seconds".into()),
            IO_SECONDS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("buildcast_store_batch_size".into()),
            BATCH_SIZES,
        )?
        .set_buckets_for_metric(
            Matcher::Full("buildcast_job_duration_seconds".into()),
            JOB_SECONDS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("buildcast_job_queue_wait_seconds".into()),
            JOB_SECONDS,
        )
}

/// The help text of every metric.
fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("buildcast_build_info", "The running version (always 1).");
    describe_gauge!(
        "buildcast_uptime_seconds",
        "Seconds since the server started."
    );
    describe_gauge!(
        "buildcast_socketio_connections",
        "Socket.IO clients connected now, by transport and Engine.IO version."
    );
    describe_counter!(
        "buildcast_socketio_connects_total",
        "Socket.IO clients admitted, by transport at connect and Engine.IO version."
    );
    describe_counter!(
        "buildcast_socketio_disconnects_total",
        "Socket.IO clients gone, by reason."
    );
    describe_counter!(
        "buildcast_auth_refusals_total",
        "Connections and requests refused for their token, by endpoint and reason."
    );
    describe_counter!(
        "buildcast_limit_refusals_total",
        "Connections or client events refused by a limit, by endpoint and limit."
    );
    describe_gauge!(
        "buildcast_subscriptions",
        "Subscriptions held by connected sockets now, by kind."
    );
    describe_counter!(
        "buildcast_subscribe_acks_total",
        "Answers to subscribe requests, by kind and outcome."
    );
    describe_counter!(
        "buildcast_replays_total",
        "subscribe:job requests with since, by whether history was recovered whole and why not."
    );
    describe_counter!(
        "buildcast_replayed_events_total",
        "Events sent from history (resumes and catch-ups)."
    );
    describe_counter!(
        "buildcast_events_recorded_total",
        "Job events recorded, by kind and source."
    );
    describe_counter!(
        "buildcast_log_bytes_total",
        "Bytes of log lines recorded, by source."
    );
    describe_counter!(
        "buildcast_log_truncations_total",
        "Log history cuts: the log cap's dropped middle, lines not kept while the store lagged."
    );
    describe_counter!(
        "buildcast_socketio_emits_total",
        "Events emitted to sockets by the fan-out, by event name."
    );
    describe_counter!(
        "buildcast_catch_ups_total",
        "Subscribers whose buffer was full and who were caught up, by kind."
    );
    describe_counter!(
        "buildcast_sockets_dropped_total",
        "Project subscribers disconnected for falling too far behind."
    );
    describe_histogram!(
        "buildcast_fanout_duration_seconds",
        ::metrics::Unit::Seconds,
        "Time to hand one event to every subscribed socket, by event kind."
    );
    describe_counter!(
        "buildcast_store_batches_total",
        "Write batches committed to the store."
    );
    describe_histogram!("buildcast_store_batch_size", "Writes per committed batch.");
    describe_histogram!(
        "buildcast_store_commit_seconds",
        ::metrics::Unit::Seconds,
        "Time to commit one batch, retries included."
    );
    describe_gauge!(
        "buildcast_store_queue_events",
        "Events waiting for the store."
    );
    describe_gauge!(
        "buildcast_store_queue_bytes",
        "Payload bytes of the events waiting for the store."
    );
    describe_counter!(
        "buildcast_store_errors_total",
        "Failed attempts to commit a batch."
    );
    describe_gauge!("buildcast_jobs", "Jobs of this runner now, by state.");
    describe_counter!(
        "buildcast_jobs_finished_total",
        "Jobs this runner finished, by status."
    );
    describe_histogram!(
        "buildcast_job_duration_seconds",
        ::metrics::Unit::Seconds,
        "Time from a job's start to its end, by status."
    );
    describe_histogram!(
        "buildcast_job_queue_wait_seconds",
        ::metrics::Unit::Seconds,
        "Time a job waited for a build slot."
    );
    describe_gauge!(
        "buildcast_http_streams",
        "Open HTTP streams (SSE, followed logs)."
    );
    describe_gauge!(
        "buildcast_gateway_connections",
        "Compatibility gateways' open WebSocket connections, by gateway."
    );
    describe_gauge!(
        "buildcast_redis_up",
        "1 while the last talk with Redis worked (cluster nodes only)."
    );
    describe_gauge!(
        "buildcast_cluster_publish_queue",
        "Events waiting to be published to Redis."
    );
    describe_counter!(
        "buildcast_cluster_mirrored_events_total",
        "Other nodes' events recorded here."
    );
    describe_counter!(
        "buildcast_cluster_gap_fills_total",
        "Gaps in another node's events filled from its Redis stream."
    );
    describe_histogram!(
        "buildcast_cluster_pubsub_lag_seconds",
        ::metrics::Unit::Seconds,
        "From an event's time on its owner to its record as a mirror here."
    );
    describe_gauge!(
        "buildcast_cluster_heartbeat_age_seconds",
        "Age of each node's last heartbeat in Redis, by node."
    );
}

/// Whether metrics are recorded.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Now, if metrics are on: the start of a timed span.
#[inline]
pub fn timer() -> Option<Instant> {
    enabled().then(Instant::now)
}

/// Records the duration of a fan-out when dropped (one line at the call site).
pub struct FanoutTimer {
    event: &'static str,
    started: Option<Instant>,
}

impl FanoutTimer {
    #[inline]
    pub fn start(event: &'static str) -> Self {
        Self {
            event,
            started: timer(),
        }
    }
}

impl Drop for FanoutTimer {
    #[inline]
    fn drop(&mut self) {
        if let Some(started) = self.started {
            fanout_duration(self.event, started.elapsed());
        }
    }
}

// --- Socket.IO ---------------------------------------------------------------

/// A Socket.IO client was admitted.
pub fn connected(transport: &'static str, eio: &'static str) {
    if !enabled() {
        return;
    }
    ::metrics::counter!("buildcast_socketio_connects_total", "transport" => transport, "eio" => eio)
        .increment(1);
}

/// A Socket.IO client went away.
pub fn disconnected(reason: &'static str) {
    if !enabled() {
        return;
    }
    ::metrics::counter!("buildcast_socketio_disconnects_total", "reason" => reason).increment(1);
}

/// Where a refused connection or request came in: `socketio`, `admin_ui`,
/// `http` (REST and the HTTP streams) or `gateway_<name>` (a compatibility
/// gateway).
#[derive(Debug, Clone, Copy)]
pub enum Endpoint {
    SocketIo,
    AdminUi,
    Http,
    /// A gateway by its number (in the order of `connections::GATEWAY_NAMES`).
    Gateway(usize),
}

/// `gateway_` and each of `connections::GATEWAY_NAMES`, in their order (labels
/// must be `&'static str`; a test holds the two lists together).
const GATEWAY_LABELS: [&str; 4] = [
    "gateway_build",
    "gateway_jobs",
    "gateway_builds",
    "gateway_projects",
];

impl Endpoint {
    fn label(self) -> &'static str {
        match self {
            Self::SocketIo => "socketio",
            Self::AdminUi => "admin_ui",
            Self::Http => "http",
            Self::Gateway(n) => GATEWAY_LABELS.get(n).copied().unwrap_or("gateway"),
        }
    }
}

/// A connection or request at `endpoint` was refused for its token.
pub fn auth_refused(endpoint: Endpoint, reason: &'static str) {
    if !enabled() {
        return;
    }
    ::metrics::counter!("buildcast_auth_refusals_total", "endpoint" => endpoint.label(), "reason" => reason)
        .increment(1);
}

/// A connection or a client event at `endpoint` was refused by `limit` (the
/// variable's name, lower case).
pub fn limit_refused(endpoint: Endpoint, limit: &'static str) {
    if !enabled() {
        return;
    }
    ::metrics::counter!("buildcast_limit_refusals_total", "endpoint" => endpoint.label(), "limit" => limit)
        .increment(1);
}

/// A subscribe request of `kind` was answered with `outcome` (`ok` or why not).
pub fn subscribe_ack(kind: &'static str, outcome: &'static str) {
    if !enabled() {
        return;
    }
    ::metrics::counter!("buildcast_subscribe_acks_total", "kind" => kind, "outcome" => outcome)
        .increment(1);
}

/// A `subscribe:job` with `since` was answered: recovered whole, or not and why.
pub fn replay(recovered: bool, reason: &'static str) {
    if !enabled() {
        return;
    }
    let recovered = if recovered { "true" } else { "false" };
    ::metrics::counter!("buildcast_replays_total", "recovered" => recovered, "reason" => reason)
        .increment(1);
}

/// `n` events were sent from history to one socket.
pub fn replayed_events(n: u64) {
    if !enabled() {
        return;
    }
    if n > 0 {
        hot().replayed.increment(n);
    }
}

/// Event names the fan-out emits, whose counters are kept at hand.
const EMITTED: [&str; 8] = [
    "job:progress",
    "job:log",
    "job:error",
    "job:completed",
    "job:logs",
    "project:progress",
    "project:completed",
    "jobs:created",
];
/// Event kinds the fan-out times (and `job:logs` for runs).
const TIMED: [&str; 5] = ["progress", "log", "error", "completed", "job:logs"];
/// Kinds and sources of recorded events.
const KINDS: [&str; 4] = ["progress", "log", "error", "completed"];
const SOURCES: [&str; 4] = ["runner", "worker_rest", "worker_redis", "mirror"];

/// Handles of the metrics recorded for every event or line, registered once
/// (the recorder never changes once installed), so that recording is an atomic
/// add rather than a registry lookup.
struct Hot {
    emits: Vec<::metrics::Counter>,
    fanout: Vec<::metrics::Histogram>,
    recorded: Vec<::metrics::Counter>,
    log_bytes: Vec<::metrics::Counter>,
    replayed: ::metrics::Counter,
}

fn hot() -> &'static Hot {
    static HOT: OnceLock<Hot> = OnceLock::new();
    HOT.get_or_init(|| Hot {
        emits: EMITTED
            .iter()
            .map(|e| ::metrics::counter!("buildcast_socketio_emits_total", "event" => *e))
            .collect(),
        fanout: TIMED
            .iter()
            .map(|e| ::metrics::histogram!("buildcast_fanout_duration_seconds", "event" => *e))
            .collect(),
        recorded: KINDS
            .iter()
            .flat_map(|k| {
                SOURCES.iter().map(move |s| {
                    ::metrics::counter!("buildcast_events_recorded_total", "kind" => *k, "source" => *s)
                })
            })
            .collect(),
        log_bytes: SOURCES
            .iter()
            .map(|s| ::metrics::counter!("buildcast_log_bytes_total", "source" => *s))
            .collect(),
        replayed: ::metrics::counter!("buildcast_replayed_events_total"),
    })
}

fn position(list: &[&str], name: &str) -> Option<usize> {
    list.iter().position(|n| *n == name)
}

/// The fan-out emitted `event` to `n` sockets.
#[inline]
pub fn delivered(event: &'static str, n: u64) {
    if n == 0 || !enabled() {
        return;
    }
    match position(&EMITTED, event) {
        Some(i) => hot().emits[i].increment(n),
        None => {
            ::metrics::counter!("buildcast_socketio_emits_total", "event" => event).increment(n)
        }
    }
}

/// A burst of events (consecutive events of one job, emitted socket by socket)
/// took from `started` until now to hand to the sockets of one fan-out worker:
/// each event is recorded with an equal share of it.
pub fn fanout_burst(started: Option<Instant>, events: impl ExactSizeIterator<Item = &'static str>) {
    let Some(started) = started else {
        return;
    };
    let each = started.elapsed() / u32::try_from(events.len().max(1)).unwrap_or(u32::MAX);
    for event in events {
        fanout_duration(event, each);
    }
}

/// One event took `took` to hand to the sockets of one fan-out worker.
#[inline]
pub fn fanout_duration(event: &'static str, took: Duration) {
    if !enabled() {
        return;
    }
    match position(&TIMED, event) {
        Some(i) => hot().fanout[i].record(took),
        None => ::metrics::histogram!("buildcast_fanout_duration_seconds", "event" => event)
            .record(took),
    }
}

// --- Journal -----------------------------------------------------------------

/// An event of `kind` from `source` (`runner`, `worker_rest`, `worker_redis`,
/// `mirror`) was recorded; `log_bytes` is a log line's length.
pub fn recorded(kind: &'static str, source: &'static str, log_bytes: usize) {
    if !enabled() {
        return;
    }
    let (Some(k), Some(s)) = (position(&KINDS, kind), position(&SOURCES, source)) else {
        ::metrics::counter!("buildcast_events_recorded_total", "kind" => kind, "source" => source)
            .increment(1);
        return;
    };
    let hot = hot();
    hot.recorded[k * SOURCES.len() + s].increment(1);
    if log_bytes > 0 {
        hot.log_bytes[s].increment(log_bytes as u64);
    }
}

/// History of a log was cut: `log_cap` or `unstored`.
pub fn truncated(reason: &'static str) {
    if !enabled() {
        return;
    }
    ::metrics::counter!("buildcast_log_truncations_total", "reason" => reason).increment(1);
}

// --- Store -------------------------------------------------------------------

/// A batch of `writes` committed, `took` after its first attempt.
pub fn store_batch(writes: usize, took: Duration) {
    if !enabled() {
        return;
    }
    ::metrics::counter!("buildcast_store_batches_total").increment(1);
    ::metrics::histogram!("buildcast_store_batch_size").record(writes as f64);
    ::metrics::histogram!("buildcast_store_commit_seconds").record(took);
}

/// An attempt to commit a batch failed.
pub fn store_error() {
    if !enabled() {
        return;
    }
    ::metrics::counter!("buildcast_store_errors_total").increment(1);
}

// --- Runner ------------------------------------------------------------------

/// A job got its build slot after waiting `waited`.
pub fn job_started(waited: Duration) {
    if !enabled() {
        return;
    }
    ::metrics::histogram!("buildcast_job_queue_wait_seconds").record(waited);
}

/// A job this runner took ended with `status` after running `took` (`None`:
/// it ended before it started).
pub fn job_finished(status: &'static str, took: Option<Duration>) {
    if !enabled() {
        return;
    }
    ::metrics::counter!("buildcast_jobs_finished_total", "status" => status).increment(1);
    if let Some(took) = took {
        ::metrics::histogram!("buildcast_job_duration_seconds", "status" => status).record(took);
    }
}

// --- Cluster -----------------------------------------------------------------

/// Another node's event was recorded here, `lag` after its owner recorded it.
pub fn mirrored(lag: Option<Duration>) {
    if !enabled() {
        return;
    }
    ::metrics::counter!("buildcast_cluster_mirrored_events_total").increment(1);
    if let Some(lag) = lag {
        ::metrics::histogram!("buildcast_cluster_pubsub_lag_seconds").record(lag);
    }
}

/// A gap in another node's events was filled from its stream.
pub fn gap_filled() {
    if !enabled() {
        return;
    }
    ::metrics::counter!("buildcast_cluster_gap_fills_total").increment(1);
}

// --- Gauges set at scrape time ---------------------------------------------------

/// Sets gauge `name` with `labels` to `value`.
pub fn set_gauge(name: &'static str, labels: &[(&'static str, String)], value: f64) {
    let labels: Vec<::metrics::Label> = labels
        .iter()
        .map(|(k, v)| ::metrics::Label::new(*k, v.clone()))
        .collect();
    ::metrics::gauge!(name, labels).set(value);
}

/// Sets counter `name` (kept elsewhere as a running total) to `value`.
pub fn set_counter(name: &'static str, labels: &[(&'static str, &'static str)], value: u64) {
    let labels: Vec<::metrics::Label> = labels
        .iter()
        .map(|(k, v)| ::metrics::Label::new(*k, *v))
        .collect();
    ::metrics::counter!(name, labels).absolute(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_labels_follow_the_gateway_names() {
        for (i, name) in crate::connections::GATEWAY_NAMES.iter().enumerate() {
            assert_eq!(Endpoint::Gateway(i).label(), format!("gateway_{name}"));
        }
    }
}
