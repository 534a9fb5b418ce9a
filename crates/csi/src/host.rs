//! The host tools the node service drives: nbdfuse (the volume's NBD export as a file),
//! losetup (that file as a block device), blkid, mkfs, mount, resize2fs/xfs_growfs. Each
//! runs with a time limit, and a failure says which command and what it printed.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tonic::Status;

/// Longest any one command may take (mkfs of a large volume included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How long nbdfuse may take to show the export as a file.
const FUSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `program args`; its stdout, or INTERNAL naming the command and its stderr.
pub async fn run(program: &str, args: &[&str]) -> Result<String, Status> {
    let output = run_status(program, args).await?;
    if !output.0 {
        return Err(Status::internal(format!(
            "{program} {}: {}",
            args.join(" "),
            output.2.trim()
        )));
    }
    Ok(output.1)
}

/// Runs `program args`: (succeeded, stdout, stderr).
pub async fn run_status(program: &str, args: &[&str]) -> Result<(bool, String, String), Status> {
    let (code, stdout, stderr) = run_code(program, args).await?;
    Ok((code == Some(0), stdout, stderr))
}

/// Runs `program args`: (exit code, none when killed by a signal; stdout; stderr).
pub async fn run_code(
    program: &str,
    args: &[&str],
) -> Result<(Option<i32>, String, String), Status> {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Status::internal(format!("starting {program}: {e}")))?;
    let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "{program} {}: no end after {COMMAND_TIMEOUT:?}",
                args.join(" ")
            ))
        })?
        .map_err(|e| Status::internal(format!("{program}: {e}")))?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// Whether something is mounted at `path` (per `/proc/self/mountinfo`).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| unescape(mount_point) == wanted)
}

/// A mountinfo path with its octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.by_ref().take(3).collect();
            if let Ok(byte) = u8::from_str_radix(&digits, 8) {
                out.push(char::from(byte));
                continue;
            }
            out.push(c);
            out.push_str(&digits);
        } else {
            out.push(c);
        }
    }
    out
}

/// Unmounts `path` if something is mounted there.
pub async fn unmount(path: &Path) -> Result<(), Status> {
    if is_mounted(path) {
        run("umount", &[&path.to_string_lossy()]).await?;
    }
    Ok(())
}

