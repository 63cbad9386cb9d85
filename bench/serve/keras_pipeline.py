"""The source document's pipeline as it writes it: pika + tensorflow-cpu on RabbitMQ.

A producer (untimed) fills a durable queue with N persistent JSON requests {"features": [8
floats]}. Then a pika consumer runs the source's Keras model, Dense(10, relu) -> Dense(1,
sigmoid) on 8 features, on each message, one at a time, publishes {"score": s} persistent to a
results queue and acks. The timed part is the consumer: first delivery to N-th ack.

Variants: --variant predict calls model.predict(x) per message (what the document's Keras code
suggests), --variant call calls model(x) per message (the fast path for single rows).

Prints one JSON line: {"variant", "count", "seconds", "msgs_per_sec"}.
"""
import argparse
import json
import os
import random
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pika  # noqa: E402
import tensorflow as tf  # noqa: E402

REQUESTS = "bench.keras.requests"
RESULTS = "bench.keras.results"


def build_model():
    tf.keras.utils.set_random_seed(1)
    model = tf.keras.Sequential([
        tf.keras.layers.Dense(10, activation="relu", input_shape=(8,)),
        tf.keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def fill(ch, count):
    rng = random.Random(7)
    ch.confirm_delivery()
    for _ in range(count):
        body = json.dumps({"features": [rng.uniform(-1, 1) for _ in range(8)]})
        ch.basic_publish("", REQUESTS, body,
                         pika.BasicProperties(content_type="application/json", delivery_mode=2))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    p.add_argument("--variant", choices=["predict", "call"], required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--prefetch", type=int, default=100)
    args = p.parse_args()

    model = build_model()
    if args.variant == "predict":
        infer = lambda x: model.predict(x, verbose=0)  # noqa: E731
    else:
        infer = lambda x: model(x).numpy()  # noqa: E731
    infer(np.zeros((1, 8), dtype=np.float32))  # warm up (graph tracing), untimed

    conn = pika.BlockingConnection(pika.URLParameters(args.url))
    ch = conn.channel()
    for q in (REQUESTS, RESULTS):
        ch.queue_declare(queue=q, durable=True)
        ch.queue_purge(queue=q)
    fill(ch, args.count)
    ch.close()

    ch = conn.channel()
    ch.basic_qos(prefetch_count=args.prefetch)
    state = {"done": 0, "start": None}

    def on_message(channel, method, props, body):
        if state["start"] is None:
            state["start"] = time.perf_counter()
        features = json.loads(body)["features"]
        x = np.array([features], dtype=np.float32)
        score = float(infer(x)[0][0])
        channel.basic_publish("", RESULTS, json.dumps({"score": score}),
                              pika.BasicProperties(content_type="application/json",
                                                   delivery_mode=2))
        channel.basic_ack(method.delivery_tag)
        state["done"] += 1
        if state["done"] == args.count:
            channel.stop_consuming()

    ch.basic_consume(queue=REQUESTS, on_message_callback=on_message)
    ch.start_consuming()
    seconds = time.perf_counter() - state["start"]
    ch.queue_delete(queue=REQUESTS)
    ch.queue_delete(queue=RESULTS)
    conn.close()
    print(json.dumps({"variant": args.variant, "count": args.count, "seconds": seconds,
                      "msgs_per_sec": args.count / seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
