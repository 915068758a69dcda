#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the browser test needs (Debian's
# chromium and an emoji font for its screenshots, the npm packages in tests/browser) and what
# the mDNS test needs (iproute2), then runs every Rust test, the headless-browser test of the
# web client included.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
fc-list 2>/dev/null | grep -qi 'emoji' || missing+=(fonts-noto-color-emoji)
# The mDNS test (tests/mdns.rs) builds its network with `ip netns` (and needs root).
command -v ip >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${missing[@]}"
fi

command -v npm >/dev/null || { echo "npm (Node.js 20 or newer) is required for the browser test"; exit 1; }
(cd tests/browser && npm ci --no-audit --no-fund)

cargo test --workspace --all-targets
# The tests that need a browser or root, left out of a plain `cargo test` (`#[ignore]`).
cargo test -p guildhall --test web --test mdns -- --ignored
