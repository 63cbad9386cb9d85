"""Turns bench/serve.sh's runs.jsonl into the markdown table of docs/bench/serve.md."""
import json
import os
import statistics
import sys

path, runs, duration, window = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = [json.loads(line) for line in open(path) if line.strip()]


def pick(label):
    return [r for r in rows if r["label"] == label]


def rate(r):
    return r["msgs_per_sec"] if "msgs_per_sec" in r else r["consume_rate"]


def med(label, f=rate):
    vals = [f(r) for r in pick(label)]
    return statistics.median(vals) if vals else float("nan")


def lat(label, key):
    return med(label, lambda r: (r.get("latency") or {}).get(key, float("nan")) / 1000.0)


cpu = "unknown CPU"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass

desc = {
    "keras-predict": "source pipeline on RabbitMQ: pika + Keras `model.predict(x)` per message",
    "keras-call": "source pipeline on RabbitMQ: pika + Keras `model(x)` per message",
    "served": "tensorq, embedded worker (in process), seed model (max batch 64, 1 ms), RPC",
    "served-loopback": "tensorq, the same worker over loopback AMQP (`--serve-transport loopback`)",
    "raw-rpc": "tensorq raw request/reply, same bodies, perf's echo responder, durable request queue (same store work as served)",
    "raw-rpc-transient": "the same into a non-durable request queue (no store work)",
    "big-b1": "tensorq, MLP 784-256-256-10, max batch 1",
    "big": "tensorq, MLP 784-256-256-10, dynamic batching (max batch 64)",
    "half-load": "tensorq, seed model at half of its peak rate",
}
print("## Serving: the source's pika + Keras consumer vs tensorq's queue-bound model\n")
print(f"Median of {runs} runs; {os.cpu_count()} cores ({cpu}); broker, worker and load generator "
      f"share the machine. Keras rows: a pre-filled durable queue of persistent JSON requests, "
      f"timed drain by one pika consumer that publishes a persistent JSON score and acks each "
      f"message. tensorq rows: `tensorq perf --rpc` publishes persistent requests with up to "
      f"{window} in flight for {duration} s and times the replies (publishing included); the "
      f"worker acks each request after its reply is confirmed.\n")
print("| run | msgs/s (median) | p50 ms | p99 ms |")
print("| --- | ---: | ---: | ---: |")
for label in desc:
    if not pick(label):
        continue
    if label.startswith("keras"):
        print(f"| {desc[label]} | {med(label):,.0f} | – | – |")
    else:
        print(f"| {desc[label]} | {med(label):,.0f} | {lat(label, 'p50_us'):.2f} | "
              f"{lat(label, 'p99_us'):.2f} |")
served, call, raw = med("served"), med("keras-call"), med("raw-rpc")
big, big1 = med("big"), med("big-b1")
print()
print(f"- served / keras-call (`model(x)`): **{served / call:.1f}x** (target >= 100x)")
print(f"- served / keras-predict: **{served / med('keras-predict'):.0f}x**")
print(f"- served / tensorq raw request-reply, durable request queue: **{100 * served / raw:.0f}%** (target >= 70%)")
if pick("raw-rpc-transient"):
    print(f"- served / tensorq raw request-reply, non-durable request queue: "
          f"{100 * served / med('raw-rpc-transient'):.0f}%")
print(f"- big model, dynamic batching / batch 1: **{big / big1:.1f}x** (target >= 5x)")
if pick("served-loopback"):
    print(f"- embedded worker in process / over loopback AMQP: **{served / med('served-loopback'):.1f}x**")
print(f"- latency at half of peak ({med('half-load'):,.0f} req/s offered): p50 "
      f"{lat('half-load', 'p50_us'):.2f} ms, p99 {lat('half-load', 'p99_us'):.2f} ms")
