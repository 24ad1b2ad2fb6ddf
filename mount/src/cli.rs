//! Mount options and the start-up checks that turn common mistakes into one
//! clear line: a missing or non-empty mountpoint, a stale mount, missing
//! /dev/fuse or fusermount3.

use std::path::{Path, PathBuf};

use fuser::{MountOption, SessionACL};

/// The default data dir: `$XDG_DATA_HOME/pangea` (`~/.local/share/pangea`).
pub fn default_data_dir() -> Result<PathBuf, String> {
    directories::ProjectDirs::from("", "", "pangea")
        .map(|d| d.data_dir().to_path_buf())
        .ok_or_else(|| "cannot find a home directory for the data dir: pass --data-dir".into())
}

/// Parsed `-o` options.
#[derive(Debug, Clone, Default)]
pub struct MountOpts {
    pub fuse: Vec<MountOption>,
    pub acl: SessionACL,
    pub nonempty: bool,
    pub read_only: bool,
    /// `entry_timeout=`, `attr_timeout=`, `negative_timeout=`.
    pub ttl: crate::fuse::Ttls,
    /// `sync_remote`: fsync and close return once k+1 shards of each chunk
    /// sit on peers.
    pub sync_remote: bool,
}

/// Parses a comma-separated `-o` list (may be given several times).
pub fn parse_options(lists: &[String]) -> Result<MountOpts, String> {
    let mut o = MountOpts {
        fuse: vec![
            MountOption::FSName("pangea".into()),
            MountOption::Subtype("pangea".into()),
            MountOption::DefaultPermissions,
        ],
        ..MountOpts::default()
    };
    for opt in lists
        .iter()
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match opt {
            "allow_other" => o.acl = SessionACL::All,
            "allow_root" => o.acl = SessionACL::RootAndOwner,
            "default_permissions" => {}
            "ro" => {
                o.read_only = true;
                o.fuse.push(MountOption::RO);
            }
            "rw" => o.fuse.push(MountOption::RW),
            "nonempty" => o.nonempty = true,
            "sync_remote" => o.sync_remote = true,
            "dev" => o.fuse.push(MountOption::Dev),
            "nodev" => o.fuse.push(MountOption::NoDev),
            "suid" => o.fuse.push(MountOption::Suid),
            "nosuid" => o.fuse.push(MountOption::NoSuid),
            "exec" => o.fuse.push(MountOption::Exec),
            "noexec" => o.fuse.push(MountOption::NoExec),
            "atime" => o.fuse.push(MountOption::Atime),
            "noatime" => o.fuse.push(MountOption::NoAtime),
            "sync" => o.fuse.push(MountOption::Sync),
            "async" => o.fuse.push(MountOption::Async),
            "dirsync" => o.fuse.push(MountOption::DirSync),
            other => {
                if let Some(v) = other.strip_prefix("fsname=") {
                    o.fuse.retain(|m| !matches!(m, MountOption::FSName(_)));
                    o.fuse.push(MountOption::FSName(v.into()));
                } else if let Some(v) = other.strip_prefix("subtype=") {
                    o.fuse.retain(|m| !matches!(m, MountOption::Subtype(_)));
                    o.fuse.push(MountOption::Subtype(v.into()));
                } else if let Some(v) = other.strip_prefix("entry_timeout=") {
                    o.ttl.entry = seconds("entry_timeout", v)?;
                } else if let Some(v) = other.strip_prefix("attr_timeout=") {
                    o.ttl.attr = seconds("attr_timeout", v)?;
                } else if let Some(v) = other.strip_prefix("negative_timeout=") {
                    o.ttl.negative = seconds("negative_timeout", v)?;
                } else {
                    return Err(format!("unknown mount option '{other}'"));
                }
            }
        }
    }
    Ok(o)
}

/// A cache lifetime in seconds (fractions allowed, as libfuse takes them).
fn seconds(name: &str, v: &str) -> Result<std::time::Duration, String> {
    v.parse::<f64>()
        .ok()
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
        .filter(|d| *d <= std::time::Duration::from_secs(u32::MAX.into()))
        .ok_or_else(|| format!("{name}={v}: expected a number of seconds"))
}

