#!/usr/bin/env bash
# tether's browser test, everything a fresh machine needs: Chromium (Debian's, if missing),
# playwright-core (npm ci), the wasm client, the server example, then the test itself.
# Run it from anywhere: `bash browser/ci.sh`. Needs root for apt-get the first time (as
# wasm-build does). Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== browser: %s (%ss)\n' "$1" "$SECONDS"; }

step "chromium"
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null || true

step "npm ci (playwright-core)"
(cd browser && npm ci --no-audit --no-fund)

step "wasm client"
# wasm-build lives in shared/, beside the checkout in CI and at /work/shared here.
wasm_build=""
for candidate in "${WASM_BUILD:-}" ../shared/tools/wasm-build /work/shared/tools/wasm-build; do
  if [ -n "$candidate" ] && [ -f "$candidate" ]; then wasm_build=$candidate; break; fi
done
if [ -z "$wasm_build" ]; then echo "wasm-build not found (set WASM_BUILD)"; exit 1; fi
cargo fmt --manifest-path browser/Cargo.toml -- --check
bash "$wasm_build" browser --release
node browser/boundary.mjs

step "server example"
cargo build --all-features --example browser_server

step "test in headless Chromium"
node browser/test.mjs "${CARGO_TARGET_DIR:-$PWD/target}/debug/examples/browser_server"

step "done"
