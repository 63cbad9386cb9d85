"""Keras side of bench/train_vs_keras.sh: the source document's model and fit, on CSV data.

Usage: train_vs_keras.py TRAIN_CSV TEST_CSV  -> prints one JSON line
{"examples_per_sec": .., "fit_seconds": .., "test_loss": .., "test_accuracy": ..}
"""
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def load(path):
    data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)
    return data[:, :-1], data[:, -1]


def main():
    x_train, y_train = load(sys.argv[1])
    x_test, y_test = load(sys.argv[2])
    tf.keras.utils.set_random_seed(1)
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(8,)),
        tf.keras.layers.Dense(10, activation="relu"),
        tf.keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)
    seconds = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(json.dumps({
        "examples_per_sec": len(x_train) * 10 / seconds,
        "fit_seconds": seconds,
        "test_loss": float(loss),
        "test_accuracy": float(accuracy),
    }))


if __name__ == "__main__":
    main()
