#!/usr/bin/env python3
"""`rhea bench`'s workloads in PyTorch, side by side with rhea.

The same three workloads as `rhea bench`, f32, same shapes, timed the same
way (warm-up, then the median of repeated rounds):

- sonar-mlp: Dense 60 relu, Dense 8 relu, Dense 1, binary cross-entropy
  from logits, Adam (Keras defaults); batch 10, one epoch = 124 rows.
- theano-mlp: 784-500-10 tanh/softmax, categorical cross-entropy, SGD
  0.01, batch 60.
- vgg16: torchvision's VGG16 (written out here, so torchvision is not
  needed), forward at 224x224, eval mode, at batch 1 and 8 (and 64 on a
  GPU).

TF32 is off, as in rhea (whose `RHEA_CUDA_TF32=1` allows it); cuDNN picks
its fastest convolution (`cudnn.benchmark`).

    python3 benches/torch_side.py [--device cpu|cuda] [--model NAME[,NAME]]
                                  [--rhea RHEA.json...] [--json FILE]
    python3 benches/torch_side.py --join RHEA.json TORCH.json

With `--rhea` (files from `rhea bench --json`, measured on the same
machine just before), it prints each workload's rate in both and the ratio.
`--join` does that from two saved files, without PyTorch. Without PyTorch
installed it says so and exits 0 (2 with `--require`).
"""

import argparse
import json
import statistics
import sys
import time

from peers import mnist_like_batches, sonar_batches

MODELS = ["sonar-mlp", "theano-mlp", "vgg16"]


def timed_steps(torch, device, step, batches, rounds, min_seconds=0.02):
    """Median, min and max seconds per call of step(batch) over `rounds`
    rounds of at least `min_seconds` (and one pass over the batches)."""

    def wait():
        if device == "cuda":
            torch.cuda.synchronize()

    for b in batches[:3]:
        step(b)
    wait()
    t = time.perf_counter()
    step(batches[0])
    wait()
    one = max(time.perf_counter() - t, 1e-7)
    per_round = min(max(int(min_seconds / one), len(batches)), 100_000)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for i in range(per_round):
            step(batches[i % len(batches)])
        wait()
        times.append((time.perf_counter() - t) / per_round)
    return statistics.median(times), min(times), max(times)


def sonar(torch, device, rounds):
    nn = torch.nn
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(60, 60), nn.ReLU(), nn.Linear(60, 8), nn.ReLU(), nn.Linear(8, 1)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999), eps=1e-7)
    loss_fn = nn.BCEWithLogitsLoss()
    batches = [(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)) for x, y in sonar_batches()]

    def step(b):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(b[0]), b[1])
        loss.backward()
        opt.step()
        return loss

    med, lo, hi = timed_steps(torch, device, step, batches, rounds)
    epochs = []
    for _ in range(rounds):
        t = time.perf_counter()
        for b in batches:
            step(b)
        if device == "cuda":
            torch.cuda.synchronize()
        epochs.append(time.perf_counter() - t)
    row = {"model": "sonar-mlp", "batch": 10, "step_us": med * 1e6, "step_min_us": lo * 1e6}
    row.update({"step_max_us": hi * 1e6, "examples_per_s": 10 / med, "epoch_ms": statistics.median(epochs) * 1e3})
    return [row]


def theano_mlp(torch, device, rounds):
    nn = torch.nn
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(784, 500), nn.Tanh(), nn.Linear(500, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    batches = [(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)) for x, y in mnist_like_batches()]

    def step(b):
        opt.zero_grad(set_to_none=True)
        loss = -(b[1] * torch.log_softmax(model(b[0]), dim=-1)).sum(dim=-1).mean()
        loss.backward()
        opt.step()
        return loss

    med, lo, hi = timed_steps(torch, device, step, batches, rounds)
    return [{"model": "theano-mlp", "batch": 60, "step_us": med * 1e6, "step_min_us": lo * 1e6,
             "step_max_us": hi * 1e6, "examples_per_s": 60 / med}]


def vgg16_net(nn):
    """torchvision's vgg16 (configuration D), without torchvision."""
    layers, channels = [], 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
        nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
        nn.Linear(4096, 1000),
    )
    return nn.Sequential(nn.Sequential(*layers), nn.AdaptiveAvgPool2d(7), nn.Flatten(), classifier)


