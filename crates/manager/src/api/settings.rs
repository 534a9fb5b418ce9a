//! `/v1/settings`: the cluster settings, one at a time.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, AppState, ErrorBody, JsonObject};
use crate::model::Settings;
use crate::reconcile::SETTINGS_NAME;
use crate::state::{Kind, StateStoreExt};
use crate::validate::{FieldError, Validate};

/// A request to change one setting.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSetting {
    /// The new value (its JSON type must match the setting's).
    pub value: serde_json::Value,
}

impl Validate for SetSetting {
    /// The value's type and range depend on the setting; the handler checks them.
    fn validate(&self) -> Result<(), FieldError> {
        Ok(())
    }
}

#[utoipa::path(get, path = "/v1/settings", responses(
    (status = 200, body = Settings), (status = 401, body = ErrorBody)))]
pub(super) async fn get_settings(State(state): State<AppState>) -> ApiResult<Settings> {
    Ok(Json(state.manager.settings()?))
}

#[utoipa::path(put, path = "/v1/settings/{name}", params(("name" = String, Path)),
    request_body = SetSetting, responses(
    (status = 200, body = Settings), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn set_setting(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject<SetSetting>,
) -> ApiResult<Settings> {
    let request = body;
    let mut map = state.manager.settings()?.to_map();
    let Some(current) = map.get_mut(&name) else {
        return Err(ApiError::not_found("setting", &name));
    };
    *current = request.value;
    let object = serde_json::Value::Object(map.into_iter().collect());
    let settings: Settings = serde_json::from_value(object)
        .map_err(|e| ApiError::bad_request(format!("setting {name}: {e}")))?;
    settings
        .validate()
        .map_err(|e| ApiError::bad_request(format!("setting {name}: {e}")))?;
    state
        .manager
        .state()
        .put(Kind::Settings, SETTINGS_NAME, &settings)?;
    state.manager.poke();
    Ok(Json(settings))
}
