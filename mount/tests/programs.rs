//! End-to-end: real programs on a real mount (cp, mv, ln, tar, rsync,
//! sqlite3, git, python's mmap, editors' save-by-rename, big directories,
//! concurrent writers, long names, unlinked-open files, xattrs, df, cached
//! attributes, read-only mounts, file locks, st_blocks).
//!
//! Each test mounts its own data dir; the `Mount` guard unmounts it even
//! when the test fails. Needs /dev/fuse, fusermount3 and the tools listed in
//! scripts/deps.

mod common;

use common::{MAKE_TREE, Mount};
use std::time::Duration;

/// cp -a of a tree with every interesting size and kind keeps contents and
/// metadata, before and after a remount.
#[test]
fn cp_a_tree_matches_source_and_survives_remount() {
    let mut m = Mount::new();
    m.sh_ok(&format!(
        "{MAKE_TREE}\nmake_tree \"$S/src\"\ncp -a \"$S/src\" \"$M/copy\"\n\
         cp -a /usr/share/doc \"$M/doc\""
    ));
    let check = format!(
        "{MAKE_TREE}\n\
         diff -r --no-dereference -x fifo \"$S/src\" \"$M/copy\"\n\
         diff <(list_tree \"$S/src\") <(list_tree \"$M/copy\")\n\
         diff -r --no-dereference /usr/share/doc \"$M/doc\"\n\
         diff <(list_tree /usr/share/doc) <(list_tree \"$M/doc\")\n\
         [ \"$(stat -c %F copy/fifo)\" = fifo ]\n\
         [ \"$(stat -c %h copy/one)\" = 2 ]\n\
         [ \"$(stat -c %i copy/one)\" = \"$(stat -c %i copy/sub/hardlink_to_one)\" ]"
    );
    m.sh_ok(&check);
    m.remount();
    m.sh_ok(&check);
}

/// mv (within and across directories, over files), ln and ln -s behave as
/// on a local disk, and the result survives a remount.
#[test]
fn mv_ln_symlink_behave_like_posix_and_persist() {
    let mut m = Mount::new();
    m.sh_ok(
        r#"
        echo hello > a
        mv a b
        [ ! -e a ] && [ "$(cat b)" = hello ]
        mkdir d1 d2
        mv b d1/
        mv d1 d2/
        [ "$(cat d2/d1/b)" = hello ]
        [ "$(stat -c %h d2)" = 3 ] && [ "$(stat -c %h .)" = 3 ]
        ln d2/d1/b hard
        [ "$(stat -c %h hard)" = 2 ]
        [ "$(stat -c %i hard)" = "$(stat -c %i d2/d1/b)" ]
        echo more >> hard
        [ "$(cat d2/d1/b)" = "$(printf 'hello\nmore')" ]
        rm d2/d1/b
        [ "$(stat -c %h hard)" = 1 ]
        ln -s hard sym
        ln -s ../hard d2/rel
        [ "$(readlink sym)" = hard ] && [ "$(cat d2/rel)" = "$(cat hard)" ]
        echo x > x; echo y > y
        mv y x
        [ "$(cat x)" = y ] && [ ! -e y ]
        mkdir -p e/f g/h
        if mv -T e g 2>"$S/err"; then echo 'mv onto a non-empty dir succeeded'; exit 1; fi
        grep -q 'Directory not empty' "$S/err"
        mv -T e g/h
        [ -d g/h/f ] && [ ! -e e ]
        mv sym d2/sym2
        [ "$(readlink d2/sym2)" = hard ]
        "#,
    );
    m.remount();
    m.sh_ok(
        r#"
        [ "$(cat hard)" = "$(printf 'hello\nmore')" ] && [ "$(stat -c %h hard)" = 1 ]
        [ "$(cat x)" = y ] && [ ! -e y ] && [ ! -e a ] && [ ! -e b ]
        [ "$(readlink d2/sym2)" = hard ] && [ "$(readlink d2/rel)" = ../hard ]
        [ -d g/h/f ] && [ "$(stat -c %h g)" = 3 ] && [ "$(stat -c %h d2)" = 3 ]
        [ "$(ls)" = "$(printf 'd2\ng\nhard\nx')" ]
        "#,
    );
}

