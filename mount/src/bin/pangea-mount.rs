//! `pangea-mount MOUNTPOINT`: mounts Pangea. No flags needed: the first run
//! creates the data dir (XDG data dir, `--data-dir` overrides) and its key.
//! Daemonizes like sshfs once the mount is up (`-f` stays in the
//! foreground). SIGINT, SIGTERM and `fusermount3 -u` flush and unmount.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use pangea::ces::ShardParams;
use pangea::fs::FsConfig;
use pangea::net::member::Role;
use pangea::net::online::NetSetup;
use pangea::node::{Node, NodeConfig};
use pangea_mount::cli::{default_data_dir, parse_options, preflight};
use pangea_mount::fuse::FuseFs;
use tracing::{error, info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "pangea-mount",
    version,
    about = "Mount Pangea: an encrypted, compressed, erasure-coded filesystem"
)]
struct Args {
    /// Where to mount (an existing, empty directory).
    mountpoint: PathBuf,
    /// Stay in the foreground (logs go to stderr).
    #[arg(short = 'f', long)]
    foreground: bool,
    /// Mount options: allow_other, allow_root, ro, default_permissions,
    /// nonempty, dev, suid, noatime, entry_timeout=S, attr_timeout=S,
    /// negative_timeout=S (kernel cache lifetimes, default 60), ...
    /// (comma-separated, repeatable).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Data dir (default: $XDG_DATA_HOME/pangea, i.e. ~/.local/share/pangea).
    #[arg(long, env = "PANGEA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Read-cache capacity in MiB.
    #[arg(long, default_value_t = 256)]
    cache_mib: u64,
    /// Seconds a cached chunk lives after its last read.
    #[arg(long, default_value_t = 600)]
    cache_ttl: u64,
    /// Data shards per new chunk (default: 16 alone; with peers, fitted to
    /// the storage members present).
    #[arg(long)]
    k: Option<u16>,
    /// Parity shards per new chunk (default: 2 alone; with peers, a third
    /// of the storage members).
    #[arg(long)]
    m: Option<u16>,
    /// Listen for peers on this multiaddr (repeatable). Turns the network
    /// on; a data dir that has a network listens on TCP and QUIC port 7410
    /// of every interface by default.
    #[arg(long)]
    listen: Vec<String>,
    /// Join a network with an invite token (from `pangea invite`).
    #[arg(long)]
    join: Option<String>,
    /// Turn the network on (a new network, this node its admin) without
    /// naming addresses.
    #[arg(long)]
    network: bool,
    /// The longest a read waits on peers, in seconds, before EIO.
    #[arg(long, default_value_t = 10)]
    op_timeout: u64,
    /// This node's name in the roster (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Find members on the local network with mDNS (multicast). Off by
    /// default: addresses come from the roster.
    #[arg(long)]
    mdns: bool,
    /// With peers: keep at most this much of chunk files here (e.g. 20G);
    /// chunks whose every shard is on a peer are evicted beyond it, those
    /// not read lately first. Default: evict only when the data dir's disk
    /// has less than 10 % free.
    #[arg(long)]
    local_max: Option<String>,
    /// FUSE worker threads (default: one per core, at least 2).
    #[arg(long)]
    threads: Option<usize>,
    /// This machine's failure domain (e.g. a room or a building), told to
    /// the other members: at most m shards of a chunk go to one domain.
    /// Default: the /24 (IPv4) or /56 (IPv6) of the address.
    #[arg(long)]
    zone: Option<String>,
    /// How long a peer may be down before its shards count as lost and
    /// are rebuilt elsewhere (e.g. 30m, 1h). A chunk down to k+1 live
    /// shards is repaired at once whatever this says.
    #[arg(long, default_value = "1h")]
    heal_grace: String,
    /// The most repairs may move per second (e.g. 64M; 0: no cap).
    #[arg(long, default_value = "64M")]
    heal_rate: String,
    /// How often every chunk is checked for lost shards (e.g. 300s).
    #[arg(long, default_value = "300s")]
    heal_rescan: String,
    /// Do not repair lost shards (to test the read path, or on a metered
    /// link); `pangea status` still shows what is degraded.
    #[arg(long)]
    no_heal: bool,
    /// How long a scrub pass over the local chunk files takes (each pass
    /// 5/6 to 7/6 of it, so machines do not scrub in step).
    #[arg(long, default_value = "30d")]
    scrub_period: String,
    /// Peers' proofs of possession asked per second.
    #[arg(long, default_value_t = 4)]
    scrub_challenges: usize,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9410). Off by default.
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Recover a lost device: on a new, empty data dir, take the network
    /// over with this recovery kit (`pangea key export`; a file, or - for
    /// standard input), rebuild the index from its newest backup on the
    /// storage members, and mount. A sealed kit's passphrase is read from
    /// $PANGEA_KIT_PASSPHRASE, else asked for.
    #[arg(long, value_name = "KIT")]
    recover: Option<PathBuf>,
    /// How often the index is backed up to the storage members (when it
    /// changed; this device must be the network's admin).
    #[arg(long, default_value = "30s")]
    backup_every: String,
    /// Do not back the index up (losing this device then loses the data).
    #[arg(long)]
    no_backup: bool,
}

