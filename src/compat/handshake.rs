//! The gateways' WebSocket endpoints: the checks before the upgrade, the
//! refusals after it, and the start of a [`session`].
//!
//! Before the upgrade (plain HTTP answers, `{"error": …}`): an `Origin` not
//! allowed by `WEBSOCKET_CORS_ORIGIN` gets 403 (no `Origin`, a script, passes),
//! an invalid id 400, a request that is no WebSocket upgrade 400.
//!
//! After the upgrade (so that a browser can read the code, which a refused
//! handshake would hide as 1006): a missing or invalid token (jwt mode), a job
//! or project the token may not see, too many connections of the user, and
//! seed 001's unknown job are each closed with the seed's code. The token is read
//! like everywhere else: `?token=` or `Authorization: Bearer`; with
//! `AUTH_MODE=none` whatever is sent (`undefined`, say) is ignored.
//!
//! Each accepted connection takes a slot of `MAX_CONNECTIONS` /
//! `MAX_CONNECTIONS_PER_USER` (shared with Socket.IO and the HTTP streams) and
//! runs as a tracked task.

use std::future::Future;
use std::sync::Arc;

use axum::Extension;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use super::feed::{JobFeed, pipeline_steps};
use super::session::{self, Close, Source, close_now};
use super::sources::{BuildSource, BuildsFold, JobsFold, ProjectSource, Snapshotted};
use super::{BUILD, BUILDS, JOBS, PROJECTS, builds};
use crate::auth::{Principal, Role, token_from_request};
use crate::error::ApiError;
use crate::job::{JobId, JobRecord, ProjectId};
use crate::metrics::Endpoint;
use crate::state::AppState;

/// The origins allowed to open a gateway WebSocket (`None`: any).
#[derive(Clone)]
pub struct Origins(pub Option<Arc<[HeaderValue]>>);

/// The close codes of a seed's refusals (SPEC 2.3).
#[derive(Debug, Clone, Copy)]
struct Codes {
    auth: Close,
    forbidden: Close,
}

/// Seeds 000, 003 and 004.
const SEED_CODES: Codes = Codes {
    auth: Close(1008, "Authentication error"),
    forbidden: Close(1008, "forbidden"),
};
/// Seed 001 (its original's codes).
const JOBS_CODES: Codes = Codes {
    auth: Close(4001, "Authentication failed"),
    forbidden: Close(4003, "Access denied"),
};
const TOO_MANY: Close = Close(1008, "Too many connections");
const JOB_NOT_FOUND: Close = Close(4004, "Job not found");
const INTERNAL: Close = Close(1011, "internal error");

/// What a gateway makes of an accepted connection.
struct Accepted<S> {
    source: S,
    /// The job it watches and its project (for `/ws/active-builds`).
    watching: Option<(JobId, ProjectId)>,
}

/// The pre-upgrade checks: origin, then id, then that it is an upgrade at all.
fn admit<T>(
    origins: &Origins,
    headers: &HeaderMap,
    id: Result<T, ApiError>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<(T, WebSocketUpgrade), ApiError> {
    if let Some(allowed) = &origins.0
        && !crate::socket::origin::origin_allowed(allowed, headers.get(header::ORIGIN))
    {
        tracing::info!(origin = ?headers.get(header::ORIGIN), "gateway handshake refused: origin not in WEBSOCKET_CORS_ORIGIN");
        return Err(ApiError::Forbidden(
            "this origin may not connect (see WEBSOCKET_CORS_ORIGIN)".into(),
        ));
    }
    let id = id?;
    let ws = ws.map_err(|e| ApiError::BadRequest(format!("expected a WebSocket upgrade: {e}")))?;
    Ok((id, ws))
}

/// `?since=N` (seeds 000 and 001).
fn since(uri: &OriginalUri) -> Result<Option<u64>, ApiError> {
    let Some(query) = uri.query() else {
        return Ok(None);
    };
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "since")
        .map(|(_, v)| {
            v.parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!("since must be a whole number, not {v:?}"))
            })
        })
        .transpose()
}

