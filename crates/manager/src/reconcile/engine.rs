//! The engine: its process started (or stopped) where the volume is attached, its
//! membership kept in line with the replicas, replicas added to it for rebuild.

use std::net::SocketAddr;

use anyhow::Context;
use shorthorn_proto::v1 as pb;
use shorthorn_proto::v1::engine_control_client::EngineControlClient;
use tonic::transport::Channel;

use super::replicas::{free_port_pair, mark_failed};
use super::{ENGINE_TIMEOUT, Manager};
use crate::engine_client::connect_engine;
use crate::model::{
    Engine, EngineReplicaStatus, EngineState, EngineStatus, Replica, ReplicaState, Settings,
};
use crate::state::{Kind, StateStoreExt};
use shorthorn_agent::protocol::{EngineLaunch, ProcessState};

impl Manager {
    /// The engine's members from its replicas: those meant to run whose process runs
    /// serve; failed ones still meant to run are kept (for an incremental rebuild, or a
    /// salvage); replaced ones go.
    pub(super) fn set_engine_members(
        &self,
        engine: &mut Engine,
        replicas: &[Replica],
    ) -> anyhow::Result<()> {
        engine.spec.replicas.clear();
        engine.spec.failed.clear();
        for replica in replicas.iter().filter(|r| r.spec.desire_running) {
            let address = self.replica_address(replica)?;
            match replica.status.state {
                ReplicaState::Running | ReplicaState::Rebuilding => {
                    engine.spec.replicas.push(address);
                }
                _ => engine.spec.failed.push(address),
            }
        }
        Ok(())
    }

    /// Writes the engine object if it differs from `stored` (what the store holds; only
    /// the volume's owner writes it), unless its volume was deleted meanwhile (through
    /// another manager's API): no orphan engine object is left behind.
    pub(super) fn put_engine_if_changed(
        &self,
        engine: &Engine,
        stored: &mut Option<Engine>,
    ) -> anyhow::Result<()> {
        if stored.as_ref() == Some(engine)
            || self
                .state
                .get_raw(Kind::Volume, &engine.spec.volume)?
                .is_none()
        {
            return Ok(());
        }
        self.state.put(Kind::Engine, &engine.name, engine)?;
        *stored = Some(engine.clone());
        Ok(())
    }