/// A tar archive extracted into the mount equals the same archive extracted
/// on the local disk, and archiving the mount again gives the same tree.
#[test]
fn tar_round_trip_matches_local_extraction() {
    let m = Mount::new();
    m.sh_ok(&format!(
        r#"{MAKE_TREE}
        make_tree "$S/src"
        tar -C "$S/src" -cf "$S/a.tar" .
        mkdir "$S/local" "$M/x" "$S/back"
        tar -C "$S/local" -xpf "$S/a.tar"
        tar -C "$M/x" -xpf "$S/a.tar"
        diff -r --no-dereference -x fifo "$S/local" "$M/x"
        diff <(list_tree "$S/local") <(list_tree "$M/x")
        tar -C "$M/x" -cf - . | tar -C "$S/back" -xpf -
        diff -r --no-dereference -x fifo "$S/local" "$S/back"
        diff <(list_tree "$S/local") <(list_tree "$S/back")
        "#
    ));
}

/// rsync -aHAX into the mount, then a second run finds nothing to do.
#[test]
fn rsync_second_run_transfers_nothing() {
    let m = Mount::new();
    let out = m.sh_ok(&format!(
        r#"{MAKE_TREE}
        make_tree "$S/src"
        setfattr -n user.origin -v scratch "$S/src/one"
        setfattr -n user.bin -v 0x00ff00 "$S/src/sub"
        rsync -aHAX "$S/src/" "$M/r/"
        diff -r --no-dereference -x fifo "$S/src" "$M/r"
        diff <(list_tree "$S/src") <(list_tree "$M/r")
        [ "$(getfattr --only-values -n user.origin r/one)" = scratch ]
        [ "$(stat -c %i r/one)" = "$(stat -c %i r/sub/hardlink_to_one)" ]
        rsync -aHAX --itemize-changes "$S/src/" "$M/r/"
        rsync -aHAX --stats "$S/src/" "$M/r/" | grep 'Number of regular files transferred'
        "#
    ));
    let mut lines = out.lines();
    let stats = lines.next_back().unwrap_or_default();
    let itemized: Vec<&str> = lines.collect();
    assert!(
        itemized.is_empty(),
        "second rsync changed: {itemized:#?}\n{}",
        m.log_text()
    );
    assert!(
        stats.trim_end().ends_with(": 0"),
        "second rsync transferred files: {stats}"
    );
}

/// ~1000 inserts in transactions pass PRAGMA integrity_check in both WAL
/// and rollback-journal modes, also after a remount.
#[test]
fn sqlite_wal_and_delete_journals_pass_integrity_check() {
    let mut m = Mount::new();
    let check = r#"
        for mode in wal delete; do
          [ "$(sqlite3 db-$mode 'PRAGMA integrity_check')" = ok ]
          [ "$(sqlite3 db-$mode 'SELECT count(*), sum(length(b)) FROM t')" = '960|960000' ]
          [ "$(sqlite3 db-$mode 'PRAGMA journal_mode')" = $mode ]
        done
    "#;
    m.sh_ok(&format!(
        r#"
        {{
          echo 'CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB);'
          echo 'CREATE INDEX tv ON t(v);'
          for tx in $(seq 0 49); do
            echo 'BEGIN;'
            for i in $(seq 0 19); do
              echo "INSERT INTO t(v, b) VALUES ('row $tx $i', randomblob(1000));"
            done
            echo "UPDATE t SET v = v || ' updated' WHERE id % 7 = $((tx % 7));"
            echo 'COMMIT;'
          done
          echo 'DELETE FROM t WHERE id % 25 = 0;'
        }} > "$S/load.sql"
        for mode in wal delete; do
          [ "$(sqlite3 db-$mode "PRAGMA journal_mode=$mode")" = $mode ]
          sqlite3 db-$mode < "$S/load.sql"
        done
        {check}
        "#
    ));
    m.remount();
    m.sh_ok(check);
}

