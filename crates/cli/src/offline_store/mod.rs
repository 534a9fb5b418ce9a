//! `shorthorn store …`: offline commands on a replica directory (a volume's layered
//! store). They open the directory directly, so no replica server may be using it.

mod image;
pub(crate) mod snapshot;

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use shorthorn_store::{Store, validate_name};

use crate::output::outln;
use shorthorn_block::size::{format_size, format_size_exact, parse_size};

/// Work offline on a replica directory: create a volume, inspect it, take and manage
/// snapshots, grow it, and copy raw images in and out.
///
/// These commands open the directory directly; stop any replica server using it first.
#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    Create(CreateArgs),
    Info(InfoArgs),
    /// Create, list, remove, revert to and purge snapshots.
    ///
    /// A snapshot freezes the volume's current content; the volume goes on in a new
    /// writable head on top of it. Removing a snapshot only marks it; `purge` folds
    /// removed snapshots away and gives their space back.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    Expand(ExpandArgs),
    Import(image::ImportArgs),
    Export(image::ExportArgs),
    Map(image::MapArgs),
}

/// Runs a `store` command.
pub fn run(args: StoreArgs) -> anyhow::Result<()> {
    match args.command {
        StoreCommand::Create(args) => create(&args),
        StoreCommand::Info(args) => info(&args),
        StoreCommand::Snapshot(command) => snapshot::run(command),
        StoreCommand::Expand(args) => expand(&args),
        StoreCommand::Import(args) => image::import(&args),
        StoreCommand::Export(args) => image::export(&args),
        StoreCommand::Map(args) => image::map(&args),
    }
}

/// Parses a size argument (`10G`, `512M`, `4096`) for clap.
pub(crate) fn size_arg(text: &str) -> Result<u64, String> {
    parse_size(text)
}

/// Create a new, empty volume in DIR.
///
/// DIR is created if it does not exist and must not already hold a volume. The volume
/// is thin: it takes no disk space until data is written. Prints the new volume's name,
/// size and directory.
#[derive(Debug, Args)]
struct CreateArgs {
    /// The replica directory to create the volume in.
    dir: PathBuf,
    /// Volume size: bytes, or a number with a binary unit (K, M, G, T, P; e.g. 10G,
    /// 512MiB). Must be a multiple of 4096.
    #[arg(long, value_parser = size_arg)]
    size: u64,
    /// Volume name (1-63 ASCII letters, digits, '-', '_', '.'). Defaults to the
    /// directory's name when that is a valid name.
    #[arg(long)]
    name: Option<String>,
}

fn create(args: &CreateArgs) -> anyhow::Result<()> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => default_name(&args.dir, "--name")?,
    };
    let store = Store::create(&args.dir, &name, args.size)
        .with_context(|| format!("creating a volume in {}", args.dir.display()))?;
    outln!(
        "created volume {:?} of {} in {}",
        store.name(),
        format_size_exact(store.size()),
        args.dir.display()
    )?;
    Ok(())
}

/// The volume name used when none is given: the directory's own name. `flag` is the
/// option that names it explicitly, for the error message.
pub(crate) fn default_name(dir: &Path, flag: &str) -> anyhow::Result<String> {
    let own = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = own.or_else(|| {
        fs::canonicalize(dir)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    });
    let Some(name) = name else {
        bail!(
            "{} has no name to use as the volume name; pass {flag} NAME",
            dir.display()
        );
    };
    if let Err(e) = validate_name(&name) {
        bail!("cannot name the volume after its directory ({e}); pass {flag} NAME");
    }
    Ok(name)
}

/// Show a volume's name, size, layers and space use.
///
/// Prints the name, the size, how many layers are in the active chain (what the volume
/// shows) and in the whole tree (including snapshots left on other branches by
/// reverts), how many snapshots are marked removed, the number of extents in the
/// location map (what its memory follows), and the bytes the layer files occupy on disk.
#[derive(Debug, Args)]
struct InfoArgs {
    /// The replica directory.
    dir: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What `info --json` prints.
#[derive(Debug, Serialize)]
struct InfoJson {
    name: String,
    size: u64,
    layers_in_chain: usize,
    layers_in_tree: usize,
    snapshots: usize,
    removed_snapshots: usize,
    map_extents: usize,
    allocated_bytes: u64,
}

fn info(args: &InfoArgs) -> anyhow::Result<()> {
    let store = open(&args.dir)?;
    let layers = store
        .layers()
        .with_context(|| format!("listing the layers in {}", args.dir.display()))?;
    let info = InfoJson {
        name: store.name(),
        size: store.size(),
        layers_in_chain: layers.iter().filter(|l| l.in_chain).count(),
        layers_in_tree: layers.len(),
        snapshots: layers.iter().filter(|l| !l.is_head).count(),
        removed_snapshots: layers.iter().filter(|l| l.removed).count(),
        map_extents: store.map_extents(),
        allocated_bytes: layers.iter().map(|l| l.allocated_bytes).sum(),
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&info)?)?;
        return Ok(());
    }
    outln!("name:         {}", info.name)?;
    outln!("directory:    {}", args.dir.display())?;
    outln!("size:         {}", format_size_exact(info.size))?;
    outln!(
        "layers:       {} in chain, {} in tree",
        info.layers_in_chain,
        info.layers_in_tree
    )?;
    outln!(
        "snapshots:    {} ({} marked removed)",
        info.snapshots,
        info.removed_snapshots
    )?;
    outln!("map extents:  {}", info.map_extents)?;
    outln!(
        "allocated:    {} on disk",
        format_size_exact(info.allocated_bytes)
    )?;
    Ok(())
}

/// Grow a volume to SIZE.
///
/// The new range reads as zeros; existing data and snapshots are kept. Volumes only
/// grow: a SIZE below the current size is refused, and the current size does nothing.
/// The expansion is crash safe: an interrupted one is finished the next time the
/// directory is opened. Prints the old and the new size.
#[derive(Debug, Args)]
struct ExpandArgs {
    /// The replica directory.
    dir: PathBuf,
    /// The new size: bytes or a binary unit (e.g. 20G); a multiple of 4096.
    #[arg(value_parser = size_arg)]
    size: u64,
}

fn expand(args: &ExpandArgs) -> anyhow::Result<()> {
    let store = open(&args.dir)?;
    let old = store.size();
    if old == args.size {
        outln!(
            "volume {:?} is already {}; nothing to do",
            store.name(),
            format_size_exact(old)
        )?;
        return Ok(());
    }
    store.expand(args.size).with_context(|| {
        format!(
            "expanding the volume in {} to {}",
            args.dir.display(),
            format_size(args.size)
        )
    })?;
    outln!(
        "expanded volume {:?} from {} to {}",
        store.name(),
        format_size_exact(old),
        format_size_exact(store.size())
    )?;
    Ok(())
}

/// Opens the volume in `dir`, with errors that name the directory.
pub(crate) fn open(dir: &Path) -> anyhow::Result<Store> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => bail!("{} is not a directory", dir.display()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            bail!("directory {} does not exist", dir.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot access {}", dir.display())),
    }
    Store::open(dir).with_context(|| format!("opening the volume in {}", dir.display()))
}
