#!/usr/bin/env python3
"""Writes crates/rhea-interp/tests/golden/ops.json: golden values for every
op of rhea's interpreter, computed independently with numpy (2.x).

Usage: python3 crates/rhea-interp/tests/golden/gen_op_golden.py

The output is a JSON list of cases, sorted by name:

    {"name": ..., "op": <rhea_graph::Op as serde writes it>,
     "inputs": [<Literal>...], "expected": <Literal>}

or, for run-time errors, "error": "<substring of the message>" instead of
"expected". A Literal is {"dtype": "f32", "shape": [2], "data": [1.5, "nan"]}
with non-finite floats as the strings "nan", "inf", "-inf".

Determinism: every random tensor comes from a generator seeded by a hash of
the case name, and floats are written with repr() of Python floats. For f32
data the Python float is the shortest decimal that reads back as the same
f32 (numpy's str of a float32), which rhea parses as f32 directly, so the
text is exact and short. f32 results are computed in float32 numpy unless a
comment says otherwise (dot, conv2d and pooling are computed in float64 and
rounded, as the reference).

Where numpy's definition differs from rhea's (one_hot of negative indices,
logsumexp of an empty axis, softplus/sigmoid formulas, pooling padding), the
script computes rhea's definition explicitly.
"""

import hashlib
import json
import math
import os
import sys
import warnings

import numpy as np

OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "ops.json"
)

DTYPES = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64, "bool": np.bool_}
FLOATS = ["f32", "f64"]
INTS = ["i32", "i64"]


def dtname(a):
    for k, v in DTYPES.items():
        if a.dtype == np.dtype(v):
            return k
    raise TypeError(f"unsupported dtype {a.dtype}")


def jnum(x, dt):
    if dt in FLOATS:
        f = float(str(np.float32(x))) if dt == "f32" else float(x)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    if dt == "bool":
        return bool(x)
    return int(x)


def lit(a):
    a = np.asarray(a)
    dt = dtname(a)
    return {"dtype": dt, "shape": [int(d) for d in a.shape], "data": [jnum(x, dt) for x in a.reshape(-1)]}


def jfloat(f):
    """An f64 attribute (pad value)."""
    return jnum(np.float64(f), "f64")


CASES = {}


def case(name, op, inputs, expected=None, error=None):
    assert name not in CASES, f"duplicate case name {name}"
    assert (expected is None) != (error is None)
    inputs = [np.asarray(x) for x in inputs]
    c = {"name": name, "op": op, "inputs": [lit(x) for x in inputs]}
    if expected is not None:
        c["expected"] = lit(np.asarray(expected))
    else:
        c["error"] = error
    CASES[name] = c


def rng_for(name):
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.default_rng(seed)


def rand(name, shape, dt, lo=-3.0, hi=3.0, decimals=3):
    """A random tensor: floats uniform in [lo, hi) rounded to `decimals`,
    ints uniform in [lo, hi], bools fair."""
    r = rng_for(name)
    if dt in FLOATS:
        return np.round(r.uniform(lo, hi, size=shape), decimals).astype(DTYPES[dt])
    if dt in INTS:
        return r.integers(int(lo), int(hi) + 1, size=shape).astype(DTYPES[dt])
    return r.integers(0, 2, size=shape).astype(bool)


# ---- op constructors: field order as serde writes them ----------------------

SERDE_UNARY = {}  # serde names equal the dump names
SERDE_REDUCE = {}  # serde names equal the dump names


def unary(f):
    return {"op": "unary", "fun": SERDE_UNARY.get(f, f)}


def binary(f):
    return {"op": "binary", "fun": f}


def reduce_op(f, axes, keepdims):
    return {"op": "reduce", "fun": SERDE_REDUCE.get(f, f), "axes": list(axes), "keepdims": keepdims}


def arg_reduce(f, axis, keepdims):
    return {"op": "arg_reduce", "fun": f, "axis": axis, "keepdims": keepdims}


def conv_op(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    return {"op": "conv2d", "stride": list(stride), "padding": list(padding), "dilation": list(dilation),
            "groups": groups}


def pool_op(kind, kernel, stride, padding=(0, 0), count_include_pad=False):
    return {"op": kind, "kernel": list(kernel), "stride": list(stride), "padding": list(padding),
            "count_include_pad": count_include_pad}


def slice_op(specs):
    return {"op": "slice", "specs": [{"start": s, "stop": e, "step": st} for (s, e, st) in specs]}


# ---- rhea definitions where numpy needs help -------------------------------

def sigmoid(x):
    x = np.asarray(x)
    one = x.dtype.type(1)
    pos = one / (one + np.exp(-x))
    ex = np.exp(x)
    neg = ex / (one + ex)
    return np.where(x >= 0, pos, neg).astype(x.dtype)


def softplus(x):
    x = np.asarray(x)
    return (np.log1p(np.exp(-np.abs(x))) + np.maximum(x, x.dtype.type(0))).astype(x.dtype)


UNARY_FLOAT = {
    "neg": np.negative,
    "abs": np.abs,
    "sign": np.sign,
    "exp": np.exp,
    "log": np.log,
    "log1p": np.log1p,
    "expm1": np.expm1,
    "sqrt": np.sqrt,
    "rsqrt": lambda x: x.dtype.type(1) / np.sqrt(x),
    "reciprocal": lambda x: x.dtype.type(1) / x,
    "square": np.square,
    "tanh": np.tanh,
    "sigmoid": sigmoid,
    "softplus": softplus,
    "relu": lambda x: np.maximum(x, x.dtype.type(0)),
    "sin": np.sin,
    "cos": np.cos,
    "floor": np.floor,
    "ceil": np.ceil,
    "round": np.round,  # half to even
}

# Domain of the random inputs of each float unary function.
UNARY_DOMAIN = {"log": (0.05, 5.0), "sqrt": (0.0, 5.0), "rsqrt": (0.05, 5.0), "log1p": (-0.9, 4.0),
                "exp": (-6.0, 6.0), "sigmoid": (-12.0, 12.0), "softplus": (-12.0, 12.0)}

UNARY_INT = {
    "neg": np.negative,
    "abs": np.abs,
    "sign": np.sign,
    "square": np.square,
    "relu": lambda x: np.maximum(x, x.dtype.type(0)),
    "isnan": np.isnan,
    "isinf": np.isinf,
}

SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.75, -0.25, 1e-3]


