//! Where the control plane keeps its objects: one trait, an embedded backend (redb, a
//! single file under the data directory; the default, zero setup).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use redb::{Database, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Kinds of objects, each its own key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// [`crate::model::Volume`].
    Volume,
    /// [`crate::model::Replica`].
    Replica,
    /// [`crate::model::Engine`].
    Engine,
    /// [`crate::model::Node`].
    Node,
    /// [`crate::model::Settings`] (one object, named `cluster`).
    Settings,
    /// [`crate::model::RecurringJob`].
    RecurringJob,
    /// [`crate::model::BackupTarget`].
    BackupTarget,
    /// [`crate::model::Backup`].
    Backup,
    /// [`crate::model::Event`].
    Event,
    /// [`crate::model::TargetCredentials`], by backup target name: secrets, so not in
    /// [`Kind::ALL`] (what a watch may ask for).
    TargetCredentials,
}

impl Kind {
    /// Every kind, in the order a watch sends them when it starts.
    pub const ALL: [Kind; 9] = [
        Kind::Settings,
        Kind::Node,
        Kind::Volume,
        Kind::Replica,
        Kind::Engine,
        Kind::RecurringJob,
        Kind::BackupTarget,
        Kind::Backup,
        Kind::Event,
    ];

    /// The kind's name in the API's watch stream: its key prefix without the slash.
    pub fn name(self) -> &'static str {
        self.prefix().trim_end_matches('/')
    }

    /// The kind named `name` (see [`Kind::name`]).
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The kind and object name of a store key (`volume/v1`); `None` for keys that are
    /// not objects (claims, the leader key).
    pub fn split_key(key: &str) -> Option<(Kind, &str)> {
        Kind::ALL
            .into_iter()
            .find_map(|kind| key.strip_prefix(kind.prefix()).map(|name| (kind, name)))
    }

    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Kind::Volume => "volume/",
            Kind::Replica => "replica/",
            Kind::Engine => "engine/",
            Kind::Node => "node/",
            Kind::Settings => "settings/",
            Kind::RecurringJob => "job/",
            Kind::BackupTarget => "backup-target/",
            Kind::Backup => "backup/",
            Kind::Event => "event/",
            Kind::TargetCredentials => "target-credentials/",
        }
    }
}

/// One change of one object, as a watch of the store reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The object's kind.
    pub kind: Kind,
    /// The object's name.
    pub name: String,
    /// Its document after the change; `None`: it was deleted.
    pub value: Option<Vec<u8>>,
}

/// How many changes a watcher may fall behind before it is told it lagged (and must
/// start again from a full list).
const CHANGE_BACKLOG: usize = 4096;

/// Where a store publishes its changes: every watcher gets each one.
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    sender: tokio::sync::broadcast::Sender<Arc<Change>>,
}

impl Default for ChangeFeed {
    fn default() -> ChangeFeed {
        ChangeFeed {
            sender: tokio::sync::broadcast::channel(CHANGE_BACKLOG).0,
        }
    }
}

impl ChangeFeed {
    /// Publishes a change (nobody watching is fine).
    pub fn publish(&self, kind: Kind, name: &str, value: Option<&[u8]>) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        let change = Change {
            kind,
            name: name.to_string(),
            value: value.map(<[u8]>::to_vec),
        };
        let _ = self.sender.send(Arc::new(change));
    }

    /// A watcher of the changes from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Change>> {
        self.sender.subscribe()
    }
}

/// What [`StateStore::update_raw`] does to a document: its new bytes, or `None` to leave
/// it as it is.
pub type RawChange<'a> = dyn FnMut(&[u8]) -> anyhow::Result<Option<Vec<u8>>> + 'a;

