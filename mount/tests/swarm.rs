//! The swarm with real processes on loopback: a `pangea-mount` and
//! `pangea serve` storage nodes, each on its own 127.77.T.N address
//! (T: one per test, so tests run side by side), talking TCP.
//!
//! * five nodes: mixed files written, the backlog drained, the local
//!   copies deleted; any m storage nodes killed and every byte reads back;
//!   m+1 killed and a read fails with EIO within the deadline, never with
//!   wrong bytes; restarted (without their token) and everything reads;
//! * a peer whose packets are dropped (iptables) costs a read at most the
//!   deadline, and reads go on from the other holders;
//! * a mount restarted with a backlog finishes its uploads;
//! * tokens: expired, forged, used up are refused with one line, fast; a
//!   removed member is cut off within 2 s and its shards placed again;
//! * a full storage node is skipped and nothing is dropped.
//!
//! Every RNG is seeded (`PANGEA_TEST_SEED` replays a run).

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Mount, Rng, wait_for};
use serde_json::Value;

const PANGEA: &str = env!("CARGO_BIN_EXE_pangea");
/// The port every node listens on (each on its own address).
const PORT: u16 = 17410;
/// The mount's read deadline on peers (`--op-timeout`).
const OP_TIMEOUT: u64 = 3;

fn addr(test: u8, node: u8) -> String {
    format!("/ip4/127.77.{test}.{node}/tcp/{PORT}")
}

/// The same over QUIC.
fn quic(test: u8, node: u8) -> String {
    format!("/ip4/127.77.{test}.{node}/udp/{PORT}/quic-v1")
}

/// A `pangea serve` process. Killed when dropped.
struct Serve {
    dir: PathBuf,
    listen: String,
    quota: String,
    out: PathBuf,
    child: Option<Child>,
    peer: String,
    /// More arguments for `pangea serve`.
    extra: Vec<String>,
}

impl Serve {
    /// Starts a storage node and waits until it listens; panics with its
    /// output if it exits first.
    fn start(dir: &Path, listen: &str, quota: &str, join: Option<&str>) -> Serve {
        Serve::start_with(dir, listen, quota, join, &[])
    }

    /// The same, with more arguments.
    fn start_with(
        dir: &Path,
        listen: &str,
        quota: &str,
        join: Option<&str>,
        extra: &[String],
    ) -> Serve {
        let mut s = Serve {
            dir: dir.to_path_buf(),
            listen: listen.into(),
            quota: quota.into(),
            out: dir.with_extension("out"),
            child: None,
            peer: String::new(),
            extra: extra.to_vec(),
        };
        s.spawn(join);
        s
    }

