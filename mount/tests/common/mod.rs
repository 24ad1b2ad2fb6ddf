//! Harness of the FUSE end-to-end tests: a [`Mount`] guard that runs the
//! real `pangea-mount -f` binary on a temp data dir and mountpoint, helpers
//! to run shell commands in the mount and check what they print, and a
//! seeded RNG.
//!
//! Invariant: nothing stays mounted after a test, even one that panics. The
//! guard's `Drop` unmounts (`fusermount3 -u`, lazily with `-uz` if busy),
//! waits for the daemon to exit, and kills it only as a last resort.
//!
//! Waits are on predicates with a timeout (`wait_for`), never fixed sleeps.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_pangea-mount");

/// How long a mount may take to appear or go away. Generous: the machine
/// is shared and RocksDB's first open creates its files.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// Polls `pred` (with a short backoff) until it holds; panics with `what`
/// after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut pred: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    while !pred() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Undoes the octal escapes of /proc/self/mountinfo.
fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The filesystem type mounted at `path` (e.g. "fuse.pangea"), if any.
/// Read straight from /proc/self/mountinfo, not from the code under test.
pub fn mount_type(path: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_string_lossy();
    info.lines().rev().find_map(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        let mp = fields.get(4)?;
        if unescape_mountinfo(mp) != want {
            return None;
        }
        let dash = fields.iter().position(|f| *f == "-")?;
        fields.get(dash + 1).map(|s| (*s).to_owned())
    })
}

/// Is anything mounted at `path`?
pub fn is_mounted(path: &Path) -> bool {
    mount_type(path).is_some()
}

/// Runs `fusermount3 <flag> path`; returns whether it succeeded.
pub fn fusermount(flag: &str, path: &Path) -> bool {
    Command::new("fusermount3")
        .arg(flag)
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits for `child` to exit, up to `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Sends `sig` to process `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}) failed");
}

/// A running (or stopped) `pangea-mount -f` on a data dir and mountpoint
/// under one temp dir. See the module docs for the cleanup guarantee.
pub struct Mount {
    /// Holds everything below; removed on drop (after the unmount).
    _tmp: tempfile::TempDir,
    /// The data dir (index, chunks, key).
    pub data: PathBuf,
    /// The mountpoint.
    pub mnt: PathBuf,
    /// Scratch space outside the mount (source trees, expected files).
    pub scratch: PathBuf,
    /// The daemon's stderr, appended across restarts.
    pub log: PathBuf,
    /// Extra command-line arguments of every start.
    pub args: Vec<String>,
    /// The daemon, while one runs.
    child: Option<Child>,
    /// Log lines that are expected (a test provoking errors on purpose):
    /// any other `ERROR` line or panic in the daemon's log fails the test
    /// when the guard drops.
    pub expected_errors: Vec<&'static str>,
}

impl Mount {
    /// A fresh data dir and mountpoint, mounted.
    pub fn new() -> Mount {
        let mut m = Mount::unstarted(None);
        m.start();
        m
    }

    /// A mount whose data dir is `data` (e.g. on a small tmpfs), mounted.
    pub fn with_data_dir(data: &Path) -> Mount {
        let mut m = Mount::unstarted(Some(data));
        m.start();
        m
    }

    /// Directories ready, nothing mounted yet.
    pub fn unstarted(data: Option<&Path>) -> Mount {
        let tmp = tempfile::Builder::new()
            .prefix("pangea-e2e-")
            .tempdir()
            .expect("temp dir");
        // Canonical paths: they are compared with /proc/self/mountinfo.
        let root = fs::canonicalize(tmp.path()).expect("canonical temp dir");
        let data = match data {
            Some(d) => d.to_path_buf(),
            None => root.join("data"),
        };
        let mnt = root.join("mnt");
        let scratch = root.join("scratch");
        fs::create_dir_all(&mnt).expect("mountpoint");
        fs::create_dir_all(&scratch).expect("scratch dir");
        Mount {
            _tmp: tmp,
            data,
            mnt,
            scratch,
            log: root.join("pangea-mount.log"),
            args: vec![
                "-o".into(),
                "allow_other".into(),
                "--cache-mib".into(),
                "64".into(),
            ],
            child: None,
            expected_errors: Vec::new(),
        }
    }

