//! The manager's REST API as the cluster commands reach it: where it is (the
//! environment or a local `shorthorn up`'s connection file) and one authenticated call.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::de::DeserializeOwned;
use shorthorn_manager::api::ErrorBody;
use shorthorn_manager::up::Connection;

/// Where the manager's API is: `SHORTHORN_URL` and `SHORTHORN_TOKEN`, or the connection
/// file a local `shorthorn up` wrote into its data directory.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The data directory of a local `shorthorn up` (used unless SHORTHORN_URL is set).
    #[arg(long, default_value = "shorthorn-data", global = true)]
    data_dir: PathBuf,
}

/// An API client.
pub(crate) struct Client {
    http: reqwest::Client,
    connection: Connection,
}

impl Client {
    pub(crate) fn new(args: &ApiArgs) -> anyhow::Result<Client> {
        let connection = match (
            std::env::var("SHORTHORN_URL"),
            std::env::var("SHORTHORN_TOKEN"),
        ) {
            (Ok(url), Ok(token)) => Connection { url, token },
            (Ok(_), Err(_)) => bail!("SHORTHORN_URL is set but SHORTHORN_TOKEN is not"),
            _ => Connection::load(&args.data_dir)?,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("HTTP client")?;
        Ok(Client { http, connection })
    }

    /// `GET path` whose answer is a stream that lasts as long as the caller reads it (so
    /// without the overall time limit of [`Client::call`]).
    pub(crate) async fn stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.connection.url);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("HTTP client")?;
        let response = http
            .get(&url)
            .bearer_auth(&self.connection.token)
            .send()
            .await
            .with_context(|| {
                format!("cannot reach the manager at {url}; is `shorthorn up` running?")
            })?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.context("reading the API's answer")?;
            let message = error_message(&bytes);
            bail!("GET {path}: {status}: {message}");
        }
        Ok(response)
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.connection.url);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.connection.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| {
            format!("cannot reach the manager at {url}; is `shorthorn up` running?")
        })?;
        let status = response.status();
        let bytes = response.bytes().await.context("reading the API's answer")?;
        if !status.is_success() {
            let message = error_message(&bytes);
            bail!("{method} {path}: {status}: {message}");
        }
        let body = if bytes.is_empty() {
            b"null".as_slice()
        } else {
            &bytes
        };
        serde_json::from_slice(body).with_context(|| format!("{method} {path}: unexpected answer"))
    }
}

/// The message of an API error answer (its `{"message"}`, or the body as text).
fn error_message(bytes: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(bytes)
        .map(|e| e.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned())
}

/// `path` with `key=value` appended as an encoded query string.
pub(crate) fn with_query(path: &str, key: &str, value: &str) -> anyhow::Result<String> {
    let mut query = reqwest::Url::parse("http://query/")?;
    query.query_pairs_mut().append_pair(key, value);
    Ok(format!("{path}?{}", query.query().unwrap_or_default()))
}