/// `--recover`: rebuilds the data dir from the kit and the backup, with a
/// progress bar, before the mount goes on as usual.
fn recover(args: &Args, kit_path: &Path, data_dir: &Path) -> Result<(), String> {
    let kit = pangea_mount::cli::read_kit(kit_path)?;
    let mut net = NetSetup::new(Role::Mount);
    if !args.listen.is_empty() {
        net.listen = args.listen.clone();
    }
    net.op_timeout = Duration::from_secs(args.op_timeout.max(1));
    net.zone = args.zone.clone();
    if let Some(n) = &args.name {
        net.name = n.clone();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "recovering the index {bar:30} {bytes}/{total_bytes} ({eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let r = pangea::node::recover::recover(data_dir, &kit, &net, &progress);
    bar.finish_and_clear();
    let r = r.map_err(|e| format!("recovery failed: {e}"))?;
    eprintln!(
        "recovered the index of backup generation {} ({} files, {} bytes) in {:.1} s; the lost device {} is removed from the network",
        r.generation,
        r.files,
        r.bytes,
        r.took_ms as f64 / 1000.0,
        r.replaced
    );
    Ok(())
}

/// Where the daemon logs in the background: the data dir's `pangea.log`,
/// or, for a read-only mount (which writes nothing to the data dir), a file
/// in the temp dir.
fn log_path(data_dir: &Path, read_only: bool) -> PathBuf {
    if read_only {
        std::env::temp_dir().join(format!("pangea-ro-{}.log", nix::unistd::geteuid().as_raw()))
    } else {
        data_dir.join("pangea.log")
    }
}

fn main() {
    // Chunk buffers are 4-6 MiB and short-lived: serve them from mmap so
    // freeing returns the memory at once, and cap the per-thread arenas, so
    // the daemon's RSS stays near its cache capacity.
    // SAFETY: called before any other thread exists; mallopt only tunes malloc.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let args = Args::parse();
    let code = match run(args) {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("pangea-mount: {msg}");
            1
        }
    };
    std::process::exit(code);
}

fn run(args: Args) -> Result<(), String> {
    let opts = parse_options(&args.options)?;
    let params = ShardParams::new(
        args.k.unwrap_or(ShardParams::LOCAL.k()),
        args.m.unwrap_or(ShardParams::LOCAL.m()),
    )
    .map_err(|e| format!("--k/--m: {e}"))?;
    let mountpoint = preflight(&args.mountpoint, opts.nonempty)?;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => default_data_dir()?,
    };
    if !opts.read_only {
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| format!("cannot create data dir {}: {e}", data_dir.display()))?;
    }
    let data_dir = std::fs::canonicalize(&data_dir)
        .map_err(|e| format!("data dir {}: {e}", data_dir.display()))?;
    if let Some(kit) = &args.recover {
        // Before any thread of the mount exists (the daemon forks below):
        // the recovery's own network is gone when this returns.
        recover(&args, kit, &data_dir)?;
    }

    // Signals are handled by one thread with sigwait: block them before any
    // thread exists so every thread inherits the mask.
    let mut sigs = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        sigs.add(s);
    }
    sigs.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;

    if args.foreground {
        init_logging(None);
        return serve(&args, &opts, params, &mountpoint, &data_dir, &sigs, None);
    }
    // Daemonize: the child mounts and reports over a pipe; the parent exits
    // with the child's verdict, so `pangea-mount DIR && ls DIR` works.
    let (rx, tx) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: no other thread exists yet (nothing above spawns one).
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(tx);
            let mut msg = String::new();
            let _ = std::fs::File::from(rx).read_to_string(&mut msg);
            match msg.strip_prefix("ok") {
                Some(_) => Ok(()),
                None if msg.is_empty() => Err(format!(
                    "the daemon exited before mounting; see {}",
                    log_path(&data_dir, opts.read_only).display()
                )),
                None => Err(msg),
            }
        }
        nix::unistd::ForkResult::Child => {
            drop(rx);
            let _ = nix::unistd::setsid();
            let _ = std::env::set_current_dir("/");
            let log = log_path(&data_dir, opts.read_only);
            init_logging(Some(&log));
            redirect_stdio(&log);
            let r = serve(
                &args,
                &opts,
                params,
                &mountpoint,
                &data_dir,
                &sigs,
                Some(std::fs::File::from(tx)),
            );
            if let Err(e) = &r {
                error!(error = %e, "pangea-mount failed");
            }
            r
        }
    }
}