    /// The daemon's log lines that report a panic or an ERROR not listed
    /// in `expected_errors`.
    pub fn unexpected_errors(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains(" ERROR ") || l.contains("panicked at"))
            .filter(|l| !self.expected_errors.iter().any(|e| l.contains(e)))
            // The kernel dropped a request that was interrupted (a killed
            // process): fuser logs its failed reply at ERROR, harmlessly.
            .filter(|l| !l.contains("Failed to send FUSE reply: No such file or directory"))
            .map(str::to_owned)
            .collect()
    }

    /// `self.mnt.join(rel)`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Is the daemon still running (started and not exited)?
    pub fn daemon_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts `pangea-mount -f` and waits until the mount is listed in
    /// /proc/self/mountinfo. Panics (with the daemon's log) if it exits
    /// first.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already started");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(BIN)
            .arg("-f")
            .args(&self.args)
            .arg("--data-dir")
            .arg(&self.data)
            .arg(&self.mnt)
            .env("PANGEA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn pangea-mount");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if mount_type(&self.mnt).is_some_and(|t| t.starts_with("fuse")) {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                panic!(
                    "pangea-mount exited with {status} before mounting:\n{}",
                    self.log_text()
                );
            }
            assert!(
                start.elapsed() < MOUNT_TIMEOUT,
                "mount did not appear within {MOUNT_TIMEOUT:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Unmounts with `fusermount3 -u` and returns the daemon's exit status.
    pub fn unmount(&mut self) -> ExitStatus {
        assert!(
            fusermount("-u", &self.mnt),
            "fusermount3 -u {} failed",
            self.mnt.display()
        );
        self.wait_daemon()
    }

    /// Sends `sig` to the daemon and returns its exit status.
    pub fn stop_with_signal(&mut self, sig: i32) -> ExitStatus {
        signal(self.pid(), sig);
        self.wait_daemon()
    }

    /// Waits for the daemon to exit and the mount to be gone.
    fn wait_daemon(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let status = wait_exit(&mut child, MOUNT_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "pangea-mount did not exit within {MOUNT_TIMEOUT:?}:\n{}",
                self.log_text()
            )
        });
        wait_for("the mount to go away", MOUNT_TIMEOUT, || {
            !is_mounted(&self.mnt)
        });
        status
    }

    /// Unmounts (asserting a clean exit) and mounts again on the same data dir.
    pub fn remount(&mut self) {
        let status = self.unmount();
        assert!(
            status.success(),
            "pangea-mount exited with {status}:\n{}",
            self.log_text()
        );
        self.start();
    }

    /// `kill -9` of the daemon; the mount stays behind, dead (ENOTCONN).
    pub fn kill_daemon(&mut self) {
        let mut child = self.child.take().expect("daemon running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// `kill -9` of the daemon, then clears the dead mount (`fusermount3 -uz`).
    pub fn crash(&mut self) {
        self.kill_daemon();
        fusermount("-uz", &self.mnt);
        wait_for("the dead mount to be cleared", MOUNT_TIMEOUT, || {
            !is_mounted(&self.mnt)
        });
    }

    /// The daemon's log so far (for failure messages).
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        // The tail is what matters.
        let keep = 8_000;
        if s.len() > keep {
            let mut cut = s.len() - keep;
            while !s.is_char_boundary(cut) {
                cut += 1;
            }
            s = format!("[...]{}", &s[cut..]);
        }
        s
    }

    /// Runs `script` with bash (`set -euo pipefail`) in the mount. The
    /// environment has `M` (mountpoint), `D` (data dir), `S` (scratch).
    pub fn sh(&self, script: &str) -> Output {
        // The trace goes to a file, not stderr (which tests inspect).
        let _ = fs::remove_file(self.trace());
        Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -euo pipefail\nexec 19>\"$S/trace\"\nBASH_XTRACEFD=19\nset -x\n{script}"
            ))
            .current_dir(&self.mnt)
            .env("M", &self.mnt)
            .env("D", &self.data)
            .env("S", &self.scratch)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .expect("run bash")
    }

    fn trace(&self) -> PathBuf {
        self.scratch.join("trace")
    }

    /// The end of the last script's `set -x` trace.
    fn trace_tail(&self) -> String {
        let t = fs::read_to_string(self.trace()).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(25)..]
            .iter()
            .map(|l| {
                let mut end = l.len().min(300);
                while !l.is_char_boundary(end) {
                    end -= 1;
                }
                &l[..end]
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs `script` (see [`Mount::sh`]); panics unless it exits 0.
    /// Returns its stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "script failed with {}:\n--- trace (end)\n{}\n--- stdout\n{}\n--- stderr\n{}\n--- daemon log\n{}",
            out.status,
            self.trace_tail(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `script`; panics unless it fails. Returns its stderr.
    pub fn sh_fails(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            !out.status.success(),
            "script unexpectedly succeeded:\n--- script\n{script}\n--- stdout\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- pangea-mount log ({})\n{}",
                self.log.display(),
                self.log_text()
            );
        }
        if let Some(mut child) = self.child.take() {
            if is_mounted(&self.mnt) && !fusermount("-u", &self.mnt) {
                // Busy (a test left a process inside): detach lazily.
                fusermount("-uz", &self.mnt);
            }
            if wait_exit(&mut child, MOUNT_TIMEOUT).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if is_mounted(&self.mnt) {
            fusermount("-uz", &self.mnt);
        }
        if !std::thread::panicking() {
            let errors = self.unexpected_errors();
            assert!(
                errors.is_empty(),
                "the daemon logged panics or errors:\n{}",
                errors.join("\n")
            );
        }
    }
}

/// Every file and directory under `root`: (relative path, kind, length,
/// mtime in ns, content hash), sorted. Two snapshots differ if anything
/// under `root` was created, removed, written or touched.
pub fn snapshot(root: &Path) -> Vec<(String, &'static str, u64, i128, u64)> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("readable dir") {
            let e = e.expect("entry");
            let p = e.path();
            let md = fs::symlink_metadata(&p).expect("metadata");
            let rel = p
                .strip_prefix(root)
                .expect("below root")
                .display()
                .to_string();
            let mtime = i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec());
            if md.is_dir() {
                out.push((rel, "dir", 0, mtime, 0));
                stack.push(p);
            } else {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                fs::read(&p).unwrap_or_default().hash(&mut h);
                out.push((rel, "file", md.len(), mtime, h.finish()));
            }
        }
    }
    out.sort();
    out
}

