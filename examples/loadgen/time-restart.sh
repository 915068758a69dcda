#!/bin/bash
# Times a restart of the real binary on an existing data dir (e.g. one kept by
# `guildhall-loadgen restart --keep-data DIR`): to its "listening" line, and to the log line
# saying all stored history is loaded; prints the node's RSS at both. Then stops the node.
# Usage: examples/loadgen/time-restart.sh DIR   (after cargo build --release -p guildhall)
set -euo pipefail
dir=$1
out=$(mktemp)
bin=$(dirname "$0")/../../target/release/guildhall
"$bin" --data-dir "$dir" --listen 127.0.0.1:0 --no-p2p --no-voice >"$out" 2>&1 &
pid=$!
start=$(date +%s%N)
until grep -q "guildhall listening" "$out"; do sleep 0.01; done
serving=$(date +%s%N)
rss_serving=$(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)
until grep -q "stored history loaded" "$out" || ! kill -0 $pid 2>/dev/null; do sleep 0.02; done
loaded=$(date +%s%N)
rss_loaded=$(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)
echo "to serving: $(( (serving - start) / 1000000 )) ms (RSS $rss_serving); all history loaded: $(( (loaded - start) / 1000000 )) ms (RSS $rss_loaded)"
kill -INT $pid
wait $pid || true
rm -f "$out"
