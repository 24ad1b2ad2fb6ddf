//! Disk-full tests: the data dir on a 64 MiB tmpfs, then on an 80 MiB ext4
//! image, incompressible writes until ENOSPC.
//!
//! Expected (and asserted): the failing write or close reports ENOSPC ("No
//! space left on device"); the file that hit it holds a prefix of what was
//! written, never garbage, and no more bytes than write(2) acknowledged
//! (bytes still buffered when the disk filled are lost, which the error on
//! write/fsync/close reports); earlier fsynced files are intact; the mount
//! stays usable and a remount works while the disk is still full; deleting
//! files gives the space back (df shows it) and new writes then succeed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Mount;

/// Size of the tmpfs holding the data dir. RocksDB preallocates ~36 MiB
/// there (its WAL and MANIFEST), which leaves room for a few chunks (a
/// 4 MiB chunk takes 6 MiB with k=4, m=2).
const TMPFS_SIZE: &str = "64m";

/// Size of the ext4 image: its journal and inode tables take ~8 MiB more
/// than a tmpfs.
const EXT4_SIZE: &str = "80M";

/// A small file system mounted for the test: a tmpfs, or an ext4 image on a
/// loop device (block allocation, journal and `O_DIRECT` as on a real
/// disk). Unmounted on drop (lazily if busy).
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn tmpfs(size: &str) -> SmallDisk {
        let (dir, path) = SmallDisk::mountpoint();
        let opts = format!("size={size},mode=0700");
        SmallDisk::mount(&["-t", "tmpfs", "-o", &opts, "tmpfs"], &path);
        SmallDisk { path, _dir: dir }
    }

    /// An ext4 image on a loop device, or why this machine cannot make one
    /// (no mkfs.ext4, no loop devices, or a loop mount refused).
    fn ext4(size: &str) -> Result<SmallDisk, String> {
        let mkfs_found = Command::new("mkfs.ext4")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !mkfs_found {
            return Err("no mkfs.ext4 (install e2fsprogs; scripts/deps does)".into());
        }
        if !Path::new("/dev/loop-control").exists() {
            return Err(
                "no /dev/loop-control: this kernel or container has no loop devices".into(),
            );
        }
        let (dir, path) = SmallDisk::mountpoint();
        let image = dir.path().join("disk.img");
        let run = |cmd: &mut Command| {
            let out = cmd.output().expect("run a disk setup command");
            assert!(out.status.success(), "{cmd:?}: {out:?}");
        };
        run(Command::new("truncate").args(["-s", size]).arg(&image));
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        let image = image.to_string_lossy().into_owned();
        let out = Command::new("mount")
            .args(["-o", "loop", &image])
            .arg(&path)
            .output()
            .expect("run mount");
        if !out.status.success() {
            return Err(format!(
                "mount -o loop failed (root and a free loop device are needed): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let disk = SmallDisk { path, _dir: dir };
        run(Command::new("chmod").arg("0700").arg(&disk.path));
        Ok(disk)
    }

    fn mountpoint() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix("pangea-small-disk-")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("data");
        std::fs::create_dir(&path).expect("small disk's mountpoint");
        (dir, path)
    }

    fn mount(args: &[&str], path: &Path) {
        let out = Command::new("mount")
            .args(args)
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount {args:?} failed (this test needs root): {out:?}"
        );
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Writes `src` into `dst` 1 MiB at a time until an error; reports where
/// it failed (write, fsync or close), the errno and the acknowledged bytes.
const FILL: &str = r#"
import errno, os, sys
src, dst = sys.argv[1], sys.argv[2]
data = open(src, 'rb').read()
fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
acked, failed = 0, None
try:
    while acked < len(data):
        acked += os.write(fd, data[acked:acked + (1 << 20)])
    os.fsync(fd)
except OSError as e:
    failed = ('write', e.errno)
try:
    os.close(fd)
except OSError as e:
    failed = failed or ('close', e.errno)
if failed is None:
    print('no error', acked)
    sys.exit(1)
print(failed[0], errno.errorcode[failed[1]], acked)
"#;

fn avail_bytes(path: &Path) -> u64 {
    let out = Command::new("stat")
        .args(["-f", "-c", "%S %a"])
        .arg(path)
        .output()
        .expect("stat -f");
    let s = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = s
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    v[0] * v[1]
}

#[test]
fn disk_full_on_tmpfs_gives_enospc_keeps_the_index_consistent_and_space_returns() {
    fill_the_disk_and_recover(SmallDisk::tmpfs(TMPFS_SIZE));
}

#[test]
fn disk_full_on_ext4_gives_enospc_keeps_the_index_consistent_and_space_returns() {
    match SmallDisk::ext4(EXT4_SIZE) {
        Ok(disk) => fill_the_disk_and_recover(disk),
        Err(reason) => skip(
            "disk_full_on_ext4_gives_enospc_keeps_the_index_consistent_and_space_returns",
            &reason,
        ),
    }
}

/// A test that cannot run here: says so where CI's output shows it (straight
/// to stderr, past the test harness's capture, which would hide it in a
/// passing test), and fails when `PANGEA_REQUIRE_ALL=1` (as in CI), where
/// every test must run: cargo test has no "skipped" status, and a skip
/// must never pass for a pass.
fn skip(test: &str, reason: &str) {
    use std::io::Write;
    let line = format!("SKIPPED: {test}: {reason}");
    let _ = writeln!(std::io::stderr(), "{line}");
    assert!(
        std::env::var("PANGEA_REQUIRE_ALL").as_deref() != Ok("1"),
        "{line} (PANGEA_REQUIRE_ALL=1: every test must run)"
    );
}

fn fill_the_disk_and_recover(disk: SmallDisk) {
    let mut m = Mount::with_data_dir(&disk.path);
    std::fs::write(m.scratch.join("fill.py"), FILL).expect("script");
    eprintln!(
        "free on the data dir's disk after mounting: {} bytes",
        avail_bytes(&m.data)
    );
    // Space is set aside for the index (1/32 of the disk, at least 1 MiB).
    let reserve = || std::fs::metadata(m.data.join("reserve")).map_or(0, |md| md.len());
    let reserved = reserve();
    assert!(reserved >= 1 << 20, "reserve: {reserved} bytes");

    // Fsynced files written before the disk fills: one to keep, one to
    // delete later (incompressible: 1 and 3 MiB of data).
    m.sh_ok(
        r#"
        head -c 1M /dev/urandom > "$S/keep"
        head -c 3M /dev/urandom > "$S/ballast"
        head -c 100M /dev/urandom > "$S/fill"
        dd if="$S/keep" of=keep bs=1M conv=fsync status=none
        dd if="$S/ballast" of=ballast bs=1M conv=fsync status=none
        echo small > small
        sync small
        sha256sum keep small > "$S/sums"
        "#,
    );

    // Fill the disk.
    let out = m.sh_ok("python3 \"$S/fill.py\" \"$S/fill\" fill");
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f.get(1), Some(&"ENOSPC"), "fill: {out}");
    let acked: u64 = f[2].parse().expect("acked bytes");

    // What the file holds: a prefix of the data, at most what was acked.
    // (Read, not stat: the kernel may cache the size the writes announced
    // for up to the attribute lifetime; after the remount below both
    // agree.)
    let check_fill = format!(
        r#"
        cat fill > "$S/got"
        size=$(stat -c %s "$S/got")
        [ "$size" -le {acked} ] || {{ echo "fill has $size bytes, only {acked} acknowledged"; exit 1; }}
        cmp -n "$size" "$S/got" "$S/fill"
        echo "$size"
        "#
    );
    let kept = m.sh_ok(&check_fill);
    eprintln!(
        "fill: ENOSPC at {} after {acked} acknowledged bytes; {} bytes kept",
        f[0],
        kept.trim()
    );
    m.sh_ok("sha256sum --quiet -c \"$S/sums\" && cmp ballast \"$S/ballast\"");

    // Other writers see the same error, spelled as users know it. (Data
    // from 50 MiB into the source, which `fill` never stored: the same bytes
    // as `fill`'s would dedup and need no space.)
    let err = m.sh_fails("dd if=\"$S/fill\" of=more bs=1M skip=50 count=20 conv=fsync status=none");
    assert!(err.contains("No space left on device"), "dd said: {err}");

    // The index is consistent: a remount while the disk is still full works
    // (the reserve gives the index room to open), and the failed files'
    // sizes match what they hold.
    m.remount();
    m.sh_ok("sha256sum --quiet -c \"$S/sums\" && cmp ballast \"$S/ballast\"");
    let kept_after = m.sh_ok(&check_fill);
    assert_eq!(kept_after, kept, "fill changed across the remount");
    assert_eq!(m.sh_ok("stat -c %s fill"), kept, "fill's size");
    m.sh_ok(
        "n=$(stat -c %s more); [ \"$(cat more | wc -c)\" = \"$n\" ]; cmp -n \"$n\" -i 0:52428800 more \"$S/fill\"",
    );
    m.sh_ok("find . -type f -exec cat {} + > /dev/null");

    // Deleting gives the space back (df shows it), and new writes succeed.
    let before = avail_bytes(&m.mnt);
    m.sh_ok("rm ballast fill more");
    common::wait_for(
        "df to show the deleted files' space",
        common::MOUNT_TIMEOUT,
        || avail_bytes(&m.mnt) >= before + (3 << 20),
    );
    // The deletions also put the reserve back, for the next time.
    let reserve = || std::fs::metadata(m.data.join("reserve")).map_or(0, |md| md.len());
    assert_eq!(reserve(), reserved, "reserve after the deletions");
    m.sh_ok(
        r#"
        head -c 2M "$S/fill" > "$S/again"
        dd if="$S/again" of=again bs=1M conv=fsync status=none
        cmp again "$S/again"
        sha256sum again >> "$S/sums"
        "#,
    );
    m.remount();
    m.sh_ok(
        "sha256sum --quiet -c \"$S/sums\" && [ \"$(ls)\" = \"$(printf 'again\\nkeep\\nsmall')\" ]",
    );
    drop(m);
    drop(disk);
}
