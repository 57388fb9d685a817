//! `f32` transcendentals emitted inline as Cranelift IR, on one lane (`F32`)
//! or four (`F32X4`) with the same instructions, so a vector loop and its
//! scalar tail round alike. `exp` and `log` are Cephes' range reductions and
//! minimax polynomials; the others are built from them with the classic
//! cancellation-free identities. NaN, infinities, zeros and subnormals give
//! what libm gives. The maximum error of each, measured over all `f32`
//! inputs against the `f64` reference, is stated in `docs/cpu-backend.md`
//! and checked by `tests/accuracy.rs`.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;
use rhea_graph::UnaryOp;

/// The lane shape being emitted: `F32` or `F32X4`.
#[derive(Clone, Copy)]
pub(crate) struct F32Lanes(pub Type);

impl F32Lanes {
    fn int(self) -> Type {
        if self.0.is_vector() { types::I32X4 } else { types::I32 }
    }
    fn flags() -> MemFlagsData {
        MemFlagsData::new().with_endianness(Endianness::Little)
    }
    /// A float constant in every lane.
    pub fn f(self, b: &mut FunctionBuilder, x: f32) -> Value {
        let c = b.ins().f32const(x);
        if self.0.is_vector() { b.ins().splat(self.0, c) } else { c }
    }
    /// An integer constant in every lane.
    fn i(self, b: &mut FunctionBuilder, x: i32) -> Value {
        let c = b.ins().iconst(types::I32, x as i64);
        if self.0.is_vector() { b.ins().splat(self.int(), c) } else { c }
    }
    fn to_int_bits(self, b: &mut FunctionBuilder, x: Value) -> Value {
        b.ins().bitcast(self.int(), Self::flags(), x)
    }
    fn lanes_from_bits(self, b: &mut FunctionBuilder, x: Value) -> Value {
        b.ins().bitcast(self.0, Self::flags(), x)
    }
    /// `a` where `cond` (a comparison of these lanes) holds, else `y`.
    pub fn pick(self, b: &mut FunctionBuilder, cond: Value, a: Value, y: Value) -> Value {
        if self.0.is_vector() {
            let mask = self.lanes_from_bits(b, cond);
            b.ins().bitselect(mask, a, y)
        } else {
            b.ins().select(cond, a, y)
        }
    }
    /// Horner's rule: `c[0] * x^(n-1) + ... + c[n-1]`.
    fn horner(self, b: &mut FunctionBuilder, x: Value, c: &[f32]) -> Value {
        let mut acc = self.f(b, c[0]);
        for &k in &c[1..] {
            let t = b.ins().fmul(acc, x);
            let k = self.f(b, k);
            acc = b.ins().fadd(t, k);
        }
        acc
    }
    /// `2^n` for integer lanes `n` in `[-126, 127]`.
    fn pow2(self, b: &mut FunctionBuilder, n: Value) -> Value {
        let bias = self.i(b, 127);
        let e = b.ins().iadd(n, bias);
        let bits = b.ins().ishl_imm_u(e, 23);
        self.lanes_from_bits(b, bits)
    }
}

/// True if `op` on `f32` is emitted inline by [`unary`].
pub(crate) fn inline(op: UnaryOp) -> bool {
    use UnaryOp::*;
    matches!(op, Exp | Log | Log1p | Expm1 | Tanh | Sigmoid | Softplus | Rsqrt)
}

/// Emits `op(x)` for the ops [`inline`] accepts.
pub(crate) fn unary(b: &mut FunctionBuilder, l: F32Lanes, op: UnaryOp, x: Value) -> Value {
    use UnaryOp::*;
    match op {
        Exp => exp(b, l, x),
        Log => log(b, l, x),
        Log1p => log1p(b, l, x),
        Expm1 => expm1(b, l, x),
        Tanh => tanh(b, l, x),
        Sigmoid => {
            // With e = exp(-|x|), which cannot overflow: 1 / (1 + e) for
            // x >= 0, e / (1 + e) below.
            let a = b.ins().fabs(x);
            let m = b.ins().fneg(a);
            let e = exp(b, l, m);
            let one = l.f(b, 1.0);
            let d = b.ins().fadd(one, e);
            let s = b.ins().fdiv(one, d);
            let es = b.ins().fmul(e, s);
            let zero = l.f(b, 0.0);
            let neg = b.ins().fcmp(FloatCC::LessThan, x, zero);
            l.pick(b, neg, es, s)
        }
        Softplus => {
            // max(x, 0) + log1p(exp(-|x|)).
            let zero = l.f(b, 0.0);
            let pos = b.ins().fmax(x, zero);
            let a = b.ins().fabs(x);
            let m = b.ins().fneg(a);
            let e = exp(b, l, m);
            let t = log1p(b, l, e);
            b.ins().fadd(pos, t)
        }
        Rsqrt => {
            let s = b.ins().sqrt(x);
            let one = l.f(b, 1.0);
            b.ins().fdiv(one, s)
        }
        other => unreachable!("{} is not emitted inline", other.name()),
    }
}

