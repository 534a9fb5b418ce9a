//! Volume metrics end to end: a `MeteredDevice` over an in-memory device counts every
//! request exactly, the Prometheus text is well-formed line by line, and `serve_metrics`
//! answers raw HTTP/1.1 requests.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    reason = "test code"
)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shorthorn_block::testing::MemDevice;
use shorthorn_block::{BlockDevice, WriteFlags, ZeroMode};
use shorthorn_engine::{
    Gauge, MeteredDevice, Metrics, MetricsSnapshot, OpKind, render_prometheus, serve_metrics,
};
use shorthorn_prometheus::exposition::{self, Sample};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SIZE: u64 = 1 << 20;

fn metered() -> (Arc<MemDevice>, MeteredDevice<MemDevice>, Arc<Metrics>) {
    let inner = Arc::new(MemDevice::new(SIZE));
    let metrics = Arc::new(Metrics::new());
    let device = MeteredDevice::new(inner.clone(), metrics.clone());
    (inner, device, metrics)
}

#[tokio::test]
async fn metered_device_counts_requests_exactly() {
    let (inner, device, metrics) = metered();
    assert_eq!(device.size(), SIZE);

    let mut write_bytes = 0;
    let mut read_bytes = 0;
    for i in 0..100u64 {
        let len = 512 * (i % 8 + 1);
        let offset = i * 4096;
        let data = Bytes::from(vec![i as u8; len as usize]);
        device
            .write(offset, data.clone(), WriteFlags::default())
            .await
            .unwrap();
        write_bytes += len;
        assert_eq!(device.read(offset, len).await.unwrap(), data);
        read_bytes += len;
    }
    for i in 0..10u64 {
        device
            .write_zeroes(i * 8192, 8192, ZeroMode::MayUnmap, WriteFlags::default())
            .await
            .unwrap();
        device.trim(i * 65536, 65536).await.unwrap();
        device.flush().await.unwrap();
    }
    // Not recorded.
    device.block_status(0, 4096).await.unwrap();
    // Failures: out of range, and an injected write error.
    device.read(SIZE, 1).await.unwrap_err();
    device.trim(SIZE - 1, 2).await.unwrap_err();
    inner.fail_writes.store(true, Ordering::Relaxed);
    device
        .write(0, Bytes::from_static(b"x"), WriteFlags::default())
        .await
        .unwrap_err();
    device
        .write_zeroes(0, 1, ZeroMode::Allocate, WriteFlags::default())
        .await
        .unwrap_err();

    let s = metrics.snapshot();
    let read = s.op(OpKind::Read);
    assert_eq!(
        (read.ops_total, read.bytes_total, read.errors_total),
        (100, read_bytes, 1)
    );
    let write = s.op(OpKind::Write);
    assert_eq!(
        (write.ops_total, write.bytes_total, write.errors_total),
        (100, write_bytes, 1)
    );
    let zeroes = s.op(OpKind::WriteZeroes);
    assert_eq!(
        (zeroes.ops_total, zeroes.bytes_total, zeroes.errors_total),
        (10, 81920, 1)
    );
    let trim = s.op(OpKind::Trim);
    assert_eq!(
        (trim.ops_total, trim.bytes_total, trim.errors_total),
        (10, 655_360, 1)
    );
    let flush = s.op(OpKind::Flush);
    assert_eq!(
        (flush.ops_total, flush.bytes_total, flush.errors_total),
        (10, 0, 0)
    );

    assert_eq!(
        (s.read.ops_total, s.read.bytes_total, s.read.errors_total),
        (100, read_bytes, 1)
    );
    assert_eq!(
        (s.write.ops_total, s.write.bytes_total, s.write.errors_total),
        (120, write_bytes + 81920 + 655_360, 3)
    );
    assert!(s.read.latency_total > Duration::ZERO);
    assert!(s.read.latency_p99_since_start > Duration::ZERO);
    assert!(s.uptime > Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_all_counted() {
    let (_inner, device, metrics) = metered();
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let device = device.clone();
            tokio::spawn(async move {
                for i in 0..250u64 {
                    let offset = (t * 250 + i) * 512;
                    device
                        .write(offset, Bytes::from(vec![1; 512]), WriteFlags::default())
                        .await
                        .unwrap();
                    device.read(offset, 512).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let s = metrics.snapshot();
    assert_eq!((s.read.ops_total, s.read.bytes_total), (2000, 2000 * 512));
    assert_eq!((s.write.ops_total, s.write.bytes_total), (2000, 2000 * 512));
}

#[tokio::test]
async fn last_second_figures_follow_the_clock() {
    // The requests must all complete in the first one-second window; on a machine so
    // loaded that they do not, try again.
    for _attempt in 0..3 {
        let (_inner, device, metrics) = metered();
        let start = metrics.start();
        for _ in 0..5 {
            device.read(0, 4096).await.unwrap();
        }
        if Instant::now() >= start + Duration::from_millis(900) {
            continue;
        }
        let s = metrics.snapshot_at(start + Duration::from_millis(999));
        assert_eq!(
            s.read.iops_last_second, 0.0,
            "first window not complete yet"
        );
        assert_eq!(s.read.ops_total, 5);
        let s = metrics.snapshot_at(start + Duration::from_millis(1500));
        assert_eq!(s.read.iops_last_second, 5.0);
        assert_eq!(s.read.bytes_per_second_last_second, 5.0 * 4096.0);
        assert!(s.read.latency_p99_last_second > Duration::ZERO);
        assert!(s.read.latency_avg_last_second <= s.read.latency_p99_last_second * 2);
        let s = metrics.snapshot_at(start + Duration::from_millis(2500));
        assert_eq!(s.read.iops_last_second, 0.0);
        assert_eq!(s.read.ops_total, 5);
        return;
    }
    panic!("5 in-memory reads never completed within 900 ms");
}

// ---------------------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------------------

/// Checks the whole exposition strictly and returns its samples.
fn parse_exposition(text: &str) -> Vec<Sample> {
    exposition::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition::find(samples, name, labels)
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
        .value
}

fn sample_snapshot() -> MetricsSnapshot {
    let start = Instant::now();
    let metrics = Metrics::starting_at(start);
    let at = |ms| start + Duration::from_millis(ms);
    for i in 0..10 {
        metrics.record_at(
            at(100 + i),
            OpKind::Read,
            4096,
            Duration::from_micros(200),
            true,
        );
    }
    metrics.record_at(
        at(200),
        OpKind::Read,
        4096,
        Duration::from_micros(100),
        false,
    );
    for i in 0..4 {
        metrics.record_at(
            at(300 + i),
            OpKind::Write,
            8192,
            Duration::from_micros(500),
            true,
        );
    }
    metrics.record_at(
        at(400),
        OpKind::Trim,
        1 << 20,
        Duration::from_micros(300),
        true,
    );
    metrics.record_at(at(500), OpKind::Flush, 0, Duration::from_millis(2), true);
    metrics.snapshot_at(at(1500))
}

#[test]
fn prometheus_text_is_well_formed() {
    let snapshot = sample_snapshot();
    let volume = "vol \"one\"\\\nx";
    let extra = vec![
        Gauge::new(
            "shorthorn_replica_mode",
            "1 for the replica's current mode",
            [("replica", "tcp://127.0.0.1:9502"), ("mode", "RW")],
            1.0,
        ),
        Gauge::new(
            "shorthorn_rebuild_progress_ratio",
            "Rebuild progress\nfrom 0 to 1",
            [("replica", "tcp://10.0.0.3:9502")],
            0.25,
        ),
        Gauge::new(
            "shorthorn_replica_mode",
            "",
            [("replica", "tcp://10.0.0.3:9502"), ("mode", "WO")],
            1.0,
        ),
        Gauge::new(
            "shorthorn_replica_mode",
            "",
            [("replica", "tcp://10.0.0.3:9502"), ("mode", "RW")],
            0.0,
        ),
        Gauge::new(
            "shorthorn_purge_running",
            "Whether a purge runs",
            [("volume", "vol")],
            f64::NAN,
        ),
        // Collides with a built-in family: dropped.
        Gauge::new(
            "shorthorn_volume_read_iops",
            "fake",
            Vec::<(String, String)>::new(),
            9.0,
        ),
    ];
    let text = render_prometheus(volume, &snapshot, &extra);
    let samples = parse_exposition(&text);

    // Every built-in sample names the volume, unescaped back to the original.
    for s in samples
        .iter()
        .filter(|s| s.name != "shorthorn_purge_running")
    {
        assert!(
            s.labels.iter().any(|(k, v)| k == "volume" && v == volume),
            "{s:?}"
        );
    }
    let vol = [("volume", volume)];
    assert_eq!(value_of(&samples, "shorthorn_volume_read_iops", &vol), 10.0);
    assert_eq!(
        value_of(&samples, "shorthorn_volume_read_bandwidth_bytes", &vol),
        40960.0
    );
    assert_eq!(value_of(&samples, "shorthorn_volume_write_iops", &vol), 5.0);
    assert_eq!(
        value_of(&samples, "shorthorn_volume_write_bandwidth_bytes", &vol),
        (4 * 8192 + (1 << 20)) as f64
    );
    let avg = value_of(&samples, "shorthorn_volume_read_latency_seconds_avg", &vol);
    assert!((avg - 200e-6).abs() < 1e-12, "{avg}");
    let p99 = value_of(&samples, "shorthorn_volume_read_latency_seconds_p99", &vol);
    assert!((p99 - 200e-6).abs() / 200e-6 < 1.0 / 32.0, "{p99}");
    assert_eq!(
        value_of(&samples, "shorthorn_volume_read_ops_total", &vol),
        10.0
    );
    assert_eq!(
        value_of(&samples, "shorthorn_volume_read_errors_total", &vol),
        1.0
    );
    assert_eq!(
        value_of(&samples, "shorthorn_volume_write_ops_total", &vol),
        5.0
    );
    assert_eq!(
        value_of(
            &samples,
            "shorthorn_volume_requests_total",
            &[("op", "flush")]
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &samples,
            "shorthorn_volume_request_bytes_total",
            &[("op", "trim")]
        ),
        (1 << 20) as f64
    );
    assert_eq!(
        value_of(&samples, "shorthorn_volume_uptime_seconds", &vol),
        1.5
    );

    // Extra gauges: grouped under one HELP/TYPE, volume label added unless given.
    assert_eq!(
        value_of(
            &samples,
            "shorthorn_replica_mode",
            &[
                ("volume", volume),
                ("replica", "tcp://10.0.0.3:9502"),
                ("mode", "WO")
            ]
        ),
        1.0
    );
    assert_eq!(
        samples
            .iter()
            .filter(|s| s.name == "shorthorn_replica_mode")
            .count(),
        3
    );
    assert_eq!(
        value_of(&samples, "shorthorn_rebuild_progress_ratio", &vol),
        0.25
    );
    assert!(
        text.contains("# HELP shorthorn_rebuild_progress_ratio Rebuild progress\\nfrom 0 to 1\n")
    );
    assert!(value_of(&samples, "shorthorn_purge_running", &[("volume", "vol")]).is_nan());
    assert_eq!(
        samples
            .iter()
            .filter(|s| s.name == "shorthorn_volume_read_iops")
            .count(),
        1,
        "colliding extra gauge dropped"
    );
    assert_eq!(
        text.matches("# TYPE shorthorn_replica_mode gauge").count(),
        1
    );
    assert!(text.contains("# TYPE shorthorn_volume_read_ops_total counter\n"));
}

#[test]
fn empty_metrics_render_zeroes() {
    let snapshot = Metrics::new().snapshot();
    let samples = parse_exposition(&render_prometheus("v", &snapshot, &[]));
    for s in &samples {
        if s.name != "shorthorn_volume_uptime_seconds" {
            assert_eq!(s.value, 0.0, "{s:?}");
        }
    }
    // And info's text shows the idle volume.
    let info = snapshot.to_string();
    assert!(
        info.contains("read         last second: 0 IOPS, 0 B/s"),
        "{info}"
    );
}

// ---------------------------------------------------------------------------------------
// HTTP endpoint
// ---------------------------------------------------------------------------------------

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a complete HTTP/1.1 response (content-length or chunked body).
fn parse_response(raw: &[u8]) -> Response {
    let text = std::str::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("end of headers");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"));
    let status = parts.next().unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let mut response = Response {
        status,
        headers,
        body: String::new(),
    };
    if response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            response.body.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
    } else {
        let len: usize = response.header("content-length").unwrap().parse().unwrap();
        assert_eq!(body.len(), len);
        response.body = body.to_owned();
    }
    response
}

async fn get(addr: std::net::SocketAddr, request: &str) -> Response {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .unwrap();
    parse_response(&raw)
}

#[tokio::test]
async fn serve_metrics_answers_http() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(Metrics::new());
    metrics.record(OpKind::Read, 4096, Duration::from_micros(150), true);
    let render = {
        let metrics = metrics.clone();
        move || render_prometheus("vol1", &metrics.snapshot(), &[])
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_metrics(listener, render, async {
        let _ = stopped.await;
    }));

    let response = get(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        response.header("content-type")
    );
    let samples = parse_exposition(&response.body);
    assert_eq!(
        value_of(
            &samples,
            "shorthorn_volume_read_ops_total",
            &[("volume", "vol1")]
        ),
        1.0
    );

    for path in ["/", "/metricsx", "/metrics/extra", "/other"] {
        let response = get(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(response.status, 404, "{path}");
    }

    // An idle keep-alive connection does not hold shutdown up.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .expect("server stops promptly")
        .unwrap()
        .unwrap();
    // And nothing listens any more.
    assert!(TcpStream::connect(addr).await.is_err());
}