def logsumexp(x, axes, keepdims):
    """Stable log(sum(exp(x))) over `axes`; -inf for an empty reduction."""
    x = np.asarray(x)
    axes = tuple(axes)
    if any(x.shape[a] == 0 for a in axes):
        shape = [1 if a in axes else d for a, d in enumerate(x.shape)]
        out = np.full(shape, -np.inf, dtype=x.dtype)
        return out if keepdims else out.reshape([d for a, d in enumerate(x.shape) if a not in axes])
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, x.dtype.type(0)).astype(x.dtype)
    s = np.sum(np.exp(x - m), axis=axes, keepdims=True, dtype=x.dtype)
    out = (np.log(s) + m).astype(x.dtype)
    if not keepdims:
        out = out.reshape([d for a, d in enumerate(x.shape) if a not in axes])
    return out


def reduce_ref(f, x, axes, keepdims):
    axes = tuple(axes)
    dt = x.dtype
    if f == "sum":
        return np.sum(x, axis=axes, keepdims=keepdims, dtype=dt)
    if f == "mean":
        return np.mean(x, axis=axes, keepdims=keepdims, dtype=dt)
    if f == "prod":
        return np.prod(x, axis=axes, keepdims=keepdims, dtype=dt)
    if f == "max":
        return np.max(x, axis=axes, keepdims=keepdims)
    if f == "min":
        return np.min(x, axis=axes, keepdims=keepdims)
    if f == "logsumexp":
        return logsumexp(x, axes, keepdims)
    raise ValueError(f)


def softmax_ref(x, axis, log):
    m = np.max(x, axis=axis, keepdims=True)
    z = x - m
    s = np.sum(np.exp(z), axis=axis, keepdims=True, dtype=x.dtype)
    return (z - np.log(s)).astype(x.dtype) if log else (np.exp(z) / s).astype(x.dtype)


def conv2d_ref(x, w, stride, padding, dilation, groups):
    """Cross-correlation with explicit loops in float64."""
    dt = x.dtype
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    n, c, h, wd = x.shape
    o, ipg, kh, kw = w.shape
    assert ipg * groups == c and o % groups == 0
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (wd + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    out = np.zeros((n, o, oh, ow))
    opg = o // groups
    for b in range(n):
        for oc in range(o):
            g = oc // opg
            for i in range(oh):
                for j in range(ow):
                    acc = 0.0
                    for ic in range(ipg):
                        for u in range(kh):
                            for v in range(kw):
                                acc += xp[b, g * ipg + ic, i * sh + u * dh, j * sw + v * dw] * w[oc, ic, u, v]
                    out[b, oc, i, j] = acc
    return out.astype(dt)


def pool_ref(x, kernel, stride, padding, kind, count_include_pad):
    """Floor-mode pooling with explicit loops in float64; max padding is -inf,
    average padding is 0 and counts only if count_include_pad."""
    dt = x.dtype
    x = x.astype(np.float64)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    out = np.zeros((n, c, oh, ow))
    for b in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    vals = []
                    for u in range(kh):
                        for v in range(kw):
                            r, q = i * sh - ph + u, j * sw - pw + v
                            if 0 <= r < h and 0 <= q < w:
                                vals.append(x[b, ch, r, q])
                    if kind == "max":
                        out[b, ch, i, j] = max(vals) if vals else -np.inf
                    else:
                        div = kh * kw if count_include_pad else len(vals)
                        out[b, ch, i, j] = sum(vals) / div
    return out.astype(dt)


# ---- the cases --------------------------------------------------------------

def unary_cases():
    for f, fn in UNARY_FLOAT.items():
        lo, hi = UNARY_DOMAIN.get(f, (-4.0, 4.0))
        for dt in FLOATS:
            name = f"unary_{f}_{dt}_rand"
            x = rand(name, (3, 4), dt, lo, hi)
            if f in ("floor", "ceil", "round"):
                x = x.copy()
                x.reshape(-1)[:8] = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.0, -3.0], dtype=x.dtype)
            case(name, unary(f), [x], fn(x))
            name = f"unary_{f}_{dt}_special"
            x = np.array(SPECIAL, dtype=DTYPES[dt])
            case(name, unary(f), [x], fn(x))
    # Scalar and empty inputs.
    case("unary_exp_f32_scalar", unary("exp"), [np.float32(0.5)], np.exp(np.float32(0.5)))
    case("unary_tanh_f64_empty", unary("tanh"), [np.zeros((0, 3))], np.zeros((0, 3)))
    # Rounding of values just around the halves.
    x = np.array([0.49999997, 0.50000006, 1.4999999, -0.50000006, 4.5, 5.5, -4.5, 1e7 + 1, 0.0], np.float32)
    case("unary_round_f32_near_half", unary("round"), [x], np.round(x))
    # Large-magnitude sigmoid/softplus (stable forms).
    x = np.array([-800.0, -100.0, -40.0, -1e-8, 1e-8, 40.0, 100.0, 800.0])
    case("unary_sigmoid_f64_large", unary("sigmoid"), [x], sigmoid(x))
    case("unary_softplus_f64_large", unary("softplus"), [x], softplus(x))
    xf = x.astype(np.float32)
    case("unary_sigmoid_f32_large", unary("sigmoid"), [xf], sigmoid(xf))
    case("unary_softplus_f32_large", unary("softplus"), [xf], softplus(xf))
    # Small arguments where log1p/expm1 differ from log(1+x)/exp(x)-1.
    x = np.array([1e-10, -1e-10, 1e-5, -1e-5, 1e-300])
    case("unary_log1p_f64_tiny", unary("log1p"), [x], np.log1p(x))
    case("unary_expm1_f64_tiny", unary("expm1"), [x], np.expm1(x))
    for f, fn in UNARY_INT.items():
        for dt in INTS:
            name = f"unary_{f}_{dt}"
            x = rand(name, (2, 5), dt, -9, 9)
            x.reshape(-1)[0] = 0
            case(name, unary(f), [x], fn(x))
    for dt in FLOATS:
        x = np.array([[np.nan, 1.0, np.inf], [-np.inf, 0.0, np.nan]], dtype=DTYPES[dt])
        case(f"unary_isnan_{dt}", unary("isnan"), [x], np.isnan(x))
        case(f"unary_isinf_{dt}", unary("isinf"), [x], np.isinf(x))
    x = np.array([[True, False, True], [False, False, True]])
    case("unary_not_bool", unary("not"), [x], np.logical_not(x))
    case("unary_not_bool_scalar", unary("not"), [np.bool_(True)], np.bool_(False))
    case("unary_neg_i32_empty", unary("neg"), [np.zeros((2, 0), np.int32)], np.zeros((2, 0), np.int32))


