#!/usr/bin/env bash
# Build and run every libFuzzer target on the stable toolchain (`make fuzz`).
#
# Why libFuzzer through libfuzzer-sys with explicit RUSTFLAGS, not
# `cargo fuzz` or AFL++: `cargo fuzz` needs nightly (-Zsanitizer), which
# cannot be fetched here. Stable rustc accepts the SanitizerCoverage flags
# that cargo-fuzz passes (everything but -Zsanitizer=address, which safe
# Rust needs least), and libfuzzer-sys builds libFuzzer itself with the
# system C++ compiler, so the existing targets run unchanged and nothing is
# downloaded besides crates. AFL++'s Rust path (`cargo afl`) needs its LLVM
# plugins built against rustc's own LLVM version, which Debian's afl++ is
# not. Overflow checks and debug assertions are on, as with cargo-fuzz.
#
# usage: scripts/fuzz.sh [target...]   (default: every target)
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_MERGE=1   instead of fuzzing, add to each committed corpus the
#                  inputs of earlier runs that reach new coverage
#                  (libFuzzer -merge=1): at most FUZZ_CORPUS_FILES (100)
#                  new files, FUZZ_CORPUS_BYTES (32000) bytes, per target
# Seeds are committed in <crate>/fuzz/corpus/<target>/; new inputs go to
# target/fuzz/corpus/<target>/ (not committed); crashes, timeouts and
# out-of-memory inputs go to fuzz-artifacts/<target>/ (gitignored). Exits
# non-zero if any target failed, naming the input that made it fail.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="$ROOT/target/fuzz"
# Only the target triple gets the instrumentation (--target below), so
# build scripts and proc macros build as usual.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks"
unset RUSTC_WRAPPER

# crate dir : targets
CRATES=(
    "proto/fuzz:envelope pattern token control"
    "operators/irc/fuzz:lines"
    "operators/nostr/fuzz:relay_message"
    "operators/bluesky/fuzz:bluesky"
    "orchestrator/fuzz:manifest"
)

wanted() {
    [ ${#WANT[@]} -eq 0 ] && return 0
    local w
    for w in "${WANT[@]}"; do [ "$w" = "$1" ] && return 0; done
    return 1
}
WANT=("$@")

BIN="$CARGO_TARGET_DIR/$TRIPLE/release"
LOGS="$CARGO_TARGET_DIR/logs"
mkdir -p "$LOGS"
failed=()
summary=()

for entry in "${CRATES[@]}"; do
    dir="${entry%%:*}"
    targets=()
    for t in ${entry#*:}; do
        if wanted "$t"; then targets+=("$t"); fi
    done
    [ ${#targets[@]} -eq 0 ] && continue
    echo "==> building ${targets[*]} ($dir)"
    bins=()
    for t in "${targets[@]}"; do bins+=(--bin "$t"); done
    if ! (cd "$ROOT/$dir" && cargo build --release --locked --target "$TRIPLE" "${bins[@]}"); then
        echo "fuzz: build failed in $dir" >&2
        exit 2
    fi
    for t in "${targets[@]}"; do
        seeds="$ROOT/$dir/corpus/$t"
        work="$CARGO_TARGET_DIR/corpus/$t"
        artifacts="$ROOT/fuzz-artifacts/$t"
        mkdir -p "$seeds" "$work" "$artifacts"
        log="$LOGS/$t.log"
        if [ "${FUZZ_MERGE:-0}" = 1 ]; then
            # Add to the committed seeds only the inputs of earlier runs that
            # reach new coverage, then keep of those added at most
            # FUZZ_CORPUS_FILES, largest first, within FUZZ_CORPUS_BYTES, so
            # the repository's corpus stays small.
            echo "==> merging new coverage into the corpus of $t"
            before="$(ls -1 "$seeds" | sort)"
            if ! "$BIN/$t" -merge=1 "$seeds" "$work" >"$log" 2>&1; then
                echo "fuzz: merge failed for $t (see $log)" >&2
                failed+=("$t: merge, see $log")
                continue
            fi
            room="${FUZZ_CORPUS_BYTES:-32000}"
            left="${FUZZ_CORPUS_FILES:-100}"
            while read -r size f; do
                if [ "$left" -gt 0 ] && [ "$size" -le "$room" ]; then
                    room=$((room - size))
                    left=$((left - 1))
                else
                    rm -f "$seeds/$f"
                fi
            done < <(comm -13 <(echo "$before") <(ls -1 "$seeds" | sort) \
                | while read -r f; do echo "$(wc -c <"$seeds/$f") $f"; done | sort -rn)
            summary+=("$(printf '%-10s %4s files %7s bytes' "$t" \
                "$(ls -1 "$seeds" | wc -l)" "$(cat "$seeds"/* | wc -c)")")
            continue
        fi
        echo "==> fuzzing $t for ${SECONDS_PER_TARGET}s (log: $log)"
        before="$(ls -1 "$artifacts" | sort)"
        "$BIN/$t" "$work" "$seeds" \
            -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
            -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1
        rc=$?
        execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
        secs="$(grep -oE '^Done [0-9]+ runs in [0-9]+ second' "$log" | grep -oE '[0-9]+ second' | cut -d' ' -f1)"
        cov="$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)"
        if [ "$rc" -ne 0 ]; then
            tail -n 40 "$log" >&2
            new="$(comm -13 <(echo "$before") <(ls -1 "$artifacts" | sort) | sed "s|^|$artifacts/|")"
            echo "fuzz: $t FAILED (exit $rc); input: ${new:-see $log}" >&2
            failed+=("$t: ${new:-see $log}")
            summary+=("$(printf '%-10s FAILED after %s execs' "$t" "${execs:-?}")")
        else
            summary+=("$(printf '%-10s ok  %5ss %12s execs  cov %s' "$t" "${secs:-?}" "${execs:-?}" "${cov:-?}")")
        fi
    done
done

echo
echo "==> fuzz summary"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz: failing inputs (replay: target/fuzz/$TRIPLE/release/<target> <input>):" >&2
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi
