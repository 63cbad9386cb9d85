#!/usr/bin/env bash
# Durability benchmark (issue 3): tensorq (--sync always, fsync before confirm)
# vs RabbitMQ 3.10, same machine, same run, same load generator (tensorq perf).
#   1. persistent 128 B, confirm window 256, 1 producer / 1 consumer, durable
#      queue, DURATION s: throughput + p50/p99 confirm latency   (RUNS runs each)
#   2. COUNT x 1 KB persistent into a named durable queue, no consumer
#      (--publish-only, confirm window 256): publish rate; broker RSS afterwards
#   3. tensorq only: SIGTERM + restart with the backlog queued: recovery time
#      (logged elapsed_ms and wall time from exec to the port file), RSS after
#   4. drain of that backlog (--producers 0 --consumers 1 --count COUNT)
#   (2-4: BACKLOG_RUNS runs for tensorq, RABBIT_BACKLOG_RUNS for RabbitMQ; the
#    shared RabbitMQ is never restarted, so it has no recovery row)
# Writes docs/bench/durable.md; raw results under bench/out/durable-<ts>/.
# This is a benchmark, not a test: it fails only when it cannot measure.
#
# Usage: bench/durable.sh [--runs N] [--duration SECS] [--count N]
#          [--backlog-runs N] [--rabbit-backlog-runs N] [--skip-rabbitmq]
#          [--skip-rabbitmq-backlog] [--no-build] [--data-root DIR] [--md PATH]
# Env: RABBIT_URI, TQ_PORT, CARGO_TARGET_DIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS=3
DURATION=10
COUNT=1000000
BACKLOG_RUNS=2
RABBIT_BACKLOG_RUNS=1
SKIP_RABBIT=0
SKIP_RABBIT_BACKLOG=0
BUILD=1
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT_DIR="$ROOT/bench/out/durable-$STAMP"
DATA_ROOT=""
MD="$ROOT/docs/bench/durable.md"
RABBIT_URI=${RABBIT_URI:-amqp://guest:guest@127.0.0.1:5672/%2f}
TQ_PORT=${TQ_PORT:-5681}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
COMMAND="bench/durable.sh${*:+ $*}"

while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --count) COUNT=$2; shift 2 ;;
    --backlog-runs) BACKLOG_RUNS=$2; shift 2 ;;
    --rabbit-backlog-runs) RABBIT_BACKLOG_RUNS=$2; shift 2 ;;
    --skip-rabbitmq) SKIP_RABBIT=1; shift ;;
    --skip-rabbitmq-backlog) SKIP_RABBIT_BACKLOG=1; shift ;;
    --no-build) BUILD=0; shift ;;
    --data-root) DATA_ROOT=$2; shift 2 ;;
    --md) MD=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
DATA_ROOT=${DATA_ROOT:-$OUT_DIR/data}
mkdir -p "$OUT_DIR" "$DATA_ROOT" "$(dirname "$MD")"
LOG="$OUT_DIR/bench.log"
UPTIME_START=$(uptime)
T_START=$(date +%s)

