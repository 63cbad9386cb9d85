#!/usr/bin/env bash
# Serving benchmark (issue 4): the source document's pika + tensorflow-cpu pipeline on RabbitMQ
# against tensorq serving the same model from a queue with an embedded worker, same machine,
# same run. This is a benchmark, not a test. Writes docs/bench/serve.md.
#
# Measured, RUNS times each (medians reported); the Keras rows all run first, then the tensorq
# rows, served and raw-rpc back to back in alternating order:
#   keras-predict  pika consumer, model.predict(x) per message, on RabbitMQ (pre-filled queue,
#                  timed drain; JSON features in, JSON score out, persistent, acked)
#   keras-call     the same with model(x) per message
#   served         tensorq server --serve (seed model, max batch 64, max delay 1 ms); tensorq perf
#                  sends persistent TF-Serving JSON requests over RPC and times the replies
#   served-loopback  the same with --serve-transport loopback (the embedded worker over a
#                  loopback AMQP connection instead of in process): the measurement behind the
#                  in-process choice
#   raw-rpc        tensorq perf's own echo responder on tensorq, the same bodies, persistent in a
#                  durable request queue like the served requests: the broker's raw end-to-end
#                  request/reply rate for the same work (the 70% target is measured against it)
#   raw-rpc-transient  the same into perf's default non-durable queue (no store work at all)
#   big-b1 / big   the bigger model (MLP 784-256-256-10) served with max batch 1 vs 64
#   half-load      the served seed model at half of its measured peak: p50/p99 latency
# Targets (issue 4): served >= 100x keras-call; served >= 70% of raw-rpc; big >= 5x big-b1.
#
# Usage: bench/serve.sh   Env: RUNS (3), DURATION (8 s per tensorq run), KERAS_CALL_N (2000),
# KERAS_PREDICT_N (300), WINDOW (RPC requests in flight, 512), TENSORQ_BENCH_VENV
# (/tmp/tensorq-bench-venv, created with tensorflow-cpu + pika if missing), RABBIT_URI,
# TQ_PORT (5681), CARGO_TARGET_DIR. Needs RabbitMQ listening (rabbitmq-server -detached).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUNS=${RUNS:-3}
DURATION=${DURATION:-8}
KERAS_CALL_N=${KERAS_CALL_N:-2000}
KERAS_PREDICT_N=${KERAS_PREDICT_N:-300}
WINDOW=${WINDOW:-512}
VENV=${TENSORQ_BENCH_VENV:-/tmp/tensorq-bench-venv}
RABBIT_URI=${RABBIT_URI:-amqp://guest:guest@127.0.0.1:5672/%2F}
TQ_PORT=${TQ_PORT:-5681}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$ROOT/bench/out/serve-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT" docs/bench
log() { echo "[bench] $*" >&2; }

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import tensorflow, pika" 2>/dev/null; then
  log "creating $VENV with tensorflow-cpu and pika"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q tensorflow-cpu pika numpy
fi
log "building tensorq (release)"
cargo build --release -q --workspace --bins --examples
TQ=$CARGO_TARGET_DIR/release/tensorq

# Request bodies: one row each, TF-Serving form, deterministic values.
python3 - "$OUT" <<'PY'
import json, random, sys
rng = random.Random(5)
for name, width in (("seed", 8), ("big", 784)):
    row = [round(rng.uniform(-1, 1), 6) for _ in range(width)]
    open(f"{sys.argv[1]}/{name}.json", "w").write(json.dumps({"instances": [row]}))
PY

DATA=$(mktemp -d)
"$TQ" server --listen 127.0.0.1:$TQ_PORT --data-dir "$DATA/data" \
  --serve "bench.seed=fixtures/models/seed_mlp.onnx" \
  --serve "bench.big1=fixtures/models/mlp784.onnx,max-batch=1" \
  --serve "bench.big=fixtures/models/mlp784.onnx" >"$OUT/server.log" 2>&1 &
TQ_PID=$!
LB_PORT=$((TQ_PORT + 1))
"$TQ" server --listen 127.0.0.1:$LB_PORT --data-dir "$DATA/data-loopback" --serve-transport loopback \
  --serve "bench.seed=fixtures/models/seed_mlp.onnx" >"$OUT/server-loopback.log" 2>&1 &
LB_PID=$!
trap 'kill $TQ_PID $LB_PID 2>/dev/null; wait $TQ_PID $LB_PID 2>/dev/null; rm -rf "$DATA"' EXIT
TQ_URI="amqp://guest:guest@127.0.0.1:$TQ_PORT/%2f"
LB_URI="amqp://guest:guest@127.0.0.1:$LB_PORT/%2f"
for port in $TQ_PORT $LB_PORT; do
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
sleep 2 # the embedded workers declare their queues

perf() { # label, perf args... (URI: $URI, default the in-process server)
  local label=$1; shift
  "$TQ" perf --uri "${URI:-$TQ_URI}" --json "$@" | tail -n 1 | python3 -c \
    "import json,sys; r=json.load(sys.stdin); r['label']='$label'; print(json.dumps(r))" \
    | tee -a "$OUT/runs.jsonl"
}
served() { perf "$1" --rpc --consumers 0 --queue "$2" --body-file "$OUT/$3.json" \
  --content-type application/json --persistent --rpc-window "$WINDOW" --duration "$DURATION" "${@:4}"; }

raw() { perf "$1" --rpc --consumers 1 --body-file "$OUT/seed.json" \
  --content-type application/json --persistent --rpc-window "$WINDOW" --duration "$DURATION" "${@:2}"; }
durable_raw() { raw raw-rpc --durable-queue --queue bench.raw; }

# The Keras baselines first, all of them: a TensorFlow process and RabbitMQ's busy-waiting
# schedulers keep the CPUs busy for a while after each one, which would otherwise weigh on
# whichever tensorq row came next.
for i in $(seq 1 "$RUNS"); do
  log "keras run $i/$RUNS"
  "$VENV/bin/python" bench/serve/keras_pipeline.py --url "$RABBIT_URI" --variant predict \
    --count "$KERAS_PREDICT_N" 2>/dev/null | python3 -c \
    "import json,sys; r=json.load(sys.stdin); r['label']='keras-predict'; print(json.dumps(r))" | tee -a "$OUT/runs.jsonl"
  "$VENV/bin/python" bench/serve/keras_pipeline.py --url "$RABBIT_URI" --variant call \
    --count "$KERAS_CALL_N" 2>/dev/null | python3 -c \
    "import json,sys; r=json.load(sys.stdin); r['label']='keras-call'; print(json.dumps(r))" | tee -a "$OUT/runs.jsonl"
done
sleep 5
for i in $(seq 1 "$RUNS"); do
  log "tensorq run $i/$RUNS"
  # served and its raw baseline back to back, in alternating order
  if [ $((i % 2)) -eq 1 ]; then served served bench.seed seed; durable_raw; else durable_raw; served served bench.seed seed; fi
  URI=$LB_URI served served-loopback bench.seed seed
  raw raw-rpc-transient
  served big-b1 bench.big1 big
  served big bench.big big
done
PEAK=$(python3 - "$OUT/runs.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(int(statistics.median(r["consume_rate"] for r in rows if r["label"] == "served")))
PY
)
HALF=$((PEAK / 2))
log "half load: $HALF req/s"
for i in $(seq 1 "$RUNS"); do
  served half-load bench.seed seed --rate "$HALF"
done
grep -h "metrics" "$OUT/server.log" | tail -n 3 > "$OUT/metrics.log" || true
python3 bench/serve/summarize.py "$OUT/runs.jsonl" "$RUNS" "$DURATION" "$WINDOW" | tee docs/bench/serve.md