    /// The engine's reconciler, first half: its process runs where its spec says (and is
    /// stopped anywhere else), and its status says what it reports. Writes only the
    /// engine's status. `salvage`: a start opens with `--salvage`; `requested` (a user's
    /// `volume salvage`): that too, and a faulted engine is salvaged even without
    /// `auto_salvage`.
    pub(super) async fn reconcile_engine_process(
        &self,
        engine: &mut Engine,
        stored: &mut Option<Engine>,
        size: u64,
        settings: &Settings,
        salvage: bool,
        requested: bool,
    ) -> anyhow::Result<()> {
        let salvage = salvage || requested;
        engine.status.message.clear();
        // Stopped where it should no longer run, or to start again with (or without)
        // its frontend.
        let restart = engine.status.maintenance != engine.spec.maintenance;
        if let Some(old) = engine
            .status
            .node
            .clone()
            .filter(|n| engine.spec.node.as_ref() != Some(n) || restart)
        {
            engine.status.state = EngineState::Stopping;
            self.put_engine_if_changed(engine, stored)?;
            match self.agent_for(&old)?.stop(&engine.name).await {
                Ok(()) => {}
                // Its node is down (its processes died with its agent): the volume may
                // be attached elsewhere. A node that still reports in must stop it.
                Err(e) if !self.node_ready(&old) => {
                    tracing::warn!(engine = %engine.name, node = %old, error = %format!("{e:#}"), "engine's node is down; counting the engine stopped");
                }
                Err(e) => return Err(e),
            }
            if let Some(address) = &engine.status.address {
                self.forget_engine_client(address);
            }
            engine.status = EngineStatus::default();
        }
        let Some(node) = engine.spec.node.clone() else {
            return Ok(());
        };
        let agent = self.agent_for(&node)?;
        let address = self.node_address(&node)?;
        let process = agent.state(&engine.name).await;
        if let ProcessState::Unreachable(reason) = &process {
            // Reported, not an error: the rest of the volume's status is still written
            // (detach it to attach it elsewhere once the node counts as down).
            engine.status.state = EngineState::Error;
            engine.status.message =
                format!("node {node}, where the volume is attached, is unreachable: {reason}");
            return Ok(());
        }
        if let ProcessState::Exited(status) = &process {
            tracing::warn!(engine = %engine.name, %status, "engine exited; starting it again");
            engine.status.message = format!("engine exited ({status}); restarted");
        }
        if process != ProcessState::Running {
            // Whatever runs: the engine's recovery tells in-sync from stale replicas.
            if engine.spec.replicas.is_empty() {
                engine.status.state = EngineState::Starting;
                engine.status.message = "no replica runs; the engine waits for one".into();
                return Ok(());
            }
            let (control, nbd) = match engine.status.ports {
                Some(ports) => ports,
                None => {
                    let used = self.ports_in_use()?;
                    let port = free_port_pair(address, node == self.node, &used)?;
                    (port, port + 1)
                }
            };
            engine.status.state = EngineState::Starting;
            engine.status.ports = Some((control, nbd));
            self.put_engine_if_changed(engine, stored)?;
            let launch = EngineLaunch {
                name: engine.name.clone(),
                volume: engine.spec.volume.clone(),
                size,
                listen: SocketAddr::new(address, control),
                nbd: SocketAddr::new(address, nbd),
                replicas: engine.spec.replicas.clone(),
                salvage,
                tuning: settings.engine,
                frontend: !engine.spec.maintenance,
            };
            if requested {
                tracing::warn!(engine = %engine.name, replicas = ?launch.replicas, "salvage asked for: starting the engine with --salvage");
            } else if salvage {
                tracing::warn!(engine = %engine.name, replicas = ?launch.replicas, "a replica's node is down: starting the engine with --salvage (auto_salvage), which loses writes only that replica acknowledged");
            }
            if let Err(e) = agent.start_engine(&launch).await {
                // Perhaps its ports were taken meanwhile: new ones next time.
                engine.status.ports = None;
                engine.status.state = EngineState::Error;
                engine.status.message = format!("starting the engine on {node}: {e:#}");
                return Err(e);
            }
            engine.status.address = Some(launch.listen.to_string());
            engine.status.node = Some(node.clone());
            engine.status.maintenance = engine.spec.maintenance;
            engine.status.endpoint = launch
                .frontend
                .then(|| format!("nbd://{}/{}", launch.nbd, engine.spec.volume));
            // Recorded at once: a later step failing must not forget a running engine.
            self.put_engine_if_changed(engine, stored)?;
        }
        let engine_address = engine
            .status
            .address
            .clone()
            .context("a running engine without an address")?;
        let mut client = self.engine_client(&engine_address).await?;
        let info = tokio::time::timeout(ENGINE_TIMEOUT, client.info(pb::EngineInfoRequest {}))
            .await
            .context("engine info timed out")
            .and_then(|answer| answer.context("engine info"));
        let info = match info {
            Ok(info) => info.into_inner(),
            Err(e) => {
                // A new connection next pass (the engine may have restarted).
                self.forget_engine_client(&engine_address);
                engine.status.state = EngineState::Error;
                engine.status.message = format!("{e:#}");
                return Err(e);
            }
        };
        if info.state == "faulted" && (settings.auto_salvage || requested) {
            tracing::warn!(engine = %engine.name, "every replica failed; salvaging");
            match tokio::time::timeout(ENGINE_TIMEOUT, client.salvage(pb::SalvageRequest {})).await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(engine = %engine.name, error = %e, "salvage"),
                Err(_) => tracing::warn!(engine = %engine.name, "salvage timed out"),
            }
        }
        engine.status.state = EngineState::Running;
        engine.status.health = info.state;
        engine.status.replicas =
            info.replicas
                .iter()
                .map(|replica| {
                    let mode = match replica.mode() {
                        pb::ReplicaMode::Rw => "RW",
                        pb::ReplicaMode::Wo => "WO",
                        pb::ReplicaMode::Err | pb::ReplicaMode::Unspecified => "ERR",
                    };
                    let status = EngineReplicaStatus {
                        mode: mode.to_string(),
                        rebuild: replica.rebuild.as_ref().map(|p| {
                            format!("{} {}/{} bytes", p.phase, p.done_bytes, p.total_bytes)
                        }),
                        error: replica.error.clone(),
                        data_path: replica.data_path.clone(),
                    };
                    (replica.address.clone(), status)
                })
                .collect();
        Ok(())
    }

    /// The engine's reconciler, second half: replicas to serve with that are not in it
    /// (or failed in it) are added and rebuilt; replicas in it that are in neither of
    /// its spec's lists are removed. One add per replica at a time.
    pub(super) async fn reconcile_engine_members(&self, engine: &Engine) {
        if engine.status.state != EngineState::Running {
            return;
        }
        let Some(engine_address) = engine.status.address.clone() else {
            return;
        };
        for (address, status) in &engine.status.replicas {
            let member =
                engine.spec.replicas.contains(address) || engine.spec.failed.contains(address);
            if member || self.is_adding(address) {
                continue;
            }
            let removed = match self.engine_client(&engine_address).await {
                Ok(mut client) => client
                    .remove_replica(pb::RemoveReplicaRequest {
                        address: address.clone(),
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.message())),
                Err(e) => Err(e),
            };
            match removed {
                Ok(_) => {
                    tracing::info!(engine = %engine.name, replica = %address, mode = %status.mode, "replica removed from the engine");
                }
                Err(e) => {
                    tracing::warn!(engine = %engine.name, replica = %address, error = %format!("{e:#}"), "removing a replica from the engine");
                }
            }
        }
        // One rebuild at a time, as the engine allows: a second add meanwhile would be
        // refused, and the replica marked failed for it.
        let rebuilding = engine.status.replicas.values().any(|s| s.mode == "WO")
            || engine.spec.replicas.iter().any(|a| self.is_adding(a));
        if rebuilding {
            return;
        }
        let missing = engine.spec.replicas.iter().find(|address| {
            engine
                .status
                .replicas
                .get(*address)
                .is_none_or(|s| s.mode == "ERR")
        });
        if let Some(address) = missing {
            self.add_to_engine(&engine.spec.volume, &engine_address, address);
        }
    }

    /// The replicas' side of what their engine reports: modes, rebuild progress, and
    /// failures (the engine failed it, or adding it failed).
    pub(super) fn observe_replicas_in_engine(
        &self,
        engine: &Engine,
        replicas: &mut [Replica],
    ) -> anyhow::Result<()> {
        let running = engine.status.state == EngineState::Running;
        for replica in replicas.iter_mut() {
            let address = self.replica_address(replica)?;
            if !running {
                if engine.spec.node.is_none() {
                    replica.status.mode = None;
                    replica.status.rebuild = None;
                    replica.status.data_path = None;
                }
                continue;
            }
            let in_engine = engine.status.replicas.get(&address);
            let mode = in_engine.map(|s| s.mode.as_str());
            replica.status.mode = mode.map(str::to_string);
            replica.status.rebuild = in_engine.and_then(|s| s.rebuild.clone());
            replica.status.data_path = in_engine
                .map(|s| s.data_path.clone())
                .filter(|path| !path.is_empty());
            if !replica.spec.desire_running {
                continue;
            }
            let adding = self.is_adding(&address);
            match replica.status.state {
                ReplicaState::Running if mode == Some("ERR") && !adding => {
                    let reason = in_engine.map(|s| s.error.as_str()).unwrap_or_default();
                    mark_failed(replica, &format!("the engine failed it: {reason}"));
                }
                ReplicaState::Running if mode.is_none() && !adding => {
                    replica.status.state = ReplicaState::Rebuilding;
                }
                ReplicaState::Rebuilding => {
                    if let Some(error) = self.take_add_failure(&address) {
                        mark_failed(replica, &format!("rebuild failed: {error}"));
                    } else if mode == Some("RW") && !adding {
                        replica.status.state = ReplicaState::Running;
                        replica.status.message.clear();
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub(super) fn take_add_failure(&self, address: &str) -> Option<String> {
        self.add_failures.lock().ok()?.remove(address)
    }

    /// A client of the engine at `address`: one connection kept per engine, not a new
    /// one every pass.
    pub(super) async fn engine_client(
        &self,
        address: &str,
    ) -> anyhow::Result<EngineControlClient<Channel>> {
        let cached = self
            .engine_clients
            .lock()
            .ok()
            .and_then(|c| c.get(address).cloned());
        if let Some(client) = cached {
            return Ok(client);
        }
        let client = connect_engine(address).await?;
        if let Ok(mut clients) = self.engine_clients.lock() {
            clients.insert(address.to_string(), client.clone());
        }
        Ok(client)
    }

    pub(super) fn forget_engine_client(&self, address: &str) {
        if let Ok(mut clients) = self.engine_clients.lock() {
            clients.remove(address);
        }
    }

    pub(super) fn is_adding(&self, address: &str) -> bool {
        self.adding
            .lock()
            .map(|a| a.contains(address))
            .unwrap_or(false)
    }

    /// Has the engine add (and rebuild) a replica, in the background.
    pub(super) fn add_to_engine(&self, volume: &str, engine: &str, address: &str) {
        {
            let Ok(mut adding) = self.adding.lock() else {
                return;
            };
            if !adding.insert(address.to_string()) {
                return;
            }
        }
        let (volume, engine, address) =
            (volume.to_string(), engine.to_string(), address.to_string());
        let adding = self.adding.clone();
        let failures = self.add_failures.clone();
        tokio::spawn(async move {
            tracing::info!(%volume, replica = %address, "adding the replica to the engine (rebuild)");
            let result = async {
                let mut client = connect_engine(&engine).await?;
                client
                    .add_replica(pb::AddReplicaRequest {
                        address: address.clone(),
                        bandwidth: 0,
                    })
                    .await
                    .context("replica add")
            }
            .await;
            match result {
                Ok(done) => {
                    let done = done.into_inner();
                    tracing::info!(%volume, replica = %address, copied = done.copied_bytes, seconds = done.seconds, "replica rebuilt");
                }
                Err(e) => {
                    tracing::warn!(%volume, replica = %address, error = %format!("{e:#}"), "replica add");
                    if let Ok(mut failures) = failures.lock() {
                        failures.insert(address.clone(), format!("{e:#}"));
                    }
                }
            }
            if let Ok(mut adding) = adding.lock() {
                adding.remove(&address);
            }
        });
    }
}
