#!/usr/bin/env bash
# Builds the npm package @tally/client into bindings/js/package (wasm/ is generated) and
# packs it: bindings/js/package/tally-client-<version>.tgz.
# Needs the wasm32-unknown-unknown target and wasm-bindgen-cli at exactly the version of
# the wasm-bindgen crate pinned in bindings/js/Cargo.toml:
#   cargo install wasm-bindgen-cli --version 0.2.130
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
want=$(sed -n 's/^wasm-bindgen = "=\(.*\)"$/\1/p' Cargo.toml)
have=$(wasm-bindgen --version | awk '{print $2}')
if [ "$want" != "$have" ]; then
  echo "wasm-bindgen-cli is $have, the crate pins $want: cargo install wasm-bindgen-cli --version $want" >&2
  exit 1
fi
cargo build --locked --release -p tally-client-js --target wasm32-unknown-unknown
rm -rf package/wasm
wasm-bindgen --target web --out-dir package/wasm --out-name tally_client_js \
  "${CARGO_TARGET_DIR:-$root/target}/wasm32-unknown-unknown/release/tally_client_js.wasm"
rm -f package/wasm/.gitignore package/*.tgz
(cd package && npm pack --silent >/dev/null && ls "$PWD"/*.tgz)
