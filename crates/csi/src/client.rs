//! The manager's REST API as the driver calls it, with each failure's HTTP status kept so
//! that it becomes the gRPC code CSI asks for.

use std::time::Duration;

use serde::de::DeserializeOwned;
use shorthorn_manager::api::ErrorBody;
use tonic::{Code, Status};

/// One manager's API, called with a bearer token.
#[derive(Debug, Clone)]
pub struct ManagerClient {
    http: reqwest::Client,
    url: String,
    token: String,
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The manager did not answer.
    #[error("the manager at {url} did not answer: {reason}")]
    Unreachable {
        /// Its URL.
        url: String,
        /// What the HTTP client said.
        reason: String,
    },
    /// The manager refused, with this status and message.
    #[error("{what}: {status}: {message}")]
    Refused {
        /// Method and path.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The manager's message.
        message: String,
    },
    /// The answer was not what the API documents.
    #[error("{what}: unexpected answer: {reason}")]
    Unexpected {
        /// Method and path.
        what: String,
        /// The decoding error.
        reason: String,
    },
}

impl CallError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The gRPC status for the caller: 400 → INVALID_ARGUMENT, 404 → NOT_FOUND, 409 →
    /// FAILED_PRECONDITION, no answer → UNAVAILABLE, anything else INTERNAL.
    pub fn to_status(&self) -> Status {
        let code = match self.status() {
            Some(400) => Code::InvalidArgument,
            Some(404) => Code::NotFound,
            Some(409) => Code::FailedPrecondition,
            Some(401) => Code::Unauthenticated,
            Some(403) => Code::PermissionDenied,
            None if matches!(self, CallError::Unreachable { .. }) => Code::Unavailable,
            _ => Code::Internal,
        };
        Status::new(code, self.to_string())
    }
}

impl From<CallError> for Status {
    fn from(error: CallError) -> Status {
        error.to_status()
    }
}

impl ManagerClient {
    /// A client of the API at `url` (`http://host:port`) with `token`.
    pub fn new(url: &str, token: &str) -> anyhow::Result<ManagerClient> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(ManagerClient {
            http,
            url: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// `POST path` with `body`.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, CallError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// `DELETE path`, its answer ignored.
    pub async fn delete(&self, path: &str) -> Result<(), CallError> {
        self.call::<serde_json::Value>(reqwest::Method::DELETE, path, None)
            .await
            .map(drop)
    }

    /// One authenticated call; an empty answer decodes as JSON `null`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, CallError> {
        let what = format!("{method} {path}");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let unreachable = |e: reqwest::Error| CallError::Unreachable {
            url: self.url.clone(),
            reason: e.to_string(),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(CallError::Refused {
                what,
                status: status.as_u16(),
                message,
            });
        }
        let body = if bytes.is_empty() {
            b"null".as_slice()
        } else {
            &bytes
        };
        serde_json::from_slice(body).map_err(|e| CallError::Unexpected {
            what,
            reason: e.to_string(),
        })
    }
}