BINARY_NUMERIC = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "maximum": np.maximum,
                  "minimum": np.minimum}
BINARY_FLOAT = {"div": np.divide, "pow": np.power}
BINARY_COMPARE = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
                  "ge": np.greater_equal}
BINARY_LOGICAL = {"and": np.logical_and, "or": np.logical_or}

# Shape pairs exercising numpy broadcasting.
BCAST = [
    ("same", (2, 3), (2, 3)),
    ("col_row", (3, 1), (4,)),
    ("scalar_left", (), (2, 3)),
    ("scalar_right", (2, 3), ()),
    ("rank3", (2, 1, 5), (7, 1)),
    ("zero", (0, 1), (1, 4)),
    ("zero_same", (0, 3), (0, 3)),
    ("ones", (1, 1), (3, 2)),
    ("scalars", (), ()),
]


def binary_cases():
    for f, fn in {**BINARY_NUMERIC, **BINARY_FLOAT}.items():
        for dt in FLOATS + (INTS if f in BINARY_NUMERIC else []):
            for tag, sa, sb in BCAST:
                if dt in INTS and tag not in ("same", "col_row", "scalar_left", "zero"):
                    continue
                if dt == "f64" and tag in ("rank3", "ones", "scalars"):
                    continue
                name = f"binary_{f}_{dt}_{tag}"
                if f == "pow":
                    a = rand(name + "a", sa, dt, 0.1, 3.0)
                    b = rand(name + "b", sb, dt, -2.0, 2.0)
                else:
                    a = rand(name + "a", sa, dt, -5, 5)
                    b = rand(name + "b", sb, dt, -5, 5)
                    if f == "div":
                        b = np.where(np.abs(b) < 0.05, b.dtype.type(0.5), b).astype(b.dtype)
                with np.errstate(all="ignore"):
                    case(name, binary(f), [a, b], fn(a, b))
    # Special values.
    for dt in FLOATS:
        t = DTYPES[dt]
        nan, inf = np.nan, np.inf
        a = np.array([1.0, -1.0, 0.0, -0.0, 0.0, inf, inf, nan, 2.0, -inf, 3.0, 1e30], t)
        b = np.array([0.0, 0.0, 0.0, 1.0, -3.0, inf, 2.0, 1.0, nan, -inf, inf, 1e-30], t)
        with np.errstate(all="ignore"):
            case(f"binary_div_{dt}_special", binary("div"), [a, b], np.divide(a, b))
            case(f"binary_add_{dt}_special", binary("add"), [a, b], np.add(a, b))
            case(f"binary_sub_{dt}_special", binary("sub"), [a, b], np.subtract(a, b))
            case(f"binary_mul_{dt}_special", binary("mul"), [a, b], np.multiply(a, b))
            case(f"binary_maximum_{dt}_nan", binary("maximum"), [a, b], np.maximum(a, b))
            case(f"binary_minimum_{dt}_nan", binary("minimum"), [a, b], np.minimum(a, b))
            pa = np.array([-8.0, -2.0, -2.0, 0.0, 0.0, 2.0, nan, 1.0, inf, inf, 0.5, -0.5, 4.0], t)
            pb = np.array([1 / 3, 3.0, 2.0, 0.0, -1.0, 0.5, 0.0, nan, -1.0, 0.5, inf, 2.0, -0.5], t)
            case(f"binary_pow_{dt}_special", binary("pow"), [pa, pb], np.power(pa, pb))
    # Comparisons.
    for f, fn in BINARY_COMPARE.items():
        a = np.array([1.0, np.nan, 2.0, -np.inf, 0.0, 3.0, np.nan, -0.0], np.float32)
        b = np.array([1.0, 1.0, 3.0, -np.inf, -0.0, 2.0, np.nan, 0.0], np.float32)
        case(f"binary_{f}_f32_nan", binary(f), [a, b], fn(a, b))
        name = f"binary_{f}_f64_col_row"
        a = np.round(rand(name + "a", (3, 1), "f64", -2, 2), 0)
        b = np.round(rand(name + "b", (4,), "f64", -2, 2), 0)
        case(name, binary(f), [a, b], fn(a, b))
        for dt in INTS:
            name = f"binary_{f}_{dt}_scalar"
            a = rand(name + "a", (2, 3), dt, -2, 2)
            b = np.array(0, DTYPES[dt])
            case(name, binary(f), [a, b], fn(a, b))
        a = np.array([True, True, False, False])
        b = np.array([True, False, True, False])
        case(f"binary_{f}_bool", binary(f), [a, b], fn(a, b))
        case(f"binary_{f}_i64_zero", binary(f), [np.zeros((0, 2), np.int64), np.ones((1, 2), np.int64)],
             np.zeros((0, 2), bool))
    for f, fn in BINARY_LOGICAL.items():
        for tag, sa, sb in BCAST:
            name = f"binary_{f}_bool_{tag}"
            a = rand(name + "a", sa, "bool")
            b = rand(name + "b", sb, "bool")
            case(name, binary(f), [a, b], fn(a, b))
        a = np.array([True, True, False, False])
        b = np.array([True, False, True, False])
        case(f"binary_{f}_bool_table", binary(f), [a, b], fn(a, b))


