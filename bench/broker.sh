#!/usr/bin/env bash
# Broker benchmark: tensorq vs RabbitMQ, same machine, same run, same load
# generator (tensorq perf). Measures at 16 B bodies: (1) transient 1 producer /
# 1 consumer end to end, (2) publish-only, (3) consume-only; RUNS runs each,
# medians, ratio tensorq/RabbitMQ; also the generator's own ceiling against its
# discard sink. Writes docs/bench/broker.md. This is a benchmark, not a test.
#
# Usage: bench/broker.sh [--runs N] [--duration SECS] [--count N]
#                        [--skip-tensorq] [--skip-rabbitmq]
# Env: RABBIT_URI, TQ_PORT, SINK_PORT, CARGO_TARGET_DIR, PERF_RUN / PERF_SINK
#      (full commands overriding how perf and its sink are invoked).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS=5
DURATION=5
COUNT=500000
SIZE=16
SKIP_TQ=0
SKIP_RABBIT=0
RABBIT_URI=${RABBIT_URI:-amqp://guest:guest@127.0.0.1:5672/%2f}
TQ_PORT=${TQ_PORT:-5680}
SINK_PORT=${SINK_PORT:-5690}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT_DIR="$ROOT/bench/out/broker-$(date -u +%Y%m%dT%H%M%SZ)"
MD="$ROOT/docs/bench/broker.md"
COMMAND="bench/broker.sh${*:+ $*}"
LOAD_START=$(cut -d" " -f1-3 /proc/loadavg)

while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --count) COUNT=$2; shift 2 ;;
    --skip-tensorq) SKIP_TQ=1; shift ;;
    --skip-rabbitmq) SKIP_RABBIT=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT_DIR" "$(dirname "$MD")"

log() { echo "[bench] $*" >&2; }

wait_port() { # host port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# ---- build -----------------------------------------------------------------
TQ_BIN="$CARGO_TARGET_DIR/release/tensorq"
HAVE_TQ=0
if [ "$SKIP_TQ" = 0 ]; then
  log "building tensorq (release)"
  if cargo build --release --workspace --bins --examples >"$OUT_DIR/build-tensorq.log" 2>&1 && [ -x "$TQ_BIN" ] \
     && "$TQ_BIN" server --help >/dev/null 2>&1; then
    HAVE_TQ=1
  else
    log "tensorq did not build or has no 'server' command yet (see $OUT_DIR/build-tensorq.log); measuring RabbitMQ only"
  fi
fi
if [ -n "${PERF_RUN:-}" ]; then
  read -r -a PERF <<<"$PERF_RUN"
  read -r -a SINK <<<"${PERF_SINK:?PERF_SINK must accompany PERF_RUN}"
else
  [ "$HAVE_TQ" = 1 ] || { log "tensorq did not build: nothing to measure with"; exit 1; }
  PERF=("$TQ_BIN" perf); SINK=("$TQ_BIN" perf-sink)
fi
log "perf: ${PERF[*]} | sink: ${SINK[*]}"

# ---- RabbitMQ --------------------------------------------------------------
if [ "$SKIP_RABBIT" = 0 ]; then
  if ! command -v rabbitmq-server >/dev/null 2>&1 && ! [ -x /usr/sbin/rabbitmq-server ]; then
    log "installing Debian's rabbitmq-server"
    apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server >/dev/null
  fi
  if ! wait_port 127.0.0.1 5672 1; then
    log "starting rabbitmq-server"
    (service rabbitmq-server start || rabbitmq-server -detached) >/dev/null 2>&1 || true
    wait_port 127.0.0.1 5672 60 || { log "RabbitMQ did not come up on :5672"; exit 1; }
  fi
fi

# ---- one workload ----------------------------------------------------------
run_set() { # broker-name uri workload
  local name=$1 uri=$2 wl=$3 file="$OUT_DIR/$1-$3.jsonl" i args
  case "$wl" in
    e2e) args=(--producers 1 --consumers 1 --duration "$DURATION") ;;
    publish-only) args=(--publish-only --count "$COUNT") ;;
    consume-only) args=(--consume-only --consumers 1 --count "$COUNT") ;;
  esac
  for ((i = 1; i <= RUNS; i++)); do
    if "${PERF[@]}" --uri "$uri" --size "$SIZE" --json "${args[@]}" >>"$file" 2>>"$OUT_DIR/errors.log"; then
      log "$name $wl run $i: $(tail -n1 "$file" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["consume_rate"]))') msgs/s"
    else
      log "$name $wl run $i failed (see $OUT_DIR/errors.log)"
    fi
  done
}

