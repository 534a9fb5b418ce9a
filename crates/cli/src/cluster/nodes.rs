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
        /// Move every replica off the node (true) or stop that (false). Each replica is
        /// first rebuilt on another node, then removed: a volume never has fewer healthy
        /// replicas than it wants. `node ls` shows the replicas left.
        #[arg(long)]
        evict: Option<bool>,
        /// Move every replica off one disk: DISK=true, or DISK=false to stop (repeat for
        /// more). The replicas may move to another disk of the same node.
        #[arg(long = "evict-disk", value_name = "DISK=BOOL")]
        evict_disks: Vec<String>,
    },
    /// Forget a node that is gone for good. Refused while it holds replicas (evict it
    /// first), has a volume attached, or its manager still reports in.
    Rm {
        /// The node.
        name: String,
    },
    /// List nodes: readiness, address, disks with capacity, available and scheduled,
    /// and the replicas each disk holds (what an eviction has left to move).
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
            NodeCommand::Rm { name } => {
                let _: serde_json::Value = client
                    .call(reqwest::Method::DELETE, &format!("/v1/nodes/{name}"), None)
                    .await?;
                return line(format_args!("removed node {name}"));
            }
            NodeCommand::Update {
                name,
                zone,
                tags,
                scheduling,
                disks,
                evict,
                evict_disks,
            } => {
                let mut disks = disks
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
                                    evict: false,
                                })
                            })
                            .collect::<anyhow::Result<Vec<_>>>()
                    })
                    .transpose()?;
                if !evict_disks.is_empty() {
                    if disks.is_none() {
                        let current: Node = client
                            .call(reqwest::Method::GET, &format!("/v1/nodes/{name}"), None)
                            .await?;
                        disks = Some(current.spec.disks);
                    }
                    let list = disks.as_mut().context("the node's disks")?;
                    for change in &evict_disks {
                        let (disk, value) = change.split_once('=').with_context(|| {
                            format!("--evict-disk {change:?}: write DISK=true or DISK=false")
                        })?;
                        let value: bool = value.parse().with_context(|| {
                            format!("--evict-disk {change:?}: {value:?} is not true or false")
                        })?;
                        let Some(spec) = list.iter_mut().find(|d| d.name == disk) else {
                            let known: Vec<&str> = list.iter().map(|d| d.name.as_str()).collect();
                            anyhow::bail!(
                                "--evict-disk {change:?}: node {name} has no disk {disk:?} (its disks: {})",
                                known.join(", ")
                            );
                        };
                        spec.evict = value;
                    }
                }
                let body = serde_json::to_value(UpdateNode {
                    zone,
                    tags: tags.map(|t| t.into_iter().filter(|t| !t.is_empty()).collect()),
                    allow_scheduling: scheduling,
                    evict,
                    disks,
                })?;
                let node: Node = client
                    .call(
                        reqwest::Method::PUT,
                        &format!("/v1/nodes/{name}"),
                        Some(body),
                    )
                    .await?;
                let evicting: Vec<&str> = node
                    .spec
                    .disks
                    .iter()
                    .filter(|d| d.evict)
                    .map(|d| d.name.as_str())
                    .collect();
                return line(format_args!(
                    "{}: zone {:?}, tags [{}], scheduling {}, evict {}, {} disks{}",
                    node.name,
                    node.spec.zone,
                    node.spec.tags.join(", "),
                    node.spec.allow_scheduling,
                    node.spec.evict,
                    node.spec.disks.len(),
                    if evicting.is_empty() {
                        String::new()
                    } else {
                        format!(" (evicting {})", evicting.join(", "))
                    }
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
            let replicas: u64 = n.status.disks.iter().map(|d| d.replicas).sum();
            let evicting = if n.spec.evict {
                format!(" evicting ({replicas} replicas left)")
            } else {
                String::new()
            };
            line(format_args!(
                "{} {} ready={} scheduling={}{evicting}",
                n.name, n.spec.address, n.status.ready, n.spec.allow_scheduling
            ))?;
            for d in &n.status.disks {
                let spec = n.spec.disks.iter().find(|s| s.name == d.name);
                let path = spec.map_or("?", |s| s.path.as_str());
                let evicting = if spec.is_some_and(|s| s.evict) {
                    format!(", evicting ({} replicas left)", d.replicas)
                } else {
                    String::new()
                };
                line(format_args!(
                    "  disk {} {path}: capacity {}, available {}, scheduled {}, {} replicas{evicting}",
                    d.name,
                    format_size(d.capacity),
                    format_size(d.available),
                    format_size(d.scheduled),
                    d.replicas
                ))?;
            }
        }
        Ok(())
    })
}