/// `e^x`: `x = n ln2 + r` with `|r| <= ln2 / 2`, a degree-7 polynomial for
/// `e^r`, and `2^n` applied in two halves so that subnormal results round
/// once.
fn exp(b: &mut FunctionBuilder, l: F32Lanes, x: Value) -> Value {
    // Clamp to where the result is 0 or inf; a NaN fails both comparisons
    // and stays NaN through the arithmetic below.
    let (hi, lo) = (l.f(b, 88.8), l.f(b, -104.0));
    let above = b.ins().fcmp(FloatCC::GreaterThan, x, hi);
    let x = l.pick(b, above, hi, x);
    let below = b.ins().fcmp(FloatCC::LessThan, x, lo);
    let x = l.pick(b, below, lo, x);
    // n = round(x / ln 2) by the 1.5 * 2^23 trick: adding it leaves n in the
    // low mantissa bits, exactly, for |n| < 2^22.
    let log2e = l.f(b, std::f32::consts::LOG2_E);
    let magic = l.f(b, 12_582_912.0);
    let t = b.ins().fmul(x, log2e);
    let shifted = b.ins().fadd(t, magic);
    let nf = b.ins().fsub(shifted, magic);
    let (c1, c2) = (l.f(b, 0.693_359_4), l.f(b, -2.121_944_4e-4));
    let a = b.ins().fmul(nf, c1);
    let r = b.ins().fsub(x, a);
    let a = b.ins().fmul(nf, c2);
    let r = b.ins().fsub(r, a);
    let p = l.horner(b, r, &[1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5]);
    let rr = b.ins().fmul(r, r);
    let p = b.ins().fmul(p, rr);
    let p = b.ins().fadd(p, r);
    let one = l.f(b, 1.0);
    let p = b.ins().fadd(p, one);
    let bits = l.to_int_bits(b, shifted);
    let magic_bits = l.i(b, 0x4b40_0000);
    let n = b.ins().isub(bits, magic_bits);
    let n1 = b.ins().sshr_imm_u(n, 1);
    let n2 = b.ins().isub(n, n1);
    let s1 = l.pow2(b, n1);
    let s2 = l.pow2(b, n2);
    let p = b.ins().fmul(p, s1);
    b.ins().fmul(p, s2)
}

/// `ln x`: `x = m 2^e` with `m` in `[sqrt(1/2), sqrt(2))`, a degree-9
/// polynomial for `ln(m)`; subnormals are scaled up first.
fn log(b: &mut FunctionBuilder, l: F32Lanes, x: Value) -> Value {
    let min_normal = l.f(b, f32::MIN_POSITIVE);
    let tiny = b.ins().fcmp(FloatCC::LessThan, x, min_normal);
    let scale = l.f(b, 8_388_608.0);
    let scaled = b.ins().fmul(x, scale);
    let xs = l.pick(b, tiny, scaled, x);
    let bits = l.to_int_bits(b, xs);
    let shifted = b.ins().sshr_imm_u(bits, 23);
    let bias = l.i(b, 126);
    let e = b.ins().isub(shifted, bias);
    let mask = l.i(b, 0x007f_ffff);
    let half = l.i(b, 0x3f00_0000);
    let mb = b.ins().band(bits, mask);
    let mb = b.ins().bor(mb, half);
    let m = l.lanes_from_bits(b, mb);
    let ef = b.ins().fcvt_from_sint(l.0, e);
    let (k23, zero) = (l.f(b, 23.0), l.f(b, 0.0));
    let sub = l.pick(b, tiny, k23, zero);
    let ef = b.ins().fsub(ef, sub);
    // m < sqrt(1/2): use 2m - 1 and e - 1, else m - 1.
    let sqrthf = l.f(b, std::f32::consts::FRAC_1_SQRT_2);
    let low = b.ins().fcmp(FloatCC::LessThan, m, sqrthf);
    let one = l.f(b, 1.0);
    let m2 = b.ins().fadd(m, m);
    let m_adj = l.pick(b, low, m2, m);
    let m = b.ins().fsub(m_adj, one);
    let e_adj = l.pick(b, low, one, zero);
    let ef = b.ins().fsub(ef, e_adj);
    let z = b.ins().fmul(m, m);
    let p = l.horner(
        b,
        m,
        &[
            7.037_683_6e-2,
            -1.151_461e-1,
            1.167_699_9e-1,
            -1.242_014_1e-1,
            1.424_932_3e-1,
            -1.666_805_8e-1,
            2.000_071_4e-1,
            -2.499_999_4e-1,
            3.333_333e-1,
        ],
    );
    let p = b.ins().fmul(p, m);
    let y = b.ins().fmul(p, z);
    let c2 = l.f(b, -2.121_944_4e-4);
    let t = b.ins().fmul(ef, c2);
    let y = b.ins().fadd(y, t);
    let mhalf = l.f(b, -0.5);
    let t = b.ins().fmul(z, mhalf);
    let y = b.ins().fadd(y, t);
    let r = b.ins().fadd(m, y);
    let c1 = l.f(b, 0.693_359_4);
    let t = b.ins().fmul(ef, c1);
    let r = b.ins().fadd(r, t);
    // ln 0 = -inf, ln of a negative = NaN, ln inf = inf (NaN stays NaN).
    let (inf, ninf, nan) = (l.f(b, f32::INFINITY), l.f(b, f32::NEG_INFINITY), l.f(b, f32::NAN));
    let is_inf = b.ins().fcmp(FloatCC::Equal, x, inf);
    let r = l.pick(b, is_inf, inf, r);
    let is_zero = b.ins().fcmp(FloatCC::Equal, x, zero);
    let r = l.pick(b, is_zero, ninf, r);
    let neg = b.ins().fcmp(FloatCC::LessThan, x, zero);
    let r = l.pick(b, neg, nan, r);
    let unordered = b.ins().fcmp(FloatCC::Unordered, x, x);
    l.pick(b, unordered, x, r)
}