# ---- generator ceiling (discard sink) -------------------------------------
log "sink ceiling"
"${SINK[@]}" --listen "127.0.0.1:$SINK_PORT" >"$OUT_DIR/sink.log" 2>&1 &
SINK_PID=$!
trap 'kill $SINK_PID 2>/dev/null || true; [ -n "${TQ_PID:-}" ] && kill $TQ_PID 2>/dev/null || true' EXIT
wait_port 127.0.0.1 "$SINK_PORT" 10 || { log "sink did not start"; exit 1; }
SINK_URI="amqp://guest:guest@127.0.0.1:$SINK_PORT/%2f"
for ((i = 1; i <= RUNS; i++)); do
  "${PERF[@]}" --uri "$SINK_URI" --size "$SIZE" --json --producers 1 --consumers 0 --duration "$DURATION" \
    >>"$OUT_DIR/sink.jsonl"
  "${PERF[@]}" --uri "$SINK_URI" --size "$SIZE" --json --producers 1 --consumers 0 --confirm 1000 \
    --duration "$DURATION" >>"$OUT_DIR/sink-confirm.jsonl"
  log "sink run $i: $(tail -n1 "$OUT_DIR/sink.jsonl" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["publish_rate"]))') msgs/s"
done
kill "$SINK_PID" 2>/dev/null || true
wait "$SINK_PID" 2>/dev/null || true

# ---- tensorq ----------------------------------------------------------------
TQ_VERSION="not measured"
if [ "$HAVE_TQ" = 1 ]; then
  TQ_VERSION=$("$TQ_BIN" --version 2>/dev/null || echo "tensorq (version unknown)")
  log "starting tensorq server on :$TQ_PORT"
  "$TQ_BIN" server --listen "127.0.0.1:$TQ_PORT" >"$OUT_DIR/tensorq.log" 2>&1 &
  TQ_PID=$!
  wait_port 127.0.0.1 "$TQ_PORT" 30 || { log "tensorq did not start"; exit 1; }
  TQ_URI="amqp://guest:guest@127.0.0.1:$TQ_PORT/%2f"
  for wl in e2e publish-only consume-only; do run_set tensorq "$TQ_URI" "$wl"; done
  kill "$TQ_PID" 2>/dev/null || true
  wait "$TQ_PID" 2>/dev/null || true
  TQ_PID=""
fi

# ---- RabbitMQ ---------------------------------------------------------------
RABBIT_VERSION="not measured"; ERLANG_VERSION=""
if [ "$SKIP_RABBIT" = 0 ]; then
  for wl in e2e publish-only consume-only; do run_set rabbitmq "$RABBIT_URI" "$wl"; done
  RABBIT_VERSION=$(rabbitmqctl version 2>/dev/null || dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo unknown)
  ERLANG_VERSION=$(erl -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().' 2>/dev/null || echo unknown)
fi

# ---- report ----------------------------------------------------------------
BENCH_DATE=$(date -u +%Y-%m-%dT%H:%MZ) \
BENCH_NPROC=$(nproc) \
BENCH_CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//') \
BENCH_RABBIT_VERSION=$RABBIT_VERSION BENCH_ERLANG_VERSION=$ERLANG_VERSION \
BENCH_TENSORQ_VERSION=$TQ_VERSION BENCH_PERF="${PERF[*]}" BENCH_COMMAND="$COMMAND" BENCH_RUNS=$RUNS \
BENCH_LOAD="start $LOAD_START, end $(cut -d" " -f1-3 /proc/loadavg)" \
  python3 "$ROOT/bench/broker/summarize.py" "$OUT_DIR" "$MD"
log "wrote $MD (raw results in $OUT_DIR)"