/// Upgrades, then authenticates, takes a connection slot, lets `make` build the
/// source (or refuse), and runs the session as a tracked task.
fn accept<S, F, Fut>(
    state: AppState,
    ws: WebSocketUpgrade,
    gateway: usize,
    codes: Codes,
    token: Option<String>,
    make: F,
) -> Result<Response, ApiError>
where
    S: Source,
    F: FnOnce(AppState, Principal) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Accepted<S>, Close>> + Send + 'static,
{
    Ok(ws.max_message_size(session::MAX_CLIENT_MESSAGE)
        .max_frame_size(session::MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket: WebSocket| {
            let tasks = state.tasks.clone();
            let connection = async move {
                let principal = match state.auth.verify(token.as_deref()) {
                    Ok(principal) => principal,
                    Err(reason) => {
                        crate::metrics::auth_refused(Endpoint::Gateway(gateway), reason.label());
                        tracing::info!(%reason, gateway = crate::connections::GATEWAY_NAMES[gateway], "gateway connection refused");
                        return close_now(socket, codes.auth).await;
                    }
                };
                let Some(slot) = crate::http::stream::slot(&state, &principal, Endpoint::Gateway(gateway)) else {
                    return close_now(socket, TOO_MANY).await;
                };
                let counted = state.gateways.open(gateway);
                let accepted = match make(state.clone(), principal).await {
                    Ok(accepted) => accepted,
                    Err(close) => return close_now(socket, close).await,
                };
                let watching = accepted
                    .watching
                    .as_ref()
                    .map(|(id, project)| state.watchers.watch(id, project));
                let config = &state.config;
                let timing = session::Timing {
                    ping_interval: config.websocket.ping_interval,
                    ping_timeout: config.websocket.ping_timeout,
                    idle: config.limits.idle_timeout,
                    max_per_second: config.limits.max_events_per_second,
                    endpoint: Endpoint::Gateway(gateway),
                };
                session::run(socket, accepted.source, timing, state.gateways.closing.clone()).await;
                drop(watching);
                drop(counted);
                drop(slot);
            };
            async move {
                if let Err(e) = tasks.spawn(connection).await {
                    tracing::error!(error = %e, "a gateway connection task failed");
                }
            }
        }))
}

/// The job `id` as `principal` may watch it: `Ok(None)` when it does not exist
/// (on this node, yet), `Err` with the seed's code when the token may not see it.
async fn watchable(
    state: &AppState,
    principal: &Principal,
    id: &JobId,
    codes: Codes,
) -> Result<Option<JobRecord>, Close> {
    let job = state.journal.job(id).await.map_err(|e| {
        tracing::error!(job_id = %id, error = %e, "a gateway could not read a job");
        INTERNAL
    })?;
    match job {
        Some(job) => {
            if principal.require(Role::Viewer, &job.project_id).is_err() {
                return Err(codes.forbidden);
            }
            Ok(Some(job))
        }
        // A restricted token cannot tell an unknown job from another project's.
        None if principal.is_restricted() || principal.role < Role::Viewer => Err(codes.forbidden),
        None => Ok(None),
    }
}

/// `WS /ws/build/{build_id}` (seed 000).
pub async fn build(
    State(state): State<AppState>,
    Extension(origins): Extension<Origins>,
    Path(id): Path<String>,
    uri: OriginalUri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let parsed = crate::http::job_id(&id).and_then(|id| Ok((id, since(&uri)?)));
    let ((id, since), ws) = admit(&origins, &headers, parsed, ws)?;
    let token = token_from_request(uri.query(), &headers);
    accept(
        state,
        ws,
        BUILD,
        SEED_CODES,
        token,
        move |state, principal| async move {
            let job = watchable(&state, &principal, &id, SEED_CODES).await?;
            let (feed, watching) = match job {
                Some(job) => (
                    JobFeed::new(&state, id.clone(), since.unwrap_or(0)),
                    Some((id.clone(), job.project_id)),
                ),
                None => (JobFeed::pending(&state, id.clone()), None),
            };
            Ok(Accepted {
                source: BuildSource::new(&id, feed),
                watching,
            })
        },
    )
}

