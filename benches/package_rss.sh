#!/usr/bin/env bash
# Peak RSS while packaging a ~1 GB synthetic adapter (BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --quiet
cargo bench --quiet --bench container -- --make-adapter "$work/adapter" "${1:-1024}"
for codec in none shuffle-zstd; do
  /usr/bin/time -v ./target/release/expertui --headless package "$work/adapter" \
    -o "$work/out.expert" --codec "$codec" 2>&1 |
    grep -E "bytes \(|Maximum resident|Elapsed" | sed "s/^/[$codec] /"
done