/// Checks what must hold before mounting; the error is one line that says
/// what to do.
pub fn preflight(mountpoint: &Path, nonempty: bool) -> Result<PathBuf, String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing: load the fuse module (modprobe fuse) or, in a container, pass --device /dev/fuse".into());
    }
    if nix::unistd::geteuid().as_raw() != 0 && which("fusermount3").is_none() {
        return Err("fusermount3 not found: install it with 'sudo apt-get install fuse3'".into());
    }
    match std::fs::metadata(mountpoint) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(stale_mount(mountpoint));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "mountpoint {} does not exist: create it with 'mkdir -p {}'",
                mountpoint.display(),
                mountpoint.display()
            ));
        }
        Err(e) => return Err(format!("mountpoint {}: {e}", mountpoint.display())),
        Ok(m) if !m.is_dir() => {
            return Err(format!(
                "mountpoint {} is not a directory",
                mountpoint.display()
            ));
        }
        Ok(_) => {}
    }
    let abs = std::fs::canonicalize(mountpoint)
        .map_err(|e| format!("mountpoint {}: {e}", mountpoint.display()))?;
    if is_mounted(&abs) {
        // stat above may be answered from the kernel's attribute cache of a
        // just-crashed mount, and opening the directory needs no daemon
        // either (NO_OPENDIR_SUPPORT); reading it always asks the daemon.
        let listed = std::fs::read_dir(&abs).and_then(|mut d| d.next().transpose());
        if listed.is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN)) {
            return Err(stale_mount(&abs));
        }
        return Err(format!(
            "{} is already a mount point: unmount it first (fusermount3 -u {})",
            abs.display(),
            abs.display()
        ));
    }
    if !nonempty {
        let mut entries =
            std::fs::read_dir(&abs).map_err(|e| format!("mountpoint {}: {e}", abs.display()))?;
        if entries.next().is_some() {
            return Err(format!(
                "mountpoint {} is not empty (use -o nonempty to mount over it anyway)",
                abs.display()
            ));
        }
    }
    Ok(abs)
}

fn stale_mount(mountpoint: &Path) -> String {
    format!(
        "{} is a stale mount left by a crashed process: clear it with 'fusermount3 -uz {}' and retry",
        mountpoint.display(),
        mountpoint.display()
    )
}

fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// Is `path` listed in /proc/self/mountinfo?
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| unescape(m) == want))
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_unknown_ones_are_refused() {
        let o = parse_options(&["allow_other,ro".into(), "noatime".into()]).unwrap();
        assert!(o.read_only);
        assert!(matches!(o.acl, SessionACL::All));
        assert!(o.fuse.contains(&MountOption::NoAtime));
        assert!(
            parse_options(&["frobnicate".into()])
                .unwrap_err()
                .contains("frobnicate")
        );
    }

    #[test]
    fn cache_lifetimes_parse_like_libfuse_and_bad_ones_are_refused() {
        use std::time::Duration;
        let o =
            parse_options(&["attr_timeout=0.5,entry_timeout=2,negative_timeout=0".into()]).unwrap();
        assert_eq!(o.ttl.attr, Duration::from_millis(500));
        assert_eq!(o.ttl.entry, Duration::from_secs(2));
        assert_eq!(o.ttl.negative, Duration::ZERO);
        assert_eq!(
            parse_options(&[]).unwrap().ttl,
            crate::fuse::Ttls::default()
        );
        for bad in [
            "attr_timeout=-1",
            "entry_timeout=soon",
            "negative_timeout=1e30",
        ] {
            assert!(
                parse_options(&[bad.into()])
                    .unwrap_err()
                    .contains("seconds"),
                "{bad}"
            );
        }
    }

    #[test]
    fn preflight_explains_missing_and_nonempty_mountpoints() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        assert!(
            preflight(&missing, false)
                .unwrap_err()
                .contains("does not exist")
        );
        std::fs::write(d.path().join("f"), b"x").unwrap();
        assert!(
            preflight(d.path(), false)
                .unwrap_err()
                .contains("not empty")
        );
        assert!(preflight(d.path(), true).is_ok());
    }
}