/// Starts nbdfuse serving `uri` as the file `dir/dev` in a session of its own (so it
/// outlives the plugin, which may restart while the volume is mounted), its output in
/// `dir.log`; waits until the file shows. Returns the file and nbdfuse's pid.
pub async fn start_nbdfuse(dir: &Path, uri: &str) -> Result<(PathBuf, u32), Status> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Status::internal(format!("creating {}: {e}", dir.display())))?;
    let file = dir.join("dev");
    let log_path = dir.with_extension("log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| Status::internal(format!("creating {}: {e}", log_path.display())))?;
    let err = log
        .try_clone()
        .map_err(|e| Status::internal(format!("{}: {e}", log_path.display())))?;
    let mut command = std::process::Command::new("nbdfuse");
    command
        .arg(&file)
        .arg(uri)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| Status::internal(format!("starting nbdfuse (libnbd-bin): {e}")))?;
    let pid = child.id();
    let deadline = Instant::now() + FUSE_TIMEOUT;
    loop {
        if std::fs::metadata(&file).is_ok_and(|m| m.len() > 0) {
            // Reaped in the background when it ends (after fusermount3 -u).
            std::thread::spawn(move || child.wait());
            return Ok((file, pid));
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(Status::unavailable(format!(
                "nbdfuse {uri} exited ({status}): {}",
                log.trim()
            )));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Status::unavailable(format!(
                "nbdfuse {uri} did not show the volume within {FUSE_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Unmounts nbdfuse's directory (nbdfuse then exits) and removes it; the kernel may hold
/// the file a moment after its loop device went, so "busy" is retried, bounded.
pub async fn stop_nbdfuse(dir: &Path, pid: Option<u32>) -> Result<(), Status> {
    let path = dir.to_string_lossy().into_owned();
    for attempt in 0.. {
        if !is_mounted(dir) {
            break;
        }
        let (ok, _, stderr) = run_status("fusermount3", &["-u", &path]).await?;
        if ok {
            break;
        }
        if attempt == 20 || !stderr.contains("busy") {
            return Err(Status::internal(format!(
                "fusermount3 -u {path}: {}",
                stderr.trim()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if let Some(pid) = pid
        && process_is_nbdfuse(pid)
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_is_nbdfuse(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = std::fs::remove_dir(dir);
    let _ = std::fs::remove_file(dir.with_extension("log"));
    Ok(())
}

/// Whether `pid` is a running nbdfuse (not a pid reused by something else).
pub fn process_is_nbdfuse(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "nbdfuse")
}

/// `losetup -f --show FILE`: the loop device now backed by `file`.
pub async fn attach_loop(file: &Path) -> Result<String, Status> {
    let device = run("losetup", &["-f", "--show", &file.to_string_lossy()]).await?;
    Ok(device.trim().to_string())
}

/// `losetup -r -f --show FILE`: a read-only loop device over `file`. A read-only bind
/// mount of a writable device node does not stop writes through it; this device does.
pub async fn attach_loop_read_only(file: &Path) -> Result<String, Status> {
    let device = run("losetup", &["-r", "-f", "--show", &file.to_string_lossy()]).await?;
    Ok(device.trim().to_string())
}

/// The file loop device `device` (`/dev/loopN`) is backed by, from sysfs (which never
/// touches the file: asking losetup would hang on a FUSE file whose server died).
pub fn loop_backing_file(device: &str) -> Option<PathBuf> {
    let name = device.strip_prefix("/dev/")?;
    let text = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(text.trim()))
}

/// Detaches loop device `device` if it is still backed by `file`.
pub async fn detach_loop(device: &str, file: &Path) -> Result<(), Status> {
    if loop_backing_file(device).is_some_and(|backing| backing == file) {
        run("losetup", &["-d", device]).await?;
    }
    Ok(())
}

/// What `device` holds, per `blkid -p`: a filesystem type, a partition table, or nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Contents {
    /// Nothing blkid knows: safe to format.
    Blank,
    /// A filesystem of this type.
    Filesystem(String),
    /// A partition table (of this type).
    Partitions(String),
    /// Something else (a RAID member, LVM, …).
    Other(String),
}

/// Bytes read from the start of a device blkid calls blank, which must all be zero (a
/// new Shorthorn volume reads zeros) before it may be formatted.
const BLANK_CHECK_BYTES: usize = 1 << 20;

/// Probes `device`'s first bytes with `blkid -p`. Blank only when blkid exits 2 (nothing
/// found; it also exits 2 after some read errors, hence the zero check) and the first
/// MiB reads as zeros; a device that cannot be read is an error, never blank.
pub async fn contents(device: &str) -> Result<Contents, Status> {
    let (code, stdout, stderr) = run_code("blkid", &["-p", "-o", "export", device]).await?;
    if code == Some(2) {
        let path = device.to_string();
        let zeros = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            use std::io::Read as _;
            let mut head = vec![0u8; BLANK_CHECK_BYTES];
            let mut file = std::fs::File::open(&path)?;
            let mut filled = 0;
            while filled < head.len() {
                let n = file.read(&mut head[filled..])?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            Ok(head[..filled].iter().all(|b| *b == 0))
        })
        .await
        .map_err(|e| Status::internal(format!("reading {device}: {e}")))?
        .map_err(|e| Status::unavailable(format!("reading {device}: {e}")))?;
        return Ok(if zeros {
            Contents::Blank
        } else {
            Contents::Other("data that blkid does not recognize".into())
        });
    }
    if code != Some(0) {
        return Err(Status::internal(format!(
            "blkid -p {device} (exit {code:?}): {}",
            stderr.trim()
        )));
    }
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    Ok(match (field("TYPE"), field("PTTYPE"), field("USAGE")) {
        (_, Some(table), _) => Contents::Partitions(table),
        (Some(fs), None, Some(usage)) if usage == "filesystem" => Contents::Filesystem(fs),
        (Some(kind), None, _) => Contents::Other(kind),
        (None, None, _) => Contents::Blank,
    })
}

/// Bytes of block device `device`.
pub async fn device_size(device: &str) -> Result<u64, Status> {
    let out = run("blockdev", &["--getsize64", device]).await?;
    out.trim()
        .parse()
        .map_err(|_| Status::internal(format!("blockdev --getsize64 {device} printed {out:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/var/lib/a\040b"), "/var/lib/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn the_root_is_mounted_and_a_fresh_directory_is_not() {
        assert!(is_mounted(Path::new("/")));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mounted(dir.path()));
    }
}