log() { echo "[durable $(date -u +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo ""; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo ""; }
cpu_ticks() { # utime+stime of a pid, in clock ticks
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
sys_ticks() { awk '/^cpu / {t=0; for (i=2;i<=NF;i++) t+=$i; print t, $5+$6}' /proc/stat; } # total idle+iowait
wait_port() { # host port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}
# key=value facts of one run, read by the summariser
fact() { echo "$2=$3" >>"$1"; }

# ---- build -----------------------------------------------------------------
TQ_BIN="$CARGO_TARGET_DIR/release/tensorq"
if [ "$BUILD" = 1 ]; then
  log "cargo build --release --workspace --bins --examples (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  cargo build --release --workspace --bins --examples >"$OUT_DIR/build.log" 2>&1 \
    || { log "build failed, see $OUT_DIR/build.log"; exit 1; }
fi
[ -x "$TQ_BIN" ] || { log "no $TQ_BIN"; exit 1; }
PERF=("$TQ_BIN" perf)
TQ_VERSION=$("$TQ_BIN" --version 2>/dev/null || echo "tensorq (unknown version)")
TQ_COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
TQ_DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l)

# ---- RabbitMQ (installed and started only when missing; never restarted) ----
BEAM_PID=""
if [ "$SKIP_RABBIT" = 0 ]; then
  if ! command -v rabbitmq-server >/dev/null 2>&1 && ! [ -x /usr/sbin/rabbitmq-server ]; then
    log "installing Debian's rabbitmq-server"
    apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server >/dev/null
  fi
  if ! wait_port 127.0.0.1 5672 1; then
    log "starting rabbitmq-server -detached"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    rabbitmqctl await_startup >/dev/null 2>&1 || true
    wait_port 127.0.0.1 5672 60 || { log "RabbitMQ did not come up on :5672"; exit 1; }
  fi
  BEAM_PID=$(pgrep -o -f 'beam.smp.*rabbit' || pgrep -o beam.smp || true)
fi

# ---- tensorq server lifecycle -----------------------------------------------
TQ_PID=""
TQ_URI="amqp://guest:guest@127.0.0.1:$TQ_PORT/%2f"
cleanup() {
  if [ -n "$TQ_PID" ]; then kill -TERM "$TQ_PID" 2>/dev/null || true; wait "$TQ_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

tq_start() { # data-dir logfile facts-file prefix ; sets TQ_PID, records wall time to listening
  local dir=$1 logf=$2 facts=$3 prefix=$4 portf t0 t1 i
  portf="$dir.port"
  rm -f "$portf"
  t0=$(now_ms)
  "$TQ_BIN" server --listen "127.0.0.1:$TQ_PORT" --data-dir "$dir" --sync always \
    --port-file "$portf" 2>>"$logf" >>"$logf" &
  TQ_PID=$!
  for ((i = 0; i < 60000; i++)); do
    [ -s "$portf" ] && break
    kill -0 "$TQ_PID" 2>/dev/null || { log "tensorq exited during start, see $logf"; return 1; }
    sleep 0.005
  done
  t1=$(now_ms)
  [ -s "$portf" ] || { log "tensorq did not listen within 300 s"; return 1; }
  wait_port 127.0.0.1 "$TQ_PORT" 10 || { log "tensorq port file written but port closed"; return 1; }
  fact "$facts" "${prefix}_wall_ms" $((t1 - t0))
}

tq_stop() { # facts-file prefix
  local t0 t1
  t0=$(now_ms)
  kill -TERM "$TQ_PID" 2>/dev/null || true
  wait "$TQ_PID" 2>/dev/null || true
  t1=$(now_ms)
  TQ_PID=""
  fact "$1" "${2}_stop_ms" $((t1 - t0))
}

# run perf with its own CPU time recorded; the broker's CPU delta goes alongside
perf_run() { # out-json facts-file prefix broker-pid -- perf args...
  local out=$1 facts=$2 prefix=$3 bpid=$4 c0 c1 t0 t1 tf
  shift 5
  tf=$(mktemp)
  read -r st0 si0 < <(sys_ticks)
  c0=$(cpu_ticks "$bpid"); t0=$(now_ms)
  if /usr/bin/time -f "%U %S %e" -o "$tf" "${PERF[@]}" --json "$@" >"$out" 2>>"$OUT_DIR/perf-errors.log"; then
    t1=$(now_ms); c1=$(cpu_ticks "$bpid")
    read -r st1 si1 < <(sys_ticks)
    fact "$facts" "${prefix}_machine_busy_pct" "$(python3 -c "print(round(100*(1-($si1-$si0)/max(1,$st1-$st0)),1))")"
    read -r pu ps pe <"$tf"
    fact "$facts" "${prefix}_perf_cpu_s" "$(python3 -c "print(round($pu+$ps,2))")"
    fact "$facts" "${prefix}_perf_wall_s" "$pe"
    fact "$facts" "${prefix}_broker_cpu_s" "$(python3 -c "import os; print(round(($c1-$c0)/os.sysconf('SC_CLK_TCK'),2))")"
    fact "$facts" "${prefix}_span_s" "$(python3 -c "print(round(($t1-$t0)/1000,2))")"
    rm -f "$tf"
    return 0
  fi
  rm -f "$tf"
  log "perf failed ($prefix): $(tail -n2 "$OUT_DIR/perf-errors.log" | tr '\n' ' ')"
  return 1
}

json_field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d
for k in sys.argv[2].split("."): v=v[k]
print(round(v) if isinstance(v,float) else v)' "$1" "$2" 2>/dev/null || echo "?"; }

# ---- 1. persistent e2e --------------------------------------------------------
E2E_ARGS=(--size 128 --persistent --durable-queue --confirm 256 --producers 1 --consumers 1 --duration "$DURATION")
e2e_tensorq() {
  local i d facts
  for ((i = 1; i <= RUNS; i++)); do
    d="$DATA_ROOT/tq-e2e-$i"; rm -rf "$d"; facts="$OUT_DIR/tensorq-e2e-$i.facts"; : >"$facts"
    tq_start "$d" "$OUT_DIR/tensorq-e2e-$i.log" "$facts" start || return 1
    if perf_run "$OUT_DIR/tensorq-e2e-$i.json" "$facts" e2e "$TQ_PID" -- --uri "$TQ_URI" "${E2E_ARGS[@]}"; then
      log "tensorq e2e run $i: $(json_field "$OUT_DIR/tensorq-e2e-$i.json" consume_rate) msg/s, confirm p50 $(json_field "$OUT_DIR/tensorq-e2e-$i.json" confirm_latency.p50_us) µs p99 $(json_field "$OUT_DIR/tensorq-e2e-$i.json" confirm_latency.p99_us) µs"
    fi
    fact "$facts" rss_kb "$(rss_kb "$TQ_PID")"
    tq_stop "$facts" e2e
    rm -rf "$d"
  done
}
e2e_rabbit() {
  local i facts
  for ((i = 1; i <= RUNS; i++)); do
    facts="$OUT_DIR/rabbitmq-e2e-$i.facts"; : >"$facts"
    if perf_run "$OUT_DIR/rabbitmq-e2e-$i.json" "$facts" e2e "${BEAM_PID:-0}" -- --uri "$RABBIT_URI" "${E2E_ARGS[@]}"; then
      log "rabbitmq e2e run $i: $(json_field "$OUT_DIR/rabbitmq-e2e-$i.json" consume_rate) msg/s, confirm p50 $(json_field "$OUT_DIR/rabbitmq-e2e-$i.json" confirm_latency.p50_us) µs p99 $(json_field "$OUT_DIR/rabbitmq-e2e-$i.json" confirm_latency.p99_us) µs"
    fi
  done
}
# diagnostic, not durable: the same load against tensorq with confirms after write(2)
# (--sync interval=1000 fsyncs once a second, as RabbitMQ does not fsync before confirming;
# --sync never likewise): what waiting for fsync costs. One run each.
e2e_tensorq_nosync() {
  local pol tag d facts
  for pol in interval=1000 never; do
    tag="tensorq-sync-${pol%%=*}"; d="$DATA_ROOT/$tag"; facts="$OUT_DIR/$tag-e2e-1.facts"
    rm -rf "$d" "$d.port"; : >"$facts"
    "$TQ_BIN" server --listen "127.0.0.1:$TQ_PORT" --data-dir "$d" --sync "$pol" --port-file "$d.port" \
      >"$OUT_DIR/$tag.log" 2>&1 &
    TQ_PID=$!
    wait_port 127.0.0.1 "$TQ_PORT" 30 || { log "tensorq --sync $pol did not start"; tq_stop "$facts" e2e; continue; }
    if perf_run "$OUT_DIR/$tag-e2e-1.json" "$facts" e2e "$TQ_PID" -- --uri "$TQ_URI" "${E2E_ARGS[@]}"; then
      log "tensorq --sync $pol e2e: $(json_field "$OUT_DIR/$tag-e2e-1.json" confirm_rate) confirmed msg/s, $(json_field "$OUT_DIR/$tag-e2e-1.json" consume_rate) consumed msg/s (diagnostic)"
    fi
    tq_stop "$facts" e2e
    rm -rf "$d" "$d.port"
  done
}

# fsync latency of the data disk: 4 KiB append + fdatasync, 1000 times, and the
# same overwriting a preallocated file (what a group commit waits for at the least)
fsync_probe() {
  python3 - "$DATA_ROOT/fsync-probe" >"$OUT_DIR/fsync-probe.facts" <<'PY'
import os, sys, time, statistics
path = sys.argv[1]
buf = b"x" * 4096
def probe(prefix, preallocate):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    if preallocate:  # overwrite in place: a pure data flush, no size/extent change
        os.write(fd, buf * 1000)
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
    lat = []
    for _ in range(1000):
        os.write(fd, buf)
        t = time.perf_counter_ns()
        os.fdatasync(fd)
        lat.append((time.perf_counter_ns() - t) / 1000)
    os.close(fd)
    os.unlink(path)
    lat.sort()
    print(f"{prefix}_p50_us={lat[500]:.0f}")
    print(f"{prefix}_p99_us={lat[990]:.0f}")
    print(f"{prefix}_mean_us={statistics.mean(lat):.0f}")
probe("fsync", False)
probe("fsync_overwrite", True)
PY
  log "fdatasync of a 4 KiB append: $(tr '\n' ' ' <"$OUT_DIR/fsync-probe.facts")"
}

# ---- 2-4. backlog -------------------------------------------------------------
BACKLOG_ARGS=(--size 1024 --persistent --durable-queue --confirm 256 --publish-only --count "$COUNT")
DRAIN_ARGS=(--durable-queue --producers 0 --consumers 1 --count "$COUNT")
backlog_tensorq() {
  local i d facts q="bench-durable-backlog" logf
  for ((i = 1; i <= BACKLOG_RUNS; i++)); do
    d="$DATA_ROOT/tq-backlog-$i"; rm -rf "$d"; facts="$OUT_DIR/tensorq-backlog-$i.facts"; : >"$facts"
    logf="$OUT_DIR/tensorq-backlog-$i.log"
    tq_start "$d" "$logf" "$facts" start || return 1
    fact "$facts" rss_idle_kb "$(rss_kb "$TQ_PID")"
    log "tensorq backlog run $i: publishing $COUNT x 1 KB"
    perf_run "$OUT_DIR/tensorq-publish-$i.json" "$facts" publish "$TQ_PID" -- --uri "$TQ_URI" --queue "$q" "${BACKLOG_ARGS[@]}" \
      || { tq_stop "$facts" first; continue; }
    fact "$facts" rss_backlog_now_kb "$(rss_kb "$TQ_PID")"
    sleep 3
    fact "$facts" rss_backlog_kb "$(rss_kb "$TQ_PID")"
    fact "$facts" hwm_publish_kb "$(hwm_kb "$TQ_PID")"
    log "tensorq backlog run $i: $(json_field "$OUT_DIR/tensorq-publish-$i.json" consume_rate) msg/s queued; RSS $(rss_kb "$TQ_PID") kB (peak $(hwm_kb "$TQ_PID") kB)"
    tq_stop "$facts" first
    fact "$facts" data_dir_bytes "$(du -sb "$d" | cut -f1)"
    tq_start "$d" "$logf.restart" "$facts" recovery || return 1
    fact "$facts" hwm_recovery_kb "$(hwm_kb "$TQ_PID")"
    sleep 0.2
    fact "$facts" rss_restart_kb "$(rss_kb "$TQ_PID")"
    fact "$facts" recovery_log_ms "$(grep 'recovered the data dir' "$logf.restart" | sed -n 's/.*elapsed_ms=\([0-9]*\).*/\1/p' | tail -n1)"
    fact "$facts" recovered_messages "$(grep 'recovered the data dir' "$logf.restart" | sed -n 's/.* messages=\([0-9]*\).*/\1/p' | tail -n1)"
    fact "$facts" store_log_ms "$(grep 'store recovered' "$logf.restart" | sed -n 's/.*elapsed_ms=\([0-9]*\).*/\1/p' | tail -n1)"
    log "tensorq backlog run $i: recovered $(grep -o 'messages=[0-9]*' "$logf.restart" | tail -n1) (store $(grep store_log_ms "$facts" | cut -d= -f2) ms + broker $(grep recovery_log_ms "$facts" | cut -d= -f2) ms logged), listening after $(grep recovery_wall_ms "$facts" | cut -d= -f2) ms; RSS $(rss_kb "$TQ_PID") kB"
    if perf_run "$OUT_DIR/tensorq-drain-$i.json" "$facts" drain "$TQ_PID" -- --uri "$TQ_URI" --queue "$q" "${DRAIN_ARGS[@]}"; then
      log "tensorq backlog run $i: drained $(json_field "$OUT_DIR/tensorq-drain-$i.json" consumed) at $(json_field "$OUT_DIR/tensorq-drain-$i.json" consume_rate) msg/s"
    fi
    fact "$facts" rss_drained_kb "$(rss_kb "$TQ_PID")"
    fact "$facts" hwm_total_kb "$(hwm_kb "$TQ_PID")"
    tq_stop "$facts" second
    rm -rf "$d" "$d.port"
  done
}
backlog_rabbit() {
  local i facts q
  for ((i = 1; i <= RABBIT_BACKLOG_RUNS; i++)); do
    q="bench-durable-backlog-$STAMP-$i"; facts="$OUT_DIR/rabbitmq-backlog-$i.facts"; : >"$facts"
    fact "$facts" rss_idle_kb "$(rss_kb "$BEAM_PID")"
    log "rabbitmq backlog run $i: publishing $COUNT x 1 KB into $q"
    if perf_run "$OUT_DIR/rabbitmq-publish-$i.json" "$facts" publish "$BEAM_PID" -- --uri "$RABBIT_URI" --queue "$q" "${BACKLOG_ARGS[@]}"; then
      fact "$facts" rss_backlog_now_kb "$(rss_kb "$BEAM_PID")"
      sleep 3
      fact "$facts" rss_backlog_kb "$(rss_kb "$BEAM_PID")"
      log "rabbitmq backlog run $i: $(json_field "$OUT_DIR/rabbitmq-publish-$i.json" consume_rate) msg/s queued; beam.smp RSS $(rss_kb "$BEAM_PID") kB"
      if perf_run "$OUT_DIR/rabbitmq-drain-$i.json" "$facts" drain "$BEAM_PID" -- --uri "$RABBIT_URI" --queue "$q" "${DRAIN_ARGS[@]}"; then
        log "rabbitmq backlog run $i: drained $(json_field "$OUT_DIR/rabbitmq-drain-$i.json" consumed) at $(json_field "$OUT_DIR/rabbitmq-drain-$i.json" consume_rate) msg/s"
      fi
      fact "$facts" rss_drained_kb "$(rss_kb "$BEAM_PID")"
    fi
    rabbitmqctl delete_queue "$q" >/dev/null 2>&1 || log "could not delete RabbitMQ queue $q"
  done
}

# ---- run ---------------------------------------------------------------------
log "out: $OUT_DIR; data: $DATA_ROOT ($(df -hT "$DATA_ROOT" | awk 'NR==2 {print $2" on "$1}')); $UPTIME_START"
fsync_probe || true
e2e_tensorq
e2e_tensorq_nosync || true
[ "$SKIP_RABBIT" = 0 ] && e2e_rabbit
backlog_tensorq
[ "$SKIP_RABBIT" = 0 ] && [ "$SKIP_RABBIT_BACKLOG" = 0 ] && backlog_rabbit

# ---- report --------------------------------------------------------------------
RABBIT_VERSION="not measured"; ERLANG_VERSION=""
if [ "$SKIP_RABBIT" = 0 ]; then
  RABBIT_VERSION=$(rabbitmqctl version 2>/dev/null || dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo unknown)
  ERLANG_VERSION=$(erl -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().' 2>/dev/null || echo unknown)
fi
BENCH_DATE=$(date -u +%Y-%m-%dT%H:%MZ) \
BENCH_NPROC=$(nproc) \
BENCH_CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//') \
BENCH_MEM=$(free -m | awk '/^Mem:/ {printf "%.1f GiB total, %.1f GiB available at the end", $2/1024, $7/1024}') \
BENCH_KERNEL=$(uname -r) \
BENCH_DISK=$(df -hT "$DATA_ROOT" | awk 'NR==2 {printf "%s (%s), %s free of %s", $1, $2, $5, $3}') \
BENCH_DATA_ROOT=$DATA_ROOT \
BENCH_RABBIT_VERSION=$RABBIT_VERSION BENCH_ERLANG_VERSION=$ERLANG_VERSION \
BENCH_TENSORQ_VERSION="$TQ_VERSION (commit $TQ_COMMIT, $TQ_DIRTY modified tracked files)" \
BENCH_RUSTC=$(rustc --version 2>/dev/null || echo unknown) \
BENCH_PERF="${PERF[*]}" BENCH_COMMAND="$COMMAND" \
BENCH_RUNS=$RUNS BENCH_DURATION=$DURATION BENCH_COUNT=$COUNT \
BENCH_BACKLOG_RUNS=$BACKLOG_RUNS BENCH_RABBIT_BACKLOG_RUNS=$([ "$SKIP_RABBIT$SKIP_RABBIT_BACKLOG" = 00 ] && echo "$RABBIT_BACKLOG_RUNS" || echo 0) \
BENCH_E2E_ARGS="${E2E_ARGS[*]}" BENCH_BACKLOG_ARGS="${BACKLOG_ARGS[*]}" BENCH_DRAIN_ARGS="${DRAIN_ARGS[*]}" \
BENCH_TQ_PORT=$TQ_PORT BENCH_RABBIT_URI=$RABBIT_URI \
BENCH_UPTIME_START=$UPTIME_START BENCH_UPTIME_END=$(uptime) \
BENCH_ELAPSED_S=$(( $(date +%s) - T_START )) BENCH_OUT_DIR=${OUT_DIR#"$ROOT"/} \
  python3 "$ROOT/bench/durable/summarize.py" "$OUT_DIR" "$MD"
rm -rf "$DATA_ROOT"
log "wrote $MD (raw results in $OUT_DIR)"
