//! `shorthorn store snapshot …`: create, list, remove, revert to and purge snapshots.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use shorthorn_store::{LayerInfo, SnapshotKind};

use super::open;
use crate::output::outln;
use shorthorn_block::size::{format_size, format_size_exact};

/// The snapshot commands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    Create(CreateArgs),
    Ls(LsArgs),
    Rm(RmArgs),
    Revert(RevertArgs),
    Purge(PurgeArgs),
}

/// Runs a `store snapshot` command.
pub fn run(command: SnapshotCommand) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Create(args) => create(args),
        SnapshotCommand::Ls(args) => ls(&args),
        SnapshotCommand::Rm(args) => rm(&args),
        SnapshotCommand::Revert(args) => revert(&args),
        SnapshotCommand::Purge(args) => purge(&args),
    }
}

/// Take snapshot NAME of the volume.
///
/// The volume's current content is frozen under NAME and the volume goes on in a new,
/// empty writable head. Instant: the cost does not depend on the volume's size or
/// data. NAME must be new (1-63 ASCII letters, digits, '-', '_', '.').
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The replica directory.
    dir: PathBuf,
    /// The snapshot's name.
    name: String,
    /// A label to attach, as KEY=VALUE; repeat for several. Keys follow the name rules;
    /// values are at most 256 bytes.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Mark the snapshot as taken by the system (for rebuilds or backups) rather than
    /// by a user.
    #[arg(long)]
    system: bool,
}

/// Splits `KEY=VALUE`.
pub(crate) fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not a label; write KEY=VALUE")),
    }
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    let mut labels = BTreeMap::new();
    for (key, value) in args.labels {
        if labels.contains_key(&key) {
            bail!("label {key:?} is given twice");
        }
        labels.insert(key, value);
    }
    let kind = if args.system {
        SnapshotKind::System
    } else {
        SnapshotKind::User
    };
    let store = open(&args.dir)?;
    store
        .snapshot(&args.name, kind, labels)
        .with_context(|| format!("taking snapshot {:?} in {}", args.name, args.dir.display()))?;
    outln!(
        "created snapshot {:?} of volume {:?}",
        args.name,
        store.name()
    )?;
    Ok(())
}

/// List the volume's snapshots as a tree.
///
/// Each line shows a layer under the one it sits on: its name (the writable head shows
/// as "(head)", snapshots marked removed carry "[removed]"), its parent, when it was
/// taken, whether a user or the system took it, the disk space its file occupies, and
/// its labels. Branches appear after reverts: the head then sits on an older snapshot
/// while newer ones stay in the tree.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// The replica directory.
    dir: PathBuf,
    /// Print a JSON array (one object per layer, oldest first, the head last) instead
    /// of the tree.
    #[arg(long)]
    json: bool,
}

/// One layer in `snapshot ls --json`.
#[derive(Debug, Serialize)]
struct LayerJson<'a> {
    /// Snapshot name; null for the head.
    name: Option<&'a str>,
    /// True for the writable head.
    head: bool,
    parent: Option<&'a str>,
    children: &'a [String],
    created: &'a str,
    /// "user", "system", or "head".
    kind: &'static str,
    removed: bool,
    in_chain: bool,
    size: u64,
    allocated_bytes: u64,
    labels: &'a BTreeMap<String, String>,
}

fn ls(args: &LsArgs) -> anyhow::Result<()> {
    let store = open(&args.dir)?;
    let layers = store
        .layers()
        .with_context(|| format!("listing the snapshots in {}", args.dir.display()))?;
    print_layers(&layers, args.json)
}

