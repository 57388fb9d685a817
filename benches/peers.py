#!/usr/bin/env python3
"""The workloads of `rhea bench`, in the peers users compare rhea with.

Runs whichever of JAX and PyTensor is installed (each is optional) on the
same two training steps as `rhea bench`, with the same shapes and f32:

- sonar-mlp: Dense 60 relu, Dense 8 relu, Dense 1, binary cross-entropy
  from logits, Adam (Keras defaults); one epoch = 124 rows in batches of 10.
- theano-mlp: 784-500-10 tanh/softmax, categorical cross-entropy, SGD 0.01,
  batch 60; examples per second.
- lstm, elman (JAX only, `lax.scan`): the recurrent training steps of
  `rhea bench --model lstm,elman` (LSTM: batch 32, 32 features, 128 units,
  100 steps; Elman RNN: batch 16, 8 features, 32 units, 200 steps; a dense
  head on the last state, mean squared error, SGD 0.01), with the compile
  time of each at 20, 200 and 2000 steps (`--seq-lens`).

    python3 benches/peers.py [--json FILE]

Run it right after `rhea bench` on the same machine; docs/benchmarks.md
records both.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SONAR = os.path.join(HERE, "..", "data", "sonar", "sonar.all-data")


def sonar_batches(batch=10, rows=124):
    x, y = [], []
    with open(SONAR) as f:
        for line in f:
            fields = line.strip().split(",")
            if len(fields) < 61:
                continue
            x.append([float(v) for v in fields[:60]])
            y.append([1.0 if fields[60] == "R" else 0.0])
    x = np.asarray(x[:rows], np.float32)
    y = np.asarray(y[:rows], np.float32)
    return [(x[s : s + batch], y[s : s + batch]) for s in range(0, rows, batch)]


def mnist_like_batches(batch=60, count=4):
    rng = np.random.default_rng(0)
    out = []
    for k in range(count):
        x = rng.random((batch, 784), dtype=np.float32)
        y = np.eye(10, dtype=np.float32)[(np.arange(batch) + k) % 10]
        out.append((x, y))
    return out


def glorot(rng, fan_in, fan_out):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)


def timed(fn, rounds=15):
    """Median and spread of `rounds` timings of fn() (after a warm-up)."""
    fn()
    fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), max(times)


def time_steps(step, params, batches):
    """Median seconds per call of a jitted `step(params, x, y) -> (params, loss)`
    over `batches`, the parameters carried from call to call."""
    state = [params]

    def run():
        p = state[0]
        for x, y in batches:
            p, loss = step(p, x, y)
        loss.block_until_ready()
        state[0] = p

    med, _, _ = timed(run)
    return med / len(batches)


def jax_workloads():
    import jax
    import jax.numpy as jnp

    results = {}
    rng = np.random.default_rng(1)

    # Sonar MLP with Adam.
    sizes = [(60, 60), (60, 8), (8, 1)]
    params = []
    for a, b in sizes:
        params += [jnp.asarray(glorot(rng, a, b)), jnp.zeros((b,), jnp.float32)]
    m = [jnp.zeros_like(p) for p in params]
    v = [jnp.zeros_like(p) for p in params]

    def sonar_loss(params, x, y):
        h = x
        for i in range(3):
            h = h @ params[2 * i] + params[2 * i + 1]
            if i < 2:
                h = jax.nn.relu(h)
        return jnp.mean(jnp.maximum(h, 0) - h * y + jnp.log1p(jnp.exp(-jnp.abs(h))))

    @jax.jit
    def adam_step(params, m, v, t, x, y):
        loss, g = jax.value_and_grad(sonar_loss)(params, x, y)
        t = t + 1
        lr = 0.001 * jnp.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        m = [0.9 * a + 0.1 * b for a, b in zip(m, g)]
        v = [0.999 * a + 0.001 * b * b for a, b in zip(v, g)]
        params = [p - lr * a / (jnp.sqrt(b) + 1e-7) for p, a, b in zip(params, m, v)]
        return params, m, v, t, loss

    batches = [(jnp.asarray(x), jnp.asarray(y)) for x, y in sonar_batches()]
    state = [params, m, v, jnp.float32(0)]

    def epoch():
        p, mm, vv, t = state
        for x, y in batches:
            p, mm, vv, t, loss = adam_step(p, mm, vv, t, x, y)
        loss.block_until_ready()
        state[:] = [p, mm, vv, t]

    med, lo, hi = timed(epoch)
    results["sonar-mlp"] = {"epoch_ms": med * 1e3, "min_ms": lo * 1e3, "max_ms": hi * 1e3}

    # Theano paper MLP with SGD.
    w1, b1 = jnp.asarray(glorot(rng, 784, 500)), jnp.zeros((500,), jnp.float32)
    w2, b2 = jnp.asarray(glorot(rng, 500, 10)), jnp.zeros((10,), jnp.float32)

    def mlp_loss(params, x, y):
        w1, b1, w2, b2 = params
        logits = jnp.tanh(x @ w1 + b1) @ w2 + b2
        return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(logits), axis=-1))

    @jax.jit
    def sgd_step(params, x, y):
        loss, g = jax.value_and_grad(mlp_loss)(params, x, y)
        return [p - 0.01 * d for p, d in zip(params, g)], loss

    batches = [(jnp.asarray(x), jnp.asarray(y)) for x, y in mnist_like_batches()]
    per_step = time_steps(sgd_step, [w1, b1, w2, b2], batches)
    results["theano-mlp"] = {"step_us": per_step * 1e6, "examples_per_s": 60 / per_step}
    results.update(jax_recurrent(jax, jnp, rng))
    return "jax " + jax.__version__, results


def jax_recurrent(jax, jnp, rng):
    """The LSTM and the Elman RNN as `rhea bench` builds them, with lax.scan."""
    results = {}
    for model, (batch, inputs, units, steps) in [("lstm", (32, 32, 128, 100)), ("elman", (16, 8, 32, 200))]:
        gates = 4 if model == "lstm" else 1
        params = [
            jnp.asarray(glorot(rng, inputs, gates * units)),
            jnp.asarray(glorot(rng, units, gates * units)),
            jnp.zeros((gates * units,), jnp.float32),
            jnp.asarray(glorot(rng, units, 1)),
            jnp.zeros((1,), jnp.float32),
        ]

        def loss_fn(params, x, y, model=model, units=units, batch=batch):
            w, u, b, hw, hb = params
            projected = x @ w + b  # [time, batch, gates * units], one product before the loop
            zero = jnp.zeros((batch, units), jnp.float32)
            if model == "lstm":

                def cell(carry, z):
                    h, c = carry
                    z = z + h @ u
                    i, f, g, o = jnp.split(z, 4, axis=-1)
                    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
                    h = jax.nn.sigmoid(o) * jnp.tanh(c)
                    return (h, c), None

                (h, _), _ = jax.lax.scan(cell, (zero, zero), projected)
            else:

                def cell(h, z):
                    return jnp.tanh(z + h @ u), None

                h, _ = jax.lax.scan(cell, zero, projected)
            return jnp.mean((h @ hw + hb - y) ** 2)

        def make_step():
            @jax.jit
            def step(params, x, y):
                loss, g = jax.value_and_grad(loss_fn)(params, x, y)
                return [p - 0.01 * d for p, d in zip(params, g)], loss

            return step

        def data(t, k):
            r = np.random.default_rng(k)
            x = jnp.asarray(r.random((t, batch, inputs), dtype=np.float32) - 0.5)
            y = jnp.asarray(r.random((batch, 1), dtype=np.float32))
            return x, y

        compile_ms = {}
        for t in SEQ_LENS:
            step = make_step()
            x, y = data(t, 0)
            started = time.perf_counter()
            step.lower(params, x, y).compile()
            compile_ms[str(t)] = (time.perf_counter() - started) * 1e3
        per_step = time_steps(make_step(), params, [data(steps, k) for k in range(2)])
        results[model] = {"step_us": per_step * 1e6, "examples_per_s": batch / per_step}
        results[model].update({f"compile_ms_t{t}": v for t, v in compile_ms.items()})
    return results


SEQ_LENS = [20, 200, 2000]


def pytensor_workloads():
    import pytensor
    import pytensor.tensor as pt

    rng = np.random.default_rng(1)
    x, y = pt.matrix("x", dtype="float32"), pt.matrix("y", dtype="float32")
    w1 = pytensor.shared(glorot(rng, 784, 500))
    b1 = pytensor.shared(np.zeros(500, np.float32))
    w2 = pytensor.shared(glorot(rng, 500, 10))
    b2 = pytensor.shared(np.zeros(10, np.float32))
    logits = pt.tanh(x @ w1 + b1) @ w2 + b2
    loss = -pt.mean(pt.sum(y * pt.special.log_softmax(logits, axis=-1), axis=-1))
    params = [w1, b1, w2, b2]
    grads = pytensor.grad(loss, params)
    lr = np.float32(0.01)
    step = pytensor.function([x, y], loss, updates=[(p, p - lr * g) for p, g in zip(params, grads)])
    batches = mnist_like_batches()

    def steps():
        for bx, by in batches:
            step(bx, by)

    med, _, _ = timed(steps)
    per_step = med / len(batches)
    return "pytensor " + pytensor.__version__, {"theano-mlp": {"step_us": per_step * 1e6, "examples_per_s": 60 / per_step}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--seq-lens", default="20,200,2000", help="steps at which to time compiling the recurrent models")
    args = parser.parse_args()
    SEQ_LENS[:] = [int(t) for t in args.seq_lens.split(",")]
    report = {}
    for name, run in [("jax", jax_workloads), ("pytensor", pytensor_workloads)]:
        try:
            version, results = run()
        except ImportError as e:
            print(f"{name}: not installed ({e})", file=sys.stderr)
            continue
        report[version] = results
        for model, r in results.items():
            shown = ", ".join(f"{k} {v:.3f}" if v < 1000 else f"{k} {v:.0f}" for k, v in r.items())
            print(f"{version:<18} {model:<11} {shown}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