/// git init, add, two commits, repack and `git fsck --full` in the mount.
#[test]
fn git_init_commit_fsck_succeeds() {
    let m = Mount::new();
    let out = m.sh_ok(
        r#"
        export HOME="$S" GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.com \
               GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@example.com
        git init -q repo
        cd repo
        mkdir -p src
        for i in $(seq 1 200); do echo "file $i" > src/f$i.txt; done
        head -c 5000000 /dev/urandom > blob.bin
        git add -A
        git commit -qm first
        for i in $(seq 1 3 200); do echo "changed $i" >> src/f$i.txt; done
        git mv src/f2.txt src/renamed.txt
        git commit -qam second
        git repack -qad
        git fsck --full --strict
        git status --porcelain
        git log --oneline | wc -l
        "#,
    );
    assert_eq!(out.trim(), "2", "git status/log said: {out}");
}

/// Writes through a shared mmap across chunk boundaries reach read(2), in
/// this process, in another one, and after a remount; read(2) writes show
/// in a fresh mmap.
#[test]
fn mmap_writes_are_visible_to_read_and_persist() {
    let mut m = Mount::new();
    let script = r#"
import hashlib, mmap, os, sys
size = 9 * 1024 * 1024 + 123
with open('mm', 'wb') as f:
    f.truncate(size)
expected = bytearray(size)
fd = os.open('mm', os.O_RDWR)
mm = mmap.mmap(fd, size)
for off, n in [(0, 10), (4095, 2), (4096, 5000), (4 * 1024 * 1024 - 3, 9), (8 * 1024 * 1024 + 7, 70000), (size - 10, 10)]:
    data = os.urandom(n)
    mm[off:off + n] = data
    expected[off:off + n] = data
mm.flush()
assert mm[:] == expected, 'mmap reads back its own writes'
mm.close()
os.close(fd)
with open('mm', 'rb') as f:
    assert f.read() == expected, 'read(2) sees the mmap writes'
# read(2)-side writes, then a fresh mmap sees them
with open('mm', 'r+b') as f:
    f.seek(1000)
    f.write(b'written by write(2)')
expected[1000:1000 + 19] = b'written by write(2)'
with open('mm', 'rb') as f:
    mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    assert mm[:] == expected, 'a fresh mmap sees write(2)'
    mm.close()
print(hashlib.sha256(expected).hexdigest())
"#;
    let sum = m.sh_ok(&format!("python3 - <<'EOF'\n{script}\nEOF"));
    let check = format!("[ \"$(sha256sum < mm | cut -d' ' -f1)\" = {} ]", sum.trim());
    m.sh_ok(&check);
    m.remount();
    m.sh_ok(&check);
}

/// Saving as editors do (write a temp file, fsync, rename over the target)
/// never shows a reader a missing, empty or partial file.
#[test]
fn editor_save_by_rename_is_atomic_for_readers() {
    let m = Mount::new();
    let script = r#"
import hashlib, os, sys
SAVES = 150
def content(v):
    body = (b'%d:' % v) * (500 + (v * 7919) % 40000)
    return b'v=%d len=%d sha=%s\n' % (v, len(body), hashlib.sha256(body).hexdigest().encode()) + body
def save(v):
    with open('.doc.tmp', 'wb') as f:
        f.write(content(v))
        f.flush()
        os.fsync(f.fileno())
    os.rename('.doc.tmp', 'doc')
save(0)
pid = os.fork()
if pid == 0:
    for v in range(1, SAVES + 1):
        save(v)
    os._exit(0)
seen, reads = set(), 0
while True:
    done = os.waitpid(pid, os.WNOHANG)[0] == pid
    with open('doc', 'rb') as f:
        data = f.read()
    head, _, body = data.partition(b'\n')
    fields = dict(x.split(b'=') for x in head.split(b' '))
    assert len(body) == int(fields[b'len']), f'partial read of {head}: {len(body)} bytes'
    assert hashlib.sha256(body).hexdigest().encode() == fields[b'sha'], f'torn read of {head}'
    seen.add(int(fields[b'v']))
    reads += 1
    if done:
        break
assert max(seen) == SAVES, f'last save not visible: {max(seen)}'
assert not os.path.exists('.doc.tmp')
print(len(seen), reads)
"#;
    let out = m.sh_ok(&format!(
        "python3 - <<'EOF'\n{script}\nEOF\n\
         printf 'alpha\\nbeta\\n' > s.txt\n\
         ino=$(stat -c %i s.txt)\n\
         sed -i 's/beta/gamma/' s.txt\n\
         [ \"$(cat s.txt)\" = \"$(printf 'alpha\\ngamma')\" ]\n\
         [ \"$(stat -c %i s.txt)\" != \"$ino\" ]\n\
         [ \"$(ls -A | sort | tr '\\n' ' ')\" = 'doc s.txt ' ]"
    ));
    let mut it = out.split_whitespace();
    let versions: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!(versions >= 2, "the reader saw one version only: {out}");
}

