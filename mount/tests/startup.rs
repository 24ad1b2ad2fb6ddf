//! End-to-end: `pangea-mount` start-up errors (one clear line, non-zero
//! exit), clean shutdown by SIGTERM/SIGINT and `fusermount3 -u`, and daemon
//! mode returning only once the mount is up.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use common::{BIN, MOUNT_TIMEOUT, Mount, fusermount, is_mounted, wait_for};

/// What one run of the binary did.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `pangea-mount args...` to completion (with a timeout: in daemon
/// mode the parent must return even though the daemon lives on).
fn run_bin<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let child = Command::new(BIN)
        .args(args)
        .env("PANGEA_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pangea-mount");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(MOUNT_TIMEOUT)
        .expect("pangea-mount did not return (or left its stdout/stderr open)")
        .expect("wait for pangea-mount");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts a failed run that printed exactly one line mentioning `needle`.
fn assert_one_line_error(run: &Run, needle: &str) {
    assert!(!run.status.success(), "succeeded: {}", run.stderr);
    assert_eq!(run.status.code(), Some(1), "exit status: {:?}", run.status);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {:?}", run.stderr);
    assert!(
        lines[0].starts_with("pangea-mount: ") && lines[0].contains(needle),
        "expected '{needle}' in: {}",
        lines[0]
    );
}

/// Has process `pid` exited? (A zombie counts: PID 1 in a container may
/// not reap the daemon, which is not our child.)
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn daemon_pid(data: &Path) -> u32 {
    std::fs::read_to_string(data.join("lock"))
        .expect("lock file")
        .trim()
        .parse()
        .expect("pid in the lock file")
}

#[test]
fn start_with_missing_mountpoint_fails_with_one_line_hint() {
    let m = Mount::unstarted(None);
    let missing = m.scratch.join("nope");
    for fg in [true, false] {
        let mut args = vec![OsStr::new("--data-dir"), m.data.as_os_str()];
        if fg {
            args.push(OsStr::new("-f"));
        }
        args.push(missing.as_os_str());
        let run = run_bin(&args);
        assert_one_line_error(&run, "does not exist");
        assert!(run.stderr.contains("mkdir -p"), "{}", run.stderr);
    }
    assert!(!missing.exists());
}

#[test]
fn start_on_nonempty_mountpoint_fails_unless_nonempty_is_given() {
    let mut m = Mount::unstarted(None);
    std::fs::write(m.mnt.join("already-here"), b"x").expect("file");
    let run = run_bin([
        OsStr::new("-f"),
        OsStr::new("--data-dir"),
        m.data.as_os_str(),
        m.mnt.as_os_str(),
    ]);
    assert_one_line_error(&run, "is not empty");
    assert!(run.stderr.contains("-o nonempty"), "{}", run.stderr);
    assert!(!is_mounted(&m.mnt));
    m.args.extend(["-o".into(), "nonempty".into()]);
    m.start();
    m.sh_ok("[ -z \"$(ls -A)\" ]");
}

#[test]
fn start_on_data_dir_in_use_fails_with_one_line_error() {
    let m = Mount::new();
    let other = m.scratch.join("mnt2");
    std::fs::create_dir(&other).expect("second mountpoint");
    // Daemon mode: the parent prints exactly the child's one-line verdict.
    let run = run_bin([
        OsStr::new("--data-dir"),
        m.data.as_os_str(),
        other.as_os_str(),
    ]);
    assert_one_line_error(&run, "is in use by another pangea-mount");
    assert!(!is_mounted(&other));
    // Foreground: the same line ends stderr (after the log's warning).
    let run = run_bin([
        OsStr::new("-f"),
        OsStr::new("--data-dir"),
        m.data.as_os_str(),
        other.as_os_str(),
    ]);
    assert_eq!(run.status.code(), Some(1));
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("pangea-mount: data dir") && last.contains("in use"),
        "{}",
        run.stderr
    );
    assert!(!is_mounted(&other));
    // The first mount is unharmed.
    m.sh_ok("echo still > here && [ \"$(cat here)\" = still ]");
}

#[test]
fn start_on_active_or_stale_mountpoint_fails_with_hint() {
    let mut m = Mount::new();
    let other_data = m.scratch.join("data2");
    let args = |mnt: &Path| {
        vec![
            OsStr::new("-f").to_owned(),
            OsStr::new("--data-dir").to_owned(),
            other_data.clone().into_os_string(),
            mnt.as_os_str().to_owned(),
        ]
    };
    let run = run_bin(args(&m.mnt));
    assert_one_line_error(&run, "is already a mount point");
    m.kill_daemon();
    let run = run_bin(args(&m.mnt));
    assert_one_line_error(&run, "stale mount");
    assert!(run.stderr.contains("fusermount3 -uz"), "{}", run.stderr);
    assert!(fusermount("-uz", &m.mnt));
    wait_for("the stale mount to go", MOUNT_TIMEOUT, || {
        !is_mounted(&m.mnt)
    });
    m.start();
}

/// SIGTERM and SIGINT: the daemon flushes, unmounts itself and exits 0; a
/// remount shows what was written.
#[test]
fn signal_unmounts_flushes_and_exits_zero() {
    let mut m = Mount::new();
    for (i, sig) in [libc::SIGTERM, libc::SIGINT].into_iter().enumerate() {
        m.sh_ok(&format!(
            "head -c 5M /dev/urandom > f{i}\necho small > g{i}\nsha256sum f{i} g{i} > \"$S/sums{i}\""
        ));
        let status = m.stop_with_signal(sig);
        assert!(
            status.success(),
            "exit {status} on signal {sig}:\n{}",
            m.log_text()
        );
        assert!(!is_mounted(&m.mnt));
        assert!(m.log_text().contains("unmounted"), "{}", m.log_text());
        m.start();
        m.sh_ok(&format!("sha256sum --quiet -c \"$S/sums{i}\""));
    }
}

