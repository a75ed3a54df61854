//! Acknowledgements: every way a client event can be refused ([`AckError`]) and
//! the one place replies are sent ([`answer`]): `{ "ok": true, ... }` or
//! `{ "ok": false, "error": "<what was wrong>" }`.
//!
//! Internal failures are logged where they happen and answered with a generic
//! message; nothing internal reaches a client.

use serde::Serialize;
use socketioxide::extract::AckSender;

use super::replay::AttachError;
use super::session::Refusal;
use crate::wire::{Ack, Empty};

/// Why a client event was answered `{ ok: false }`; the text is the `error`.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    /// The payload was missing or invalid; the message says how.
    #[error("{0}")]
    Invalid(String),
    /// A subscription outside the caller's projects.
    #[error("forbidden")]
    Forbidden,
    /// Rate limited, or too many subscriptions.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store could not be read (logged where it failed).
    #[error("history is unavailable right now")]
    HistoryUnavailable,
    /// The job list could not be read (logged where it failed).
    #[error("job list is unavailable right now")]
    JobListUnavailable,
    /// The subscription ended before it was attached (the socket closed, or a
    /// newer subscription replaced it).
    #[error("{0}")]
    Detached(AttachError),
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
}

impl AckError {
    /// A short name of the refusal, for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::Forbidden => "forbidden",
            Self::Refused(refusal) => refusal.label(),
            Self::HistoryUnavailable | Self::JobListUnavailable => "unavailable",
            Self::Detached(_) => "detached",
            Self::UnknownEvent(_) => "unknown_event",
        }
    }
}

impl From<String> for AckError {
    fn from(message: String) -> Self {
        Self::Invalid(message)
    }
}

/// Sends the acknowledgement of a client event.
pub fn answer<T: Serialize>(ack: AckSender, reply: Result<T, AckError>) {
    if let Err(AckError::Refused(refusal)) = &reply {
        refusal.count();
    }
    let sent = match reply {
        Ok(body) => ack.send(&Ack::ok(body)),
        Err(error) => ack.send(&Ack::<Empty>::err(error.to_string())),
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, "could not send an acknowledgement");
    }
}