    fn spawn(&mut self, join: Option<&str>) {
        let _ = fs::remove_file(&self.out);
        let out = fs::File::create(&self.out).expect("serve output");
        let mut cmd = Command::new(PANGEA);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--listen")
            .arg(&self.listen)
            .arg("--quota")
            .arg(&self.quota)
            .args(&self.extra)
            .env("PANGEA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("fd"))
            .stderr(out);
        if let Some(t) = join {
            cmd.arg("--join").arg(t);
        }
        self.child = Some(cmd.spawn().expect("spawn pangea serve"));
        let t = Instant::now();
        loop {
            let text = fs::read_to_string(&self.out).unwrap_or_default();
            if text.contains("listening on") {
                if let Some(l) = text
                    .lines()
                    .find(|l| l.starts_with("pangea serve: peer id "))
                {
                    self.peer = l["pangea serve: peer id ".len()..].trim().to_owned();
                }
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                panic!("pangea serve exited with {st}:\n{text}");
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "serve did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        common::signal(c.id(), libc::SIGTERM);
        common::wait_exit(&mut c, Duration::from_secs(20)).expect("serve stops on SIGTERM")
    }

    /// Starts it again (without a token: it rejoins with what it held).
    fn restart(&mut self) {
        assert!(self.child.is_none());
        self.spawn(None);
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- serve {} output\n{}", self.dir.display(), self.output());
        }
        self.kill();
    }
}

fn cli(args: &[&str]) -> Output {
    Command::new(PANGEA)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run pangea")
}

fn cli_ok(args: &[&str]) -> String {
    let o = cli(args);
    assert!(
        o.status.success(),
        "pangea {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn status(data: &Path) -> Value {
    let d = data.to_str().expect("utf-8 path");
    serde_json::from_str(&cli_ok(&["status", "--json", "--data-dir", d])).expect("status json")
}

fn invite(data: &Path, uses: u16, expires: &str) -> String {
    let d = data.to_str().expect("utf-8 path");
    cli_ok(&[
        "invite",
        "--data-dir",
        d,
        "--uses",
        &uses.to_string(),
        "--expires",
        expires,
    ])
    .trim()
    .to_owned()
}

/// Waits until every chunk is placed on live peers ("safe to unplug").
fn wait_placed(data: &Path, timeout: Duration) -> Value {
    let t = Instant::now();
    loop {
        let s = status(data);
        // (sync(1) of a file fsyncs it: its chunks are committed, and
        // queued, before the caller waits here.)
        if s["safe_to_unplug"] == Value::Bool(true) && s["chunks"]["placed"].as_u64() > Some(0) {
            return s;
        }
        assert!(
            t.elapsed() < timeout,
            "backlog not drained in {timeout:?}: {s}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A mount on the network at `addr(test, 1)`, its admin.
/// A mount on network `test` (listening at `listen(test, 1)`, with
/// `extra` arguments; its admin) and `n` storage nodes joined with one
/// invite, all connected, and the (k, m) worker's period passed.
fn cluster(test: u8, n: u8, listen: fn(u8, u8) -> String, extra: &[&str]) -> (Mount, Vec<Serve>) {
    let mut m = Mount::unstarted(None);
    m.args.extend([
        "--listen".into(),
        listen(test, 1),
        "--op-timeout".into(),
        OP_TIMEOUT.to_string(),
    ]);
    m.args.extend(extra.iter().map(|a| a.to_string()));
    m.start();
    let token = if n > 0 {
        invite(&m.data, u16::from(n), "1h")
    } else {
        String::new()
    };
    let serves: Vec<Serve> = (0..n)
        .map(|i| {
            Serve::start(
                &m.scratch.join(format!("serve{i}")),
                &listen(test, 10 + i),
                "2G",
                Some(&token),
            )
        })
        .collect();
    wait_for("every member connected", Duration::from_secs(20), || {
        status(&m.data)["peers"].as_array().is_some_and(|p| {
            p.len() == usize::from(n) && p.iter().all(|p| p["connected"] == Value::Bool(true))
        })
    });
    std::thread::sleep(Duration::from_secs(3)); // the (k, m) worker's period
    (m, serves)
}

/// Fills `dir` with `total` bytes of mixed files: incompressible, text,
/// and many small ones. Returns the paths of the large random files.
fn mixed_tree(dir: &Path, rng: &mut Rng, total: usize) -> Vec<PathBuf> {
    fs::create_dir_all(dir.join("small")).expect("tree");
    let mut big = Vec::new();
    let random = total * 9 / 16;
    let text = total * 5 / 16;
    let small = total - random - text;
    for i in 0..3 {
        let mut b = vec![0u8; random / 3];
        for w in b.chunks_mut(8) {
            let x = rng.next_u64().to_le_bytes();
            w.copy_from_slice(&x[..w.len()]);
        }
        let p = dir.join(format!("random{i}.bin"));
        fs::write(&p, &b).expect("write");
        big.push(p);
    }
    let mut t = String::with_capacity(text);
    while t.len() < text {
        t.push_str(&format!(
            "line {} of a log, value {}\n",
            t.len(),
            rng.next_u64() % 1000
        ));
    }
    fs::write(dir.join("log.txt"), t).expect("write");
    let mut written = 0;
    let mut n = 0;
    while written < small {
        let len = rng.range(1, 40_000) as usize;
        let b: Vec<u8> = (0..len)
            .map(|_| (rng.next_u64() % 64) as u8 + b' ')
            .collect();
        fs::write(dir.join(format!("small/f{n:05}")), b).expect("write");
        written += len;
        n += 1;
    }
    big
}

/// Unmounts, deletes the mount's local chunk files (its copies of every
/// shard), and mounts again: every read of file data now goes to peers.
fn empty_local_copies(m: &mut Mount) {
    let status = m.unmount();
    assert!(status.success(), "unmount: {status}");
    let chunks = m.data.join("chunks");
    let mut n = 0;
    for e in walk(&chunks) {
        fs::remove_file(e).expect("remove chunk file");
        n += 1;
    }
    assert!(n > 0, "no chunk files to remove");
    m.start();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Reads `file` until the end or an error: the bytes read, the error and
/// the time taken.
fn read_all(file: &Path) -> (Vec<u8>, Option<std::io::Error>, Duration) {
    let t = Instant::now();
    let mut out = Vec::new();
    let mut f = match fs::File::open(file) {
        Ok(f) => f,
        Err(e) => return (out, Some(e), t.elapsed()),
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return (out, None, t.elapsed()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Some(e), t.elapsed()),
        }
    }
}

fn same_tree(m: &Mount, what: &str) {
    m.sh_ok(&format!(
        "diff -r -q \"$S/src\" \"$M/src\" || {{ echo '{what}: trees differ'; exit 1; }}"
    ));
}

#[test]
fn five_nodes_lose_any_m_storage_nodes_and_nothing_else() {
    let (mut rng, seed) = Rng::from_env("PANGEA_TEST_SEED");
    eprintln!("seed {seed}");
    // Four storage members: new chunks get k=2, m=2 (one shard each).
    // No healer: this test is about reads with shards missing.
    let (mut m, mut serves) = cluster(1, 4, addr, &["--no-heal"]);
    let big = mixed_tree(&m.scratch.join("src"), &mut rng, 256 << 20);
    m.sh_ok("cp -a \"$S/src\" \"$M/src\" && find \"$M/src\" -type f -exec sync {} +");
    let t = Instant::now();
    let s = wait_placed(&m.data, Duration::from_secs(240));
    eprintln!("placed in {:?}: {}", t.elapsed(), s["chunks"]);
    assert_eq!(s["chunks"]["local_only"], 0);
    assert_eq!(s["chunks"]["degraded"], 0);
    let h = m.sh_ok("getfattr --only-values -n user.pangea.health \"$M/src/random0.bin\"");
    assert!(
        h.contains("degraded=0 local_only=0 lost=0") && !h.contains("placed=0"),
        "{h}"
    );
    m.sh_fails("setfattr -n user.pangea.health -v x \"$M/src/random0.bin\"");
    empty_local_copies(&mut m);
    same_tree(&m, "all peers up, no local copies");

    // Any m = 2 storage nodes down: everything still reads.
    let mut order: Vec<usize> = (0..4).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.range(0, i as u64 + 1) as usize);
    }
    serves[order[0]].kill();
    serves[order[1]].kill();
    m.remount(); // an empty cache, and the kernel's too
    same_tree(&m, "m storage nodes down");

    // m + 1 down: EIO within the deadline, never wrong bytes.
    serves[order[2]].kill();
    m.remount();
    m.expected_errors.push("unreadable");
    for f in &big {
        let rel = f.strip_prefix(&m.scratch).expect("under scratch");
        let (got, err, took) = read_all(&m.mnt.join(rel));
        let want = fs::read(f).expect("original");
        assert!(
            err.is_some(),
            "{} read whole with m+1 nodes down",
            rel.display()
        );
        assert_eq!(err.as_ref().and_then(|e| e.raw_os_error()), Some(libc::EIO));
        assert!(
            want.starts_with(&got),
            "{}: wrong bytes before the error",
            rel.display()
        );
        assert!(
            took < Duration::from_secs(OP_TIMEOUT + 5),
            "{}: EIO took {took:?}",
            rel.display()
        );
    }
    // Back up (without their token): everything reads again.
    for i in &order[..3] {
        serves[*i].restart();
    }
    m.remount();
    same_tree(&m, "all storage nodes back");
    for s in &mut serves {
        assert!(s.stop().success(), "serve exits 0 on SIGTERM");
    }
}

/// Drops every packet to and from `ip` while alive.
struct Blackhole(String);

impl Blackhole {
    fn new(ip: &str) -> Option<Blackhole> {
        let ok = ["-d", "-s"].iter().all(|dir| {
            Command::new("iptables")
                .args(["-I", "INPUT", dir, ip, "-j", "DROP"])
                .status()
                .is_ok_and(|s| s.success())
        });
        ok.then(|| Blackhole(ip.to_owned()))
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        for dir in ["-d", "-s"] {
            let _ = Command::new("iptables")
                .args(["-D", "INPUT", dir, &self.0, "-j", "DROP"])
                .status();
        }
    }
}

#[test]
fn a_peer_whose_packets_are_dropped_costs_a_read_at_most_the_deadline() {
    let (mut m, serves) = cluster(2, 4, addr, &[]);
    let (mut rng, _) = Rng::from_env("PANGEA_TEST_SEED");
    mixed_tree(&m.scratch.join("src"), &mut rng, 24 << 20);
    m.sh_ok("cp -a \"$S/src\" \"$M/src\" && find \"$M/src\" -type f -exec sync {} +");
    wait_placed(&m.data, Duration::from_secs(120));
    empty_local_copies(&mut m);
    // Connected to every peer, then one goes silent: its packets vanish,
    // its connection stays open (no reset, no close).
    let _ = status(&m.data);
    let Some(_hole) = Blackhole::new("127.77.2.10") else {
        eprintln!("SKIPPED: iptables cannot drop packets here (not root, or no iptables)");
        return;
    };
    let t = Instant::now();
    same_tree(&m, "one peer silent");
    let took = t.elapsed();
    eprintln!("read 24 MiB around a silent peer in {took:?}");
    // Hedging asks parity holders after 0.4 s: the silent peer costs each
    // read at most that, far below the deadline per chunk.
    assert!(took < Duration::from_secs(60), "took {took:?}");
    // A single file read: bounded by the deadline, never a hang.
    let (_, err, took) = read_all(&m.mnt.join("src/random0.bin"));
    assert!(err.is_none(), "{err:?}");
    assert!(took < Duration::from_secs(OP_TIMEOUT + 5), "{took:?}");
    drop(serves);
}

#[test]
fn reads_and_placement_follow_each_peers_delay_and_loss() {
    // Five storage nodes on one machine: two near, one 30 ms and one
    // 150 ms away, one losing 15% of the TCP segments it receives (a
    // transport wrapper of our own: `--simulate-delay`, `--simulate-loss`;
    // see `src/net/impair.rs`).
    // Chunks are 2+2, so placement picks four of the five for each chunk
    // and a read needs two.
    let mut m = Mount::unstarted(None);
    m.args.extend(
        [
            "--listen",
            &addr(13, 1),
            "--op-timeout",
            &OP_TIMEOUT.to_string(),
            "--k",
            "2",
            "--m",
            "2",
        ]
        .map(String::from),
    );
    m.start();
    let token = invite(&m.data, 5, "1h");
    let delays = [0u64, 0, 30, 150, 0];
    let serves: Vec<Serve> = delays
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            let extra = match (i, d) {
                (4, _) => vec!["--simulate-loss".to_owned(), "0.15".to_owned()],
                (_, 0) => Vec::new(),
                (_, d) => vec!["--simulate-delay".to_owned(), d.to_string()],
            };
            Serve::start_with(
                &m.scratch.join(format!("serve{i}")),
                &addr(13, 10 + i as u8),
                "2G",
                Some(&token),
                &extra,
            )
        })
        .collect();
    // Enough probes (every 2 s) for the smoothed RTTs and the loss rate.
    let peer = |s: &Value, id: &str| -> Value {
        s["peers"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["id"] == id).cloned())
            .unwrap_or(Value::Null)
    };
    wait_for("every peer probed", Duration::from_secs(60), || {
        let s = status(&m.data);
        serves
            .iter()
            .all(|v| peer(&s, &v.peer)["srtt_ms"].as_f64().is_some())
    });
    std::thread::sleep(Duration::from_secs(16));
    wait_for(
        "a loss seen on the lossy peer",
        Duration::from_secs(90),
        || {
            peer(&status(&m.data), &serves[4].peer)["loss"]
                .as_f64()
                .is_some_and(|l| l > 0.0)
        },
    );
    let s = status(&m.data);
    let field = |i: usize, f: &str| peer(&s, &serves[i].peer)[f].as_f64().unwrap_or(f64::NAN);
    for (i, d) in delays.iter().enumerate() {
        eprintln!(
            "peer {i} (+{d} ms{}): srtt {:.1} ms, jitter {:.1} ms, loss {:.2}, score {:.2}",
            if i == 4 { ", 15% loss" } else { "" },
            field(i, "srtt_ms"),
            field(i, "jitter_ms"),
            field(i, "loss"),
            field(i, "score"),
        );
    }
    // The smoothed RTTs follow the delays, and the scores the thresholds:
    // < 10 ms 1.0, < 50 ms 0.8, < 200 ms 0.4.
    assert!(
        field(0, "srtt_ms") < 10.0 && field(1, "srtt_ms") < 10.0,
        "{s}"
    );
    assert!((30.0..50.0).contains(&field(2, "srtt_ms")), "{s}");
    assert!((150.0..200.0).contains(&field(3, "srtt_ms")), "{s}");
    assert!(field(0, "score") > field(2, "score"), "{s}");
    assert!(field(2, "score") > field(3, "score"), "{s}");
    assert!(
        field(4, "score") < field(0, "score") && field(4, "loss") > 0.0,
        "the lossy peer scores as well as a clean one: {s}"
    );
    // Placement: best peers first, so the worst peer gets the fewest shards.
    let (mut rng, _) = Rng::from_env("PANGEA_TEST_SEED");
    mixed_tree(&m.scratch.join("src"), &mut rng, 4 << 20);
    m.sh_ok("cp -a \"$S/src\" \"$M/src\" && find \"$M/src\" -type f -exec sync {} +");
    wait_placed(&m.data, Duration::from_secs(180));
    let held = |i: usize| {
        status(&serves[i].dir)["held"]["shards"]
            .as_u64()
            .unwrap_or(0)
    };
    let placed: Vec<u64> = (0..5).map(held).collect();
    eprintln!("shards held: {placed:?}");
    let chunks = placed.iter().sum::<u64>() / 4;
    // Four of five peers take a shard of each chunk, best first: the two
    // near ones and the 30 ms one (nearly) every chunk. The fourth shard
    // goes to the lossy peer (0.95 x (1 - loss)) when its put gets through
    // in time, else to the far one (0.38): the far one only ever takes
    // what the lossy one could not.
    for i in 0..3 {
        assert!(placed[i] * 10 >= chunks * 9, "peer {i}: {placed:?}");
    }
    assert!(
        (placed[3] + placed[4]) * 20 <= chunks * 21,
        "the far and the lossy peer share one shard per chunk: {placed:?}"
    );
    // Reads: nearest first. Every read goes to the peers (no local
    // copies), and the two near ones serve most of the shards.
    let gets_before: Vec<u64> = (0..5)
        .map(|i| status(&serves[i].dir)["held"]["gets"].as_u64().unwrap_or(0))
        .collect();
    empty_local_copies(&mut m);
    same_tree(&m, "read from peers at different distances");
    let gets: Vec<u64> = (0..5)
        .map(|i| status(&serves[i].dir)["held"]["gets"].as_u64().unwrap_or(0) - gets_before[i])
        .collect();
    eprintln!("shards served: {gets:?}");
    let total: u64 = gets.iter().sum();
    // (Small chunks live inline in the index, placed on peers but read
    // here: only the others are fetched.)
    assert!(total >= chunks, "{gets:?} for {chunks} chunks");
    let near = gets[0] + gets[1];
    assert!(
        near * 10 >= total * 8,
        "the near peers served {near} of {total}: {gets:?}"
    );
    assert!(gets[3] * 10 <= total, "the far peer served {gets:?}");
    drop(serves);
}

#[test]
fn a_mount_restarted_with_a_backlog_finishes_its_uploads() {
    let (mut m, mut serves) = cluster(3, 2, addr, &[]);
    for s in &mut serves {
        s.kill();
    }
    m.sh_ok("head -c 20000000 /dev/urandom > \"$M/a\" && seq 1 300000 > \"$M/b\" && sync \"$M/a\" \"$M/b\"");
    std::thread::sleep(Duration::from_secs(3));
    let s = status(&m.data);
    assert!(
        s["upload_backlog"]["chunks"].as_u64().unwrap_or(0) > 0,
        "nothing waiting: {s}"
    );
    assert_eq!(s["safe_to_unplug"], Value::Bool(false));
    let h = m.sh_ok("getfattr --only-values -n user.pangea.health \"$M/a\"");
    assert!(h.contains("placed=0") && !h.contains("local_only=0"), "{h}");
    let a = m.sh_ok("sha256sum \"$M/a\" \"$M/b\" | cut -c1-64");
    let st = m.unmount();
    assert!(st.success());
    for s in &mut serves {
        s.restart();
    }
    m.start();
    wait_placed(&m.data, Duration::from_secs(120));
    empty_local_copies(&mut m);
    assert_eq!(m.sh_ok("sha256sum \"$M/a\" \"$M/b\" | cut -c1-64"), a);
}

fn join_fails(dir: &Path, listen: &str, token: &str) -> (String, Duration) {
    let t = Instant::now();
    let o = Command::new(PANGEA)
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", listen, "--join", token])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let took = t.elapsed();
    assert!(!o.status.success(), "joined with a bad token");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let last = err.lines().last().unwrap_or_default().to_owned();
    (last, took)
}

#[test]
fn bad_tokens_are_refused_fast_and_a_removed_member_is_cut_off() {
    let (m, _) = cluster(4, 0, addr, &[]);
    let sc = &m.scratch;
    // Expired.
    let old = invite(&m.data, 1, "1s");
    std::thread::sleep(Duration::from_millis(1500));
    let (e, took) = join_fails(&sc.join("x1"), &addr(4, 20), &old);
    assert!(e.contains("expired"), "{e}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    // Altered (a forged signature or a typo).
    let good = invite(&m.data, 1, "1h");
    let mut forged: Vec<char> = good.chars().collect();
    let i = forged.len() - 3;
    forged[i] = if forged[i] == 'x' { 'y' } else { 'x' };
    let forged: String = forged.into_iter().collect();
    let (e, took) = join_fails(&sc.join("x2"), &addr(4, 21), &forged);
    assert!(
        e.contains("forged") || e.contains("damaged") || e.contains("signature"),
        "{e}"
    );
    assert!(took < Duration::from_secs(10));
    let (e, _) = join_fails(&sc.join("x3"), &addr(4, 22), "hello");
    assert!(e.contains("not an invite token"), "{e}");
    // Used up: one use, two machines.
    let mut a = Serve::start(&sc.join("a"), &addr(4, 10), "1G", Some(&good));
    let (e, took) = join_fails(&sc.join("x4"), &addr(4, 23), &good);
    assert!(e.contains("used up"), "{e}");
    assert!(took < Duration::from_secs(10));
    // A storage node without a network says what to do.
    let (e, _) = join_fails(&sc.join("x5"), &addr(4, 24), "");
    assert!(!e.is_empty());

    // Removal: two more members, a file placed on all three.
    let t2 = invite(&m.data, 2, "1h");
    let b = Serve::start(&sc.join("b"), &addr(4, 11), "1G", Some(&t2));
    let c = Serve::start(&sc.join("c"), &addr(4, 12), "1G", Some(&t2));
    wait_for("3 members connected", Duration::from_secs(20), || {
        status(&m.data)["peers"]
            .as_array()
            .is_some_and(|p| p.len() == 3 && p.iter().all(|p| p["connected"] == Value::Bool(true)))
    });
    std::thread::sleep(Duration::from_secs(3));
    m.sh_ok("head -c 8000000 /dev/urandom > \"$M/f\" && sync \"$M/f\"");
    wait_placed(&m.data, Duration::from_secs(60));
    let d = m.data.to_str().expect("utf-8");
    let t = Instant::now();
    cli_ok(&["remove", &a.peer, "--data-dir", d]);
    // Within 2 s: gone from the roster, and a's connections closed by the
    // mount and by the other members.
    let a_dir = a.dir.clone();
    wait_for("the removed member cut off", Duration::from_secs(2), || {
        let s = status(&a_dir);
        s["peers"]
            .as_array()
            .is_some_and(|p| p.iter().all(|p| p["connected"] != Value::Bool(true)))
    });
    eprintln!("cut off in {:?}", t.elapsed());
    let peers = status(&m.data)["peers"].clone();
    assert!(
        peers
            .as_array()
            .is_some_and(|p| p.iter().all(|p| p["id"] != Value::String(a.peer.clone()))),
        "{peers}"
    );
    // Its shards count as lost and are placed again on b and c.
    let s = wait_placed(&m.data, Duration::from_secs(60));
    assert_eq!(s["chunks"]["degraded"], 0, "{s}");
    // It stays out: restarted, it cannot get back in.
    a.kill();
    a.restart();
    std::thread::sleep(Duration::from_secs(3));
    let s = status(&a.dir);
    assert!(
        s["peers"]
            .as_array()
            .is_some_and(|p| p.iter().all(|p| p["connected"] != Value::Bool(true))),
        "{s}"
    );
    drop((b, c));
}

/// Over QUIC (every other test runs over TCP).
#[test]
fn a_full_storage_node_is_skipped_and_nothing_is_dropped() {
    let mut m = Mount::unstarted(None);
    // (No index backup: its small pieces would fit the full node's 1K.)
    m.args.extend([
        "--listen".into(),
        quic(5, 1),
        "--op-timeout".into(),
        OP_TIMEOUT.to_string(),
        "--no-backup".into(),
    ]);
    m.start();
    let token = invite(&m.data, 3, "1h");
    let full = Serve::start(&m.scratch.join("full"), &quic(5, 10), "1K", Some(&token));
    let others: Vec<Serve> = (1..3u8)
        .map(|i| {
            Serve::start(
                &m.scratch.join(format!("s{i}")),
                &quic(5, 10 + i),
                "1G",
                Some(&token),
            )
        })
        .collect();
    wait_for("3 members", Duration::from_secs(20), || {
        status(&m.data)["peers"]
            .as_array()
            .is_some_and(|p| p.len() == 3)
    });
    std::thread::sleep(Duration::from_secs(3));
    m.sh_ok("head -c 12000000 /dev/urandom > \"$M/f\" && sync \"$M/f\"");
    let s = wait_placed(&m.data, Duration::from_secs(90));
    assert_eq!(s["chunks"]["degraded"], 0);
    // Read back over QUIC from the two that hold it.
    let sum = m.sh_ok("sha256sum < \"$M/f\"");
    empty_local_copies(&mut m);
    assert_eq!(m.sh_ok("sha256sum < \"$M/f\""), sum);
    let fs = status(&full.dir);
    assert_eq!(fs["held"]["bytes"], 0, "{fs}");
    assert!(
        fs["held"]["refused_full"].as_u64().unwrap_or(0) >= 1,
        "{fs}"
    );
    drop(others);
}

fn local_bytes(m: &Mount) -> u64 {
    walk(&m.data.join("chunks"))
        .iter()
        .filter_map(|p| fs::metadata(p).ok())
        .map(|md| md.len())
        .sum()
}

#[test]
fn the_local_disk_is_a_cache_of_placed_chunks() {
    let (mut m, mut serves) = cluster(6, 2, addr, &["--local-max", "2M"]);
    // Peers down: nothing can be placed, so nothing may be evicted.
    for s in &mut serves {
        s.kill();
    }
    m.sh_ok("head -c 16000000 /dev/urandom > \"$S/f\" && cp \"$S/f\" \"$M/f\" && sync \"$M/f\"");
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        local_bytes(&m) >= 16_000_000,
        "evicted before placed: {}",
        local_bytes(&m)
    );
    // Peers back: placed, then evicted down to the limit.
    for s in &mut serves {
        s.restart();
    }
    wait_placed(&m.data, Duration::from_secs(90));
    wait_for("eviction to the limit", Duration::from_secs(60), || {
        local_bytes(&m) <= 2 << 20
    });
    let h = m.sh_ok("getfattr --only-values -n user.pangea.health \"$M/f\"");
    assert!(
        h.contains("local_only=0 lost=0") && !h.contains("placed=0"),
        "{h}"
    );
    m.remount();
    m.sh_ok("cmp \"$S/f\" \"$M/f\"");
    // Evicted chunks come back from peers, not to the disk.
    assert!(local_bytes(&m) <= 2 << 20);
}

#[test]
fn sync_remote_makes_fsync_wait_for_the_peers() {
    let (mut m, mut serves) = cluster(7, 2, addr, &["-o", "sync_remote"]);
    // fsync returns with every chunk on the peers (k=1, m=1: both shards).
    m.sh_ok("head -c 9000000 /dev/urandom | dd of=\"$M/f\" bs=1M conv=fsync status=none");
    let h = m.sh_ok("getfattr --only-values -n user.pangea.health \"$M/f\"");
    assert!(
        h.contains("degraded=0 local_only=0 lost=0"),
        "after fsync: {h}"
    );
    // Peers gone: fsync fails (EIO) within its deadline (six operation
    // timeouts, 18 s), and so does the close after it: nothing hangs.
    for s in &mut serves {
        s.kill();
    }
    let t = Instant::now();
    let err =
        m.sh_fails("head -c 3000000 /dev/urandom | dd of=\"$M/g\" bs=1M conv=fsync status=none");
    assert!(err.contains("Input/output error"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(50), "{:?}", t.elapsed());
    m.expected_errors.push("peers:");
}

#[test]
fn a_chunk_on_one_peer_alone_is_never_evicted() {
    // One storage member holds every shard: losing it would lose the
    // chunk, so the local copy stays whatever --local-max says.
    let (m, _serves) = cluster(8, 1, addr, &["--local-max", "1M"]);
    m.sh_ok("head -c 8000000 /dev/urandom > \"$M/f\" && sync \"$M/f\"");
    wait_placed(&m.data, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(8)); // the evictor's period, and more
    assert!(local_bytes(&m) >= 8_000_000, "evicted: {}", local_bytes(&m));
}

#[test]
fn a_local_copy_damaged_beyond_repair_is_read_from_the_peers() {
    let (mut m, _serves) = cluster(9, 2, addr, &[]);
    m.sh_ok("head -c 9000000 /dev/urandom > \"$S/f\" && cp \"$S/f\" \"$M/f\" && sync \"$M/f\"");
    wait_placed(&m.data, Duration::from_secs(60));
    let st = m.unmount();
    assert!(st.success());
    // Every local chunk file zeroed (same length): more than m bad shards.
    for p in walk(&m.data.join("chunks")) {
        let len = fs::metadata(&p).expect("chunk file").len() as usize;
        fs::write(&p, vec![0u8; len]).expect("zero a chunk file");
    }
    m.start();
    m.expected_errors.push("unreadable");
    m.sh_ok("cmp \"$S/f\" \"$M/f\"");
}

/// The healer's status line.
fn healer(data: &Path) -> Value {
    status(data)["healer"].clone()
}

#[test]
fn a_lost_storage_node_is_healed_while_reads_go_on() {
    let (mut rng, seed) = Rng::from_env("PANGEA_TEST_SEED");
    eprintln!("seed {seed}");
    let (mut m, mut serves) = cluster(10, 4, addr, &["--heal-grace", "3s", "--heal-rescan", "2s"]);
    mixed_tree(&m.scratch.join("src"), &mut rng, 24 << 20);
    m.sh_ok("cp -a \"$S/src\" \"$M/src\" && find \"$M/src\" -type f -exec sync {} +");
    wait_placed(&m.data, Duration::from_secs(120));
    assert_eq!(healer(&m.data)["repaired"], 0, "nothing to heal yet");
    // Every repair and read now fetches from the peers.
    empty_local_copies(&mut m);
    serves[0].kill();
    let t = Instant::now();
    let mut rounds = 0;
    loop {
        // No read fails while the healer works.
        same_tree(&m, "while healing");
        rounds += 1;
        let s = status(&m.data);
        if s["chunks"]["degraded"] == 0
            && s["chunks"]["local_only"] == 0
            && s["healer"]["queued"] == 0
            && s["healer"]["repaired"].as_u64() > Some(0)
        {
            eprintln!(
                "healed in {:?} ({rounds} full reads meanwhile): {}",
                t.elapsed(),
                s["healer"]
            );
            let log = m.log_text();
            for l in log.lines().filter(|l| l.contains("repair failed")).take(3) {
                eprintln!("  {l}");
            }
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "not healed in 120 s: {s}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // pangea heal --now --wait: nothing left, exit 0.
    let o = cli(&[
        "heal",
        "--now",
        "--wait",
        "30",
        "--json",
        "--data-dir",
        m.data.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).expect("heal json");
    assert_eq!(v["queued"], 0, "{v}");
    // Full redundancy again: any one more storage node may go.
    serves[1].kill();
    m.remount();
    same_tree(&m, "healed, then a second node down");
    let h = healer(&m.data);
    assert_eq!(h["failing"], 0, "{h}");
    drop(serves);
}

/// Flips one byte in the middle of `file`.
fn flip_a_byte(file: &Path) {
    let mut b = fs::read(file).expect("read");
    let i = b.len() / 2;
    b[i] ^= 0x5a;
    fs::write(file, b).expect("write");
}

#[test]
fn the_scrubber_finds_rot_on_a_peer_and_here_and_the_healer_repairs_it() {
    let (mut rng, _) = Rng::from_env("PANGEA_TEST_SEED");
    let (mut m, serves) = cluster(
        11,
        4,
        addr,
        &["--scrub-period", "4s", "--scrub-challenges", "500"],
    );
    mixed_tree(&m.scratch.join("src"), &mut rng, 4 << 20);
    m.sh_ok("cp -a \"$S/src\" \"$M/src\" && find \"$M/src\" -type f -exec sync {} +");
    wait_placed(&m.data, Duration::from_secs(60));
    // A shard rots on a storage node's disk (its owner's proof fails),
    // and a chunk file rots here.
    let held = walk(&serves[0].dir.join("held"));
    assert!(!held.is_empty(), "serve 0 holds nothing");
    flip_a_byte(&held[0]);
    let local = walk(&m.data.join("chunks"));
    flip_a_byte(&local[0]);
    m.expected_errors.push("rotted");
    wait_for("the scrubber finds both", Duration::from_secs(60), || {
        let s = status(&m.data);
        s["scrubber"]["challenges_failed"].as_u64() >= Some(1)
            && s["scrubber"]["local_bad"].as_u64() >= Some(1)
    });
    wait_for(
        "the healer re-places the rotted shard",
        Duration::from_secs(60),
        || {
            let s = status(&m.data);
            s["healer"]["repaired"].as_u64() >= Some(1)
                && s["chunks"]["degraded"] == 0
                && s["healer"]["queued"] == 0
        },
    );
    same_tree(&m, "after the scrub");
    // The local chunk file was rewritten in place.
    let s = status(&m.data);
    eprintln!("scrubber: {}", s["scrubber"]);
    let paused = cli_ok(&[
        "scrub",
        "--pause",
        "--data-dir",
        m.data.to_str().expect("utf-8"),
    ]);
    assert!(paused.contains("\"paused\":true"), "{paused}");
    drop(serves);
}

/// GET /metrics at `addr`: the body.
fn scrape(addr: &str) -> String {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
    let mut out = String::new();
    c.read_to_string(&mut out).expect("response");
    let (head, body) = out.split_once("\r\n\r\n").expect("http response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The value of the sample `name` (with its labels, as printed).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn the_metrics_endpoint_is_scraped_and_parsed_and_stat_names_every_holder() {
    let at = "127.77.12.1:19410";
    let (m, serves) = cluster(12, 2, addr, &["--metrics", at]);
    m.sh_ok("head -c 3000000 /dev/urandom > \"$M/f\" && sync \"$M/f\" && cat \"$M/f\" > /dev/null");
    wait_placed(&m.data, Duration::from_secs(60));
    let text = scrape(at);
    // Every sample line parses: name{labels} value.
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let v = l.rsplit(' ').next().expect("value");
        assert!(v.parse::<f64>().is_ok(), "unparsable sample: {l}");
    }
    assert!(text.ends_with("# EOF\n"), "not OpenMetrics text");
    let writes = sample(&text, "pangea_fuse_op_seconds_count{op=\"write\"}");
    assert!(writes.is_some_and(|n| n >= 1.0), "no write timed:\n{text}");
    assert!(sample(&text, "pangea_fuse_op_seconds_count{op=\"fsync\"}").is_some_and(|n| n >= 1.0));
    assert_eq!(sample(&text, "pangea_upload_backlog_chunks"), Some(0.0));
    assert_eq!(sample(&text, "pangea_safe_to_unplug"), Some(1.0));
    assert!(sample(&text, "pangea_chunks{state=\"placed\"}").is_some_and(|n| n >= 1.0));
    assert_eq!(sample(&text, "pangea_peers"), Some(2.0));
    assert!(text.contains("pangea_peer_rtt_ms{"), "{text}");
    assert!(sample(&text, "pangea_ces_chunks_encoded_total").is_some_and(|n| n >= 1.0));
    assert!(text.contains("pangea_process_cpu_seconds{mode=\"user\"}"));
    assert!(text.contains("pangea_worker{worker=\"healer\""));
    assert!(text.contains("pangea_heal_queue "));
    // pangea stat: every chunk of the file, with a holder per shard.
    let st: Value = serde_json::from_str(&cli_ok(&[
        "stat",
        "--json",
        "--data-dir",
        m.data.to_str().expect("utf-8"),
        m.mnt.join("f").to_str().expect("utf-8"),
    ]))
    .expect("stat json");
    let chunks = st["chunks"].as_array().expect("chunks");
    assert!(!chunks.is_empty(), "{st}");
    for c in chunks {
        let n = c["k"].as_u64().unwrap_or(0) + c["m"].as_u64().unwrap_or(0);
        assert_eq!(
            c["holders"].as_array().map(Vec::len),
            Some(n as usize),
            "{c}"
        );
        assert!(
            c["holders"]
                .as_array()
                .expect("holders")
                .iter()
                .all(|h| h["live"] == true)
        );
    }
    let health = st["health"].as_str().expect("health");
    assert!(health.contains("degraded=0"), "{st}");
    // One /24 for every peer, but the local copy is a domain of its own.
    assert!(
        health.contains(&format!("domain_safe={}", chunks.len())),
        "{health}"
    );
    let human = cli_ok(&[
        "stat",
        "--data-dir",
        m.data.to_str().expect("utf-8"),
        m.mnt.join("f").to_str().expect("utf-8"),
    ]);
    assert!(human.contains("placed="), "{human}");
    // Anything but GET /metrics is a 404.
    let mut c = std::net::TcpStream::connect(at).expect("connect");
    use std::io::Write;
    write!(c, "GET / HTTP/1.1\r\n\r\n").expect("request");
    let mut out = String::new();
    c.read_to_string(&mut out).expect("response");
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    drop(serves);
}

/// A canonical description of the tree under `root`: per path its type,
/// mode, size, mtime, content hash or link target, user xattrs, and which
/// paths are hard links of one another.
fn tree_manifest(root: &Path) -> Vec<String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut inodes: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).expect("lstat");
        let rel = p
            .strip_prefix(root)
            .expect("under root")
            .display()
            .to_string();
        let kind = md.file_type();
        let what = if kind.is_symlink() {
            format!("link -> {}", fs::read_link(&p).expect("readlink").display())
        } else if kind.is_dir() {
            for e in fs::read_dir(&p).expect("readdir").flatten() {
                stack.push(e.path());
            }
            "dir".to_owned()
        } else {
            let bytes = fs::read(&p).expect("read");
            if md.nlink() > 1 {
                inodes.entry(md.ino()).or_default().push(rel.clone());
            }
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            format!("file {} {:016x}", bytes.len(), h.finish())
        };
        // User xattrs (not the filesystem's own user.pangea.* views).
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).expect("path");
        let mut names = vec![0u8; 4096];
        // SAFETY: the buffer is valid for its length; the path is a C string.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        let mut xattrs = Vec::new();
        if n > 0 {
            for name in names[..n as usize]
                .split(|b| *b == 0)
                .filter(|n| !n.is_empty())
            {
                if !name.starts_with(b"user.") || name.starts_with(b"user.pangea.") {
                    continue;
                }
                let cn = std::ffi::CString::new(name).expect("name");
                let mut v = vec![0u8; 65536];
                // SAFETY: as above.
                let len = unsafe {
                    libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len())
                };
                v.truncate(usize::try_from(len).unwrap_or(0));
                xattrs.push(format!(
                    "{}={}",
                    String::from_utf8_lossy(name),
                    String::from_utf8_lossy(&v)
                ));
            }
        }
        xattrs.sort();
        let mtime = if kind.is_symlink() {
            0
        } else {
            md.mtime() * 1_000_000_000 + md.mtime_nsec()
        };
        out.push(format!(
            "{rel}: {what} mode {:o} mtime {mtime} xattrs {xattrs:?}",
            md.mode()
        ));
    }
    for (_, mut paths) in inodes {
        paths.sort();
        out.push(format!("hard links: {paths:?}"));
    }
    out.sort();
    out
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[test]
fn a_lost_laptop_is_recovered_from_its_kit_then_again_with_a_storage_node_down() {
    let (mut m, mut serves) = cluster(14, 4, addr, &["--backup-every", "2s"]);
    let (mut rng, _) = Rng::from_env("PANGEA_TEST_SEED");
    mixed_tree(&m.scratch.join("src"), &mut rng, 6 << 20);
    m.sh_ok(concat!(
        "cd \"$S/src\" && ln small/f00001 hard1 && ln small/f00001 small/hard2 && ",
        "ln -s small/f00002 sym1 && ln -s /nowhere dangling && mkdir -p d/e/f && ",
        "setfattr -n user.color -v blue log.txt && setfattr -n user.empty d/e && ",
        "chmod 0640 small/f00003 && chmod 0750 d && touch -d '2001-02-03 04:05:06' random0.bin"
    ));
    m.sh_ok("cp -a \"$S/src\" \"$M/src\" && find \"$M/src\" -type f -exec sync {} +");
    let want = tree_manifest(&m.mnt.join("src"));
    assert!(want.len() > 40, "{}", want.len());
    wait_placed(&m.data, Duration::from_secs(120));
    // The backup is current: a generation taken after everything placed.
    let placed_at = now_ms();
    wait_for(
        "a backup taken after the tree was placed",
        Duration::from_secs(60),
        || {
            status(&m.data)["backup"]["taken_ms"]
                .as_u64()
                .is_some_and(|t| t > placed_at)
        },
    );
    let s = status(&m.data);
    eprintln!("backup: {}", s["backup"]);
    let d = m.data.to_str().expect("utf-8").to_owned();
    let kit = cli_ok(&["key", "export", "--data-dir", &d]);
    assert!(kit.starts_with("pangea recovery kit v1 plain"), "{kit}");
    eprintln!("the kit ({} lines):\n{kit}", kit.lines().count());
    let kit_file = m.scratch.join("kit.txt");
    fs::write(&kit_file, &kit).expect("kit");
    let sealed = Command::new(PANGEA)
        .args(["key", "export", "--passphrase", "--data-dir", &d])
        .env("PANGEA_KIT_PASSPHRASE", "correct horse battery staple")
        .output()
        .expect("pangea key export");
    assert!(
        sealed.status.success(),
        "{}",
        String::from_utf8_lossy(&sealed.stderr)
    );
    assert!(String::from_utf8_lossy(&sealed.stderr).contains("whoever holds"));
    let sealed_file = m.scratch.join("kit-sealed.txt");
    fs::write(&sealed_file, &sealed.stdout).expect("kit");
    // The laptop is lost: its daemon dies and its data dir is gone. (A
    // copy is kept aside: the old device comes back at the end.)
    m.crash();
    let old_data = m.scratch.join("old-data");
    m.sh_ok(&format!("cp -a \"{d}\" \"{}\"", old_data.display()));
    fs::remove_dir_all(&m.data).expect("remove the data dir");
    // A kit is checked without touching anything.
    let kf = kit_file.to_str().expect("utf-8");
    let dry = cli_ok(&["recover", "--dry-run", "--json", kf]);
    let dry: Value = serde_json::from_str(&dry).expect("json");
    assert!(dry["generation"].as_u64() > Some(0), "{dry}");
    // A typo on line 2 is found on line 2; a wrong passphrase is refused.
    let mut lines: Vec<String> = kit.lines().map(String::from).collect();
    let typo = if lines[2].as_bytes()[3] == b'A' {
        "B"
    } else {
        "A"
    };
    lines[2].replace_range(3..4, typo);
    let bad = m.scratch.join("kit-typo.txt");
    fs::write(&bad, lines.join("\n")).expect("kit");
    let o = cli(&["recover", "--dry-run", bad.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("line 2"), "{err}");
    let o = Command::new(PANGEA)
        .args(["recover", "--dry-run", sealed_file.to_str().expect("utf-8")])
        .env("PANGEA_KIT_PASSPHRASE", "wrong horse")
        .output()
        .expect("pangea recover");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("passphrase"), "{err}");
    // A new machine: a new data dir, the kit (the sealed one), one command.
    let mut n = Mount::unstarted(None);
    n.args.extend(
        [
            "--listen",
            &addr(14, 2),
            "--op-timeout",
            &OP_TIMEOUT.to_string(),
            "--recover",
            sealed_file.to_str().expect("utf-8"),
        ]
        .map(String::from),
    );
    // (the passphrase comes from the environment of the test process)
    // SAFETY: tests of this binary that read it run after this point only.
    unsafe { std::env::set_var("PANGEA_KIT_PASSPHRASE", "correct horse battery staple") };
    let t = Instant::now();
    n.start();
    eprintln!("recovered and mounted in {:?}", t.elapsed());
    let got = tree_manifest(&n.mnt.join("src"));
    if got != want {
        let missing: Vec<_> = want.iter().filter(|l| !got.contains(l)).take(10).collect();
        let extra: Vec<_> = got.iter().filter(|l| !want.contains(l)).take(10).collect();
        panic!("the recovered tree differs:\n missing {missing:#?}\n extra {extra:#?}");
    }
    // The lost device is off the network; the new one is its admin.
    let s = status(&n.data);
    let old_id = s["network"]["identity"]["peer_id"].clone();
    assert_eq!(s["network"]["identity"]["admin"], Value::Bool(true), "{s}");
    assert_eq!(
        s["peers"]
            .as_array()
            .map(|p| p.iter().filter(|p| p["role"] == "mount").count()),
        Some(0),
        "the lost device is still a member: {s}"
    );
    drop(old_id);
    // The new device writes, and backs its index up in turn.
    n.sh_ok("echo after > \"$M/src/after\" && sync \"$M/src/after\"");
    let gen0 = status(&n.data)["backup"]["generation"]
        .as_u64()
        .unwrap_or(0);
    wait_for(
        "the recovered device backs up",
        Duration::from_secs(60),
        || status(&n.data)["backup"]["generation"].as_u64() > Some(gen0),
    );
    // Lost again, this time with a storage node down (m - 1 of 2+2): the
    // same kit brings back the device that replaced the first one.
    wait_placed(&n.data, Duration::from_secs(60));
    let want = tree_manifest(&n.mnt.join("src"));
    n.crash();
    fs::remove_dir_all(&n.data).expect("remove the data dir");
    serves[3].kill();
    let mut n = Mount::unstarted(None);
    n.args.extend(
        [
            "--listen",
            &addr(14, 4),
            "--op-timeout",
            &OP_TIMEOUT.to_string(),
            "--recover",
            kf,
        ]
        .map(String::from),
    );
    let t = Instant::now();
    n.start();
    eprintln!(
        "recovered again, one storage node down, in {:?}",
        t.elapsed()
    );
    let got = tree_manifest(&n.mnt.join("src"));
    assert!(got == want, "the tree recovered a second time differs");
    // A storage node holds no keys: it refuses a kit with a clear word.
    let o = cli(&["serve", "--recover", kf]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("holds no keys"),
        "{err}"
    );
    // The lost laptop comes back, its data dir as it was. Every member
    // refuses it (it was removed): what it writes stays on it, and its
    // backups never replace the new device's.
    let mut old = Mount::unstarted(Some(&old_data));
    old.args.extend(
        [
            "--listen",
            &addr(14, 1),
            "--op-timeout",
            &OP_TIMEOUT.to_string(),
            "--backup-every",
            "1s",
        ]
        .map(String::from),
    );
    old.start();
    old.sh_ok("echo stale > \"$M/src/stale\" && sync \"$M/src/stale\"");
    wait_for(
        "the old device's backup to fail",
        Duration::from_secs(60),
        || status(&old.data)["backup"]["failures"].as_u64() > Some(0),
    );
    let so = status(&old.data);
    assert!(so["safe_to_unplug"] == Value::Bool(false), "{so}");
    // The newest root the members keep is the new device's own.
    n.sh_ok("echo later > \"$M/src/later\" && sync \"$M/src/later\"");
    let before = status(&n.data)["backup"]["generations"].as_u64();
    wait_for("the new device backs up", Duration::from_secs(60), || {
        status(&n.data)["backup"]["generations"].as_u64() > before
    });
    let dry: Value =
        serde_json::from_str(&cli_ok(&["recover", "--dry-run", "--json", kf])).expect("json");
    let newest = status(&n.data)["backup"]["generation"].as_u64();
    assert!(
        dry["generation"].as_u64() <= newest,
        "a root newer than the new device's: {dry}"
    );
    assert!(!n.mnt.join("src/stale").exists());
    assert_eq!(
        fs::read_to_string(n.mnt.join("src/after")).ok().as_deref(),
        Some("after\n")
    );
    // With no storage member reachable, a recovery is a one-line error
    // that leaves nothing behind (it can be run again).
    drop(serves);
    let again = m.scratch.join("again");
    let mnt = m.scratch.join("again-mnt");
    fs::create_dir_all(&mnt).expect("mountpoint");
    let t = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_pangea-mount"))
        .args(["-f", "--listen", &addr(14, 3), "--data-dir"])
        .arg(&again)
        .arg("--recover")
        .arg(&kit_file)
        .arg(&mnt)
        .stdin(Stdio::null())
        .output()
        .expect("pangea-mount");
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!("recovery with every member down: {:?}: {err}", t.elapsed());
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("recovery failed"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    let left: Vec<_> = fs::read_dir(&again)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}
