#!/usr/bin/env python3
"""Writes a test case for `rhea run`, computed independently with numpy.

    make_case.py CASE INPUTS.safetensors EXPECTED.safetensors

CASE names a graph that tests/cli/python.rs builds in Rust and writes as a
JSON graph file. This script writes the tensors to feed it (inputs, and the
values of its shared variables) with safetensors.numpy, and numpy's own
result for each named output to EXPECTED.

Cases:
  mlp    x f32[5,4]; weights w1 f32[4,8], b1 f32[8], w2 f32[8,3], b2 f32[3];
         probs = softmax(tanh(relu(x @ w1 + b1) @ w2 + b2)) along the last axis
  mixed  x f64[6,3]; total = sum(exp(x) * 2 - 1, axis 1), best = argmax(x, 1) (i64),
         positive = x > 0 (bool), logp = log_softmax(x, axis 1),
         count = number of positive elements (i32)
"""

import sys

import numpy as np
from safetensors.numpy import save_file


def softmax(z, axis):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(z, axis):
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def mlp(rng):
    f32 = np.float32
    inputs = {
        "x": rng.standard_normal((5, 4)).astype(f32),
        "w1": rng.standard_normal((4, 8)).astype(f32),
        "b1": rng.standard_normal(8).astype(f32),
        "w2": rng.standard_normal((8, 3)).astype(f32),
        "b2": rng.standard_normal(3).astype(f32),
    }
    x, w1, b1, w2, b2 = (inputs[k] for k in ("x", "w1", "b1", "w2", "b2"))
    hidden = np.maximum(x @ w1 + b1, f32(0))
    probs = softmax(np.tanh(hidden @ w2 + b2), axis=-1).astype(f32)
    return inputs, {"probs": probs}


def mixed(rng):
    x = rng.standard_normal((6, 3))
    x[2, 1] = 0.0
    expected = {
        "total": (np.exp(x) * 2.0 - 1.0).sum(axis=1),
        "best": np.argmax(x, axis=1).astype(np.int64),
        "positive": x > 0,
        "logp": log_softmax(x, axis=1),
        "count": np.array((x > 0).sum(), dtype=np.int32),
    }
    return {"x": x}, expected


CASES = {"mlp": mlp, "mixed": mixed}


def main(argv):
    if len(argv) != 4 or argv[1] not in CASES:
        sys.exit(f"usage: make_case.py {{{'|'.join(CASES)}}} INPUTS.safetensors EXPECTED.safetensors")
    inputs, expected = CASES[argv[1]](np.random.default_rng(20240607))
    save_file(inputs, argv[2])
    save_file(expected, argv[3])


if __name__ == "__main__":
    main(sys.argv)
