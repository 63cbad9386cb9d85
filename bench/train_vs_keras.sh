#!/usr/bin/env bash
# Benchmark: tensorq-train vs Keras on the source document's model and fit
# (Dense(10, relu) -> Dense(1, sigmoid), Adam 1e-3, binary cross-entropy, 10 epochs, batch 32),
# on the SAME data: the Rust generator is exported to CSV and both sides read that CSV.
#
# Measures training throughput (examples/s = train rows * 10 epochs / fit wall time, data loading
# and model building excluded on both sides) and held-out accuracy; median of RUNS runs (3).
# Prints a markdown table and writes it to docs/bench/train.md.
#
# Env: TENSORQ_BENCH_VENV (default /tmp/tensorq-bench-venv; created with tensorflow-cpu if
# missing), CARGO_TARGET_DIR (default target), RUNS (3), N (10000 examples, 80/20 split),
# PROFILE (release; "dev" reuses a debug build whose dependencies are opt-level 2 per the
# workspace profile, for machines where a release build of burn/tract is too slow).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TENSORQ_BENCH_VENV:-/tmp/tensorq-bench-venv}"
RUNS="${RUNS:-3}"
N="${N:-10000}"
OUT=bench/out/train
TARGET="${CARGO_TARGET_DIR:-target}"
PROFILE="${PROFILE:-release}"
if [ "$PROFILE" = release ]; then PROFILE_DIR=release; else PROFILE_DIR=debug; fi
mkdir -p "$OUT" docs/bench

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import tensorflow" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q tensorflow-cpu
fi

cargo build --profile "$PROFILE" -q --workspace --bins --examples
BIN="$TARGET/$PROFILE_DIR/examples"
"$BIN/gen_dataset" "$OUT" "$N" 1

: > "$OUT/rust.jsonl"
: > "$OUT/keras.jsonl"
for i in $(seq 1 "$RUNS"); do
  "$BIN/bench_fit" "$OUT/train.csv" "$OUT/test.csv" \
    crates/tensorq-train/examples/specs/seed_mlp.toml | tee -a "$OUT/rust.jsonl"
  "$VENV/bin/python" bench/train_vs_keras.py "$OUT/train.csv" "$OUT/test.csv" \
    | tail -n 1 | tee -a "$OUT/keras.jsonl"
done

python3 - "$OUT" "$N" "$RUNS" "$PROFILE" <<'PY' | tee docs/bench/train.md
import json, os, platform, statistics, sys
out, n, runs, profile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def load(name):
    return [json.loads(l) for l in open(os.path.join(out, name)) if l.strip()]
rust, keras = load("rust.jsonl"), load("keras.jsonl")
def med(rows, key):
    return statistics.median(r[key] for r in rows)
r_eps, k_eps = med(rust, "examples_per_sec"), med(keras, "examples_per_sec")
r_acc, k_acc = med(rust, "test_accuracy"), med(keras, "test_accuracy")
cpu = "unknown CPU"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
print("## Training: tensorq-train vs Keras (source model, 10 epochs, batch 32)\n")
print(f"{n} generated examples (8 features, seeded rule), 80/20 split, same CSV for both; "
      f"median of {runs} runs; {os.cpu_count()} cores ({cpu}); examples/s = train rows x 10 / fit "
      "wall time. tensorq-train runs burn's NdArray backend single-threaded (deterministic); "
      "Keras uses TensorFlow's default thread pools.\n")
print("| trainer | examples/s (median) | fit time (s) | test accuracy | test loss |")
print("| --- | ---: | ---: | ---: | ---: |")
for name, rows in ((f"tensorq-train (burn 0.22 NdArray, {profile} build)", rust), ("Keras (tensorflow-cpu)", keras)):
    print(f"| {name} | {med(rows, 'examples_per_sec'):,.0f} | {med(rows, 'fit_seconds'):.2f} | "
          f"{med(rows, 'test_accuracy'):.4f} | {med(rows, 'test_loss'):.4f} |")
print(f"\nSpeed-up: {r_eps / k_eps:.2f}x (target >= 2x). Accuracy difference: "
      f"{(r_acc - k_acc) * 100:+.2f} points (target within 1 point).")
PY