/// `ln(1 + x)` as `ln(u) * x / (u - 1)` with `u = 1 + x`, which cancels the
/// rounding of `u`.
fn log1p(b: &mut FunctionBuilder, l: F32Lanes, x: Value) -> Value {
    let one = l.f(b, 1.0);
    let u = b.ins().fadd(one, x);
    let lu = log(b, l, u);
    let um1 = b.ins().fsub(u, one);
    let q = b.ins().fdiv(x, um1);
    let r = b.ins().fmul(lu, q);
    let exact = b.ins().fcmp(FloatCC::Equal, u, one);
    let r = l.pick(b, exact, x, r);
    let inf = l.f(b, f32::INFINITY);
    let is_inf = b.ins().fcmp(FloatCC::Equal, u, inf);
    l.pick(b, is_inf, inf, r)
}

/// `e^x - 1` as `(u - 1) * x / ln(u)` with `u = e^x` (Kahan's identity).
fn expm1(b: &mut FunctionBuilder, l: F32Lanes, x: Value) -> Value {
    let u = exp(b, l, x);
    let one = l.f(b, 1.0);
    let um1 = b.ins().fsub(u, one);
    let lu = log(b, l, u);
    let q = b.ins().fdiv(x, lu);
    let r = b.ins().fmul(um1, q);
    let exact = b.ins().fcmp(FloatCC::Equal, u, one);
    let r = l.pick(b, exact, x, r);
    let minus_one = l.f(b, -1.0);
    let saturated = b.ins().fcmp(FloatCC::Equal, um1, minus_one);
    let r = l.pick(b, saturated, minus_one, r);
    let inf = l.f(b, f32::INFINITY);
    let is_inf = b.ins().fcmp(FloatCC::Equal, u, inf);
    l.pick(b, is_inf, inf, r)
}

/// `tanh x`: an odd polynomial below 0.625, else `1 - 2 / (e^{2|x|} + 1)`
/// with the sign of `x`.
fn tanh(b: &mut FunctionBuilder, l: F32Lanes, x: Value) -> Value {
    let z = b.ins().fmul(x, x);
    let p = l.horner(b, z, &[-5.704_988_7e-3, 2.063_909e-2, -5.373_971_6e-2, 1.333_144_2e-1, -3.333_328e-1]);
    let p = b.ins().fmul(p, z);
    let p = b.ins().fmul(p, x);
    let small_value = b.ins().fadd(p, x);
    let a = b.ins().fabs(x);
    let two_a = b.ins().fadd(a, a);
    let e = exp(b, l, two_a);
    let one = l.f(b, 1.0);
    let d = b.ins().fadd(e, one);
    let two = l.f(b, 2.0);
    let q = b.ins().fdiv(two, d);
    let large = b.ins().fsub(one, q);
    let zero = l.f(b, 0.0);
    let neg = b.ins().fcmp(FloatCC::LessThan, x, zero);
    let nlarge = b.ins().fneg(large);
    let large = l.pick(b, neg, nlarge, large);
    let cut = l.f(b, 0.625);
    let small = b.ins().fcmp(FloatCC::LessThan, a, cut);
    l.pick(b, small, small_value, large)
}
