//! The Prometheus endpoint (opt-in: `pangea-mount --metrics
//! 127.0.0.1:PORT`), with `prometheus-client`'s text format.
//!
//! * [`OpStats`]: a latency histogram per filesystem operation, fed by the
//!   front end (the FUSE adapter times every request it answers).
//! * Everything else is read at scrape time from what `pangea status`
//!   shows (the same sources: upload queue, chunk health, healer,
//!   scrubber, workers, peers and the guard) plus the cache, the chunk
//!   layer's counters and this process's CPU and I/O (`/proc/self`).
//!
//! The server is one thread, one connection at a time, a 5 s deadline on
//! each; it answers `GET /metrics` and nothing else (404).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::Value;
use tracing::{info, warn};

use super::status::MountContext;

type OpLabel = [(&'static str, &'static str); 1];
type Labels = Vec<(String, String)>;

fn op_histogram() -> Histogram {
    // 10 µs to ~5 s.
    Histogram::new(exponential_buckets(1e-5, 2.0, 20))
}

/// Latency of the filesystem operations, by name.
pub struct OpStats {
    seconds: Family<OpLabel, Histogram, fn() -> Histogram>,
}

impl Default for OpStats {
    fn default() -> OpStats {
        OpStats {
            seconds: Family::new_with_constructor(op_histogram),
        }
    }
}

impl std::fmt::Debug for OpStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpStats")
    }
}

/// Records the time from its creation to its drop under `op`.
pub struct OpTimer<'a> {
    stats: &'a OpStats,
    op: &'static str,
    start: Instant,
}

impl Drop for OpTimer<'_> {
    fn drop(&mut self) {
        self.stats.record(self.op, self.start.elapsed());
    }
}

impl OpStats {
    /// Times one `op` until the returned guard is dropped.
    pub fn time(&self, op: &'static str) -> OpTimer<'_> {
        OpTimer {
            stats: self,
            op,
            start: Instant::now(),
        }
    }

    pub fn record(&self, op: &'static str, took: Duration) {
        self.seconds
            .get_or_create(&[("op", op)])
            .observe(took.as_secs_f64());
    }
}

/// The endpoint's thread; dropping it stops it.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` and answers scrapes from `ctx` and `ops`.
    pub fn start(
        addr: SocketAddr,
        ctx: MountContext,
        ops: Arc<OpStats>,
    ) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("pangea-metrics".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            if let Err(e) = answer(conn, &ctx, &ops) {
                                warn!(error = %e, "a metrics scrape failed");
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        Err(e) => {
                            warn!(error = %e, "metrics endpoint: accept failed");
                            std::thread::sleep(Duration::from_millis(500));
                        }
                    }
                }
            })?;
        info!(%addr, "metrics at http://{addr}/metrics");
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(mut conn: TcpStream, ctx: &MountContext, ops: &OpStats) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&req);
    let ok = line.starts_with("GET /metrics ") || line.starts_with("GET /metrics?");
    let (status, ctype, body) = if ok {
        (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(ctx, ops),
        )
    } else {
        ("404 Not Found", "text/plain", "GET /metrics\n".to_owned())
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn num(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_bool().map(|b| f64::from(u8::from(b))))
        .unwrap_or(0.0)
}

/// A gauge family keyed by labels, filled from `values`.
fn gauges(reg: &mut Registry, name: &str, help: &str, values: Vec<(Labels, f64)>) {
    let family = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (labels, v) in values {
        family.get_or_create(&labels).set(v);
    }
    reg.register(name, help, family);
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: f64) {
    gauges(reg, name, help, vec![(Vec::new(), v)]);
}

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_owned(), v.to_owned())]
}

