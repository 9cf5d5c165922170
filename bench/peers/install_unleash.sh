#!/bin/sh
# Installs the bench's peer, Unleash (unleash-server, pinned), from the npm registry into
# instance/peers/unleash (git-ignored: nothing of it is committed). `make bench-peer` runs this;
# `make bench BENCH_ARGS="--only peer"` then measures it (bench/run.py, section peer).
set -eu
VERSION="${UNLEASH_VERSION:-7.5.1}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DIR="$ROOT/instance/peers/unleash"
command -v npm >/dev/null || { echo "npm (Node >= 20) is needed to install Unleash" >&2; exit 1; }
npm view "unleash-server@$VERSION" version >/dev/null
mkdir -p "$DIR"
cd "$DIR"
[ -f package.json ] || printf '{"name": "segments-bench-peer", "private": true}\n' > package.json
npm install --no-audit --no-fund --save-exact "unleash-server@$VERSION"
node -p "\"unleash-server \" + require(\"./node_modules/unleash-server/package.json\").version"