def where_cases():
    shapes = [
        ("same", (2, 3), (2, 3), (2, 3)),
        ("bcast3", (2, 1), (3,), ()),
        ("cond_scalar", (), (2, 2), (2, 2)),
        ("rank3", (2, 1, 1), (1, 3, 1), (1, 1, 4)),
        ("zero", (0, 1), (1, 3), (3,)),
    ]
    for dt in ["f32", "f64", "i32", "i64", "bool"]:
        for tag, sc, sa, sb in shapes:
            if dt in ("f64", "i32", "bool") and tag in ("rank3", "cond_scalar"):
                continue
            name = f"where_{dt}_{tag}"
            c = rand(name + "c", sc, "bool")
            a = rand(name + "a", sa, dt, -5, 5)
            b = rand(name + "b", sb, dt, -5, 5)
            case(name, {"op": "where"}, [c, a, b], np.where(c, a, b))
    c = np.array([True, False, True])
    a = np.array([np.nan, np.nan, np.inf], np.float32)
    b = np.array([1.0, 2.0, np.nan], np.float32)
    case("where_f32_nan", {"op": "where"}, [c, a, b], np.where(c, a, b))


def cast_cases():
    fl = np.array([-2.75, -1.5, -1.0, -0.5, -0.0, 0.0, 0.25, 0.999, 1.0, 1.5, 2.5, 123456.7, -98765.4])
    for src in FLOATS:
        x = fl.astype(DTYPES[src])
        for to in ["f32", "f64", "i32", "i64", "bool"]:
            case(f"cast_{src}_to_{to}", {"op": "cast", "to": to}, [x], np.trunc(x).astype(DTYPES[to])
                 if to in INTS else x.astype(DTYPES[to]))
    xs = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30], np.float32)
    case("cast_f32_special_to_bool", {"op": "cast", "to": "bool"}, [xs], xs.astype(bool))
    case("cast_f32_special_to_f64", {"op": "cast", "to": "f64"}, [xs], xs.astype(np.float64))
    xd = np.array([np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-300, 0.1, 1.0 / 3.0, 16777217.0])
    case("cast_f64_special_to_f32", {"op": "cast", "to": "f32"}, [xd], xd.astype(np.float32))
    it = np.array([[-3, -1, 0], [1, 2, 1000000]])
    for src in INTS:
        x = it.astype(DTYPES[src])
        for to in ["f32", "f64", "i32", "i64", "bool"]:
            case(f"cast_{src}_to_{to}", {"op": "cast", "to": to}, [x], x.astype(DTYPES[to]))
    big = np.array([16777217, -16777219, 2**40 + 1, -(2**53) - 1], np.int64)
    case("cast_i64_big_to_f32", {"op": "cast", "to": "f32"}, [big], big.astype(np.float32))
    case("cast_i64_big_to_f64", {"op": "cast", "to": "f64"}, [big], big.astype(np.float64))
    b = np.array([[True, False], [False, True]])
    for to in ["f32", "f64", "i32", "i64", "bool"]:
        case(f"cast_bool_to_{to}", {"op": "cast", "to": to}, [b], b.astype(DTYPES[to]))
    case("cast_f32_scalar_to_i64", {"op": "cast", "to": "i64"}, [np.float32(-7.9)], np.int64(-7))
    case("cast_f32_empty_to_i32", {"op": "cast", "to": "i32"}, [np.zeros((0, 2), np.float32)],
         np.zeros((0, 2), np.int32))


