#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS_PER_TARGET seconds each
# (default 20) with a fixed libFuzzer seed, prints one line per target and
# `fuzz: N passed, M failed`, and exits non-zero if any target crashed,
# failed an assertion, timed out or ran out of memory.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
#
# Environment:
#   PANGEA_CACHE   cache root (default /var/cache/pangea); the build goes to
#                  $PANGEA_CACHE/fuzz-target and is reused, so reruns only
#                  fuzz (the cold build takes minutes).
#   FUZZ_SEED      libFuzzer -seed (default 1).
#   FUZZ_TARGETS   space-separated subset of targets (default: all).
#   FUZZ_SANITIZER none (default) or address; see below.
#
# Stable toolchain: the coverage instrumentation cargo-fuzz uses is stable,
# but it passes the sanitizer as `-Zsanitizer=...`, which stable rustc
# refuses. So the default build is `--sanitizer none`: coverage-guided
# libFuzzer, panics and failed assertions are caught, no AddressSanitizer.
# The code under test is safe Rust (unsafe only in dependencies).
# FUZZ_SANITIZER=address builds with ASan (+LeakSanitizer) anyway by setting
# RUSTC_BOOTSTRAP=1 (stable rustc ships the ASan runtime), in its own target
# dir $PANGEA_CACHE/fuzz-target-address: works with rustc 1.95, but the cold
# build takes about twice as long and fuzzing is ~1.5-5x slower.
# `--debug-assertions` turns on debug_assert! and integer overflow checks.
# cargo-fuzz sets RUSTFLAGS, which replaces the `--cfg chacha20_avx512` of
# .cargo/config.toml for this build only (ChaCha then uses its AVX2 backend;
# behaviour is the same).
#
# Corpus: fuzz/corpus/<target> (gitignored, grows across runs) plus the
# committed seeds in fuzz/seeds/<target> (read only; regenerate with
# `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds`).
# Crash inputs: fuzz/artifacts/<target>/; reproduce with
#   cargo fuzz run -s none -a --target-dir "$PANGEA_CACHE/fuzz-target" TARGET ARTIFACT
# (the failure line names the artifact; it replays the one input and exits).
set -euo pipefail

secs=${1:-20}
if ! [[ $secs =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${PANGEA_CACHE:-/var/cache/pangea}
sanitizer=${FUZZ_SANITIZER:-none}
case $sanitizer in
    none) target_dir=$cache/fuzz-target ;;
    address) target_dir=$cache/fuzz-target-address; export RUSTC_BOOTSTRAP=1 ;;
    *) echo "fuzz: FUZZ_SANITIZER must be none or address" >&2; exit 2 ;;
esac
seed=${FUZZ_SEED:-1}
cargo_fuzz_version=0.13.2

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz $cargo_fuzz_version" >&2
    cargo install --locked cargo-fuzz --version "$cargo_fuzz_version" >&2
fi

cd "$root"
mkdir -p "$target_dir/logs"
build=(--sanitizer "$sanitizer" --debug-assertions --target-dir "$target_dir")

start=$(date +%s)
if ! cargo fuzz build "${build[@]}" >"$target_dir/logs/build.log" 2>&1; then
    tail -n 40 "$target_dir/logs/build.log" >&2
    echo "fuzz: build failed (log: $target_dir/logs/build.log)" >&2
    echo "fuzz: 0 passed, 1 failed"
    exit 1
fi
echo "fuzz: build ($sanitizer sanitizer) took $(($(date +%s) - start)) s"

targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
passed=0
failed=0
for t in $targets; do
    corpus=fuzz/corpus/$t
    seeds=fuzz/seeds/$t
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    dirs=("$corpus")
    [[ -d $seeds ]] && dirs+=("$seeds")
    log=$target_dir/logs/$t.log
    status=0
    cargo fuzz run "${build[@]}" "$t" "${dirs[@]}" -- \
        -max_total_time="$secs" -seed="$seed" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    corp=$(grep -o 'corp: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    if [[ $status -eq 0 ]] && grep -q '^Done [0-9]* runs' "$log"; then
        passed=$((passed + 1))
        echo "fuzz: $t: ok, ${runs:-?} runs in ${secs} s, ${rate:-?} exec/s, cov ${cov:-?}, corpus ${corp:-?}"
    else
        failed=$((failed + 1))
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        echo "fuzz: $t: FAILED (exit $status) after ${runs:-?} runs; artifact: ${artifact:-none}; log: $log"
        grep -m 5 -E "panicked at|^==[0-9]+== ERROR|^ERROR|SUMMARY" "$log" | sed 's/^/    /' || true
        if [[ -n $artifact ]]; then
            echo "    reproduce: cargo fuzz run ${build[*]} $t $artifact"
        fi
    fi
done
echo "fuzz: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
