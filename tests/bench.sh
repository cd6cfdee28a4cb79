#!/usr/bin/env bash
# Every benchmark in one command: builds once (release), then measures ingest
# (samples and events), scrape, the plugin boundary, reload and end-to-end
# delivery, and where a peer is installed, the peer on the same load in the
# same run (Prometheus Pushgateway; Prometheus's remote-write receiver, new
# and existing series). Prints one table with the machine, the date and the
# commit. Everything runs on loopback, bounded, and stops by itself.
#
#   tests/bench.sh                     # full run (about 15 minutes here)
#   VIGIL_BENCH_DURATION=10s tests/bench.sh   # shorter load windows
#
# Environment: VIGIL_BENCH_DURATION (load window, default 30s),
# VIGIL_BENCH_RELOAD_ROUNDS (reload rounds per case, default 5),
# VIGIL_BENCH_SKIP_CARGO_BENCH=1 (skip the plugin and scrape-render benches).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
duration="${VIGIL_BENCH_DURATION:-30s}"
rounds="${VIGIL_BENCH_RELOAD_ROUNDS:-5}"
work="$(mktemp -d /tmp/vigil-bench.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 150); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.2; done; echo "not up: $1" >&2; return 1; }

echo "== building (release)" >&2
cargo build --release --locked -p vigil-host -p vigil-tests --bins >&2
(cd plugins && cargo build --release --locked) >&2
vigil="$root/target/release/vigil"
load="$root/target/release/vigil-load"

# A fresh server on SQLite for each measurement; sets `port`.
start_vigil() {
  local dir="$work/vigil-$1"
  port="$(free_port)"
  mkdir -p "$dir"
  "$vigil" serve --listen "127.0.0.1:$port" --metrics-listen off --data-dir "$dir" \
    --self-report-interval 0s >"$dir.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$port/api/v2/health"
}
stop_last() { kill "${pids[-1]}" 2>/dev/null || true; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }

run_load() { "$load" "$@" --duration "$duration" --warmup 3s 2>>"$work/load.log"; }

echo "== ingest: samples" >&2
start_vigil ingest4
ingest4="$(run_load --url "http://127.0.0.1:$port" --clients 4 --batch 1000 --series 100000)"
scrape="$("$load" --url "http://127.0.0.1:$port" --scrape-only --scrapes 30 2>>"$work/load.log")"
stop_last
start_vigil ingest8
ingest8="$(run_load --url "http://127.0.0.1:$port" --clients 8 --batch 1000 --series 100000)"
stop_last

echo "== ingest: events" >&2
start_vigil events
events4="$(run_load --url "http://127.0.0.1:$port" --events --clients 4 --batch 500 --series 4)"
stop_last

pushgateway="" rw_new="" rw_existing=""
if command -v prometheus-pushgateway >/dev/null 2>&1; then
  echo "== peer: Prometheus Pushgateway" >&2
  port="$(free_port)"
  prometheus-pushgateway --web.listen-address="127.0.0.1:$port" >"$work/pushgateway.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$port/-/ready"
  pushgateway="$(run_load --url "http://127.0.0.1:$port" --pushgateway --clients 4 --batch 1000 --series 100000 || true)"
  stop_last
fi
if command -v prometheus >/dev/null 2>&1; then
  echo "== peer: Prometheus remote-write receiver" >&2
  port="$(free_port)"
  mkdir -p "$work/prom"
  printf 'global:\n  scrape_interval: 1h\n' >"$work/prom/prometheus.yml"
  prometheus --config.file="$work/prom/prometheus.yml" --storage.tsdb.path="$work/prom/data" \
    --web.listen-address="127.0.0.1:$port" --web.enable-remote-write-receiver \
    --log.level=warn >"$work/prometheus.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$port/-/ready"
  rw_new="$(run_load --url "http://127.0.0.1:$port" --remote-write --clients 4 --batch 1000 --series 100000 || true)"
  rw_existing="$(run_load --url "http://127.0.0.1:$port" --remote-write --clients 4 --batch 1000 --series 100000 || true)"
  stop_last
fi

render="" plugins=""
if [ "${VIGIL_BENCH_SKIP_CARGO_BENCH:-0}" != "1" ]; then
  echo "== scrape render and plugins (cargo bench)" >&2
  render="$(cargo bench --workspace --locked --bench export 2>>"$work/bench.log" | grep '^scrape render' || true)"
  plugins="$(VIGIL_BENCH_RELOAD_ROUNDS="$rounds" cargo bench --workspace --locked --bench plugins 2>>"$work/bench.log" || true)"
fi

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
mem="$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
commit="$(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
load_avg="$(cut -d' ' -f1-3 /proc/loadavg)"

row() { printf '| %s | %s | %s |\n' "$1" "$2" "$3"; }
fmt_load() {
  [ -z "$1" ] && { echo "not measured"; return; }
  echo "$1" | jq -r '"\(.samples_per_sec | floor) /s, p50 \(.p50_ms) ms, p99 \(.p99_ms) ms, \(.errors) errors"'
}

echo
echo "Vigil benchmarks — $(date -u +%Y-%m-%dT%H:%MZ), commit $commit"
echo "Machine: $(nproc) × $cpu, $mem, load average at the end $load_avg; release build; SQLite; load generator on the same machine over loopback."
echo
echo "| what | Vigil | peer, same run |"
echo "|---|---|---|"
row "ingest, 4 clients × 1,000 samples, 100,000 series" "$(fmt_load "$ingest4")" \
    "$( [ -n "$pushgateway" ] && echo "Pushgateway: $(fmt_load "$pushgateway")" || echo "Pushgateway not installed")"
row "ingest, 8 clients × 1,000 samples" "$(fmt_load "$ingest8")" \
    "$( [ -n "$rw_new" ] && echo "Prometheus remote write, new series: $(fmt_load "$rw_new"); existing series: $(fmt_load "$rw_existing")" || echo "Prometheus not installed")"
row "events, 4 clients × 500 RHAPSODY events" "$(fmt_load "$events4" | sed 's#/s#events/s#')" "—"
row "scrape over HTTP, 100,000 series" "$(echo "$scrape" | jq -r '"p50 \(.scrape_p50_ms) ms, p99 \(.scrape_p99_ms) ms, \(.scrape_bytes / 1e6 | . * 10 | floor / 10) MB"')" "—"
if [ -n "$render" ]; then
  while IFS= read -r line; do row "${line%%:*}" "${line#*: }" "—"; done <<<"$render"
fi
if [ -n "$plugins" ]; then
  while IFS= read -r line; do
    case "$line" in
      publish*|instantiation*|"end to end"*|"Prometheus alone"*|*"serving"*|"reload"*) row "plugins: ${line%%:*}" "${line#*: }" "—" ;;
    esac
  done <<<"$plugins"
fi
