//! `shorthorn node …`: nodes of a cluster and their disks, through the manager's API.

use anyhow::Context;
use clap::Subcommand;
use shorthorn_manager::api::{ClusterInfo, UpdateNode};
use shorthorn_manager::model::{DiskSpec, Node};

use super::api_client::{ApiArgs, Client};
use crate::daemon;
use crate::output::line;
use shorthorn_block::size::format_size;

/// Nodes of the cluster.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Change a node: zone, tags, scheduling, disks (what is not given stays).
    Update {
        /// The node.
        name: String,
        /// Its zone.
        #[arg(long)]
        zone: Option<String>,
        /// A tag (replaces its tags; repeat for more; `--tag ''` for none).
        #[arg(long = "tag")]
        tags: Option<Vec<String>>,
        /// Whether new replicas may be placed on it (true or false).
        #[arg(long)]
        scheduling: Option<bool>,
        /// A disk, NAME=/ABSOLUTE/PATH (replaces its disks; repeat for more).
        #[arg(long = "disk")]
        disks: Option<Vec<String>>,
    },
    /// List nodes: readiness, address, disks with capacity, available and scheduled.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `shorthorn node …`.
pub fn node(api: &ApiArgs, command: NodeCommand) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    daemon::runtime()?.block_on(async {
        let json = match command {
            NodeCommand::Ls { json } => json,
            NodeCommand::Update {
                name,
                zone,
                tags,
                scheduling,
                disks,
            } => {
                let disks = disks
                    .map(|disks| {
                        disks
                            .iter()
                            .map(|d| {
                                let (name, path) = d
                                    .split_once('=')
                                    .with_context(|| format!("--disk {d:?}: write NAME=/PATH"))?;
                                Ok(DiskSpec {
                                    name: name.to_string(),
                                    path: path.to_string(),
                                    tags: Vec::new(),
                                    reserved: 0,
                                    allow_scheduling: true,
                                })
                            })
                            .collect::<anyhow::Result<Vec<_>>>()
                    })
                    .transpose()?;
                let body = serde_json::to_value(UpdateNode {
                    zone,
                    tags: tags.map(|t| t.into_iter().filter(|t| !t.is_empty()).collect()),
                    allow_scheduling: scheduling,
                    disks,
                })?;
                let node: Node = client
                    .call(
                        reqwest::Method::PUT,
                        &format!("/v1/nodes/{name}"),
                        Some(body),
                    )
                    .await?;
                return line(format_args!(
                    "{}: zone {:?}, tags [{}], scheduling {}, {} disks",
                    node.name,
                    node.spec.zone,
                    node.spec.tags.join(", "),
                    node.spec.allow_scheduling,
                    node.spec.disks.len()
                ));
            }
        };
        let nodes: Vec<Node> = client.call(reqwest::Method::GET, "/v1/nodes", None).await?;
        if json {
            return line(format_args!("{}", serde_json::to_string_pretty(&nodes)?));
        }
        let cluster: ClusterInfo = client
            .call(reqwest::Method::GET, "/v1/cluster", None)
            .await?;
        line(format_args!(
            "leader: {} ({} store; answered by {})",
            cluster.leader.as_deref().unwrap_or("none yet"),
            cluster.store,
            cluster.node
        ))?;
        for n in nodes {
            line(format_args!(
                "{} {} ready={} scheduling={}",
                n.name, n.spec.address, n.status.ready, n.spec.allow_scheduling
            ))?;
            for d in &n.status.disks {
                let path = n
                    .spec
                    .disks
                    .iter()
                    .find(|s| s.name == d.name)
                    .map(|s| s.path.as_str())
                    .unwrap_or("?");
                line(format_args!(
                    "  disk {} {path}: capacity {}, available {}, scheduled {}",
                    d.name,
                    format_size(d.capacity),
                    format_size(d.available),
                    format_size(d.scheduled)
                ))?;
            }
        }
        Ok(())
    })
}
