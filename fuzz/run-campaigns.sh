#!/usr/bin/env bash
# Runs fuzz campaigns one after another (one libFuzzer process at a time).
# Usage (from fuzz/): ./run-campaigns.sh TARGET:SECONDS...
# Builds every target once (`cargo fuzz build -O -a`: optimised, with debug
# assertions and overflow checks, ASan), then runs the built binaries, so
# source edits made while the campaigns run do not trigger rebuilds.
# Logs go to $LOG_DIR (default /tmp/expertui-fuzz-logs), one file a target.
set -u
cd "$(dirname "$0")"
LOG_DIR=${LOG_DIR:-/tmp/expertui-fuzz-logs}
mkdir -p "$LOG_DIR"
dict_for() {
    case "$1" in
        manifest|peft) echo dicts/json.dict ;;
        grammar) echo dicts/gbnf.dict ;;
        armored_text) echo dicts/armored.dict ;;
        *) echo dicts/binary.dict ;;
    esac
}
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo +nightly fuzz build -O -a || exit 1
fi
BIN=target/x86_64-unknown-linux-gnu/release
for spec in "$@"; do
    target=${spec%%:*}
    seconds=${spec#*:}
    mkdir -p "corpus/$target"
    echo "== $target ${seconds}s $(date -u +%H:%M:%S)" >> "$LOG_DIR/summary"
    mkdir -p "artifacts/$target"
    "$BIN/$target" -artifact_prefix="artifacts/$target/" \
        -max_total_time="$seconds" -rss_limit_mb=512 -malloc_limit_mb=256 \
        -timeout=10 -print_final_stats=1 -dict="$(dict_for "$target")" \
        "corpus/$target" > "$LOG_DIR/$target.log" 2>&1
    echo "   rc=$? $(grep -E 'number_of_executed_units|stat::average_exec_per_sec' "$LOG_DIR/$target.log" | tr '\n' ' ')" >> "$LOG_DIR/summary"
done
echo "ALL_DONE $(date -u +%H:%M:%S)" >> "$LOG_DIR/summary"