def reduce_cases():
    configs = [
        ("axes02_keep", (2, 3, 4), [0, 2], True),
        ("axes02", (2, 3, 4), [0, 2], False),
        ("axis1", (2, 3, 4), [1], False),
        ("axis1_keep", (2, 3, 4), [1], True),
        ("all", (2, 3, 4), [0, 1, 2], False),
        ("all_keep", (2, 3, 4), [0, 1, 2], True),
        ("axes12", (2, 3, 4), [1, 2], False),
        ("none", (2, 3), [], False),
        ("none_keep", (2, 3), [], True),
        ("vec", (7,), [0], False),
        ("scalar_none", (), [], False),
        ("size1", (3, 1), [1], False),
    ]
    for f in ["sum", "mean", "prod", "max", "min", "logsumexp"]:
        dts = FLOATS + ([] if f in ("mean", "logsumexp") else INTS)
        for dt in dts:
            for tag, shape, axes, keep in configs:
                if dt != "f32" and tag not in ("axes02_keep", "axis1", "all", "none", "vec"):
                    continue
                name = f"reduce_{f}_{dt}_{tag}"
                if f == "prod":
                    x = rand(name, shape, dt, -1.5, 1.5) if dt in FLOATS else rand(name, shape, dt, -2, 2)
                else:
                    x = rand(name, shape, dt, -5, 5)
                case(name, reduce_op(f, axes, keep), [x], reduce_ref(f, x, axes, keep))
    # Empty reductions: sum 0, prod 1, mean NaN, logsumexp -inf.
    for f in ["sum", "prod", "mean", "logsumexp"]:
        for dt in FLOATS + (INTS if f in ("sum", "prod") else []):
            x = np.zeros((0, 3), DTYPES[dt])
            with np.errstate(all="ignore"):
                case(f"reduce_{f}_{dt}_empty_axis0", reduce_op(f, [0], False), [x], reduce_ref(f, x, [0], False))
        x = np.zeros((2, 0, 3), np.float32)
        with np.errstate(all="ignore"):
            case(f"reduce_{f}_f32_empty_axis1_keep", reduce_op(f, [1], True), [x], reduce_ref(f, x, [1], True))
            case(f"reduce_{f}_f32_empty_other_axis", reduce_op(f, [2], False), [x], reduce_ref(f, x, [2], False))
            case(f"reduce_{f}_f32_empty_all", reduce_op(f, [0, 1, 2], False), [x],
                 reduce_ref(f, x, [0, 1, 2], False))
    x = np.zeros((0, 2), np.float32)
    case("reduce_max_f32_empty_other_axis", reduce_op("max", [1], False), [x], np.zeros((0,), np.float32))
    # Non-finite values.
    nan, inf = np.nan, np.inf
    x = np.array([[1.0, nan, 3.0], [-inf, 2.0, inf], [-inf, -inf, -inf]], np.float32)
    for f in ["sum", "mean", "prod", "max", "min", "logsumexp"]:
        with np.errstate(all="ignore"):
            case(f"reduce_{f}_f32_nonfinite_axis1", reduce_op(f, [1], False), [x], reduce_ref(f, x, [1], False))
    y = np.array([[-inf, -inf], [-inf, 0.0], [1000.0, 1000.0], [-1000.0, -1000.5]])
    case("reduce_logsumexp_f64_stable", reduce_op("logsumexp", [1], False), [y], logsumexp(y, [1], False))
    case("reduce_logsumexp_f32_stable", reduce_op("logsumexp", [1], True), [y.astype(np.float32)],
         logsumexp(y.astype(np.float32), [1], True))
    case("reduce_logsumexp_f64_all_neginf_none", reduce_op("logsumexp", [], False), [y[:2]],
         logsumexp(y[:2], [], False))
    x = np.array([3.0, -1.0, 7.5, 7.5, -inf])
    case("reduce_max_f64_neginf", reduce_op("max", [0], False), [x], np.max(x))
    case("reduce_min_f64_neginf", reduce_op("min", [0], True), [x], np.min(x, keepdims=True))
    xi = np.array([[2147483647, -2147483648], [5, -5]], np.int32)
    case("reduce_max_i32_extremes", reduce_op("max", [0], False), [xi], np.max(xi, axis=0))
    case("reduce_min_i32_extremes", reduce_op("min", [0, 1], False), [xi], np.min(xi))
    xl = np.array([2**40, 3, -(2**41)], np.int64)
    case("reduce_sum_i64_big", reduce_op("sum", [0], False), [xl], np.sum(xl))


def arg_reduce_cases():
    for f, fn in [("argmax", np.argmax), ("argmin", np.argmin)]:
        for dt in FLOATS + INTS:
            for axis in range(3):
                for keep in [False, True]:
                    if dt != "f32" and (axis == 2 or keep):
                        continue
                    name = f"{f}_{dt}_axis{axis}" + ("_keep" if keep else "")
                    x = rand(name, (3, 4, 5), dt, -3, 3, decimals=0)  # many ties: first wins
                    case(name, arg_reduce(f, axis, keep), [x], fn(x, axis=axis, keepdims=keep).astype(np.int64))
        nan, inf = np.nan, np.inf
        x = np.array([[1.0, nan, 5.0, nan], [inf, 2.0, inf, -inf], [-inf, -inf, 0.0, -inf], [4.0, 4.0, 4.0, 4.0]])
        case(f"{f}_f64_nonfinite_ties", arg_reduce(f, 1, False), [x], fn(x, axis=1).astype(np.int64))
        case(f"{f}_f32_nonfinite_axis0", arg_reduce(f, 0, True), [x.astype(np.float32)],
             fn(x.astype(np.float32), axis=0, keepdims=True).astype(np.int64))
        v = np.array([3, 9, 9, -9, -9, 0], np.int32)
        case(f"{f}_i32_vec", arg_reduce(f, 0, False), [v], np.int64(fn(v)))
        case(f"{f}_f32_size1", arg_reduce(f, 1, False), [np.array([[2.0], [-1.0]], np.float32)],
             np.zeros(2, np.int64))
        case(f"{f}_f32_empty_other", arg_reduce(f, 1, False), [np.zeros((0, 3), np.float32)],
             np.zeros(0, np.int64))