/// `WS /api/v1/ws/jobs/{job_id}/updates` (seed 001).
pub async fn jobs(
    State(state): State<AppState>,
    Extension(origins): Extension<Origins>,
    Path(id): Path<String>,
    uri: OriginalUri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let parsed = crate::http::job_id(&id).and_then(|id| Ok((id, since(&uri)?)));
    let ((id, since), ws) = admit(&origins, &headers, parsed, ws)?;
    let token = token_from_request(uri.query(), &headers);
    accept(
        state,
        ws,
        JOBS,
        JOBS_CODES,
        token,
        move |state, principal| async move {
            let Some(job) = watchable(&state, &principal, &id, JOBS_CODES).await? else {
                return Err(JOB_NOT_FOUND);
            };
            let fold = JobsFold::new(id.clone(), pipeline_steps(&state, &job.pipeline));
            let at = since.map_or(job.last_seq, |since| since.min(job.last_seq));
            Ok(Accepted {
                source: Snapshotted::new(fold, JobFeed::new(&state, id.clone(), 0), Some(at)),
                watching: Some((id, job.project_id)),
            })
        },
    )
}

/// `WS /ws/builds/{build_job_id}/` (seed 003; the slash is optional).
pub async fn builds(
    State(state): State<AppState>,
    Extension(origins): Extension<Origins>,
    Path(id): Path<String>,
    uri: OriginalUri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (id, ws) = admit(&origins, &headers, crate::http::job_id(&id), ws)?;
    let token = token_from_request(uri.query(), &headers);
    accept(
        state,
        ws,
        BUILDS,
        SEED_CODES,
        token,
        move |state, principal| async move {
            let job = watchable(&state, &principal, &id, SEED_CODES).await?;
            Ok(match job {
                Some(job) => {
                    let build = builds::BuildJob::new(
                        id.clone(),
                        Some(job.project_id.clone()),
                        Some(crate::wire::Timestamp(job.created_at)),
                        pipeline_steps(&state, &job.pipeline),
                    );
                    Accepted {
                        source: Snapshotted::new(
                            BuildsFold::new(build),
                            JobFeed::new(&state, id.clone(), 0),
                            Some(job.last_seq),
                        ),
                        watching: Some((id, job.project_id)),
                    }
                }
                // Unknown: nothing until its first event, as the original does.
                None => Accepted {
                    source: Snapshotted::new(
                        BuildsFold::pending(builds::BuildJob::new(id.clone(), None, None, None), {
                            let (state, id) = (state.clone(), id.clone());
                            Box::new(move || {
                                let name = state
                                    .journal
                                    .with_live(&id, |job| job.record.pipeline.clone())?;
                                pipeline_steps(&state, &name)
                            })
                        }),
                        JobFeed::pending(&state, id),
                        None,
                    ),
                    watching: None,
                },
            })
        },
    )
}

/// `WS /api/ws/projects/{project_id}` (seed 004).
pub async fn projects(
    State(state): State<AppState>,
    Extension(origins): Extension<Origins>,
    Path(id): Path<String>,
    uri: OriginalUri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let project =
        ProjectId::parse(&id).map_err(|e| ApiError::BadRequest(format!("invalid project id: {e}")));
    let (project, ws) = admit(&origins, &headers, project, ws)?;
    let token = token_from_request(uri.query(), &headers);
    accept(
        state,
        ws,
        PROJECTS,
        SEED_CODES,
        token,
        move |state, principal| async move {
            if principal.require(Role::Viewer, &project).is_err() {
                return Err(SEED_CODES.forbidden);
            }
            let source = ProjectSource::start(state, project).await.map_err(|e| {
                tracing::error!(error = %e, "a project gateway could not list its jobs");
                INTERNAL
            })?;
            Ok(Accepted {
                source,
                watching: None,
            })
        },
    )
}