/// Prints a snapshot tree (oldest first, the head last) as a table, or as JSON.
pub(crate) fn print_layers(layers: &[LayerInfo], json: bool) -> anyhow::Result<()> {
    if json {
        let json: Vec<LayerJson<'_>> = layers
            .iter()
            .map(|l| LayerJson {
                name: l.name.as_deref(),
                head: l.is_head,
                parent: l.parent.as_deref(),
                children: &l.children,
                created: &l.created,
                kind: kind_of(l),
                removed: l.removed,
                in_chain: l.in_chain,
                size: l.size,
                allocated_bytes: l.allocated_bytes,
                labels: &l.labels,
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(());
    }
    outln!("{}", render_tree(layers).trim_end())?;
    Ok(())
}

fn kind_of(layer: &LayerInfo) -> &'static str {
    if layer.is_head {
        "head"
    } else if layer.user_created {
        "user"
    } else {
        "system"
    }
}

/// Renders the layers as a tree with aligned columns. A chain of layers each sitting on
/// the one above is drawn in one column, so long chains stay flat; other children (the
/// branches reverts leave) hang indented under their parent, before the child that
/// continues the chain (the one in the active chain, else the newest).
fn render_tree(layers: &[LayerInfo]) -> String {
    let header = ["NAME", "PARENT", "CREATED", "KIND", "ON DISK", "LABELS"].map(String::from);
    let mut rows = vec![header];
    let mut seen = vec![false; layers.len()];
    // (layer, prefix of its own line, prefix of the lines below it), next to draw last.
    let mut stack: Vec<(usize, String, String)> = (0..layers.len())
        .rev()
        .filter(|&i| layers[i].parent.is_none())
        .map(|i| (i, String::new(), String::new()))
        .collect();
    while let Some((index, first, rest)) = stack.pop() {
        if std::mem::replace(&mut seen[index], true) {
            continue;
        }
        rows.push(row(&layers[index], &first));
        let mut children = children_of(layers, index);
        let continuation = children
            .iter()
            .position(|&c| layers[c].in_chain)
            .or(children.len().checked_sub(1))
            .map(|n| children.remove(n));
        if let Some(child) = continuation {
            stack.push((child, rest.clone(), rest.clone()));
        }
        for (n, &child) in children.iter().enumerate().rev() {
            let last = n + 1 == children.len();
            let (branch, below) = if last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            stack.push((child, format!("{rest}{branch}"), format!("{rest}{below}")));
        }
    }
    // Layers whose parent is unknown (never written by the store) still get listed.
    for (index, layer) in layers.iter().enumerate() {
        if !seen[index] {
            rows.push(row(layer, ""));
        }
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < columns {
                let pad = widths[c] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Indices of the layers sitting on `layers[index]`, oldest first (the head last).
fn children_of(layers: &[LayerInfo], index: usize) -> Vec<usize> {
    let Some(name) = layers[index].name.as_deref() else {
        return Vec::new();
    };
    (0..layers.len())
        .filter(|&i| layers[i].parent.as_deref() == Some(name))
        .collect()
}

fn row(layer: &LayerInfo, prefix: &str) -> [String; 6] {
    let name = match (&layer.name, layer.removed) {
        (None, _) => "(head)".to_owned(),
        (Some(name), false) => name.clone(),
        (Some(name), true) => format!("{name} [removed]"),
    };
    let labels = if layer.labels.is_empty() {
        "-".to_owned()
    } else {
        layer
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    [
        format!("{prefix}{name}"),
        layer.parent.clone().unwrap_or_else(|| "-".to_owned()),
        layer.created.clone(),
        kind_of(layer).to_owned(),
        format_size(layer.allocated_bytes),
        labels,
    ]
}

/// Mark snapshot NAME removed.
///
/// The snapshot can no longer be reverted to and the volume's content does not change.
/// Its disk space comes back at the next `shorthorn store snapshot purge`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The replica directory.
    dir: PathBuf,
    /// The snapshot to remove.
    name: String,
}

fn rm(args: &RmArgs) -> anyhow::Result<()> {
    let store = open(&args.dir)?;
    store.remove_snapshot(&args.name).with_context(|| {
        format!(
            "removing snapshot {:?} in {}",
            args.name,
            args.dir.display()
        )
    })?;
    outln!(
        "marked snapshot {:?} removed; `shorthorn store snapshot purge {}` reclaims its space",
        args.name,
        args.dir.display()
    )?;
    Ok(())
}

/// Revert the volume to snapshot NAME.
///
/// The volume's content becomes NAME's again: a new, empty head is put on top of NAME
/// and the current head's data (everything written since the last snapshot) is
/// discarded. Snapshots taken after NAME stay in the tree on their own branch. NAME must
/// not be marked removed.
#[derive(Debug, Args)]
pub struct RevertArgs {
    /// The replica directory.
    dir: PathBuf,
    /// The snapshot to revert to.
    name: String,
}

fn revert(args: &RevertArgs) -> anyhow::Result<()> {
    let store = open(&args.dir)?;
    store.revert(&args.name).with_context(|| {
        format!(
            "reverting the volume in {} to snapshot {:?}",
            args.dir.display(),
            args.name
        )
    })?;
    outln!(
        "reverted volume {:?} to snapshot {:?}",
        store.name(),
        args.name
    )?;
    Ok(())
}

/// Fold snapshots marked removed into their children and free their space.
///
/// Every removed snapshot with at most one layer on it is purged: the data its child
/// still shows through it is copied into the child, then it is dropped. A removed
/// snapshot with several children (branches left by reverts) is kept until all but one
/// are gone. The volume's content and every remaining snapshot's content stay the same.
/// Prints the snapshots purged, those kept, and the bytes copied.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// The replica directory.
    dir: PathBuf,
}

fn purge(args: &PurgeArgs) -> anyhow::Result<()> {
    let store = open(&args.dir)?;
    let report = store
        .purge()
        .with_context(|| format!("purging removed snapshots in {}", args.dir.display()))?;
    let list = |names: &[String]| {
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    outln!("purged:       {}", list(&report.purged))?;
    outln!("kept:         {}", list(&report.kept))?;
    outln!("bytes copied: {}", format_size_exact(report.bytes_copied))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: Option<&str>, parent: Option<&str>) -> LayerInfo {
        LayerInfo {
            name: name.map(str::to_owned),
            parent: parent.map(str::to_owned),
            children: Vec::new(),
            created: "2026-01-01T00:00:00.000Z".to_owned(),
            user_created: true,
            removed: false,
            labels: BTreeMap::new(),
            size: 1 << 20,
            allocated_bytes: 4096,
            is_head: name.is_none(),
            in_chain: true,
        }
    }

    /// The NAME column of a rendered tree, header included.
    fn name_column(text: &str) -> Vec<String> {
        let width = text.find("PARENT").unwrap();
        text.lines()
            .map(|l| {
                l.chars()
                    .take(width)
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn tree_keeps_chains_flat_and_indents_branches() {
        // a <- b (removed) <- c, and a <- d <- e <- head (the active chain); f on e.
        let mut removed = layer(Some("b"), Some("a"));
        removed.removed = true;
        removed.in_chain = false;
        removed.labels.insert("env".into(), "prod".into());
        let mut c = layer(Some("c"), Some("b"));
        c.in_chain = false;
        let mut f = layer(Some("f"), Some("e"));
        f.in_chain = false;
        let layers = [
            layer(Some("a"), None),
            removed,
            c,
            layer(Some("d"), Some("a")),
            layer(Some("e"), Some("d")),
            f,
            layer(None, Some("e")),
        ];
        let text = render_tree(&layers);
        let names = name_column(&text);
        assert_eq!(
            names,
            [
                "NAME",
                "a",
                "└─ b [removed]",
                "   c",
                "d",
                "e",
                "└─ f",
                "(head)"
            ],
            "{text}"
        );
        let head_line = text.lines().last().unwrap_or("");
        assert!(
            head_line.contains(" e "),
            "the head's parent column: {text}"
        );
        assert!(text.contains("env=prod"), "{text}");
        assert!(text.contains("4 KiB"), "{text}");
    }

    #[test]
    fn tree_draws_several_branches_with_connectors() {
        let mut layers = vec![layer(Some("a"), None)];
        for name in ["x", "y"] {
            let mut branch = layer(Some(name), Some("a"));
            branch.in_chain = false;
            layers.push(branch);
        }
        let mut under_x = layer(Some("x2"), Some("x"));
        under_x.in_chain = false;
        layers.push(under_x);
        layers.push(layer(None, Some("a")));
        let text = render_tree(&layers);
        let names = name_column(&text);
        assert_eq!(
            names,
            ["NAME", "a", "├─ x", "│  x2", "└─ y", "(head)"],
            "{text}"
        );
    }

    #[test]
    fn labels_need_a_key_and_an_equals_sign() {
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_label("a="), Ok(("a".into(), String::new())));
        assert!(parse_label("=b").is_err());
        assert!(parse_label("ab").is_err());
    }
}