/// 20,000 files in one directory: create, list, stat, remove.
#[test]
fn directory_with_20000_files_lists_stats_and_removes() {
    let m = Mount::new();
    let out = m.sh_ok(
        r#"
        mkdir big
        cd big
        seq -f 'file-%05g' 0 19999 | xargs touch
        echo content > file-12345
        [ "$(ls | wc -l)" = 20000 ]
        [ "$(ls -f | wc -l)" = 20002 ]
        [ "$(find . -type f | wc -l)" = 20000 ]
        [ "$(ls -l | tail -n +2 | wc -l)" = 20000 ]
        [ "$(stat -c %s file-00000 file-12345 file-19999 | tr '\n' ' ')" = '0 8 0 ' ]
        [ "$(cat file-12345)" = content ]
        [ ! -e file-20000 ]
        cd ..
        rm -rf big
        [ ! -e big ]
        ls -A | wc -l
        "#,
    );
    assert_eq!(out.trim(), "0");
}

/// Four dd writers of 20 MiB each and two O_APPEND writers to one shared
/// file, all at once: every file has exactly its bytes, before and after a
/// remount.
#[test]
fn concurrent_writers_keep_every_byte() {
    let mut m = Mount::new();
    let appender = r#"
import os, sys
who = sys.argv[1]
fd = os.open('shared.log', os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
for i in range(2000):
    line = f'{who} {i:06d} '.encode().ljust(63, b'.') + b'\n'
    assert os.write(fd, line) == 64
os.close(fd)
"#;
    std::fs::write(m.scratch.join("append.py"), appender).expect("script");
    let check = r#"
        for i in 1 2 3 4; do cmp "$S/src$i" "w$i"; done
        [ "$(wc -l < shared.log)" = 4000 ] && [ "$(stat -c %s shared.log)" = 256000 ]
        for who in A B; do
          grep "^$who " shared.log | cut -d' ' -f2 > "$S/got-$who"
          seq -f '%06g' 0 1999 | diff - "$S/got-$who"
        done
        [ "$(grep -cv '^[AB] [0-9]\{6\} \.*$' shared.log)" = 0 ]
    "#;
    m.sh_ok(&format!(
        r#"
        for i in 1 2 3 4; do head -c 20M /dev/urandom > "$S/src$i"; done
        pids=()
        for i in 1 2 3 4; do dd if="$S/src$i" of="w$i" bs=1M status=none & pids+=($!); done
        python3 "$S/append.py" A & pids+=($!)
        python3 "$S/append.py" B & pids+=($!)
        for p in "${{pids[@]}}"; do wait "$p"; done
        {check}
        "#
    ));
    m.remount();
    m.sh_ok(check);
}

/// A 255-byte name works everywhere; 256 bytes fails with ENAMETOOLONG.
#[test]
fn names_of_255_bytes_work_and_256_fail_enametoolong() {
    let m = Mount::new();
    m.sh_ok(
        r#"
        n255=$(head -c 255 /dev/zero | tr '\0' a)
        n256=${n255}b
        u255=$(printf 'é%.0s' $(seq 85))x$(printf 'é%.0s' $(seq 42))
        [ "$(printf %s "$u255" | wc -c)" = 255 ]
        echo data > "$n255"
        [ "$(cat "$n255")" = data ]
        mkdir "$u255"
        ln -s "../$n255" "$u255/$n255"
        [ "$(cat "$u255/$n255")" = data ]
        ln "$n255" "$u255/h"
        [ "$(ls | grep -c "^$n255\$")" = 1 ]
        for cmd in "touch $n256" "mkdir $n256" "ln -s x $n256" "ln $n255 $n256" \
                   "mv $n255 $n256" "stat $n256" "cat $n256"; do
          if $cmd 2>"$S/err"; then echo "$cmd succeeded"; exit 1; fi
          grep -q 'File name too long' "$S/err" || { echo "$cmd: $(cat "$S/err")"; exit 1; }
        done
        [ "$(cat "$n255")" = data ]
        rm "$n255" "$u255/h" "$u255/$n255"
        rmdir "$u255"
        [ -z "$(ls -A)" ]
        "#,
    );
}

/// Misses are cached by the kernel (negative entries): a name seen missing
/// and then created, renamed onto, linked or made a directory through the
/// mount is found at once, by every kind of lookup.
#[test]
fn names_seen_missing_are_found_once_created() {
    let m = Mount::new();
    m.sh_ok(
        r#"
        for n in f d l s r h; do [ ! -e "$n" ] && ! stat "$n" 2>/dev/null; done
        echo one > f
        [ "$(cat f)" = one ]
        mkdir d && [ -d d ]
        ln -s f l && [ "$(cat l)" = one ]
        ln f h && [ "$(stat -c %h f)" = 2 ]
        echo two > tmp && mv tmp r && [ "$(cat r)" = two ]
        mkfifo s && [ -p s ]
        rm f && [ ! -e f ] && echo three > f && [ "$(cat f)" = three ]
        mv r gone && [ ! -e r ] && [ "$(cat gone)" = two ]
        "#,
    );
}

/// A file unlinked while open stays readable and writable through its
/// descriptor; its chunks are deleted only after the last close.
#[test]
fn unlinked_open_file_stays_readable_until_closed() {
    let m = Mount::new();
    let script = r#"
import os, sys, time
chunks = os.path.join(os.environ['D'], 'chunks')
def chunk_files():
    return sum(len([f for f in fs if not f.startswith('tmp.')]) for _, _, fs in os.walk(chunks))
before = chunk_files()
data = os.urandom(6 * 1024 * 1024)
fd = os.open('victim', os.O_CREAT | os.O_RDWR, 0o644)
os.write(fd, data)
os.fsync(fd)
reader = os.open('victim', os.O_RDONLY)
with_file = chunk_files()
assert with_file > before, (before, with_file)
os.unlink('victim')
assert not os.path.exists('victim')
assert os.fstat(fd).st_nlink == 0
assert os.pread(reader, len(data), 0) == data
os.pwrite(fd, b'after unlink', 100)
expected = data[:100] + b'after unlink' + data[112:]
os.fsync(fd)
assert os.pread(reader, len(data), 0) == expected
os.close(fd)
assert os.pread(reader, len(data), 0) == expected
os.close(reader)
# RELEASE reaches the daemon asynchronously after close(2), and chunk files
# are deleted once their deletion is durable (the next fsync): poll, fsyncing.
deadline = time.monotonic() + 30
while chunk_files() > before:
    assert time.monotonic() < deadline, f'chunks of the unlinked file remain: {chunk_files()} > {before}'
    with open('sync', 'wb') as f:
        os.fsync(f.fileno())
    time.sleep(0.02)
os.unlink('sync')
assert os.listdir('.') == []
"#;
    m.sh_ok(&format!("python3 - <<'EOF'\n{script}\nEOF"));
}

/// The kernel keeps entries and attributes for 60 s (`fuse::Ttls`), yet
/// every change is seen at once, including those the daemon makes by
/// itself: a write or truncate by a user without CAP_FSETID clears setuid
/// and setgid; sizes, times and link counts follow writes, links, renames
/// and removals made by other processes.
#[test]
fn cached_attributes_follow_every_change_at_once() {
    let m = Mount::new();
    // The temp dir is 0700; the other user must reach the mount point.
    let parent = m.mnt.parent().expect("mount point has a parent");
    std::fs::set_permissions(parent, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod temp dir");
    m.sh_ok(
        r#"
        as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
        chmod 777 .
        echo x > f && chmod 6777 f && [ "$(stat -c %a f)" = 6777 ]
        as_nobody sh -c 'echo more >> f'
        [ "$(stat -c %a f)" = 777 ] && [ "$(stat -c %s f)" = 7 ]
        chmod 6777 f && [ "$(stat -c %a f)" = 6777 ]
        as_nobody truncate -s 1 f
        [ "$(stat -c %a f)" = 777 ] && [ "$(stat -c %s f)" = 1 ]
        touch -d @1000000000 f && [ "$(stat -c %Y f)" = 1000000000 ]
        as_nobody sh -c 'printf abc >> f'
        [ "$(stat -c %Y f)" != 1000000000 ] && [ "$(stat -c %s f)" = 4 ]
        ln f g && [ "$(stat -c %h f)" = 2 ]
        as_nobody mv g h && [ "$(stat -c %h f)" = 2 ] && [ -e h ] && [ ! -e g ]
        rm h && [ "$(stat -c %h f)" = 1 ]
        mkdir -p d && [ "$(stat -c %h d)" = 2 ] && mkdir d/e && [ "$(stat -c %h d)" = 3 ]
        as_nobody sh -c 'echo new > n'
        [ "$(stat -c %U n)" = nobody ] && [ "$(cat n)" = new ]
        "#,
    );
}

/// `-o ro`: the kernel mounts read-only; everything reads as before, and
/// every kind of change fails with EROFS and changes nothing.
#[test]
fn read_only_mount_reads_everything_and_refuses_every_change() {
    let mut m = Mount::new();
    m.sh_ok(
        r#"
        mkdir d && echo hello > d/f && ln -s f d/l && setfattr -n user.k -v v d/f
        head -c 5000000 /dev/urandom > big
        sha256sum big d/f > "$S/sums"
        "#,
    );
    let status = m.unmount();
    assert!(status.success(), "unmount: {status}");
    m.args.extend(["-o".into(), "ro".into()]);
    m.start();
    m.sh_ok(
        r#"
        sha256sum -c --quiet "$S/sums"
        [ "$(readlink d/l)" = f ]
        [ "$(getfattr --only-values -n user.k d/f)" = v ]
        for cmd in "touch new" "mkdir e" "rm d/f" "mv d/f d/g" "chmod 600 d/f" \
                   "ln d/f h" "ln -s f s" "setfattr -n user.x -v y d/f" \
                   "truncate -s 0 d/f" "echo x >> d/f" "rmdir d"; do
            if out=$(sh -c "$cmd" 2>&1); then echo "'$cmd' succeeded on a ro mount"; exit 1; fi
            case "$out" in
                *"Read-only file system"*) ;;
                *) echo "'$cmd' failed otherwise: $out"; exit 1 ;;
            esac
        done
        sha256sum -c --quiet "$S/sums"
        [ "$(ls -A)" = "$(printf 'big\nd')" ]
        "#,
    );
}

