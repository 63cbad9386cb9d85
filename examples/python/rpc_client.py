"""The source document's producer, completed: send feature vectors, wait for the predictions.

Start a broker that serves the source's model from a queue, e.g.

    tensorq server --serve predict=fixtures/models/seed_mlp.onnx

then run

    python examples/python/rpc_client.py --queue predict --count 100

Each request is a JSON body in the TF-Serving row form, {"instances": [[8 floats]]}, published
persistent to the request queue with reply_to (an exclusive, server-named queue of this client)
and a correlation_id. The worker answers {"predictions": [[score]]} to reply_to with the same
correlation_id; an error reply is {"error": "..."}. Up to --in-flight requests are outstanding
at once, so the worker can batch them. Prints every prediction with --verbose, and the
throughput N/T (the source's formula) with latency percentiles at the end.

Works unchanged against RabbitMQ with `tensorq worker serve --broker amqp://... --queue predict
--model fixtures/models/seed_mlp.onnx` running beside it.
"""
import argparse
import json
import random
import sys
import time
import uuid

import pika


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="amqp://guest:guest@localhost:5672/%2F")
    p.add_argument("--queue", default="predict")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--in-flight", type=int, default=32)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for all replies")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()

    rng = random.Random(args.seed)
    conn = pika.BlockingConnection(pika.URLParameters(args.url))
    ch = conn.channel()
    ch.confirm_delivery()
    reply_queue = ch.queue_declare(queue="", exclusive=True).method.queue

    sent_at = {}
    latencies = []
    errors = []

    def on_reply(channel, method, props, body):
        started = sent_at.pop(props.correlation_id, None)
        if started is None:
            return  # a duplicate or a stray reply: at-least-once means it can happen
        latencies.append(time.perf_counter() - started)
        reply = json.loads(body)
        if "error" in reply:
            errors.append((props.correlation_id, reply["error"]))
        elif args.verbose:
            version = (props.headers or {}).get("x-tensorq-model-version")
            print(f"{props.correlation_id}: {reply['predictions']} (model version {version})")

    ch.basic_consume(queue=reply_queue, on_message_callback=on_reply, auto_ack=True)

    start = time.perf_counter()
    deadline = start + args.timeout
    sent = 0
    while sent < args.count or sent_at:
        while sent < args.count and len(sent_at) < args.in_flight:
            features = [rng.uniform(-1.0, 1.0) for _ in range(8)]
            corr = str(uuid.uuid4())
            sent_at[corr] = time.perf_counter()
            ch.basic_publish(
                exchange="",
                routing_key=args.queue,
                body=json.dumps({"instances": [features]}),
                properties=pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=2,
                    reply_to=reply_queue,
                    correlation_id=corr,
                ),
            )
            sent += 1
        conn.process_data_events(time_limit=0.05)
        if time.perf_counter() > deadline:
            print(f"timed out with {len(sent_at)} replies missing", file=sys.stderr)
            return 1
    elapsed = time.perf_counter() - start
    conn.close()

    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * (len(latencies) - 1)))] * 1e3
    print(f"{args.count} requests in {elapsed:.3f} s: {args.count / elapsed:.0f} msg/s (N/T); "
          f"latency p50 {pct(0.50):.2f} ms, p99 {pct(0.99):.2f} ms; {len(errors)} errors")
    for corr, err in errors[:5]:
        print(f"error for {corr}: {err}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
