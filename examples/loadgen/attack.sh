#!/bin/bash
# Runs `guildhall-loadgen attack` against the real binary, so that the victim's memory is its
# own: starts a node on a temp data dir and ephemeral ports (default limits), reads its libp2p
# address from its log, runs the floods, then stops the node.
# Usage: examples/loadgen/attack.sh [COUNT]   (after cargo build --release -p guildhall -p guildhall-loadgen)
set -euo pipefail
count=${1:-10000}
here=$(dirname "$0")
bin=$here/../../target/release
# The node under attack; another build of it (say, an earlier commit) with GUILDHALL_BIN.
node=${GUILDHALL_BIN:-$bin/guildhall}
dir=$(mktemp -d)
out=$dir/log
"$node" --data-dir "$dir/data" --listen 127.0.0.1:0 \
    --p2p-listen /ip4/127.0.0.1/tcp/0 --no-voice >"$out" 2>&1 &
pid=$!
trap 'kill -INT $pid 2>/dev/null; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
until grep -q "guildhall federating on" "$out" && grep -q "guildhall listening" "$out"; do
    kill -0 $pid 2>/dev/null || { cat "$out"; exit 1; }
    sleep 0.01
done
peer=$(grep -o "guildhall federating on [^ ]*" "$out" | head -1 | awk '{print $4}')
base=$(grep -o "guildhall listening on [^ ]*" "$out" | head -1 | awk '{print $4}')
RUST_LOG=${RUST_LOG:-error} "$bin/guildhall-loadgen" attack --count "$count" --server "$base" --node-pid $pid --peer "$peer"
