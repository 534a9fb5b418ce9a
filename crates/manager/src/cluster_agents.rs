//! How this manager reaches each node's agent ([`NodeAgents`]), and the node records
//! its own agent reads from the cluster's store ([`StoredNodes`]).

use std::sync::Arc;

use anyhow::Context as _;
use shorthorn_agent::{Agent, NodeAgent, NodeFacts, NodeRecords, RemoteAgent};

use crate::model::Node;
use crate::state::{Kind, StateStore, StateStoreExt};

/// How a manager reaches the agent of each node.
pub trait NodeAgents: Send + Sync {
    /// The agent of `node`; `record` is its node object, when registered.
    fn agent_for(&self, node: &str, record: Option<&Node>) -> anyhow::Result<Arc<dyn NodeAgent>>;
}

/// A cluster's agents as `shorthorn up` reaches them: its own in this process, the
/// others over their API with the node credential.
pub struct ClusterAgents {
    local_node: String,
    local: Arc<Agent>,
    node_token: String,
}

impl ClusterAgents {
    /// Agents seen from node `local_node`, whose own agent is `local`.
    pub fn new(local_node: &str, local: Arc<Agent>, node_token: &str) -> ClusterAgents {
        ClusterAgents {
            local_node: local_node.to_string(),
            local,
            node_token: node_token.to_string(),
        }
    }
}

impl NodeAgents for ClusterAgents {
    fn agent_for(&self, node: &str, record: Option<&Node>) -> anyhow::Result<Arc<dyn NodeAgent>> {
        if node == self.local_node {
            return Ok(self.local.clone());
        }
        let record = record.with_context(|| format!("node {node} is not registered"))?;
        Ok(Arc::new(RemoteAgent::new(
            &record.spec.api_url,
            &self.node_token,
        )?))
    }
}

/// Node records as the cluster's store holds them.
pub struct StoredNodes(pub Arc<dyn StateStore>);

impl NodeRecords for StoredNodes {
    fn node(&self, name: &str) -> anyhow::Result<Option<NodeFacts>> {
        Ok(self.0.get::<Node>(Kind::Node, name)?.map(facts_of))
    }

    fn nodes(&self) -> anyhow::Result<Vec<NodeFacts>> {
        let nodes: Vec<Node> = self.0.list(Kind::Node)?;
        Ok(nodes.into_iter().map(facts_of).collect())
    }
}

/// What the agent reads of a node object.
fn facts_of(node: Node) -> NodeFacts {
    NodeFacts {
        name: node.name,
        address: node.spec.address,
        disks: node.spec.disks,
    }
}