/// Objects by kind and name, as JSON documents.
pub trait StateStore: Send + Sync + 'static {
    /// The document `name` of `kind`, if it exists.
    fn get_raw(&self, kind: Kind, name: &str) -> anyhow::Result<Option<Vec<u8>>>;
    /// Creates or replaces a document.
    fn put_raw(&self, kind: Kind, name: &str, value: &[u8]) -> anyhow::Result<()>;
    /// Creates or replaces several documents of `kind` at once: a reader sees all of
    /// them written or none (a pass's replicas, so no one sees half a hand-over).
    fn put_all_raw(&self, kind: Kind, documents: &[(&str, Vec<u8>)]) -> anyhow::Result<()>;
    /// Removes a document (no error if it is missing).
    fn delete(&self, kind: Kind, name: &str) -> anyhow::Result<()>;
    /// Every document of `kind`, by name.
    fn list_raw(&self, kind: Kind) -> anyhow::Result<Vec<(String, Vec<u8>)>>;

    /// Replaces document `name` with what `change` makes of it, atomically: a write by
    /// anyone else between the read and the write makes it read and change again. So a
    /// status written by a reconciler and a spec written by the API never undo each
    /// other. `change` returns `None` to leave the document as it is. Returns whether
    /// the document exists.
    fn update_raw(
        &self,
        kind: Kind,
        name: &str,
        change: &mut RawChange<'_>,
    ) -> anyhow::Result<bool>;

    /// Every change of an object from now on, whoever made it (this manager or, with a
    /// shared store, another): what the API's watch stream sends.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Change>>;

    /// Fires when another manager may have changed something (a watch), so reconcilers
    /// run at once instead of at their next tick. `None`: this manager is alone.
    fn changes(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }

    /// Whether this manager reconciles `volume`: takes it if no live manager does. One
    /// manager alone always does.
    fn claim(&self, volume: &str) -> anyhow::Result<bool> {
        let _ = volume;
        Ok(true)
    }

    /// Whether this manager is the leader, which runs cluster-wide work (backup target
    /// sync, backup deletion): takes the role if no live manager holds it. One manager
    /// alone always is.
    fn is_leader(&self) -> anyhow::Result<bool> {
        Ok(true)
    }

    /// The leader's node when managers share the store (`None`: none right now, until
    /// a manager takes the role). A manager alone leads itself: `None` too.
    fn leader(&self) -> anyhow::Result<Option<String>> {
        Ok(None)
    }

    /// What the store is: `embedded` or `etcd`.
    fn kind(&self) -> &'static str {
        "embedded"
    }
}

/// Typed access on any [`StateStore`].
pub trait StateStoreExt: StateStore {
    /// The object `name` of `kind`, if it exists.
    fn get<T: DeserializeOwned>(&self, kind: Kind, name: &str) -> anyhow::Result<Option<T>> {
        self.get_raw(kind, name)?
            .map(|raw| {
                serde_json::from_slice(&raw)
                    .with_context(|| format!("state: {}{name} is corrupt", kind.prefix()))
            })
            .transpose()
    }

    /// Stores an object.
    fn put<T: Serialize>(&self, kind: Kind, name: &str, value: &T) -> anyhow::Result<()> {
        let raw = serde_json::to_vec(value).context("encoding an object")?;
        self.put_raw(kind, name, &raw)
    }

