#!/usr/bin/env bash
# Repeats the streams and executions benchmarks of docs/benchmarks-streams.md:
# builds release binaries and the plugins, starts one `vigil serve` on
# loopback (SQLite in a temporary data dir, the dim and slurm providers
# installed), runs the three vigil-stream-bench modes and stops the server.
# Usage: tests/bench-streams.sh [PORT]   (default 18091)
set -euo pipefail
cd "$(dirname "$0")/.."
port="${1:-18091}"
cargo build --release -p vigil-host -p vigil-tests --bins
(cd plugins && cargo build --release)
dir="$(mktemp -d /tmp/vigil-bench-streams.XXXXXX)"
mkdir -p "$dir/plugins"
cp target/wasm/wasm32-wasip2/release/dim.wasm target/wasm/wasm32-wasip2/release/slurm.wasm "$dir/plugins/"
target/release/vigil serve --listen "127.0.0.1:$port" --metrics-listen off \
    --data-dir "$dir" --plugin-dir "$dir/plugins" --self-report-interval 0s \
    --log-format json 2> "$dir/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/api/v2/health" >/dev/null && break
    sleep 0.1
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
bench=target/release/vigil-stream-bench
url="http://127.0.0.1:$port"
"$bench" executions --url "$url" --concurrency "${EXEC_CONCURRENCY:-4}" --duration 20s --warmup 2s
"$bench" fanout --url "$url" --subscribers 100 --events 300 --interval 20ms
"$bench" memory --url "$url" --pid "$pid" --subscribers 1000
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
