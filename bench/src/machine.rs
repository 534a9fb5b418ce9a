//! A one-paragraph description of the machine and the filesystem under the benchmark
//! directory, read from `/proc`, so every report says where its figures came from.

use std::fs;
use std::path::Path;

/// What the report says about the machine; fields are "unknown" when `/proc` is silent.
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cpus: usize,
    /// The CPU model name.
    pub cpu_model: String,
    /// Total memory.
    pub memory: String,
    /// The kernel release.
    pub kernel: String,
    /// Filesystem type and device holding the benchmark directory, e.g. `ext4 on /dev/vda`.
    pub filesystem: String,
    /// The 1, 5 and 15 minute load averages when the benchmark started.
    pub load_average: String,
}

impl Machine {
    /// Describes this machine and the filesystem holding `dir`.
    pub fn describe(dir: &Path) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let cpu_model = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(unknown);
        let memory = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("MemTotal:"))?.to_owned();
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(crate::report::bytes(kib * 1024))
            })
            .unwrap_or_else(unknown);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| unknown());
        Machine {
            cpus,
            cpu_model,
            memory,
            kernel,
            filesystem: filesystem_of(dir).unwrap_or_else(unknown),
            load_average: fs::read_to_string("/proc/loadavg")
                .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|_| unknown()),
        }
    }
}

fn unknown() -> String {
    "unknown".to_owned()
}

/// The filesystem type and source of the mount holding `dir` (longest matching mount
/// point in `/proc/mounts`).
fn filesystem_of(dir: &Path) -> Option<String> {
    let dir = fs::canonicalize(dir).ok()?;
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (source, point, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            dir.starts_with(point)
                .then(|| (point.len(), format!("{fstype} on {source}")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, description)| description)
}

/// Clock ticks per second in `/proc` CPU times (`USER_HZ`, 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

/// CPU time counters of the whole machine and of this process, in clock ticks, to tell how
/// much of the machine other processes used while something was measured.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    /// All CPU time (busy and idle) of all CPUs.
    total: u64,
    /// Busy time of all CPUs.
    busy: u64,
    /// Time the hypervisor ran something else on our virtual CPUs.
    steal: u64,
    /// This process's own user and system time.
    own: u64,
}

/// Shares of the machine's CPU time between two samples.
#[derive(Debug, Clone, Copy)]
pub struct CpuShare {
    /// Used by other processes and kernel threads (writeback included), 0..=1.
    pub others: f64,
    /// Stolen by the hypervisor, 0..=1.
    pub steal: f64,
}

impl CpuSample {
    /// Reads the counters; `None` when `/proc` cannot be read.
    pub fn now() -> Option<Self> {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal
        let [user, nice, system, idle, iowait, irq, softirq, steal] = fields[..] else {
            return None;
        };
        let own_stat = fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name: state is field 3, utime 14, stime 15.
        let after_name = &own_stat[own_stat.rfind(')')? + 1..];
        let mut own_fields = after_name.split_whitespace().skip(11);
        let utime: u64 = own_fields.next()?.parse().ok()?;
        let stime: u64 = own_fields.next()?.parse().ok()?;
        Some(CpuSample {
            total: user + nice + system + idle + iowait + irq + softirq + steal,
            busy: user + nice + system + irq + softirq,
            steal,
            own: utime + stime,
        })
    }

    /// CPU time this process used since `earlier`, in seconds.
    pub fn own_seconds_since(&self, earlier: &CpuSample) -> f64 {
        self.own.saturating_sub(earlier.own) as f64 / USER_HZ
    }

    /// What other processes and the hypervisor took since `earlier`.
    pub fn share_since(&self, earlier: &CpuSample) -> Option<CpuShare> {
        let total = self.total.checked_sub(earlier.total)?;
        if total == 0 {
            return None;
        }
        let busy = self.busy.saturating_sub(earlier.busy);
        let own = self.own.saturating_sub(earlier.own);
        let steal = self.steal.saturating_sub(earlier.steal);
        Some(CpuShare {
            others: busy.saturating_sub(own) as f64 / total as f64,
            steal: steal as f64 / total as f64,
        })
    }
}