def dot_cases():
    shapes = [
        ("vv", (4,), (4,)),
        ("mv", (3, 4), (4,)),
        ("vm", (4,), (4, 3)),
        ("mm", (2, 3), (3, 4)),
        ("batch", (2, 2, 3), (2, 3, 4)),
        ("batch_bcast", (2, 1, 2, 3), (3, 3, 2)),
        ("batch_left", (2, 2, 3), (3, 2)),
        ("batch_right", (2, 3), (4, 3, 2)),
        ("v_batch", (3,), (2, 3, 4)),
        ("batch_v", (2, 3, 4), (4,)),
        ("inner0", (2, 0), (0, 3)),
        ("batch0", (0, 2, 3), (3, 2)),
        ("vv_len1", (1,), (1,)),
    ]
    for dt in FLOATS + INTS:
        for tag, sa, sb in shapes:
            if dt != "f32" and tag in ("batch_left", "batch_right", "vv_len1", "batch0"):
                continue
            name = f"dot_{dt}_{tag}"
            a = rand(name + "a", sa, dt, -3, 3)
            b = rand(name + "b", sb, dt, -3, 3)
            if dt in FLOATS:
                exp = np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)
            else:
                exp = np.matmul(a, b)
            case(name, {"op": "dot"}, [a, b], exp)