/// A signal whose unmount fails (the mount is busy: a process has its cwd
/// in it) leaves the daemon serving and listening; the next SIGTERM, once
/// the mount is no longer busy, unmounts and the daemon exits 0.
#[test]
fn a_busy_unmount_keeps_the_daemon_listening_and_a_second_sigterm_retries() {
    let mut m = Mount::new();
    m.sh_ok("mkdir busy && echo kept > busy/f");
    /// Killed and reaped on drop, also when the test fails.
    struct Busy(std::process::Child);
    impl Drop for Busy {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let busy = Busy(
        Command::new("sleep")
            .arg("600")
            .current_dir(m.path("busy"))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn a process inside the mount"),
    );
    // The daemon logs its failed unmount once it has handled the signal.
    let failures = |m: &Mount| {
        std::fs::read_to_string(&m.log)
            .unwrap_or_default()
            .matches("unmount failed")
            .count()
    };
    for round in 1..=2 {
        common::signal(m.pid(), libc::SIGTERM);
        wait_for("the failed unmount to be logged", MOUNT_TIMEOUT, || {
            failures(&m) >= round
        });
        assert!(is_mounted(&m.mnt), "round {round}: unmounted while busy");
        assert!(m.daemon_running(), "round {round}:\n{}", m.log_text());
        // Still serving.
        m.sh_ok("[ \"$(cat busy/f)\" = kept ] && echo more > g");
    }
    drop(busy);
    let status = m.stop_with_signal(libc::SIGTERM);
    assert!(status.success(), "exit {status}:\n{}", m.log_text());
    assert!(!is_mounted(&m.mnt));
    assert!(m.log_text().contains("unmounted"), "{}", m.log_text());
    m.start();
    m.sh_ok("[ \"$(cat busy/f)\" = kept ] && [ \"$(cat g)\" = more ]");
}

/// Without its key, a data dir that has an index is not mounted, and no
/// new key is made; with another key, the index's key check value refuses
/// it, writing nothing. Each is one line. The right key mounts again.
#[test]
fn a_missing_or_wrong_key_is_refused_with_one_line_error() {
    use std::os::unix::fs::PermissionsExt;
    let mut m = Mount::new();
    m.sh_ok("echo secret > f");
    let status = m.unmount();
    assert!(status.success(), "exit {status}:\n{}", m.log_text());
    let key = m.data.join("master.key");
    let saved = std::fs::read(&key).expect("key");
    let run_fg = || {
        run_bin([
            OsStr::new("-f"),
            OsStr::new("--data-dir"),
            m.data.as_os_str(),
            m.mnt.as_os_str(),
        ])
    };
    let last_line = |run: &Run| run.stderr.lines().last().unwrap_or_default().to_owned();

    std::fs::remove_file(&key).expect("remove key");
    let run = run_fg();
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    let line = last_line(&run);
    assert!(
        line.starts_with("pangea-mount: ")
            && line.contains("restore master.key from your backup or recovery kit"),
        "{}",
        run.stderr
    );
    assert!(!key.exists(), "a new key was created");
    assert!(!is_mounted(&m.mnt));

    std::fs::write(&key, [0x99; 32]).expect("write another key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let run = run_fg();
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    let line = last_line(&run);
    assert!(
        line.starts_with(
            "pangea-mount: master.key does not match this data dir's index (wrong key?)"
        ),
        "{}",
        run.stderr
    );
    assert!(!is_mounted(&m.mnt));

    std::fs::write(&key, &saved).expect("restore the key");
    m.start();
    m.sh_ok("[ \"$(cat f)\" = secret ]");
}

#[test]
fn fusermount_u_stops_the_daemon_cleanly_and_data_persists() {
    let mut m = Mount::new();
    m.sh_ok("mkdir d && head -c 3M /dev/urandom > d/f && sha256sum d/f > \"$S/sums\"");
    let status = m.unmount();
    assert!(status.success(), "exit {status}:\n{}", m.log_text());
    m.start();
    m.sh_ok("sha256sum --quiet -c \"$S/sums\"");
}

/// Without -f the command returns 0 only once the mount is up (no waiting
/// needed by the caller); the daemon logs to the data dir and leaves on
/// `fusermount3 -u`.
#[test]
fn daemon_mode_returns_only_once_mounted() {
    let m = Mount::unstarted(None);
    for round in 0..2 {
        let run = run_bin([
            OsStr::new("--data-dir"),
            m.data.as_os_str(),
            m.mnt.as_os_str(),
        ]);
        assert!(run.status.success(), "daemon mode failed: {}", run.stderr);
        assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("", ""));
        // No wait: the mount must already be there.
        assert!(is_mounted(&m.mnt), "returned before the mount was up");
        let pid = daemon_pid(&m.data);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("daemon alive");
        assert!(String::from_utf8_lossy(&cmdline).contains("pangea-mount"));
        if round == 0 {
            m.sh_ok("echo persisted > f");
        } else {
            m.sh_ok("[ \"$(cat f)\" = persisted ]");
        }
        assert!(fusermount("-u", &m.mnt));
        wait_for("the daemon to exit", MOUNT_TIMEOUT, || process_gone(pid));
        assert!(!is_mounted(&m.mnt));
    }
    let log = std::fs::read_to_string(m.data.join("pangea.log")).expect("daemon log");
    assert_eq!(log.matches("unmounted").count(), 2, "{log}");
}
