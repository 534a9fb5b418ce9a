//! The etcd backend: several managers share one cluster state. Each manager holds a
//! lease (kept alive while it runs); a volume is reconciled by the manager whose lease
//! owns the volume's `owner/` key, so when a manager dies its lease expires, its keys
//! vanish and another manager takes its volumes over within the lease's time-to-live.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::state::{Change, ChangeFeed, Kind, RawChange, StateStore};

/// How long a manager waits for etcd at start.
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);
/// Every key lives under this prefix.
const PREFIX: &str = "/shorthorn/";
/// Tries of a read-modify-write before giving up (each lost to another writer).
const UPDATE_ATTEMPTS: usize = 20;
/// Held (lease-bound) by the leader: the one manager that runs cluster-wide work.
const LEADER_KEY: &str = "leader";

/// State in etcd, plus this manager's lease.
pub struct EtcdStore {
    client: Client,
    /// Notified on every change under [`PREFIX`] (an etcd watch).
    changes: Arc<Notify>,
    /// The same watch, object by object.
    feed: ChangeFeed,
    runtime: Handle,
    lease: i64,
    node: String,
}

impl EtcdStore {
    /// Connects to `endpoints` as node `node` and takes a lease of `ttl` that a
    /// background task keeps alive.
    /// etcd that is not up yet (nodes and etcd starting together) is retried for
    /// [`CONNECT_PATIENCE`].
    pub async fn connect(
        endpoints: &[String],
        node: &str,
        ttl: Duration,
    ) -> anyhow::Result<EtcdStore> {
        let ttl_seconds = i64::try_from(ttl.as_secs().max(2)).context("lease TTL")?;
        let started = std::time::Instant::now();
        let (mut client, lease) = loop {
            let attempt = async {
                let mut client = Client::connect(endpoints, None)
                    .await
                    .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))?;
                let lease = client
                    .lease_grant(ttl_seconds, None)
                    .await
                    .context("etcd: granting this manager's lease")?
                    .id();
                anyhow::Ok((client, lease))
            };
            match attempt.await {
                Ok(connected) => break connected,
                Err(e) if started.elapsed() < CONNECT_PATIENCE => {
                    tracing::warn!(error = %format!("{e:#}"), "etcd not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let (mut keeper, mut responses) = client
            .lease_keep_alive(lease)
            .await
            .context("etcd: keeping the lease alive")?;
        let period = ttl / 3;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                if let Err(e) = keeper.keep_alive().await {
                    tracing::warn!(error = %e, "etcd lease keep-alive");
                    continue;
                }
                match responses.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        tracing::error!("etcd lease keep-alive stream ended");
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "etcd lease keep-alive"),
                }
            }
        });
        let changes = Arc::new(Notify::new());
        let feed = ChangeFeed::default();
        let mut watcher = client.clone();
        let notify = changes.clone();
        let publisher = feed.clone();
        tokio::spawn(async move {
            loop {
                let stream = watcher
                    .watch(PREFIX, Some(WatchOptions::new().with_prefix()))
                    .await;
                let mut stream = match stream {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "etcd watch; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                while let Ok(Some(response)) = stream.message().await {
                    for event in response.events() {
                        publish(&publisher, event);
                    }
                    notify.notify_one();
                }
                tracing::warn!("etcd watch ended; watching again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(EtcdStore {
            client,
            changes,
            feed,
            runtime: Handle::current(),
            lease,
            node: node.to_string(),
        })
    }

    /// Stores `value` at `key` unless the key exists; returns the value stored there.
    pub async fn put_if_absent(&self, key: &str, value: &str) -> anyhow::Result<String> {
        let key = format!("{PREFIX}{key}");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), value, None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let response = self.client.clone().txn(txn).await.context("etcd txn")?;
        if response.succeeded() {
            return Ok(value.to_string());
        }
        existing_value(response.op_responses())
    }

    /// Blocks on `future` from synchronous code running on the runtime's worker threads
    /// (the [`StateStore`] trait is synchronous, like the embedded store under it).
    fn block<T>(&self, future: impl Future<Output = T>) -> T {
        tokio::task::block_in_place(|| self.runtime.block_on(future))
    }
}

fn existing_value(responses: Vec<TxnOpResponse>) -> anyhow::Result<String> {
    for response in responses {
        if let TxnOpResponse::Get(get) = response
            && let Some(kv) = get.kvs().first()
        {
            return Ok(kv.value_str().context("etcd value")?.to_string());
        }
    }
    anyhow::bail!("etcd: the key vanished during the transaction")
}

/// Passes one etcd watch event on to the store's watchers, if it is about an object.
fn publish(feed: &ChangeFeed, event: &etcd_client::Event) {
    let Some(kv) = event.kv() else {
        return;
    };
    let Some((kind, name)) = kv
        .key_str()
        .ok()
        .and_then(|key| key.strip_prefix(PREFIX))
        .and_then(Kind::split_key)
    else {
        return;
    };
    match event.event_type() {
        EventType::Put => feed.publish(kind, name, Some(kv.value())),
        EventType::Delete => feed.publish(kind, name, None),
    }
}

