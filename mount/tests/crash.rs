//! Crash test: rounds of `kill -9` of the daemon in the middle of writes,
//! then a remount that must show a consistent tree in which every file
//! whose fsync had returned is intact.
//!
//! Each round: a writer (python) creates files of assorted sizes, renames
//! and deletes some, fsyncs about half and prints `synced NAME SHA256` only
//! after fsync returned. Once it has printed a random number of those, and
//! after a further random delay, the daemon is killed with SIGKILL; the dead
//! mount is cleared (`fusermount3 -uz`), the data dir mounted again, and
//! every synced file so far (this round's and all earlier ones') checked by
//! hash, and every file in the tree read to its end. At the end, deleting
//! everything must leave no chunk file behind (nothing leaked by a crash).
//!
//! `PANGEA_CRASH_ROUNDS` (default 15) and `PANGEA_CRASH_SEED` (printed)
//! replay or extend a run.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Mount, Rng, wait_exit};

/// Writes files until killed; see the module docs.
const WRITER: &str = r#"
import hashlib, os, random, sys
rnd, seed = int(sys.argv[1]), int(sys.argv[2])
r = random.Random(seed)
d = f'r{rnd}'
os.makedirs(f'{d}/sub', exist_ok=True)
def size():
    x = r.random()
    if x < 0.70:
        return r.choice([0, 1, 4095, 4096, r.randrange(100, 70000)])
    if x < 0.95:
        return r.randrange(70000, 1 << 20)
    return r.choice([(4 << 20) - 1, (4 << 20) + 1, 5 << 20])
unsynced = []
i = 0
while True:
    i += 1
    name = f'{d}/f{i}'
    n = size()
    data = r.randbytes(n) if r.random() < 0.8 else (b'%d ' % i) * (n // 8)
    sync = r.random() < 0.5
    with open(name, 'wb') as f:
        off = 0
        while off < len(data):
            step = r.choice([4096, 65536, 1 << 20])
            f.write(data[off:off + step])
            off += step
        if sync:
            f.flush()
            os.fsync(f.fileno())
            print(f'synced {name} {hashlib.sha256(data).hexdigest()}', flush=True)
    if not sync:
        unsynced.append(name)
    # Namespace churn on files nobody promised anything about.
    if unsynced and r.random() < 0.3:
        victim = unsynced.pop(r.randrange(len(unsynced)))
        if r.random() < 0.5:
            os.unlink(victim)
        else:
            new = f'{d}/sub/moved{i}'
            os.rename(victim, new)
            unsynced.append(new)
    if unsynced and r.random() < 0.1:
        with open(unsynced[-1], 'r+b') as f:
            f.truncate(r.randrange(0, 5000))
"#;

/// Checks the expected hashes and reads the whole tree; prints `ok N`.
const VERIFY: &str = r#"
import hashlib, os, sys
bad = []
expected = {}
for line in open(sys.argv[1]):
    _, name, sha = line.split()
    expected[name] = sha
for name, sha in sorted(expected.items()):
    try:
        with open(name, 'rb') as f:
            got = hashlib.sha256(f.read()).hexdigest()
        if got != sha:
            bad.append(f'{name}: sha256 {got}, fsynced {sha}')
    except OSError as e:
        bad.append(f'{name}: {e}')
files = 0
for root, dirs, names in os.walk('.', onerror=lambda e: bad.append(f'walk: {e}')):
    try:
        st = os.lstat(root)
        if st.st_nlink != 2 + len(dirs):
            bad.append(f'{root}: nlink {st.st_nlink} with {len(dirs)} subdirs')
    except OSError as e:
        bad.append(f'{root}: {e}')
    for n in names:
        p = os.path.join(root, n)
        files += 1
        try:
            size = os.lstat(p).st_size
            with open(p, 'rb') as f:
                got = len(f.read())
            if got != size:
                bad.append(f'{p}: read {got} bytes of {size}')
        except OSError as e:
            bad.append(f'{p}: {e}')
if bad:
    print('\n'.join(bad))
    sys.exit(1)
print(f'ok {files}')
"#;

/// Synced lines to wait for before the kill, at most.
const MAX_SYNCED_BEFORE_KILL: u64 = 6;
/// Further delay before the kill, at most (the random moment).
const MAX_KILL_DELAY_MS: u64 = 300;
/// How long a round's writer may take to reach its synced target.
const WRITER_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn kill_9_mid_write_keeps_fsynced_files_and_a_consistent_tree() {
    let rounds: u32 = std::env::var("PANGEA_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let (mut rng, _seed) = Rng::from_env("PANGEA_CRASH_SEED");
    let mut m = Mount::new();
    let writer = m.scratch.join("writer.py");
    let verify = m.scratch.join("verify.py");
    let expected = m.scratch.join("expected");
    std::fs::write(&writer, WRITER).expect("writer script");
    std::fs::write(&verify, VERIFY).expect("verify script");
    let mut synced: BTreeMap<String, String> = BTreeMap::new();
    let started = Instant::now();

    for round in 0..rounds {
        let target = rng.range(1, MAX_SYNCED_BEFORE_KILL + 1);
        let delay = Duration::from_millis(rng.range(0, MAX_KILL_DELAY_MS + 1));
        let wlog = m.scratch.join(format!("writer-{round}.err"));
        let mut child = Command::new("python3")
            .arg(&writer)
            .arg(round.to_string())
            .arg(rng.next_u64().to_string())
            .current_dir(&m.mnt)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&wlog).expect("writer log"))
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("writer stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let deadline = Instant::now() + WRITER_TIMEOUT;
        while (lines.len() as u64) < target {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => lines.push(l),
                Err(e) => panic!(
                    "round {round}: writer gave {} synced lines of {target} ({e:?}):\n{}",
                    lines.len(),
                    std::fs::read_to_string(&wlog).unwrap_or_default()
                ),
            }
        }
        // The random moment: the writer is somewhere in its next files.
        std::thread::sleep(delay);
        m.crash();
        let _ = child.kill();
        wait_exit(&mut child, Duration::from_secs(30)).expect("writer exits");
        reader.join().expect("reader thread");
        lines.extend(rx.try_iter());
        for l in &lines {
            let mut f = l.split_whitespace();
            match (f.next(), f.next(), f.next()) {
                (Some("synced"), Some(name), Some(sha)) => {
                    synced.insert(name.to_owned(), sha.to_owned());
                }
                _ => panic!("round {round}: unexpected writer output {l:?}"),
            }
        }
        std::fs::write(
            &expected,
            synced
                .iter()
                .map(|(n, s)| format!("synced {n} {s}\n"))
                .collect::<String>(),
        )
        .expect("expected list");
        m.start();
        let out = m.sh_ok(&format!(
            "python3 '{}' '{}'\nfind . | wc -l >/dev/null",
            verify.display(),
            expected.display()
        ));
        eprintln!(
            "round {round}: killed after {} synced lines (+{delay:?}); {} fsynced files intact; {}",
            lines.len(),
            synced.len(),
            out.trim()
        );
    }

    // Nothing leaked: with every file gone, no chunk file may remain.
    m.sh_ok("find . -mindepth 1 -delete && [ -z \"$(ls -A)\" ]");
    m.remount();
    let left = m.sh_ok("find \"$D/chunks\" -type f | wc -l");
    assert_eq!(
        left.trim(),
        "0",
        "chunk files leaked after deleting everything"
    );
    eprintln!(
        "{rounds} rounds, {} fsynced files checked, in {:?}",
        synced.len(),
        started.elapsed()
    );
}