    /// Stores several objects of `kind` in one write (see [`StateStore::put_all_raw`]).
    fn put_all<T: Serialize>(&self, kind: Kind, objects: &[(&str, &T)]) -> anyhow::Result<()> {
        let documents = objects
            .iter()
            .map(|(name, value)| {
                Ok((
                    *name,
                    serde_json::to_vec(value).context("encoding an object")?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.put_all_raw(kind, &documents)
    }

    /// Changes the stored object `name` with `change` (atomically, see
    /// [`StateStore::update_raw`]); `change` may run more than once. Returns the object
    /// as stored, or `None` if there is none.
    fn update<T: Serialize + DeserializeOwned + PartialEq>(
        &self,
        kind: Kind,
        name: &str,
        mut change: impl FnMut(&mut T) -> anyhow::Result<()>,
    ) -> anyhow::Result<Option<T>> {
        let mut result = None;
        let exists = self.update_raw(kind, name, &mut |raw| {
            let before: T = serde_json::from_slice(raw)
                .with_context(|| format!("state: {}{name} is corrupt", kind.prefix()))?;
            let mut after: T = serde_json::from_slice(raw)
                .with_context(|| format!("state: {}{name} is corrupt", kind.prefix()))?;
            change(&mut after)?;
            let write = if after == before {
                None
            } else {
                Some(serde_json::to_vec(&after).context("encoding an object")?)
            };
            result = Some(after);
            Ok(write)
        })?;
        Ok(if exists { result } else { None })
    }

    /// Every object of `kind`.
    fn list<T: DeserializeOwned>(&self, kind: Kind) -> anyhow::Result<Vec<T>> {
        self.list_raw(kind)?
            .into_iter()
            .map(|(name, raw)| {
                serde_json::from_slice(&raw)
                    .with_context(|| format!("state: {}{name} is corrupt", kind.prefix()))
            })
            .collect()
    }
}

impl<S: StateStore + ?Sized> StateStoreExt for S {}

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");

/// The embedded store: a redb database file.
pub struct EmbeddedStore {
    db: Database,
    feed: ChangeFeed,
}

impl EmbeddedStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<EmbeddedStore> {
        let db = Database::create(path)
            .with_context(|| format!("opening the state database {}", path.display()))?;
        let txn = db.begin_write().context("state database")?;
        txn.open_table(OBJECTS).context("state database")?;
        txn.commit().context("state database")?;
        Ok(EmbeddedStore {
            db,
            feed: ChangeFeed::default(),
        })
    }
}

impl StateStore for EmbeddedStore {
    fn get_raw(&self, kind: Kind, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let key = format!("{}{name}", kind.prefix());
        let txn = self.db.begin_read().context("state read")?;
        let table = txn.open_table(OBJECTS).context("state read")?;
        Ok(table
            .get(key.as_str())
            .context("state read")?
            .map(|v| v.value().to_vec()))
    }

    fn put_raw(&self, kind: Kind, name: &str, value: &[u8]) -> anyhow::Result<()> {
        let key = format!("{}{name}", kind.prefix());
        let txn = self.db.begin_write().context("state write")?;
        {
            let mut table = txn.open_table(OBJECTS).context("state write")?;
            table.insert(key.as_str(), value).context("state write")?;
        }
        txn.commit().context("state commit")?;
        self.feed.publish(kind, name, Some(value));
        Ok(())
    }

    fn put_all_raw(&self, kind: Kind, documents: &[(&str, Vec<u8>)]) -> anyhow::Result<()> {
        let txn = self.db.begin_write().context("state write")?;
        {
            let mut table = txn.open_table(OBJECTS).context("state write")?;
            for (name, value) in documents {
                let key = format!("{}{name}", kind.prefix());
                table
                    .insert(key.as_str(), value.as_slice())
                    .context("state write")?;
            }
        }
        txn.commit().context("state commit")?;
        for (name, value) in documents {
            self.feed.publish(kind, name, Some(value));
        }
        Ok(())
    }

    fn delete(&self, kind: Kind, name: &str) -> anyhow::Result<()> {
        let key = format!("{}{name}", kind.prefix());
        let txn = self.db.begin_write().context("state write")?;
        {
            let mut table = txn.open_table(OBJECTS).context("state write")?;
            let removed = table.remove(key.as_str()).context("state write")?.is_some();
            if !removed {
                return Ok(());
            }
        }
        txn.commit().context("state commit")?;
        self.feed.publish(kind, name, None);
        Ok(())
    }

    fn update_raw(
        &self,
        kind: Kind,
        name: &str,
        change: &mut RawChange<'_>,
    ) -> anyhow::Result<bool> {
        let key = format!("{}{name}", kind.prefix());
        // One write transaction: redb lets one writer in at a time.
        let txn = self.db.begin_write().context("state write")?;
        let written;
        {
            let mut table = txn.open_table(OBJECTS).context("state write")?;
            let current = table
                .get(key.as_str())
                .context("state read")?
                .map(|v| v.value().to_vec());
            let Some(current) = current else {
                return Ok(false);
            };
            written = change(&current)?;
            if let Some(new) = &written {
                table
                    .insert(key.as_str(), new.as_slice())
                    .context("state write")?;
            }
        }
        txn.commit().context("state commit")?;
        if let Some(new) = written {
            self.feed.publish(kind, name, Some(&new));
        }
        Ok(true)
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Change>> {
        self.feed.subscribe()
    }

    fn list_raw(&self, kind: Kind) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let prefix = kind.prefix();
        let txn = self.db.begin_read().context("state read")?;
        let table = txn.open_table(OBJECTS).context("state read")?;
        let mut out = Vec::new();
        for entry in table.range(prefix..).context("state read")? {
            let (key, value) = entry.context("state read")?;
            let Some(name) = key.value().strip_prefix(prefix) else {
                break;
            };
            out.push((name.to_string(), value.value().to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_survive_a_reopen_and_kinds_do_not_mix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = EmbeddedStore::open(&path).unwrap();
            store.put(Kind::Volume, "a", &1u32).unwrap();
            store.put(Kind::Volume, "b", &2u32).unwrap();
            store.put(Kind::Replica, "a", &3u32).unwrap();
            store.delete(Kind::Volume, "missing").unwrap();
        }
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(store.list::<u32>(Kind::Volume).unwrap(), vec![1, 2]);
        assert_eq!(store.get::<u32>(Kind::Replica, "a").unwrap(), Some(3));
        store.delete(Kind::Volume, "a").unwrap();
        assert_eq!(store.get::<u32>(Kind::Volume, "a").unwrap(), None);
        assert_eq!(store.list::<u32>(Kind::Node).unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn update_changes_what_is_stored_and_only_that() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("state.redb")).unwrap();
        store.put(Kind::Volume, "a", &vec![1u32, 2]).unwrap();
        let updated = store
            .update::<Vec<u32>>(Kind::Volume, "a", |v| {
                v.push(3);
                Ok(())
            })
            .unwrap();
        assert_eq!(updated, Some(vec![1, 2, 3]));
        assert_eq!(
            store.get::<Vec<u32>>(Kind::Volume, "a").unwrap(),
            Some(vec![1, 2, 3])
        );
        let missing = store
            .update::<Vec<u32>>(Kind::Volume, "b", |_| Ok(()))
            .unwrap();
        assert_eq!(missing, None);
        assert_eq!(store.get::<Vec<u32>>(Kind::Volume, "b").unwrap(), None);
        let failed = store.update::<Vec<u32>>(Kind::Volume, "a", |_| anyhow::bail!("no"));
        assert!(failed.is_err());
        assert_eq!(
            store.get::<Vec<u32>>(Kind::Volume, "a").unwrap(),
            Some(vec![1, 2, 3])
        );
    }

    #[test]
    fn a_watcher_sees_each_write_once_and_no_write_that_changed_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("state.redb")).unwrap();
        let mut watcher = store.subscribe();
        store.put(Kind::Volume, "a", &1u32).unwrap();
        store.update::<u32>(Kind::Volume, "a", |_| Ok(())).unwrap();
        store
            .update::<u32>(Kind::Volume, "a", |v| {
                *v = 2;
                Ok(())
            })
            .unwrap();
        store.delete(Kind::Volume, "missing").unwrap();
        store.delete(Kind::Volume, "a").unwrap();
        let mut seen = Vec::new();
        while let Ok(change) = watcher.try_recv() {
            seen.push((change.kind, change.name.clone(), change.value.clone()));
        }
        assert_eq!(
            seen,
            vec![
                (Kind::Volume, "a".to_string(), Some(b"1".to_vec())),
                (Kind::Volume, "a".to_string(), Some(b"2".to_vec())),
                (Kind::Volume, "a".to_string(), None),
            ]
        );
    }

    #[test]
    fn put_all_stores_every_object_in_one_write_and_tells_watchers_of_each() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("state.redb")).unwrap();
        store.put(Kind::Replica, "a", &1u32).unwrap();
        let mut watcher = store.subscribe();
        store
            .put_all(Kind::Replica, &[("a", &2u32), ("b", &3u32)])
            .unwrap();
        assert_eq!(store.list::<u32>(Kind::Replica).unwrap(), vec![2, 3]);
        let mut seen = Vec::new();
        while let Ok(change) = watcher.try_recv() {
            seen.push((change.name.clone(), change.value.clone()));
        }
        assert_eq!(
            seen,
            vec![
                ("a".to_string(), Some(b"2".to_vec())),
                ("b".to_string(), Some(b"3".to_vec())),
            ]
        );
    }

    #[test]
    fn keys_split_into_kind_and_name() {
        assert_eq!(Kind::split_key("volume/v1"), Some((Kind::Volume, "v1")));
        assert_eq!(
            Kind::split_key("backup-target/t/x"),
            Some((Kind::BackupTarget, "t/x"))
        );
        assert_eq!(Kind::split_key("owner/v1"), None);
        for kind in Kind::ALL {
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
        }
    }
}
