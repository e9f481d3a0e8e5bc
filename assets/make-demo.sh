#!/usr/bin/env bash
# Rebuilds assets/demo.expert from the MiniLM LoRA fixture and assets/demo-src/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet -- --headless package tests/fixtures/minilm-lora-r8 \
  --manifest assets/demo-src/manifest.json --grammar assets/demo-src/grammar.gbnf \
  --license assets/demo-src/LICENSE --readme assets/demo-src/README.md \
  -o assets/demo.expert --no-sidecar "$@"