def vgg16(torch, device, rounds, batches):
    torch.manual_seed(1)
    model = vgg16_net(torch.nn).to(device).eval()
    rows = []
    for b in batches:
        x = torch.rand(b, 3, 224, 224, device=device) * 4 - 2

        def step(x):
            with torch.inference_mode():
                return model(x)

        t = time.perf_counter()
        step(x)
        one = time.perf_counter() - t
        med, lo, hi = timed_steps(torch, device, step, [x], min(rounds, 5) if one > 0.5 else rounds)
        rows.append({"model": "vgg16", "batch": b, "step_us": med * 1e6, "step_min_us": lo * 1e6,
                     "step_max_us": hi * 1e6, "examples_per_s": b / med, "gflops": 30.95 * b / med})
    return rows


def run_torch(device, models, rounds, vgg_batches):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("torch_side.py: --device cuda, but PyTorch sees no GPU")
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    if vgg_batches is None:
        vgg_batches = [1, 8, 64] if device == "cuda" else [1, 8]
    rows = []
    for model in models:
        if model == "sonar-mlp":
            rows += sonar(torch, device, rounds)
        elif model == "theano-mlp":
            rows += theano_mlp(torch, device, rounds)
        else:
            rows += vgg16(torch, device, rounds, vgg_batches)
    for r in rows:
        r["backend"] = device
    return {"torch": torch.__version__, "device": name, "rows": rows}


def rate(x):
    return f"{x:.0f}" if x >= 100 else f"{x:.2f}"


def side_by_side(rhea, torch_report):
    """Lines comparing rhea's rows with PyTorch's on the same device, model
    and batch: examples/s in each and rhea's rate over PyTorch's."""
    lines = [f"{'model':<11} {'batch':>5} {'rhea backend':<14} {'rhea ex/s':>11} {'torch ex/s':>11} {'rhea/torch':>10}"]
    for t in torch_report["rows"]:
        for r in rhea["rows"]:
            if r["model"] != t["model"] or r["batch"] != t["batch"]:
                continue
            if r["backend"].split("+")[0] != t["backend"]:
                continue
            ratio = r["examples_per_s"] / t["examples_per_s"]
            lines.append(f"{t['model']:<11} {t['batch']:>5} {r['backend']:<14} {rate(r['examples_per_s']):>11} "
                         f"{rate(t['examples_per_s']):>11} {ratio:>9.2f}x")
    if len(lines) == 1:
        lines.append("(no workload ran in both at the same batch on the same device)")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--model", default="all", help="sonar-mlp, theano-mlp, vgg16 or all (comma-separated)")
    parser.add_argument("--batch", type=int, help="VGG16's batch (default 1 and 8, and 64 on a GPU)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--rhea", nargs="+", metavar="FILE", help="`rhea bench --json` files to compare with")
    parser.add_argument("--json", help="also write PyTorch's results here")
    parser.add_argument("--join", nargs=2, metavar=("RHEA", "TORCH"), help="compare two saved files, no PyTorch needed")
    parser.add_argument("--require", action="store_true", help="fail (exit 2) when PyTorch is not installed")
    args = parser.parse_args()

    if args.join:
        with open(args.join[0]) as f:
            rhea = json.load(f)
        with open(args.join[1]) as f:
            report = json.load(f)
        print(f"torch {report['torch']} on {report['device']}")
        print("\n".join(side_by_side(rhea, report)))
        return 0
    models = MODELS if args.model == "all" else args.model.split(",")
    for m in models:
        if m not in MODELS:
            parser.error(f"unknown model {m!r}; available: {', '.join(MODELS)}, all")
    try:
        report = run_torch(args.device, models, args.rounds, [args.batch] if args.batch else None)
    except ImportError as e:
        print(f"torch_side.py: PyTorch is not installed ({e}); nothing measured", file=sys.stderr)
        return 2 if args.require else 0
    print(f"torch {report['torch']} on {report['device']}")
    for r in report["rows"]:
        epoch = f"  epoch {r['epoch_ms']:.3f}ms" if "epoch_ms" in r else ""
        print(f"{r['model']:<11} {r['backend']:<5} batch {r['batch']:>3}  step {r['step_us']:>11.1f}us "
              f"({r['step_min_us']:.1f}..{r['step_max_us']:.1f})  examples/s {rate(r['examples_per_s']):>8}{epoch}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    if args.rhea:
        rows = []
        for path in args.rhea:
            with open(path) as f:
                rows += json.load(f)["rows"]
        print("\n".join(side_by_side({"rows": rows}, report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