def movement_cases():
    # reshape
    for tag, src, dst, dt in [
        ("3d_to_2d", (2, 3, 4), (6, 4), "f32"),
        ("vec_to_4d", (6,), (1, 2, 1, 3), "i64"),
        ("to_scalar", (1,), (), "f64"),
        ("from_scalar", (), (1, 1), "i32"),
        ("empty", (0, 3), (3, 0), "f32"),
        ("bool", (2, 2), (4,), "bool"),
        ("identity", (2, 3), (2, 3), "f32"),
    ]:
        name = f"reshape_{tag}"
        x = rand(name, src, dt, -5, 5)
        case(name, {"op": "reshape", "shape": list(dst)}, [x], x.reshape(dst))
    # dimshuffle
    for tag, src, pat, dt in [
        ("transpose_expand", (2, 3), [1, None, 0], "f32"),
        ("drop_leading", (1, 3), [1], "f32"),
        ("drop_middle", (2, 1, 3), [2, 0], "i32"),
        ("scalar_expand", (), [None, None], "f64"),
        ("permute", (2, 3, 4), [2, 0, 1], "f32"),
        ("identity", (2, 3), [0, 1], "bool"),
        ("squeeze_all", (1, 1), [], "i64"),
        ("expand_zero", (0, 2), [1, None, 0], "f32"),
    ]:
        name = f"dimshuffle_{tag}"
        x = rand(name, src, dt, -5, 5)
        keep = [p for p in pat if p is not None]
        dropped = tuple(a for a in range(len(src)) if a not in keep)
        y = np.squeeze(x, axis=dropped) if dropped else x
        # axes of y, in order, are the kept input axes in ascending order
        order = sorted(keep)
        y = np.transpose(y, [order.index(p) for p in keep]) if keep else y
        shape = [src[p] if p is not None else 1 for p in pat]
        y = y.reshape(shape)
        case(name, {"op": "dimshuffle", "pattern": pat}, [x], y)
    # broadcast_to
    for tag, src, dst, dt in [
        ("row", (3,), (4, 3), "f32"),
        ("scalar", (), (2, 2), "i64"),
        ("col", (3, 1), (3, 4), "f64"),
        ("to_zero", (2, 1), (2, 0), "f32"),
        ("rank3", (1, 3, 1), (2, 3, 2), "bool"),
        ("identity", (2, 3), (2, 3), "i32"),
        ("new_lead", (2, 1), (3, 2, 2), "f32"),
    ]:
        name = f"broadcast_to_{tag}"
        x = rand(name, src, dt, -5, 5)
        case(name, {"op": "broadcast_to", "shape": list(dst)}, [x], np.broadcast_to(x, dst))
    # concat
    for tag, shapes, axis, dt in [
        ("axis0", [(2, 3), (1, 3)], 0, "f32"),
        ("axis1_three", [(2, 1), (2, 3), (2, 2)], 1, "f32"),
        ("single", [(2, 3)], 0, "f64"),
        ("with_empty", [(2, 0), (2, 2), (2, 0)], 1, "i32"),
        ("vec", [(3,), (2,)], 0, "i64"),
        ("bool", [(1, 2), (2, 2)], 0, "bool"),
        ("rank3_mid", [(2, 1, 2), (2, 3, 2)], 1, "f32"),
        ("rank3_last", [(2, 2, 1), (2, 2, 2), (2, 2, 1), (2, 2, 3)], 2, "f64"),
        ("all_empty", [(0, 2), (0, 2)], 0, "f32"),
    ]:
        name = f"concat_{tag}"
        xs = [rand(f"{name}{i}", s, dt, -5, 5) for i, s in enumerate(shapes)]
        case(name, {"op": "concat", "axis": axis}, xs, np.concatenate(xs, axis=axis))
    # slice
    for tag, src, specs, dt in [
        ("reverse", (5,), [(None, None, -1)], "f32"),
        ("neg_start_step2", (5,), [(-1, None, -2)], "f32"),
        ("inner", (5,), [(1, -1, 1)], "i32"),
        ("out_of_range_empty", (5,), [(10, 20, 1)], "f32"),
        ("neg_out_of_range_start", (5,), [(-10, 2, 1)], "f64"),
        ("down", (5,), [(3, 0, -1)], "i64"),
        ("down_past_start", (3,), [(None, -10, -1)], "f32"),
        ("down_big_start", (4,), [(100, None, -2)], "f32"),
        ("down_neg_stop", (6,), [(-2, -5, -1)], "f32"),
        ("step3", (7,), [(None, None, 3)], "f32"),
        ("step_big", (4,), [(1, None, 10)], "f32"),
        ("empty_axis", (0,), [(None, None, 2)], "f32"),
        ("empty_axis_neg", (0, 2), [(None, None, -1)], "f32"),
        ("leading_only", (4, 3), [(1, 3, 1)], "f32"),
        ("two_axes", (4, 5), [(None, None, -1), (1, None, 2)], "f64"),
        ("rank3", (3, 4, 5), [(2, 0, -1), (None, None, 1), (-2, None, -2)], "f32"),
        ("no_specs", (2, 3), [], "i32"),
        ("bool", (6,), [(-1, 0, -2)], "bool"),
        ("stop_before_start", (5,), [(3, 1, 1)], "f32"),
    ]:
        name = f"slice_{tag}"
        x = rand(name, src, dt, -5, 5)
        y = x[tuple(slice(s, e, st) for (s, e, st) in specs)]
        case(name, slice_op(specs), [x], y)
    # gather
    for tag, src, axis, idx, idt, dt in [
        ("axis0_vec", (4, 3), 0, [2, 0, 3, 3], "i64", "f32"),
        ("axis1_neg", (2, 5, 3), 1, [[-1, 0], [4, -5]], "i64", "f32"),
        ("axis2_i32", (2, 3, 4), 2, [3, -2], "i32", "f64"),
        ("scalar_idx", (4, 3), 0, -2, "i64", "f32"),
        ("scalar_idx_axis1", (4, 3), 1, 1, "i32", "i64"),
        ("empty_idx", (4, 3), 1, np.zeros((0,), np.int64), "i64", "f32"),
        ("vec_data", (5,), 0, [[4, 0, 1], [-1, -1, 2]], "i32", "i32"),
        ("bool", (3, 2), 0, [1, 1, 0], "i64", "bool"),
    ]:
        name = f"gather_{tag}"
        x = rand(name, src, dt, -5, 5)
        ix = np.asarray(idx, DTYPES[idt])
        case(name, {"op": "gather", "axis": axis}, [x, ix], np.take(x, ix, axis=axis))
    for tag, src, axis, idx, idt in [
        ("too_big", (3,), 0, [0, 3], "i64"),
        ("too_negative", (3,), 0, [-4], "i64"),
        ("too_big_i32_axis1", (2, 3), 1, [[1, 2], [7, 0]], "i32"),
        ("too_negative_axis1", (2, 3), 1, -4, "i32"),
    ]:
        name = f"gather_error_{tag}"
        x = rand(name, src, "f32")
        case(name, {"op": "gather", "axis": axis}, [x, np.asarray(idx, DTYPES[idt])], error="out of range")
    # one_hot: indices outside 0..depth (negative ones too) give zero rows
    for tag, idx, idt, depth, dt in [
        ("vec_f32", [0, 2, 1, 2], "i64", 3, "f32"),
        ("out_of_range", [-1, 3, 1, -3, 4, 0], "i32", 4, "f64"),
        ("matrix_i64", [[0, 1, 2], [2, 1, 0]], "i64", 3, "i64"),
        ("scalar_i32", 1, "i32", 4, "i32"),
        ("bool", [0, 2, 5], "i64", 3, "bool"),
        ("depth0", [0, 1], "i64", 0, "f32"),
        ("empty", np.zeros((0,), np.int64), "i64", 2, "f32"),
    ]:
        name = f"one_hot_{tag}"
        ix = np.asarray(idx, DTYPES[idt])
        y = (ix[..., None] == np.arange(depth)).astype(DTYPES[dt])
        case(name, {"op": "one_hot", "depth": depth, "dtype": dt}, [ix], y)
    # pad
    for tag, src, widths, value, dt in [
        ("2d", (2, 3), [[1, 2], [0, 1]], 0.5, "f32"),
        ("vec", (3,), [[2, 0]], -1.25, "f64"),
        ("zero_widths", (2, 2), [[0, 0], [0, 0]], 9.0, "f32"),
        ("i32", (2, 2), [[1, 1], [2, 0]], 7.0, "i32"),
        ("i64_neg", (1, 3), [[0, 2], [1, 1]], -3.0, "i64"),
        ("neg_inf", (2, 2), [[1, 0], [0, 1]], -np.inf, "f64"),
        ("nan", (2,), [[1, 1]], np.nan, "f32"),
        ("empty", (0, 2), [[1, 1], [0, 0]], 3.0, "f32"),
        ("rank3", (2, 1, 2), [[0, 1], [1, 1], [2, 0]], 0.0, "f32"),
    ]:
        name = f"pad_{tag}"
        x = rand(name, src, dt, -5, 5)
        y = np.pad(x, widths, mode="constant", constant_values=np.asarray(value).astype(x.dtype))
        case(name, {"op": "pad", "widths": widths, "value": jfloat(value)}, [x], y)


