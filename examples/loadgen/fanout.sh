#!/bin/bash
# Runs `guildhall-loadgen fanout` against the real binary, so that the node's memory and CPU are
# its own: starts a node on a temp data dir with rate limits that let the load through, then
# 1,000 listeners at 50 msg/s for 20 s (override with CLIENTS, RATE, COUNT).
# Usage: examples/loadgen/fanout.sh   (after cargo build --release -p guildhall -p guildhall-loadgen)
set -euo pipefail
here=$(dirname "$0")
bin=$here/../../target/release
node=${GUILDHALL_BIN:-$bin/guildhall}
dir=$(mktemp -d)
cat >"$dir/config.toml" <<CONFIG
auth_rate = 100000.0
auth_burst = 100000.0
ip_rate = 1000000.0
ip_burst = 1000000.0
user_rate = 100000.0
user_burst = 100000.0
CONFIG
"$node" --data-dir "$dir/data" --listen 127.0.0.1:0 --no-p2p --no-voice \
    --config "$dir/config.toml" >"$dir/log" 2>&1 &
pid=$!
trap 'kill -INT $pid 2>/dev/null; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
until grep -q "guildhall listening" "$dir/log"; do
    kill -0 $pid 2>/dev/null || { cat "$dir/log"; exit 1; }
    sleep 0.01
done
base=$(grep -o "guildhall listening on [^ ]*" "$dir/log" | head -1 | awk '{print $4}')
RUST_LOG=${RUST_LOG:-error} "$bin/guildhall-loadgen" fanout --clients "${CLIENTS:-1000}" \
    --rate "${RATE:-50}" --count "${COUNT:-20}" --server "$base" --node-pid $pid