fn key(kind: Kind, name: &str) -> String {
    format!("{PREFIX}{}{name}", kind.prefix())
}

impl StateStore for EtcdStore {
    fn get_raw(&self, kind: Kind, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let mut client = self.client.clone();
        let response = self
            .block(client.get(key(kind, name), None))
            .context("etcd get")?;
        Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
    }

    fn put_raw(&self, kind: Kind, name: &str, value: &[u8]) -> anyhow::Result<()> {
        let mut client = self.client.clone();
        self.block(client.put(key(kind, name), value, None))
            .context("etcd put")?;
        Ok(())
    }

    fn put_all_raw(&self, kind: Kind, documents: &[(&str, Vec<u8>)]) -> anyhow::Result<()> {
        // etcd takes at most 128 operations in a transaction by default; a volume has a
        // handful of replicas.
        let puts: Vec<TxnOp> = documents
            .iter()
            .map(|(name, value)| TxnOp::put(key(kind, name), value.clone(), None))
            .collect();
        let mut client = self.client.clone();
        self.block(client.txn(Txn::new().and_then(puts)))
            .context("etcd txn")?;
        Ok(())
    }

    fn delete(&self, kind: Kind, name: &str) -> anyhow::Result<()> {
        let mut client = self.client.clone();
        self.block(client.delete(key(kind, name), None))
            .context("etcd delete")?;
        if kind == Kind::Volume {
            self.block(client.delete(format!("{PREFIX}owner/{name}"), None))
                .context("etcd delete")?;
        }
        Ok(())
    }

    fn list_raw(&self, kind: Kind) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let mut client = self.client.clone();
        let prefix = format!("{PREFIX}{}", kind.prefix());
        let response = self
            .block(client.get(prefix.clone(), Some(GetOptions::new().with_prefix())))
            .context("etcd list")?;
        let mut out = Vec::new();
        for kv in response.kvs() {
            let name = kv
                .key_str()
                .context("etcd key")?
                .strip_prefix(&prefix)
                .unwrap_or_default()
                .to_string();
            out.push((name, kv.value().to_vec()));
        }
        Ok(out)
    }

    fn update_raw(
        &self,
        kind: Kind,
        name: &str,
        change: &mut RawChange<'_>,
    ) -> anyhow::Result<bool> {
        let key = key(kind, name);
        let mut client = self.client.clone();
        for _ in 0..UPDATE_ATTEMPTS {
            let response = self
                .block(client.get(key.clone(), None))
                .context("etcd get")?;
            let Some(kv) = response.kvs().first() else {
                return Ok(false);
            };
            let Some(new) = change(kv.value())? else {
                return Ok(true);
            };
            // Written only if nobody wrote it since it was read.
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([TxnOp::put(key.clone(), new, None)]);
            if self.block(client.txn(txn)).context("etcd txn")?.succeeded() {
                return Ok(true);
            }
        }
        anyhow::bail!("etcd: {key} kept changing under {UPDATE_ATTEMPTS} attempts to update it")
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Change>> {
        self.feed.subscribe()
    }

    fn changes(&self) -> Option<Arc<Notify>> {
        Some(self.changes.clone())
    }

    fn claim(&self, volume: &str) -> anyhow::Result<bool> {
        let holder = self.hold(&format!("owner/{volume}"))?;
        if holder.taken {
            tracing::info!(volume, node = %self.node, "took ownership of the volume");
        }
        Ok(holder.node == self.node)
    }

    fn is_leader(&self) -> anyhow::Result<bool> {
        let holder = self.hold(LEADER_KEY)?;
        if holder.taken {
            tracing::info!(node = %self.node, "this manager is the leader");
        }
        Ok(holder.node == self.node)
    }

    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn leader(&self) -> anyhow::Result<Option<String>> {
        let mut client = self.client.clone();
        let response = self
            .block(client.get(format!("{PREFIX}{LEADER_KEY}"), None))
            .context("etcd get")?;
        response
            .kvs()
            .first()
            .map(|kv| Ok(kv.value_str().context("etcd value")?.to_string()))
            .transpose()
    }
}

/// Who holds a lease-bound key.
struct Holder {
    /// The holding manager's node.
    node: String,
    /// Whether this call took it.
    taken: bool,
}

impl EtcdStore {
    /// Takes `key` (under [`PREFIX`]) for this manager, bound to its lease, unless a
    /// live manager holds it; returns the holder. The key vanishes with its holder's
    /// lease, so a dead manager's roles pass on within the lease's time-to-live.
    fn hold(&self, key: &str) -> anyhow::Result<Holder> {
        let key = format!("{PREFIX}{key}");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                self.node.as_str(),
                Some(PutOptions::new().with_lease(self.lease)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let mut client = self.client.clone();
        let response = self
            .block(client.txn(txn))
            .with_context(|| format!("etcd: taking {key}"))?;
        if response.succeeded() {
            return Ok(Holder {
                node: self.node.clone(),
                taken: true,
            });
        }
        Ok(Holder {
            node: existing_value(response.op_responses())?,
            taken: false,
        })
    }
}
