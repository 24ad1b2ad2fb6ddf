//! Compiles `tests/c/ces_roundtrip.c` with `cc` against the freshly built
//! `libpangea_ces.so` and runs it on real files: a multi-chunk file of mixed
//! text and random bytes, an empty file and a 1-byte file, with several
//! (k, m). The C program checks round trips with m shards missing, corruption,
//! wrong keys and bad arguments itself; here we check it compiled cleanly,
//! exited 0 and printed its summary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const LIB_FILE: &str = "libpangea_ces.so";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn repo_root() -> PathBuf {
    crate_dir().join("../..").canonicalize().unwrap()
}

/// The directory holding `libpangea_ces.so`: cargo builds the cdylib next to
/// the test executable (`target/<profile>/deps`) and copies it one level up.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    [Some(deps), deps.parent()]
        .into_iter()
        .flatten()
        .find(|dir| dir.join(LIB_FILE).is_file())
        .unwrap_or_else(|| {
            panic!(
                "{LIB_FILE} is neither in {} nor in its parent",
                deps.display()
            )
        })
        .to_path_buf()
}

/// A scratch directory of this test process. Those of earlier processes that
/// are gone are removed first.
fn work_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let pid = name.to_str().and_then(|n| n.strip_prefix("c-roundtrip-"));
            if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = tmp.join(format!("c-roundtrip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// Compiles the C program once per test process.
fn c_program() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = repo_root();
        let lib = lib_dir();
        let bin = work_dir().join("ces_roundtrip");
        let output = Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
            .args(["-Wall", "-Wextra", "-Werror", "-std=c11", "-O1", "-I"])
            .arg(crate_dir())
            .arg(root.join("tests/c/ces_roundtrip.c"))
            .arg("-o")
            .arg(&bin)
            .arg("-L")
            .arg(&lib)
            .arg("-lpangea_ces")
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .output()
            .expect("run cc (install a C compiler: scripts/deps)");
        assert!(
            output.status.success(),
            "cc failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        bin
    })
}

/// Runs the C program on `file` with optional "K M" and checks its summary.
fn run(file: &Path, shards: Option<(u16, u16)>, bytes: usize, chunks: usize) {
    let mut cmd = Command::new(c_program());
    // cargo puts target/<profile> on LD_LIBRARY_PATH, which the loader
    // searches before the program's RUNPATH: a stale copy of the library
    // there must not shadow the one this test built.
    cmd.env("LD_LIBRARY_PATH", lib_dir());
    cmd.arg(file);
    let (k, m) = shards.unwrap_or((4, 2));
    if shards.is_some() {
        cmd.arg(k.to_string()).arg(m.to_string());
    }
    let output = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("{cmd:?} exited with {}:\n{stdout}{stderr}", output.status);
    assert!(output.status.success(), "{context}");
    assert!(
        stdout.contains(&format!("{bytes} bytes in {chunks} chunk(s), k={k} m={m}")),
        "{context}"
    );
    assert!(stdout.contains("ces_roundtrip: OK: "), "{context}");
    assert!(stdout.contains(" checks passed, 0 failed"), "{context}");
}

fn write_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = work_dir().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Alternating 64 KiB blocks of text and xorshift noise.
fn mixed_bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut block = 0;
    while out.len() < len {
        let end = (out.len() + 64 * 1024).min(len);
        if block % 2 == 0 {
            let mut line = 0;
            while out.len() < end {
                let text =
                    format!("line {block}.{line}: the quick brown fox jumps over the lazy dog\n");
                let room = end - out.len();
                out.extend_from_slice(&text.as_bytes()[..text.len().min(room)]);
                line += 1;
            }
        } else {
            while out.len() < end {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let room = end - out.len();
                out.extend_from_slice(&x.to_le_bytes()[..8.min(room)]);
            }
        }
        block += 1;
    }
    out
}

#[test]
fn multi_chunk_file_round_trips() {
    let len = 9 * 1024 * 1024 + 12_345;
    let path = write_file("mixed.dat", &mixed_bytes(len));
    run(&path, None, len, 3);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn empty_file_round_trips() {
    let path = write_file("empty.txt", b"");
    run(&path, None, 0, 1);
    run(&path, Some((3, 5)), 0, 1);
}

#[test]
fn one_byte_file_round_trips() {
    let path = write_file("one.bin", b"x");
    run(&path, None, 1, 1);
    run(&path, Some((1, 0)), 1, 1);
    run(&path, Some((1, 3)), 1, 1);
}

#[test]
fn other_shard_counts_round_trip() {
    let len = 4 * 1024 * 1024 + 1;
    let path = write_file("text-and-noise.log", &mixed_bytes(len));
    run(&path, Some((10, 4)), len, 2);
    run(&path, Some((2, 1)), len, 2);
    std::fs::remove_file(path).unwrap();
}