/// The default data dir of a storage node (apart from a filesystem
/// node's, so both can run on one machine).
pub fn default_serve_dir() -> Result<PathBuf, String> {
    directories::ProjectDirs::from("", "", "pangea-serve")
        .map(|d| d.data_dir().to_path_buf())
        .ok_or_else(|| "cannot find a home directory for the data dir: pass --data-dir".into())
}

/// Parses a duration such as `90s`, `30m`, `24h`, `7d` (a bare number is
/// seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 90s, 30m, 24h, 7d)"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    n.checked_mul(secs)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Parses a size such as `50G`, `512M`, `1T`, `4096` (bytes), powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 500M, 50G, 2T)"))?;
    let shift = match unit.trim_end_matches(['B', 'b', 'i']) {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse_and_bad_ones_say_why() {
        assert_eq!(parse_duration("24h").unwrap().as_secs(), 86400);
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("7d").unwrap().as_secs(), 7 * 86400);
        assert!(parse_duration("1w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("h").is_err());
        assert_eq!(parse_size("50G").unwrap(), 50 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("3X").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}

/// A recovery kit's passphrase: $PANGEA_KIT_PASSPHRASE, else a line read
/// from the terminal (asked twice when `confirm`, for a new kit).
pub fn kit_passphrase(confirm: bool) -> Result<zeroize::Zeroizing<String>, String> {
    if let Ok(p) = std::env::var("PANGEA_KIT_PASSPHRASE") {
        return Ok(zeroize::Zeroizing::new(p));
    }
    let ask = |prompt: &str| -> Result<zeroize::Zeroizing<String>, String> {
        use std::io::{BufRead, Write};
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .map_err(|_| {
                "the kit is sealed: set PANGEA_KIT_PASSPHRASE (no terminal to ask on)".to_string()
            })?;
        let mut w = &tty;
        let _ = write!(w, "{prompt}");
        let _ = w.flush();
        // Not echoed.
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let old = tcgetattr(&tty).ok();
        if let Some(o) = &old {
            let mut t = o.clone();
            t.local_flags.remove(LocalFlags::ECHO);
            let _ = tcsetattr(&tty, SetArg::TCSANOW, &t);
        }
        let mut line = zeroize::Zeroizing::new(String::new());
        let read = std::io::BufReader::new(&tty).read_line(&mut line);
        if let Some(o) = &old {
            let _ = tcsetattr(&tty, SetArg::TCSANOW, o);
        }
        let _ = writeln!(w);
        read.map_err(|e| format!("reading the passphrase: {e}"))?;
        let trimmed = zeroize::Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_string());
        Ok(trimmed)
    };
    let p = ask("kit passphrase: ")?;
    if confirm && *ask("again: ")? != *p {
        return Err("the passphrases differ".into());
    }
    if p.is_empty() {
        return Err("an empty passphrase".into());
    }
    Ok(p)
}

/// Reads a recovery kit (a file, or - for standard input), with its
/// passphrase when it is sealed ([`kit_passphrase`]).
pub fn read_kit(path: &Path) -> Result<pangea::node::kit::KitContents, String> {
    use pangea::node::kit::KitContents;
    use std::io::Read;
    let text = if path.as_os_str() == "-" {
        let mut t = String::new();
        std::io::stdin()
            .read_to_string(&mut t)
            .map_err(|e| format!("reading the kit: {e}"))?;
        t
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
    };
    let pass = if KitContents::is_sealed(&text) {
        Some(kit_passphrase(false)?)
    } else {
        None
    };
    KitContents::from_text(&text, pass.as_deref().map(|p| p.as_str()))
        .map_err(|e| format!("the kit: {e}"))
}