/// `-o ro` writes nothing to the data dir, even after a crash left work a
/// read-write mount would do at once (pending deletions, an orphan, the
/// sweep of a run that did not end cleanly): every file and directory of
/// the data dir is the same, bytes and times, before and after.
#[test]
fn read_only_mount_writes_nothing_to_the_data_dir() {
    let mut m = Mount::new();
    m.sh_ok(
        r#"
        head -c 9000000 /dev/urandom > big
        head -c 9000000 /dev/urandom > gone
        head -c 9000000 /dev/urandom > deleted
        echo small > small
        sha256sum big small > "$S/sums"
        rm deleted
        "#,
    );
    // An unlinked file held open (an orphan) when the daemon dies.
    let mut holder = std::process::Command::new("sh")
        .args(["-c", "exec 7< gone; rm gone; sleep 30"])
        .current_dir(&m.mnt)
        .spawn()
        .expect("sh");
    common::wait_for(
        "the held file to be unlinked",
        Duration::from_secs(10),
        || !m.path("gone").exists(),
    );
    m.crash();
    let _ = holder.kill();
    let _ = holder.wait();
    let before = common::snapshot(&m.data);
    m.args.extend(["-o".into(), "ro".into()]);
    m.start();
    m.sh_ok(r#"sha256sum -c --quiet "$S/sums"; cat big small > /dev/null; ls -la"#);
    let status = m.unmount();
    assert!(status.success(), "unmount: {status}\n{}", m.log_text());
    let after = common::snapshot(&m.data);
    assert_eq!(before, after, "a read-only mount changed the data dir");
}

/// setfattr/getfattr: user (text, binary, 60 KB), trusted, removal, the
/// Linux rule against user xattrs on symlinks, persistence.
#[test]
fn xattrs_set_get_list_remove_and_persist() {
    let mut m = Mount::new();
    m.sh_ok(
        r#"
        touch f
        mkdir d
        ln -s f l
        setfattr -n user.color -v blue f
        [ "$(getfattr --only-values -n user.color f)" = blue ]
        setfattr -n user.bin -v 0x00ff10 f
        getfattr -e hex -n user.bin f | grep -qx 'user.bin=0x00ff10'
        head -c 60000 /dev/zero | tr '\0' x > "$S/big"
        setfattr -n user.big -v "$(cat "$S/big")" d
        [ "$(getfattr --only-values -n user.big d | wc -c)" = 60000 ]
        setfattr -n user.gone -v 1 f
        setfattr -x user.gone f
        if getfattr -n user.gone f 2>"$S/err"; then exit 1; fi
        grep -q 'No such attribute' "$S/err"
        setfattr -n trusted.t -v root-only d
        if setfattr -h -n user.x -v 1 l 2>"$S/err"; then exit 1; fi
        grep -q 'Operation not permitted' "$S/err"
        "#,
    );
    m.remount();
    let out = m.sh_ok("getfattr -d -m - f d | grep -v '^#' | cut -c1-40 | sort");
    let got: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    let big = format!("user.big=\"{}", "x".repeat(30));
    assert_eq!(
        got,
        [
            "trusted.t=\"root-only\"",
            big.as_str(),
            "user.bin=0sAP8Q",
            "user.color=\"blue\""
        ],
        "xattrs after remount: {out}"
    );
}

/// statfs (`df`) on the mount reports the size of the data dir's disk.
#[test]
fn statfs_reports_the_data_dir_disk() {
    let m = Mount::new();
    let out = m.sh_ok(
        r#"
        df -P "$M" | tail -1 | awk '{print $1}'
        stat -f -c '%S %b %a %l' "$M"
        stat -f -c '%S %b %a' "$D"
        "#,
    );
    let lines: Vec<Vec<u64>> = out
        .lines()
        .skip(1)
        .map(|l| {
            l.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .collect();
    assert_eq!(out.lines().next(), Some("pangea"), "df: {out}");
    let (mnt, data) = (&lines[0], &lines[1]);
    let total = |v: &Vec<u64>| v[0] * v[1];
    let avail = |v: &Vec<u64>| v[0] * v[2];
    assert!(
        total(mnt).abs_diff(total(data)) < 4096,
        "sizes differ: mount {} vs data dir {}",
        total(mnt),
        total(data)
    );
    // Other processes write to the same disk meanwhile: a loose bound.
    assert!(
        avail(mnt).abs_diff(avail(data)) < 512 << 20,
        "free space differs: mount {} vs data dir {}",
        avail(mnt),
        avail(data)
    );
    assert_eq!(mnt[3], 255, "name length limit");
}

/// flock(2) and POSIX (fcntl) locks are kept by the kernel for the mount:
/// a lock held by one process refuses a conflicting one from another
/// process, and the lock is free again once released.
#[test]
fn flock_and_posix_locks_exclude_other_processes() {
    let m = Mount::new();
    m.sh_ok(
        r#"
        echo data > lockfile
        # flock(2): another open file description conflicts.
        exec 9>>lockfile
        flock -x 9
        if flock -n lockfile true; then echo "second flock granted"; exit 1; fi
        flock -u 9
        flock -n lockfile true
        exec 9>&-
        # POSIX locks (fcntl F_SETLK) between two processes.
        python3 - <<'PY'
import fcntl, os, sys
fd = os.open("lockfile", os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)
tried_r, tried_w = os.pipe()
freed_r, freed_w = os.pipe()
pid = os.fork()
if pid == 0:
    fd2 = os.open("lockfile", os.O_RDWR)
    try:
        fcntl.lockf(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os._exit(1)  # granted while the parent holds it
    except OSError:
        pass
    os.write(tried_w, b"t")
    os.read(freed_r, 1)  # the parent has unlocked
    fcntl.lockf(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os._exit(0)
os.close(tried_w)
os.close(freed_r)
os.read(tried_r, 1)  # (EOF if the child exited first)
fcntl.lockf(fd, fcntl.LOCK_UN)
os.write(freed_w, b"u")
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
PY
        "#,
    );
}

/// What `stat` shows for `st_blocks` and a directory's size (see
/// docs/SEMANTICS.md): blocks follow the size, holes included; a
/// directory's size is 0.
#[test]
fn stat_shows_blocks_from_the_size_and_directories_of_size_0() {
    let m = Mount::new();
    let out = m.sh_ok(
        r#"
        truncate -s 10M sparse && printf x >> sparse
        head -c 513 /dev/zero > f513
        mkdir d && touch d/a d/b
        stat -c '%n %s %b %B' sparse f513 d
        "#,
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["sparse 10485761 20481 512", "f513 513 2 512", "d 0 8 512"],
        "{out}"
    );
}

/// The FUSE read requests the daemon answered so far (its metrics
/// endpoint, started with `--metrics 127.0.0.1:0`; the address is in its
/// log).
fn fuse_reads(m: &Mount) -> u64 {
    use std::io::{Read, Write};
    let log = m.log_text();
    let addr = log
        .rsplit("metrics at http://")
        .next()
        .and_then(|t| t.split("/metrics").next())
        .filter(|a| log.contains("metrics at http://") && !a.is_empty())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"))
        .to_owned();
    let mut c = std::net::TcpStream::connect(&addr).expect("metrics endpoint");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
    let mut out = String::new();
    c.read_to_string(&mut out).expect("response");
    out.lines()
        .find_map(|l| {
            l.strip_prefix("pangea_fuse_op_seconds_count{op=\"read\"} ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// A file read again is served from the kernel's page cache (opens keep
/// it: FOPEN_KEEP_CACHE), and every change through the mount is seen at
/// once by the next read: a write in the middle, an append, a truncate, a
/// rename over it, and a fresh mount.
#[test]
fn rereads_come_from_the_page_cache_and_every_change_is_seen() {
    let mut m = Mount::unstarted(None);
    m.args.extend(["--metrics".into(), "127.0.0.1:0".into()]);
    m.start();
    m.sh_ok("head -c 3000000 /dev/urandom > f && cp f \"$S/f\" && sync f");
    m.remount();
    m.sh_ok("cmp f \"$S/f\"");
    // A read is counted when its handler returns, just after its reply:
    // wait until the count stands still.
    let mut after_first = fuse_reads(&m);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = fuse_reads(&m);
        if now == after_first {
            break;
        }
        after_first = now;
    }
    assert!(
        after_first > 0,
        "the first read after a mount reads the daemon"
    );
    m.sh_ok("cmp f \"$S/f\" && cat f > /dev/null");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        fuse_reads(&m),
        after_first,
        "reading an unchanged file again asked the daemon"
    );
    m.sh_ok(
        r#"
        printf 'middle' | dd of=f bs=1 seek=1000000 conv=notrunc status=none
        printf 'middle' | dd of="$S/f" bs=1 seek=1000000 conv=notrunc status=none
        cmp f "$S/f"
        printf 'tail' >> f && printf 'tail' >> "$S/f" && cmp f "$S/f"
        truncate -s 123457 f && truncate -s 123457 "$S/f" && cmp f "$S/f"
        head -c 5000 /dev/urandom > g && cp g "$S/g"
        mv g f && cmp f "$S/g"
        "#,
    );
    m.remount();
    m.sh_ok("cmp f \"$S/g\"");
}