fn init_logging(file: Option<&Path>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PANGEA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    match file.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    }) {
        Some(f) => {
            let _ = builder.with_writer(std::sync::Mutex::new(f)).try_init();
        }
        None => {
            let _ = builder.with_writer(std::io::stderr).try_init();
        }
    }
}

fn redirect_stdio(log: &Path) {
    use std::os::fd::IntoRawFd;
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
    }
    if let Ok(f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = nix::unistd::dup2_stdout(&f);
        let _ = nix::unistd::dup2_stderr(&f);
        let _ = f.into_raw_fd();
    }
}

fn serve(
    args: &Args,
    opts: &pangea_mount::cli::MountOpts,
    params: ShardParams,
    mountpoint: &Path,
    data_dir: &Path,
    sigs: &SigSet,
    mut notify: Option<std::fs::File>,
) -> Result<(), String> {
    let mut report = |msg: &str| {
        if let Some(f) = notify.take() {
            let mut f = f;
            let _ = f.write_all(msg.as_bytes());
        }
    };
    let started = (|| -> Result<_, String> {
        let mut cfg = NodeConfig::new(data_dir.to_path_buf());
        cfg.read_only = opts.read_only;
        cfg.fs = FsConfig {
            shard_params: params,
            cache_capacity: args.cache_mib << 20,
            cache_ttl: Duration::from_secs(args.cache_ttl),
            ..FsConfig::default()
        };
        cfg.root_owner = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        cfg.auto_params = args.k.is_none() && args.m.is_none();
        cfg.sync_remote = opts.sync_remote;
        cfg.local_max = match &args.local_max {
            Some(s) => {
                Some(pangea_mount::cli::parse_size(s).map_err(|e| format!("--local-max: {e}"))?)
            }
            None => None,
        };
        let has_network = data_dir.join("net").join("network").exists();
        if !args.listen.is_empty() || args.join.is_some() || args.network || has_network {
            let mut net = NetSetup::new(Role::Mount);
            if !args.listen.is_empty() {
                net.listen = args.listen.clone();
            }
            net.join = args.join.clone();
            net.op_timeout = Duration::from_secs(args.op_timeout.max(1));
            net.mdns = args.mdns;
            net.zone = args.zone.clone();
            cfg.heal_enabled = !args.no_heal;
            cfg.scrub_period = pangea_mount::cli::parse_duration(&args.scrub_period)
                .map_err(|e| format!("--scrub-period: {e}"))?
                .max(Duration::from_secs(1));
            cfg.scrub_challenges = args.scrub_challenges;
            cfg.backup_every = if args.no_backup {
                None
            } else {
                Some(
                    pangea_mount::cli::parse_duration(&args.backup_every)
                        .map_err(|e| format!("--backup-every: {e}"))?
                        .max(Duration::from_secs(1)),
                )
            };
            let grace = pangea_mount::cli::parse_duration(&args.heal_grace)
                .map_err(|e| format!("--heal-grace: {e}"))?;
            cfg.heal.grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
            let rate = pangea_mount::cli::parse_size(&args.heal_rate)
                .map_err(|e| format!("--heal-rate: {e}"))?;
            cfg.heal_rate = (rate > 0).then_some(rate);
            cfg.heal_rescan = pangea_mount::cli::parse_duration(&args.heal_rescan)
                .map_err(|e| format!("--heal-rescan: {e}"))?
                .max(Duration::from_secs(1));
            if let Some(n) = &args.name {
                net.name = n.clone();
            }
            cfg.net = Some(net);
        }
        let ops = std::sync::Arc::new(pangea::node::metrics::OpStats::default());
        cfg.metrics = args.metrics.map(|a| (a, ops.clone()));
        let node = Node::open(cfg).map_err(|e| e.to_string())?;
        let mut config = fuser::Config::default();
        config.mount_options = opts.fuse.clone();
        config.acl = opts.acl;
        config.n_threads = Some(args.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2)
        }));
        config.clone_fd = true;
        let adapter =
            FuseFs::new(node.fs().clone(), node.releases().clone(), opts.ttl).with_ops(ops);
        let mut session = match fuser::Session::new(adapter, mountpoint, &config) {
            Ok(s) => s,
            Err(e) => {
                // Nothing was served: the node closes as it opened.
                node.shutdown();
                return Err(format!("mounting {}: {e}", mountpoint.display()));
            }
        };
        let unmounter = session.unmount_callable();
        Ok((node, session, unmounter))
    })();
    let (node, session, mut unmounter) = match started {
        Ok(x) => x,
        Err(e) => {
            report(&e);
            return Err(e);
        }
    };
    info!(mountpoint = %mountpoint.display(), data_dir = %data_dir.display(), "mounted");
    // Signals: SIGUSR1 empties the read cache; the others unmount, which
    // ends the session loop below. An unmount that fails (busy: a process
    // has its cwd or a file open in the mount) leaves the daemon serving
    // and listening: the next SIGTERM/SIGINT tries again.
    let sigs = *sigs;
    // Weak: the index must close at the node's shutdown below, before the
    // data dir's lock is released.
    let fs_sig = Arc::downgrade(node.fs());
    let mnt = mountpoint.to_path_buf();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut first = true;
            loop {
                match sigs.wait() {
                    Ok(Signal::SIGUSR1) => {
                        if let Some(fs) = fs_sig.upgrade() {
                            fs.drop_cache();
                            info!("read cache emptied (SIGUSR1)");
                        }
                    }
                    Ok(sig) => {
                        info!(signal = ?sig, "unmounting");
                        // fuser's unmounter gives up its mount after one
                        // try, so retries go through `unmount` below.
                        let r = if std::mem::take(&mut first) {
                            unmounter.unmount().map_err(|e| e.to_string())
                        } else {
                            unmount(&mnt)
                        };
                        if let Err(e) = r {
                            // A warning: the mount is busy by its users' doing,
                            // and nothing is lost.
                            warn!(error = %e, mountpoint = %mnt.display(), "unmount failed (busy?); still mounted: send SIGTERM again to retry");
                        }
                    }
                    Err(e) => {
                        error!(error = %e, "waiting for signals failed; signals are no longer handled");
                        break;
                    }
                }
            }
        })
        .map_err(|e| format!("signal thread: {e}"))?;
    report("ok");
    let r = session.run().map_err(|e| format!("session: {e}"));
    // The session has ended (no more requests): the node stores
    // everything, stops its workers, marks the index cleanly closed (the
    // next mount then skips the sweep a crash needs) and closes it before
    // the data dir's lock goes (`pangea::node`, "Shutdown order").
    let closed = node.shutdown();
    if let Some(e) = &closed.flush_error {
        // Every close(2) that could not store its data said so (ENOSPC on a
        // full disk); what remains to fail here is the index's last sync.
        warn!(error = %e, "flush at unmount failed");
    }
    info!("unmounted");
    r
}

/// Unmounts `mountpoint` (not lazily: a busy mount stays, and says so):
/// umount(2) as root, else `fusermount3 -u` as every user may.
fn unmount(mountpoint: &Path) -> Result<(), String> {
    match nix::mount::umount(mountpoint) {
        Ok(()) => return Ok(()),
        Err(nix::errno::Errno::EPERM) => {}
        Err(e) => return Err(e.to_string()),
    }
    let out = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("--")
        .arg(mountpoint)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("fusermount3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}
