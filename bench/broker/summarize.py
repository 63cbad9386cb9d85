"""Summarise bench/broker.sh results into docs/bench/broker.md.

Reads the JSON lines the perf tool printed (one file per broker/workload,
one line per run), takes medians, and writes the markdown table with the
machine description passed in the environment. Owns no measuring.
"""

import json
import os
import statistics
import sys

WORKLOADS = [
    ("e2e", "end to end, 1 producer / 1 consumer, transient, 16 B", "consume_rate"),
    ("publish-only", "publish-only (until the queue holds them all), 16 B", "consume_rate"),
    ("consume-only", "consume-only (drain of a pre-filled queue), 16 B", "consume_rate"),
]


def load(path, field):
    values = []
    if not os.path.exists(path):
        return values
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                values.append(float(json.loads(line)[field]))
            except (ValueError, KeyError):
                continue
    return values


def fmt(values):
    if not values:
        return "n/a", None
    med = statistics.median(values)
    return f"{med:,.0f} (n={len(values)}, {min(values):,.0f}–{max(values):,.0f})", med


def main():
    out_dir, md_path = sys.argv[1], sys.argv[2]
    env = os.environ
    lines = [
        "# Broker benchmark: tensorq vs RabbitMQ",
        "",
        f"- date: {env.get('BENCH_DATE', '')}",
        f"- machine: {env.get('BENCH_NPROC', '')} cores, {env.get('BENCH_CPU', '')}",
        f"- RabbitMQ {env.get('BENCH_RABBIT_VERSION', '')}, Erlang/OTP {env.get('BENCH_ERLANG_VERSION', '')}",
        f"- tensorq: {env.get('BENCH_TENSORQ_VERSION', 'not measured')}",
        f"- load generator: `{env.get('BENCH_PERF', '')}` (tensorq-perf, pipelined amq-protocol frames)",
        f"- command: `{env.get('BENCH_COMMAND', '')}`",
        f"- load average (1/5/15 min) at {env.get('BENCH_LOAD', '')}: the machine is shared, "
        "so figures are medians and move with other work on it",
        f"- runs per cell: {env.get('BENCH_RUNS', '')}; medians of msgs/s (min–max in brackets)",
        "",
        "| workload | tensorq msgs/s | RabbitMQ msgs/s | tensorq / RabbitMQ |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, label, field in WORKLOADS:
        tq_text, tq = fmt(load(os.path.join(out_dir, f"tensorq-{key}.jsonl"), field))
        rb_text, rb = fmt(load(os.path.join(out_dir, f"rabbitmq-{key}.jsonl"), field))
        ratio = f"{tq / rb:.2f}×" if tq and rb else "n/a"
        lines.append(f"| {label} | {tq_text} | {rb_text} | {ratio} |")
    sink_text, _ = fmt(load(os.path.join(out_dir, "sink.jsonl"), "publish_rate"))
    sink_confirm_text, _ = fmt(load(os.path.join(out_dir, "sink-confirm.jsonl"), "publish_rate"))
    lines += [
        "",
        "Load generator ceiling (1 producer into the discard sink, no broker, 16 B): "
        f"{sink_text} msgs/s; with confirms (window 1000): {sink_confirm_text} msgs/s.",
        "",
        "Workloads: e2e = `--producers 1 --consumers 1 --duration D` (consumed/s); "
        "publish-only = `--publish-only --count N` (messages/s until a passive "
        "queue.declare reports all N queued); consume-only = `--consume-only --count N` "
        "(pre-fill untimed, then consumed/s). Consumers ack with multiple=true every 100, prefetch 1000.",
        "",
    ]
    with open(md_path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
