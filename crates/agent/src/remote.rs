//! How a manager reaches a node's agent: the [`NodeAgent`] trait the reconcilers call,
//! and [`RemoteAgent`], another node's agent over its API with the node credential.
//! This process's own [`crate::Agent`] implements the trait too.

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::protocol::{
    CloneLaunch, EngineLaunch, ProcessReport, ProcessState, RemoveReplica, ReplicaLaunch,
    RestoreLaunch,
};

/// What the reconcilers ask of a node's agent. This process's own agent ([`Agent`]),
/// another node's over its API ([`RemoteAgent`]), or a fake in the reconcilers' tests.
#[async_trait::async_trait]
pub trait NodeAgent: Send + Sync {
    /// Starts a replica there.
    async fn start_replica(&self, launch: &ReplicaLaunch) -> anyhow::Result<()>;
    /// Starts an engine there.
    async fn start_engine(&self, launch: &EngineLaunch) -> anyhow::Result<()>;
    /// Starts a restore there.
    async fn start_restore(&self, launch: &RestoreLaunch) -> anyhow::Result<()>;
    /// Starts a clone there.
    async fn start_clone(&self, launch: &CloneLaunch) -> anyhow::Result<()>;
    /// Stops a process there.
    async fn stop(&self, name: &str) -> anyhow::Result<()>;
    /// Stops a replica there and removes its data (the agent finds its directory).
    async fn remove_replica(&self, name: &str) -> anyhow::Result<()>;
    /// A process's state there; `Unreachable` when the agent does not answer.
    async fn state(&self, name: &str) -> ProcessState;
    /// A task's last progress report there (a restore's or clone's), if any.
    async fn progress(&self, _name: &str) -> Option<String> {
        None
    }
}

/// Another node's agent, over its API.
pub struct RemoteAgent {
    /// `http://host:port` of that node's API.
    url: String,
    /// The cluster's node credential (agent routes take nothing else).
    node_token: String,
    http: reqwest::Client,
}

/// How long a call to another node's agent may take (starting a daemon included).
const REMOTE_TIMEOUT: Duration = Duration::from_secs(40);

impl RemoteAgent {
    /// A client for the agent at `url`, calling with the node credential.
    pub fn new(url: &str, node_token: &str) -> anyhow::Result<RemoteAgent> {
        let http = reqwest::Client::builder()
            .timeout(REMOTE_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .build()
            .context("HTTP client")?;
        Ok(RemoteAgent {
            url: url.trim_end_matches('/').to_string(),
            node_token: node_token.to_string(),
            http,
        })
    }

    /// What the agent says of process `name`.
    async fn report(&self, name: &str) -> anyhow::Result<ProcessReport> {
        let bytes = self
            .call::<()>(
                reqwest::Method::GET,
                &format!("/agent/v1/processes/{name}"),
                None,
            )
            .await?;
        serde_json::from_slice(&bytes).context("agent answer")
    }

    async fn call<T: Serialize + Sync>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&T>,
    ) -> anyhow::Result<bytes::Bytes> {
        let url = &self.url;
        let mut request = self
            .http
            .request(method, format!("{url}{path}"))
            .bearer_auth(&self.node_token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("agent at {url} unreachable"))?;
        let status = response.status();
        let bytes = response.bytes().await.context("agent answer")?;
        if !status.is_success() {
            bail!(
                "agent at {url}: {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(bytes)
    }
}

#[async_trait::async_trait]
impl NodeAgent for RemoteAgent {
    async fn start_replica(&self, launch: &ReplicaLaunch) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/agent/v1/replicas", Some(launch))
            .await
            .map(drop)
    }

    async fn start_engine(&self, launch: &EngineLaunch) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/agent/v1/engines", Some(launch))
            .await
            .map(drop)
    }

    async fn start_restore(&self, launch: &RestoreLaunch) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/agent/v1/restores", Some(launch))
            .await
            .map(drop)
    }

    async fn start_clone(&self, launch: &CloneLaunch) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/agent/v1/clones", Some(launch))
            .await
            .map(drop)
    }

    async fn stop(&self, name: &str) -> anyhow::Result<()> {
        self.call::<()>(
            reqwest::Method::DELETE,
            &format!("/agent/v1/processes/{name}"),
            None,
        )
        .await
        .map(drop)
    }

    async fn remove_replica(&self, name: &str) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::POST,
            &format!("/agent/v1/replicas/{name}/remove"),
            Some(&RemoveReplica {}),
        )
        .await
        .map(drop)
    }

    async fn state(&self, name: &str) -> ProcessState {
        match self.report(name).await {
            Ok(report) if report.state == "running" => ProcessState::Running,
            Ok(report) if report.state == "exited" => ProcessState::Exited(report.status),
            Ok(_) => ProcessState::Absent,
            Err(e) => ProcessState::Unreachable(format!("{e:#}")),
        }
    }

    async fn progress(&self, name: &str) -> Option<String> {
        self.report(name).await.ok()?.progress
    }
}
