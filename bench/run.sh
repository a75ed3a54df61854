#!/usr/bin/env bash
# The full benchmark: builds buildcast, the bench binaries (release) and the Node.js
# reference server (npm ci), runs every scenario against buildcast, the bare
# socketioxide reference, node and raw in turn (the cluster scenario: two buildcast
# nodes and a redis-server), prints one table and writes it to bench/results/<date>.md.
#
#   bench/run.sh                          # everything (about 25-30 minutes on 2 cores)
#   bench/run.sh --only saturation        # extra arguments go to `bench suite`
#   bench/run.sh --scale 0.3 --repeat 1   # shorter: fewer lines per scenario, one run
#
# See bench/README.md for the scenarios and how to read the table.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"

# 10,000 clients need 10,000 descriptors in the load generator and in the server.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -lt 10500 ]; then
  echo "run.sh: open files limit is $(ulimit -n); idle-10k needs about 10,500 (raise the hard limit)" >&2
fi

echo "== building (release)" >&2
cargo build --release --manifest-path "$root/Cargo.toml"
cargo build --release --manifest-path "$here/Cargo.toml" --target-dir "$here/target"
(cd "$here/reference-node" && npm ci --no-audit --no-fund --loglevel=error)

buildcast="${CARGO_TARGET_DIR:-$root/target}/release/buildcast"
case "$buildcast" in /*) ;; *) buildcast="$root/$buildcast" ;; esac

commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$root" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
  commit="$commit with uncommitted changes in src/"
fi
socketio="$(node -p "require('$here/reference-node/node_modules/socket.io/package.json').version")"
sioxide="$(grep -A1 '^name = "socketioxide"$' "$here/Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p')"
note="buildcast $commit (release); socketioxide $sioxide (bare reference); node $(node --version), socket.io $socketio; $(rustc --version | cut -d' ' -f1-2); redis-server $(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p')"

mkdir -p "$here/results"
out="$here/results/$(date -u +%Y-%m-%d_%H%M).md"

exec "$here/target/release/bench" suite \
  --buildcast "$buildcast" \
  --node-dir "$here/reference-node" \
  --out "$out" \
  --note "$note" \
  "$@"
