//! buildcast's benchmark harness: a load generator that speaks Engine.IO v4 /
//! Socket.IO v5 directly, a line source, a raw Socket.IO floor, and the code that
//! runs scenarios against buildcast, a Node.js reference and the floor.
//!
//! - [`check`]: per-client sequence checking (lost, duplicated, out-of-order lines).
//! - [`scan`]: just enough packet parsing to find the event, `seq` and timestamp.
//! - [`ws`]: WebSocket framing (RFC 6455), both directions.
//! - [`hist`]: a log-linear latency histogram.
//! - [`sys`]: `/proc` and `getrusage` figures, clocks, small formatting helpers.
//! - [`load`]: the clients.
//! - [`run`]: servers, scenarios, results, the table.

pub mod check;
pub mod hist;
pub mod load;
pub mod run;
pub mod scan;
pub mod sys;
pub mod ws;
