//! What the manager's and the agent's HTTP routes share: the error shape
//! (`{"message": "..."}` with a fitting status code), the JSON body extractor that
//! applies the field rules, and the bearer scheme of the OpenAPI documents. It sits in
//! the agent crate because the agent's routes are the lower layer; the manager's API
//! uses the same pieces.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, ToSchema};

use crate::protocol::AgentError;
use crate::validate::Validate;

/// An error as the API returns it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub message: String,
}

/// An API error: a status code and a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with this status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 404: no `what` named `name`.
    pub fn not_found(what: &str, name: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("no {what} {name:?}"))
    }

    /// 400 with this message.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> ApiError {
        match e {
            AgentError::Invalid(message) => ApiError::bad_request(message),
            AgentError::Refused(message) => ApiError::new(StatusCode::CONFLICT, message),
            AgentError::Failed(e) => e.into(),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                message: self.message,
            }),
        )
            .into_response()
    }
}

/// A handler's answer: JSON, or an error.
pub type ApiResult<T> = Result<Json<T>, ApiError>;

/// A request body: a JSON object, decoded into `T`. (axum's `Json` would also take an
/// array, which serde reads into a struct positionally.)
pub struct JsonObject<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Validate> FromRequest<S> for JsonObject<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|ct| {
                let ct = ct.trim();
                ct.eq_ignore_ascii_case("application/json") || ct.ends_with("+json")
            });
        if !json {
            return Err(ApiError::bad_request(
                "expected a JSON body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                String::new()
            } else {
                format!("{path}: ")
            };
            ApiError::bad_request(format!("invalid JSON body: {field}{}", e.inner()))
        })?;
        deserializer
            .end()
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
        T::validate(&value).map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(JsonObject(value))
    }
}

/// Adds the bearer-token security scheme to an OpenAPI document.
pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