def nn_cases():
    for f, log in [("softmax", False), ("log_softmax", True)]:
        for tag, shape, axis, dt in [
            ("axis1", (3, 4), 1, "f32"),
            ("axis0", (3, 4), 0, "f32"),
            ("vec", (5,), 0, "f64"),
            ("rank3_mid", (2, 3, 4), 1, "f64"),
            ("rank3_last", (2, 3, 4), 2, "f32"),
            ("size1", (3, 1), 1, "f32"),
            ("empty_other", (0, 3), 1, "f32"),
        ]:
            name = f"{f}_{tag}_{dt}"
            x = rand(name, shape, dt, -5, 5)
            case(name, {"op": f, "axis": axis}, [x], softmax_ref(x, axis, log))
        for dt in FLOATS:
            x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1001.0, -1002.0], [-np.inf, 0.0, 1.0],
                          [-np.inf, -np.inf, 5.0], [50.0, -50.0, 0.0]], DTYPES[dt])
            case(f"{f}_stable_{dt}", {"op": f, "axis": 1}, [x], softmax_ref(x, 1, log))
    conv_cfgs = [
        ("basic", (1, 1, 4, 4), (1, 1, 2, 2), (1, 1), (0, 0), (1, 1), 1, "f32"),
        ("pad1", (2, 3, 5, 5), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1, "f32"),
        ("stride2", (1, 2, 7, 7), (3, 2, 3, 3), (2, 2), (0, 0), (1, 1), 1, "f32"),
        ("stride2_floor", (1, 1, 6, 6), (2, 1, 3, 3), (2, 2), (1, 1), (1, 1), 1, "f32"),
        ("dilation2", (1, 1, 6, 6), (2, 1, 2, 2), (1, 1), (0, 0), (2, 2), 1, "f32"),
        ("groups2", (1, 4, 5, 5), (6, 2, 3, 3), (1, 1), (0, 0), (1, 1), 2, "f32"),
        ("depthwise", (1, 3, 4, 4), (3, 1, 3, 3), (1, 1), (1, 1), (1, 1), 3, "f32"),
        ("depthwise_mult2", (1, 2, 4, 4), (4, 1, 2, 2), (1, 1), (0, 0), (1, 1), 2, "f64"),
        ("asym", (2, 2, 5, 7), (2, 2, 2, 3), (1, 2), (2, 0), (1, 2), 1, "f32"),
        ("asym_f64", (1, 2, 6, 5), (3, 2, 3, 2), (2, 1), (1, 2), (2, 1), 1, "f64"),
        ("kernel1", (2, 3, 3, 3), (2, 3, 1, 1), (1, 1), (0, 0), (1, 1), 1, "f64"),
        ("pad_exceeds", (1, 1, 2, 2), (1, 1, 3, 3), (1, 1), (2, 2), (1, 1), 1, "f32"),
        ("full_window", (1, 2, 3, 3), (2, 2, 3, 3), (1, 1), (0, 0), (1, 1), 1, "f64"),
        ("batch0", (0, 1, 3, 3), (1, 1, 2, 2), (1, 1), (0, 0), (1, 1), 1, "f32"),
    ]
    for tag, xs, ws, stride, padding, dilation, groups, dt in conv_cfgs:
        name = f"conv2d_{tag}"
        x = rand(name + "x", xs, dt, -2, 2)
        w = rand(name + "w", ws, dt, -1, 1)
        case(name, conv_op(stride, padding, dilation, groups), [x, w],
             conv2d_ref(x, w, stride, padding, dilation, groups))
    pool_cfgs = [
        ("2x2", (1, 2, 4, 4), (2, 2), (2, 2), (0, 0), False, "f32"),
        ("2x2_floor", (2, 1, 5, 5), (2, 2), (2, 2), (0, 0), False, "f32"),
        ("3x3_s2_p1", (1, 2, 5, 5), (3, 3), (2, 2), (1, 1), False, "f32"),
        ("3x3_s2_p1_incl", (1, 2, 5, 5), (3, 3), (2, 2), (1, 1), True, "f32"),
        ("3x3_s1_p1", (1, 1, 4, 4), (3, 3), (1, 1), (1, 1), False, "f64"),
        ("3x3_s1_p1_incl", (1, 1, 4, 4), (3, 3), (1, 1), (1, 1), True, "f64"),
        ("rect", (1, 1, 5, 6), (2, 3), (1, 2), (1, 1), False, "f32"),
        ("rect_incl", (1, 1, 5, 6), (2, 3), (1, 2), (1, 1), True, "f32"),
        ("overlap", (1, 1, 4, 5), (2, 2), (1, 1), (0, 0), False, "f64"),
        ("global", (2, 3, 3, 3), (3, 3), (1, 1), (0, 0), True, "f32"),
        ("k1_s2", (1, 1, 5, 5), (1, 1), (2, 2), (0, 0), False, "f32"),
        ("pad_h_only", (1, 2, 4, 4), (2, 2), (2, 2), (1, 0), False, "f32"),
    ]
    for kind in ["max", "avg"]:
        opname = f"{kind}_pool2d"
        for tag, xs, k, s, p, incl, dt in pool_cfgs:
            if kind == "max" and incl:
                continue
            name = f"{opname}_{tag}_{dt}"
            x = rand(name, xs, dt, -5, -0.5) if kind == "max" and p != (0, 0) else rand(name, xs, dt, -5, 5)
            case(name, pool_op(opname, k, s, p, incl), [x], pool_ref(x, k, s, p, kind, incl))
    x = np.array([[[[np.inf, 1.0, -np.inf, -np.inf], [0.0, 2.0, -np.inf, -np.inf]]]], np.float32)
    case("max_pool2d_inf_f32", pool_op("max_pool2d", (2, 2), (2, 2)), [x], pool_ref(x, (2, 2), (2, 2), (0, 0), "max",
                                                                                   False))


def main():
    # NaN, inf and empty reductions are intended here.
    warnings.simplefilter("ignore", RuntimeWarning)
    with np.errstate(all="ignore"):
        unary_cases()
        binary_cases()
        where_cases()
        cast_cases()
        reduce_cases()
        arg_reduce_cases()
        dot_cases()
        movement_cases()
        nn_cases()
    cases = [CASES[k] for k in sorted(CASES)]
    text = "[\n" + ",\n".join(json.dumps(c, separators=(",", ":"), allow_nan=False) for c in cases) + "\n]\n"
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write(text)
    print(f"wrote {len(cases)} cases, {len(text)} bytes to {os.path.relpath(OUT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