/// The whole scrape, as text.
pub fn render(ctx: &MountContext, ops: &OpStats) -> String {
    let mut reg = <Registry>::with_prefix("pangea");
    reg.register(
        "fuse_op_seconds",
        "Latency of filesystem requests, by operation",
        ops.seconds.clone(),
    );
    if let Some(fs) = ctx.fs.upgrade() {
        let c = fs.chunk_layer().cache_stats();
        counter(&mut reg, "cache_hits", "Chunk cache hits", c.hits);
        counter(&mut reg, "cache_misses", "Chunk cache misses", c.misses);
        counter(
            &mut reg,
            "cache_hit_bytes",
            "Bytes served from the cache",
            c.hit_bytes,
        );
        gauge(
            &mut reg,
            "cache_bytes",
            "Bytes held in the cache",
            c.weighted_size as f64,
        );
        let s = fs.chunk_layer().stats();
        counter(
            &mut reg,
            "ces_chunks_encoded",
            "Chunks run through CES",
            s.encoded,
        );
        counter(
            &mut reg,
            "ces_chunks_decoded",
            "Chunks decoded (cache misses)",
            s.decoded,
        );
        counter(
            &mut reg,
            "ces_chunks_deduped",
            "Chunks whose plaintext was already stored",
            s.deduped,
        );
        counter(
            &mut reg,
            "chunks_repaired_locally",
            "Chunks rebuilt from damaged local shards",
            s.repaired,
        );
        if let Ok(v) = super::status::mount_status(&fs, ctx.net.as_ref()) {
            gauge(
                &mut reg,
                "upload_backlog_chunks",
                "Chunks waiting for placement",
                num(&v["upload_backlog"]["chunks"]),
            );
            gauge(
                &mut reg,
                "upload_backlog_bytes",
                "Shard bytes waiting for placement",
                num(&v["upload_backlog"]["bytes"]),
            );
            gauge(
                &mut reg,
                "safe_to_unplug",
                "1 when every chunk is on the peers",
                num(&v["safe_to_unplug"]),
            );
            gauges(
                &mut reg,
                "chunks",
                "Chunks by health",
                ["placed", "degraded", "local_only", "lost"]
                    .iter()
                    .map(|k| (label("state", k), num(&v["chunks"][*k])))
                    .collect(),
            );
            peers(&mut reg, &v["peers"]);
            let g = &v["network"]["guard"];
            if !g.is_null() {
                gauges(
                    &mut reg,
                    "guard",
                    "The guard's totals over peers",
                    [
                        "accepted",
                        "refused",
                        "throttled",
                        "banned",
                        "handshakes_refused",
                        "bytes_in",
                        "bytes_out",
                    ]
                    .iter()
                    .map(|k| (label("what", k), num(&g[*k])))
                    .collect(),
                );
            }
        }
    }
    if let Some(h) = &ctx.healer {
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            &mut reg,
            "heal_queue",
            "Chunks queued for repair",
            r(&h.queued_now) as f64,
        );
        counter(
            &mut reg,
            "heal_chunks_repaired",
            "Chunks repaired",
            r(&h.chunks_repaired),
        );
        counter(
            &mut reg,
            "heal_shards_rebuilt",
            "Shards rebuilt and placed",
            r(&h.shards_rebuilt),
        );
        counter(
            &mut reg,
            "heal_failures",
            "Repairs that failed (retried later)",
            r(&h.repairs_failed),
        );
        counter(
            &mut reg,
            "heal_bytes",
            "Bytes moved by repairs",
            r(&h.bytes_moved),
        );
        gauge(
            &mut reg,
            "heal_oldest_degraded_seconds",
            "Age of the oldest chunk waiting for repair",
            r(&h.oldest_degraded_secs) as f64,
        );
    }
    if let Some(s) = &ctx.scrub {
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut reg,
            "scrub_local_bytes",
            "Local shard bytes re-hashed",
            r(&s.local_bytes),
        );
        counter(
            &mut reg,
            "scrub_local_bad",
            "Local chunks found rotted",
            r(&s.local_bad),
        );
        counter(
            &mut reg,
            "scrub_challenges",
            "Proofs of possession asked",
            r(&s.challenges),
        );
        counter(
            &mut reg,
            "scrub_challenges_failed",
            "Proofs that failed",
            r(&s.challenges_failed),
        );
    }
    let mut worker_rows = Vec::new();
    for w in &ctx.workers {
        let w = w.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (k, v) in &w.progress.counters {
            worker_rows.push((
                vec![
                    ("worker".to_owned(), w.name.clone()),
                    ("counter".to_owned(), (*k).to_owned()),
                ],
                *v as f64,
            ));
        }
    }
    gauges(
        &mut reg,
        "worker",
        "Background workers' counters",
        worker_rows,
    );
    process(&mut reg);
    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        return "# encoding failed\n".into();
    }
    out
}

fn peers(reg: &mut Registry, peers: &Value) {
    let list = peers.as_array().cloned().unwrap_or_default();
    let row = |p: &Value, k: &str| {
        (
            vec![
                (
                    "peer".to_owned(),
                    p["id"].as_str().unwrap_or("?").to_owned(),
                ),
                (
                    "name".to_owned(),
                    p["name"].as_str().unwrap_or("?").to_owned(),
                ),
            ],
            num(&p[k]),
        )
    };
    gauges(
        reg,
        "peers",
        "Members of the network (other than this node)",
        vec![(Vec::new(), list.len() as f64)],
    );
    gauges(
        reg,
        "peer_connected",
        "1 while connected",
        list.iter().map(|p| row(p, "connected")).collect(),
    );
    gauges(
        reg,
        "peer_rtt_ms",
        "Smoothed round trip, ms",
        list.iter().map(|p| row(p, "srtt_ms")).collect(),
    );
    gauges(
        reg,
        "peer_score",
        "Proximity × availability × (1 − loss)",
        list.iter().map(|p| row(p, "score")).collect(),
    );
    gauges(
        reg,
        "peer_loss",
        "Share of probes lost",
        list.iter().map(|p| row(p, "loss")).collect(),
    );
}

/// This process's CPU seconds and I/O bytes.
fn process(reg: &mut Registry) {
    let ticks = 100.0; // USER_HZ on Linux
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        && let Some(rest) = stat.rsplit(')').next()
    {
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After the command: state is field 3; utime 14 and stime 15.
        let get = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        gauges(
            reg,
            "process_cpu_seconds",
            "CPU time of this process",
            vec![
                (label("mode", "user"), get(14) / ticks),
                (label("mode", "system"), get(15) / ticks),
            ],
        );
    }
    if let Ok(io) = std::fs::read_to_string("/proc/self/io") {
        let rows = io
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                let v: f64 = v.trim().parse().ok()?;
                matches!(k, "read_bytes" | "write_bytes").then(|| (label("what", k), v))
            })
            .collect();
        gauges(
            reg,
            "process_io_bytes",
            "Bytes this process read and wrote on disk",
            rows,
        );
    }
}
