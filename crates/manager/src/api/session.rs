//! `/v1/session`: browser sessions for the web UI.
//!
//! A browser cannot hold the API token safely (script can read `localStorage`), and
//! `EventSource` cannot send an `Authorization` header. So the login page trades the
//! token once for a session: a random id in an `HttpOnly; SameSite=Strict` cookie
//! (`Secure` behind a TLS proxy that says `X-Forwarded-Proto: https`), and a CSRF token
//! the page keeps in memory and sends as `X-CSRF-Token` on every request that changes
//! something. Sessions live in this manager's memory: a restart, or logout, ends them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, AppState, ErrorBody, JsonObject, constant_time_eq};
use crate::validate::{FieldError, Validate};

/// The cookie that carries the session id.
pub const COOKIE: &str = "shorthorn_session";
/// The header a cookie-authenticated request that changes something must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session unused this long ends.
const IDLE_TIMEOUT: Duration = Duration::from_secs(8 * 3600);
/// At most this many sessions at once; a new login past it ends the least recently used.
const MAX_SESSIONS: usize = 1024;

/// The live sessions of this manager.
#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

struct Session {
    csrf_token: String,
    last_used: Instant,
}

/// What a session's request may do.
pub enum SessionCheck {
    /// A live session, and the request is safe or carries its CSRF token.
    Allowed,
    /// No cookie, or a session that ended.
    NoSession,
    /// A live session, but a state-changing request without its CSRF token.
    MissingCsrf,
}

impl Sessions {
    /// Starts a session; returns its id and CSRF token.
    fn start(&self) -> (String, String) {
        let id = random_secret();
        let csrf_token = random_secret();
        let now = Instant::now();
        let mut sessions = self.by_id.lock();
        sessions.retain(|_, session| now.duration_since(session.last_used) < IDLE_TIMEOUT);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, session)| session.last_used)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf_token: csrf_token.clone(),
                last_used: now,
            },
        );
        (id, csrf_token)
    }

    /// The CSRF token of the live session `id` (and marks it used).
    fn touch(&self, id: &str) -> Option<String> {
        let now = Instant::now();
        let mut sessions = self.by_id.lock();
        let session = sessions.get_mut(id)?;
        if now.duration_since(session.last_used) >= IDLE_TIMEOUT {
            sessions.remove(id);
            return None;
        }
        session.last_used = now;
        Some(session.csrf_token.clone())
    }

    fn end(&self, id: &str) {
        self.by_id.lock().remove(id);
    }

    /// Whether `request` may go on by its session cookie.
    pub fn check(&self, request: &Request) -> SessionCheck {
        let Some(csrf_token) = session_id(request.headers()).and_then(|id| self.touch(id)) else {
            return SessionCheck::NoSession;
        };
        let safe = matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        );
        let sent = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok());
        match sent {
            _ if safe => SessionCheck::Allowed,
            Some(sent) if constant_time_eq(sent.as_bytes(), csrf_token.as_bytes()) => {
                SessionCheck::Allowed
            }
            _ => SessionCheck::MissingCsrf,
        }
    }
}

fn random_secret() -> String {
    format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    )
}

/// The session id in the request's cookies, if any.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// A login: the API token (the data directory's `token` file).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The user API token.
    #[schema(min_length = 1, max_length = 256)]
    pub token: String,
}

impl Validate for Login {
    fn validate(&self) -> Result<(), FieldError> {
        Ok(())
    }
}

/// A live session: what the page sends as `X-CSRF-Token` on requests that change
/// something (the session id itself is in an HttpOnly cookie, out of script's reach).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// Send it as `X-CSRF-Token` on POST, PUT and DELETE.
    pub csrf_token: String,
}

#[utoipa::path(post, path = "/v1/session", request_body = Login, security(), responses(
    (status = 201, description = "Logged in: the session cookie is set", body = SessionInfo),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonObject(login): JsonObject<Login>,
) -> Result<Response, ApiError> {
    if !constant_time_eq(login.token.trim().as_bytes(), state.user_token.as_bytes()) {
        tracing::warn!("UI login refused: wrong token");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong token: use the user token (the data directory's token file, or `shorthorn up`'s output)",
        ));
    }
    let (id, csrf_token) = state.sessions.start();
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        IDLE_TIMEOUT.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let mut response = (StatusCode::CREATED, Json(SessionInfo { csrf_token })).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cookie: {e}"))
        })?,
    );
    Ok(response)
}

#[utoipa::path(get, path = "/v1/session", security(), responses(
    (status = 200, description = "The session of this browser's cookie", body = SessionInfo),
    (status = 401, body = ErrorBody)))]
pub(super) async fn get_session(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<SessionInfo>, ApiError> {
    session_id(&headers)
        .and_then(|id| state.sessions.touch(id))
        .map(|csrf_token| Json(SessionInfo { csrf_token }))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "not logged in"))
}

#[utoipa::path(delete, path = "/v1/session", security(), responses(
    (status = 204, description = "Logged out: the session ended and its cookie is cleared")))]
pub(super) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        state.sessions.end(id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "shorthorn_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn request(method: Method, cookie: Option<&str>, csrf: Option<&str>) -> Request {
        let mut builder = Request::builder().method(method).uri("/v1/volumes");
        if let Some(cookie) = cookie {
            builder = builder.header(header::COOKIE, format!("other=1; {COOKIE}={cookie}"));
        }
        if let Some(csrf) = csrf {
            builder = builder.header(CSRF_HEADER, csrf);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[test]
    fn a_session_reads_freely_and_changes_only_with_its_csrf_token() {
        let sessions = Sessions::default();
        let (id, csrf) = sessions.start();
        let check = |r: &Request| match sessions.check(r) {
            SessionCheck::Allowed => "allowed",
            SessionCheck::NoSession => "no session",
            SessionCheck::MissingCsrf => "missing csrf",
        };
        assert_eq!(check(&request(Method::GET, Some(&id), None)), "allowed");
        assert_eq!(
            check(&request(Method::POST, Some(&id), None)),
            "missing csrf"
        );
        assert_eq!(
            check(&request(Method::POST, Some(&id), Some("x"))),
            "missing csrf"
        );
        assert_eq!(
            check(&request(Method::DELETE, Some(&id), Some(&csrf))),
            "allowed"
        );
        assert_eq!(
            check(&request(Method::GET, Some("forged"), None)),
            "no session"
        );
        assert_eq!(check(&request(Method::GET, None, None)), "no session");
        sessions.end(&id);
        assert_eq!(check(&request(Method::GET, Some(&id), None)), "no session");
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = Sessions::default();
        let (first, _) = sessions.start();
        for _ in 0..MAX_SESSIONS {
            sessions.start();
        }
        assert_eq!(sessions.by_id.lock().len(), MAX_SESSIONS);
        assert!(
            sessions.touch(&first).is_none(),
            "the least recently used ended"
        );
    }
}