/// A deterministic RNG (SplitMix64): tests print their seed and can be
/// replayed with it.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The seed from `var` if set, else from the clock; printed either way.
    pub fn from_env(var: &str) -> (Rng, u64) {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("seed: {seed} (replay with {var}={seed})");
        (Rng(seed), seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo < hi);
        lo + self.next_u64() % (hi - lo)
    }
}

/// Creates, under `dir`, a tree with the sizes and kinds that matter:
/// files of 0, 1, 4095, 4096, 4 MiB − 1, 4 MiB, 4 MiB + 1 and 9 MiB bytes
/// (random, so incompressible), a compressible text, a sparse file,
/// relative/absolute/dangling/directory symlinks, a hard link, a fifo,
/// odd modes (setuid, sticky, setgid dir, 0600) and fixed nanosecond mtimes.
pub const MAKE_TREE: &str = r#"
make_tree() {
  local d="$1"
  mkdir -p "$d/sub/deeper" "$d/empty dir" "$d/ünïcødé"
  (
    cd "$d"
    : > empty
    head -c 1 /dev/urandom > one
    head -c 4095 /dev/urandom > b4095
    head -c 4096 /dev/urandom > b4096
    head -c $((4 * 1024 * 1024 - 1)) /dev/urandom > m4-1
    head -c $((4 * 1024 * 1024)) /dev/urandom > m4
    head -c $((4 * 1024 * 1024 + 1)) /dev/urandom > m4+1
    head -c $((9 * 1024 * 1024)) /dev/urandom > sub/m9
    head -c 3000000 < <(yes 'a compressible line of text') > sub/deeper/text
    truncate -s 10M sparse
    printf 'middle' | dd of=sparse bs=1 seek=5000000 conv=notrunc status=none
    echo 'spaces and unicode' > "ünïcødé/file with spaces"
    ln -s b4096 link_rel
    ln -s /etc/hostname link_abs
    ln -s does/not/exist link_dangling
    ln -s sub link_dir
    ln one sub/hardlink_to_one
    mkfifo fifo
    chmod 600 b4095
    chmod 4755 b4096
    chmod 1777 "empty dir"
    chmod 2750 sub/deeper
    chmod 444 m4
    # Every entry gets an old time first (tools compare mtimes in whole
    # seconds: a copy made within the same second could be left as is).
    find . -exec touch -h -d '2010-10-10 10:10:10.101010101' {} +
    touch -d '2001-02-03 04:05:06.123456789' one b4095 sub/m9
    touch -d '@1000000000.5' m4-1 m4 fifo
    touch -h -d '1999-12-31 23:59:59.999999999' link_rel link_dangling
    touch -d '2020-01-01' "ünïcødé/file with spaces" "ünïcødé" sub/deeper "empty dir"
    touch -d '2021-06-07 08:09:10.111' sub
  )
  touch -d '2022-02-22 22:22:22.222222222' "$d"
}

# One line per entry: path, type, mode, owner, size (not for dirs, whose size
# is the filesystem's business), mtime in ns, nlink, symlink target.
list_tree() {
  (cd "$1" && find . -printf '%p|%y|%m|%U:%G|%s|%T@|%n|%l\n' \
    | awk -F'|' 'BEGIN{OFS="|"} $2=="d"{$5="-"} {print}' | sort)
}
"#;
