//! The Prometheus text of a volume's metrics (through `shorthorn_prometheus`).

use std::collections::HashMap;

use shorthorn_prometheus::{MetricKind, family_header, float, sample, sanitize_name};

use super::{MetricsSnapshot, OpKind, OpSnapshot};

/// An extra gauge sample for [`render_prometheus`], such as a replica's mode or a
/// rebuild's progress. Samples with the same `name` form one metric family (one HELP and
/// TYPE line, taken from the first).
#[derive(Debug, Clone, PartialEq)]
pub struct Gauge {
    /// Metric name, e.g. `shorthorn_replica_mode`. Characters outside
    /// `[a-zA-Z0-9_:]` are replaced with `_`.
    pub name: String,
    /// One-line description for the HELP line.
    pub help: String,
    /// Labels besides `volume`, which is added unless given here.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Gauge {
    /// A gauge with the given labels.
    pub fn new(
        name: impl Into<String>,
        help: impl Into<String>,
        labels: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
        value: f64,
    ) -> Self {
        Gauge {
            name: name.into(),
            help: help.into(),
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            value,
        }
    }
}

/// The prefix of every family [`render_prometheus`] always writes.
const BUILTIN_PREFIX: &str = "shorthorn_volume_";

/// Renders `snapshot` and `extra` in the Prometheus text exposition format (0.0.4).
/// Every sample carries `volume="<volume>"`; label values and HELP texts are escaped.
pub fn render_prometheus(volume: &str, snapshot: &MetricsSnapshot, extra: &[Gauge]) -> String {
    let mut out = String::with_capacity(8 * 1024);
    // Built-in family names, so extra gauges cannot reopen one.
    let mut builtin: Vec<String> = Vec::new();
    let volume_label = [("volume", volume)];
    let dirs = [("read", &snapshot.read), ("write", &snapshot.write)];

    type Field = fn(&OpSnapshot) -> String;
    let direction_families: [(&str, MetricKind, &str, Field); 10] = [
        (
            "iops",
            MetricKind::Gauge,
            "Successful {dir} requests per second, over the last completed second",
            |s| float(s.iops_last_second),
        ),
        (
            "bandwidth_bytes",
            MetricKind::Gauge,
            "Bytes per second of successful {dir} requests, over the last completed second",
            |s| float(s.bytes_per_second_last_second),
        ),
        (
            "latency_seconds_avg",
            MetricKind::Gauge,
            "Mean latency of successful {dir} requests over the last completed second (0 when idle)",
            |s| float(s.latency_avg_last_second.as_secs_f64()),
        ),
        (
            "latency_seconds_p99",
            MetricKind::Gauge,
            "99th-percentile latency of successful {dir} requests over the last completed second (0 when idle)",
            |s| float(s.latency_p99_last_second.as_secs_f64()),
        ),
        (
            "latency_seconds_avg_since_start",
            MetricKind::Gauge,
            "Mean latency of successful {dir} requests since the engine started",
            |s| float(s.latency_avg_since_start.as_secs_f64()),
        ),
        (
            "latency_seconds_p99_since_start",
            MetricKind::Gauge,
            "99th-percentile latency of successful {dir} requests since the engine started",
            |s| float(s.latency_p99_since_start.as_secs_f64()),
        ),
        (
            "ops_total",
            MetricKind::Counter,
            "Successful {dir} requests since the engine started",
            |s| s.ops_total.to_string(),
        ),
        (
            "bytes_total",
            MetricKind::Counter,
            "Bytes of successful {dir} requests since the engine started",
            |s| s.bytes_total.to_string(),
        ),
        (
            "errors_total",
            MetricKind::Counter,
            "Failed {dir} requests since the engine started",
            |s| s.errors_total.to_string(),
        ),
        (
            "latency_seconds_total",
            MetricKind::Counter,
            "Sum of the latencies of successful {dir} requests since the engine started",
            |s| float(s.latency_total.as_secs_f64()),
        ),
    ];
    for (dir, snap) in dirs {
        let what = match dir {
            "read" => "read",
            _ => "write (write, write_zeroes and trim)",
        };
        for (suffix, kind, help, field) in &direction_families {
            let name = format!("{BUILTIN_PREFIX}{dir}_{suffix}");
            family_header(&mut out, &name, &help.replace("{dir}", what), *kind);
            sample(&mut out, &name, &volume_label, &field(snap));
            builtin.push(name);
        }
    }

    let op_families: [(&str, &str, Field); 4] = [
        (
            "requests_total",
            "Successful requests since the engine started, by kind",
            |s| s.ops_total.to_string(),
        ),
        (
            "request_bytes_total",
            "Bytes of successful requests since the engine started, by kind",
            |s| s.bytes_total.to_string(),
        ),
        (
            "request_errors_total",
            "Failed requests since the engine started, by kind",
            |s| s.errors_total.to_string(),
        ),
        (
            "request_latency_seconds_total",
            "Sum of the latencies of successful requests since the engine started, by kind",
            |s| float(s.latency_total.as_secs_f64()),
        ),
    ];
    for (suffix, help, field) in &op_families {
        let name = format!("{BUILTIN_PREFIX}{suffix}");
        family_header(&mut out, &name, help, MetricKind::Counter);
        for kind in OpKind::ALL {
            sample(
                &mut out,
                &name,
                &[("volume", volume), ("op", kind.name())],
                &field(snapshot.op(kind)),
            );
        }
        builtin.push(name);
    }

    let name = format!("{BUILTIN_PREFIX}uptime_seconds");
    family_header(
        &mut out,
        &name,
        "Seconds since the engine started",
        MetricKind::Gauge,
    );
    sample(
        &mut out,
        &name,
        &volume_label,
        &float(snapshot.uptime.as_secs_f64()),
    );
    builtin.push(name);

    render_extra(&mut out, volume, extra, &builtin);
    out
}

fn render_extra(out: &mut String, volume: &str, extra: &[Gauge], builtin: &[String]) {
    let mut order: Vec<(String, Vec<&Gauge>)> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for gauge in extra {
        let name = sanitize_name(&gauge.name, true);
        if builtin.contains(&name) {
            tracing::warn!(name, "extra gauge has a built-in metric's name; skipped");
            continue;
        }
        let slot = *by_name.entry(name.clone()).or_insert_with(|| {
            order.push((name, Vec::new()));
            order.len() - 1
        });
        order[slot].1.push(gauge);
    }
    for (name, gauges) in order {
        let help = gauges
            .iter()
            .map(|g| g.help.as_str())
            .find(|h| !h.is_empty())
            .unwrap_or("");
        family_header(out, &name, help, MetricKind::Gauge);
        for gauge in gauges {
            let mut labels: Vec<(String, &str)> = Vec::with_capacity(gauge.labels.len() + 1);
            if !gauge.labels.iter().any(|(k, _)| k == "volume") {
                labels.push(("volume".to_owned(), volume));
            }
            for (key, value) in &gauge.labels {
                let key = sanitize_name(key, false);
                if labels.iter().all(|(k, _)| *k != key) {
                    labels.push((key, value));
                }
            }
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            sample(out, &name, &labels, &float(gauge.value));
        }
    }
}
