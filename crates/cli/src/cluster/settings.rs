//! `shorthorn setting …`: the cluster's settings, through the manager's API.

use anyhow::Context;
use clap::Subcommand;
use shorthorn_manager::api::SetSetting;
use shorthorn_manager::model::Settings;

use super::api_client::{ApiArgs, Client};
use crate::daemon;
use crate::output::line;

/// Cluster settings.
#[derive(Debug, Subcommand)]
pub enum SettingCommand {
    /// Print every setting as `name = value`.
    Ls,
    /// Print one setting's value, or every setting (as `ls`) without a name.
    Get {
        /// The setting.
        name: Option<String>,
    },
    /// Change a setting; VALUE is JSON (true, 30, "text") or plain text.
    Set {
        /// The setting.
        name: String,
        /// The new value.
        value: String,
    },
}

/// `shorthorn setting …`.
pub fn setting(api: &ApiArgs, command: SettingCommand) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    daemon::runtime()?.block_on(async {
        use reqwest::Method;
        let settings: Settings = match command {
            SettingCommand::Ls => client.call(Method::GET, "/v1/settings", None).await?,
            SettingCommand::Get { name } => {
                let settings: Settings = client.call(Method::GET, "/v1/settings", None).await?;
                if let Some(name) = name {
                    let map = settings.to_map();
                    let value = map
                        .get(&name)
                        .with_context(|| format!("no setting {name:?}; `setting ls` lists them"))?;
                    return line(format_args!("{value}"));
                }
                settings
            }
            SettingCommand::Set { name, value } => {
                let value =
                    serde_json::from_str(&value).unwrap_or(serde_json::Value::String(value));
                let body = serde_json::to_value(SetSetting { value })?;
                client
                    .call(Method::PUT, &format!("/v1/settings/{name}"), Some(body))
                    .await?
            }
        };
        for (name, value) in settings.to_map() {
            line(format_args!("{name} = {value}"))?;
        }
        Ok(())
    })
}
