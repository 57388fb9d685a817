//! The transcendental functions as sequences of basic float and integer
//! instructions, written once and emitted by every code generator through
//! [`MathBuilder`]: Cranelift on the CPU (one lane or four), PTX on the GPU,
//! and [`Soft`] here, which runs them on plain Rust floats so their accuracy
//! is measured without either.
//!
//! `exp` and `log` are Cephes' range reductions with its minimax
//! polynomials (`f32`) or rational approximations (`f64`); the others are
//! built from them with the classic cancellation-free identities. Only
//! correctly rounded instructions are used (add, mul, div, sqrt, floor,
//! conversions, bit operations), with no fused multiply-add, so every
//! backend rounds each step alike and gives bit-identical results. NaN,
//! infinities, zeros and subnormals give what libm gives.

use rhea_graph::UnaryOp;

/// The float type a [`MathBuilder`] emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatWidth {
    /// `f32`, with `i32` integer lanes.
    F32,
    /// `f64`, with `i64` integer lanes.
    F64,
}

/// A float comparison; all are ordered (false on NaN) except `Unordered`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Cmp {
    Lt,
    Gt,
    Eq,
    /// True if either side is NaN.
    Unordered,
}

/// The instructions the algorithms need, on float lanes of one width and
/// integer lanes of the same width.
#[allow(missing_docs)]
pub trait MathBuilder {
    /// Float lanes.
    type F: Copy;
    /// Integer lanes of the float's width.
    type I: Copy;
    /// The result of a comparison.
    type M: Copy;
    fn width(&self) -> FloatWidth;
    /// A float constant (rounded to the width) in every lane.
    fn fconst(&mut self, x: f64) -> Self::F;
    fn iconst(&mut self, x: i64) -> Self::I;
    fn fadd(&mut self, a: Self::F, b: Self::F) -> Self::F;
    fn fsub(&mut self, a: Self::F, b: Self::F) -> Self::F;
    fn fmul(&mut self, a: Self::F, b: Self::F) -> Self::F;
    fn fdiv(&mut self, a: Self::F, b: Self::F) -> Self::F;
    fn fneg(&mut self, a: Self::F) -> Self::F;
    fn fabs(&mut self, a: Self::F) -> Self::F;
    fn sqrt(&mut self, a: Self::F) -> Self::F;
    fn floor(&mut self, a: Self::F) -> Self::F;
    fn fcmp(&mut self, cmp: Cmp, a: Self::F, b: Self::F) -> Self::M;
    /// `a` where `m` holds, else `b`.
    fn pick(&mut self, m: Self::M, a: Self::F, b: Self::F) -> Self::F;
    fn to_bits(&mut self, a: Self::F) -> Self::I;
    fn bits_to_float(&mut self, a: Self::I) -> Self::F;
    fn iadd(&mut self, a: Self::I, b: Self::I) -> Self::I;
    fn isub(&mut self, a: Self::I, b: Self::I) -> Self::I;
    fn band(&mut self, a: Self::I, b: Self::I) -> Self::I;
    fn bor(&mut self, a: Self::I, b: Self::I) -> Self::I;
    fn shl(&mut self, a: Self::I, bits: u32) -> Self::I;
    /// Arithmetic shift right.
    fn sshr(&mut self, a: Self::I, bits: u32) -> Self::I;
    /// Signed integer to float (exact for the values used here).
    fn int_to_float(&mut self, a: Self::I) -> Self::F;
}

/// True if `op` has an algorithm here.
pub fn has_algorithm(op: UnaryOp) -> bool {
    use UnaryOp::*;
    matches!(op, Exp | Log | Log1p | Expm1 | Tanh | Sigmoid | Softplus | Rsqrt)
}

/// Emits `op(x)` for the ops [`has_algorithm`] accepts.
///
/// # Panics
/// On any other op (a caller's bug).
pub fn unary<B: MathBuilder>(b: &mut B, op: UnaryOp, x: B::F) -> B::F {
    use UnaryOp::*;
    match op {
        Exp => exp(b, x),
        Log => log(b, x),
        Log1p => log1p(b, x),
        Expm1 => expm1(b, x),
        Tanh => tanh(b, x),
        Sigmoid => sigmoid(b, x),
        Softplus => softplus(b, x),
        Rsqrt => {
            let s = b.sqrt(x);
            let one = b.fconst(1.0);
            b.fdiv(one, s)
        }
        other => panic!("{} has no algorithm in rhea_kernel::math", other.name()),
    }
}

/// Horner's rule: `c[0] * x^(n-1) + ... + c[n-1]`.
fn horner<B: MathBuilder>(b: &mut B, x: B::F, c: &[f64]) -> B::F {
    let mut acc = b.fconst(c[0]);
    for &k in &c[1..] {
        let t = b.fmul(acc, x);
        let k = b.fconst(k);
        acc = b.fadd(t, k);
    }
    acc
}

/// Horner's rule with an implied leading coefficient of 1 (Cephes' `p1evl`).
fn horner1<B: MathBuilder>(b: &mut B, x: B::F, c: &[f64]) -> B::F {
    let c0 = b.fconst(c[0]);
    let mut acc = b.fadd(x, c0);
    for &k in &c[1..] {
        let t = b.fmul(acc, x);
        let k = b.fconst(k);
        acc = b.fadd(t, k);
    }
    acc
}

/// `2^n` for integer lanes `n` inside the normal exponent range.
fn pow2<B: MathBuilder>(b: &mut B, n: B::I) -> B::F {
    let (bias, mantissa) = match b.width() {
        FloatWidth::F32 => (127, 23),
        FloatWidth::F64 => (1023, 52),
    };
    let bias = b.iconst(bias);
    let e = b.iadd(n, bias);
    let bits = b.shl(e, mantissa);
    b.bits_to_float(bits)
}

/// `e^x`: `x = n ln2 + r` with `|r| <= ln2 / 2`, a polynomial (`f32`) or a
/// rational function (`f64`) for `e^r`, and `2^n` applied in two halves so
/// that subnormal results round once.
pub fn exp<B: MathBuilder>(b: &mut B, x: B::F) -> B::F {
    let w = b.width();
    // Clamp to where the result is 0 or inf; a NaN fails both comparisons
    // and stays NaN through the arithmetic below.
    let (hi, lo) = match w {
        FloatWidth::F32 => (88.8, -104.0),
        FloatWidth::F64 => (709.8, -745.2),
    };
    let (hi, lo) = (b.fconst(hi), b.fconst(lo));
    let above = b.fcmp(Cmp::Gt, x, hi);
    let x = b.pick(above, hi, x);
    let below = b.fcmp(Cmp::Lt, x, lo);
    let x = b.pick(below, lo, x);
    // n = round(x / ln 2) by the 1.5 * 2^p trick: adding it leaves n in the
    // low mantissa bits, exactly.
    let (magic, magic_bits, c1, c2) = match w {
        FloatWidth::F32 => (12_582_912.0, 0x4b40_0000, 0.693_359_375, -2.121_944_400_546_905_8e-4),
        FloatWidth::F64 => {
            (6_755_399_441_055_744.0, 0x4338_0000_0000_0000, 6.931_457_519_531_25e-1, 1.428_606_820_309_417_2e-6)
        }
    };
    let log2e = b.fconst(std::f64::consts::LOG2_E);
    let magic = b.fconst(magic);
    let t = b.fmul(x, log2e);
    let shifted = b.fadd(t, magic);
    let nf = b.fsub(shifted, magic);
    let (c1, c2) = (b.fconst(c1), b.fconst(c2));
    let a = b.fmul(nf, c1);
    let r = b.fsub(x, a);
    let a = b.fmul(nf, c2);
    let r = b.fsub(r, a);
    let one = b.fconst(1.0);
    let p = match w {
        FloatWidth::F32 => {
            let p = horner(b, r, &[1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5]);
            let rr = b.fmul(r, r);
            let p = b.fmul(p, rr);
            let p = b.fadd(p, r);
            b.fadd(p, one)
        }
        FloatWidth::F64 => {
            // e^r = 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2)).
            let rr = b.fmul(r, r);
            let p = horner(b, rr, &[1.261_771_930_748_105_9e-4, 3.029_944_077_074_419_6e-2, 1.0]);
            let px = b.fmul(p, r);
            let q =
                horner(b, rr, &[3.001_985_051_386_644_6e-6, 2.524_483_403_496_841e-3, 2.272_655_482_081_550_3e-1, 2.0]);
            let d = b.fsub(q, px);
            let f = b.fdiv(px, d);
            let f2 = b.fadd(f, f);
            b.fadd(f2, one)
        }
    };
    let bits = b.to_bits(shifted);
    let magic_bits = b.iconst(magic_bits);
    let n = b.isub(bits, magic_bits);
    let n1 = b.sshr(n, 1);
    let n2 = b.isub(n, n1);
    let s1 = pow2(b, n1);
    let s2 = pow2(b, n2);
    let p = b.fmul(p, s1);
    b.fmul(p, s2)
}

/// `ln x`: `x = m 2^e` with `m` in `[sqrt(1/2), sqrt(2))`, then a
/// polynomial in `m - 1` (`f32`) or a rational function of
/// `s = 2 (m - 1) / (m + 1)` (`f64`); subnormals are scaled up first.
pub fn log<B: MathBuilder>(b: &mut B, x: B::F) -> B::F {
    let w = b.width();
    let (min_normal, scale, scale_log2, mantissa, bias, mask, half) = match w {
        FloatWidth::F32 => (f32::MIN_POSITIVE as f64, 8_388_608.0, 23.0, 23, 126, 0x007f_ffff, 0x3f00_0000),
        FloatWidth::F64 => {
            (f64::MIN_POSITIVE, 18_014_398_509_481_984.0, 54.0, 52, 1022, 0x000f_ffff_ffff_ffff, 0x3fe0_0000_0000_0000)
        }
    };
    let min_normal = b.fconst(min_normal);
    let tiny = b.fcmp(Cmp::Lt, x, min_normal);
    let scale = b.fconst(scale);
    let scaled = b.fmul(x, scale);
    let xs = b.pick(tiny, scaled, x);
    let bits = b.to_bits(xs);
    let shifted = b.sshr(bits, mantissa);
    let bias = b.iconst(bias);
    let e = b.isub(shifted, bias);
    let mask = b.iconst(mask);
    let half = b.iconst(half);
    let mb = b.band(bits, mask);
    let mb = b.bor(mb, half);
    let m = b.bits_to_float(mb);
    let ef = b.int_to_float(e);
    let (k, zero) = (b.fconst(scale_log2), b.fconst(0.0));
    let sub = b.pick(tiny, k, zero);
    let ef = b.fsub(ef, sub);
    // m < sqrt(1/2): use 2m and e - 1.
    let sqrthf = b.fconst(std::f64::consts::FRAC_1_SQRT_2);
    let low = b.fcmp(Cmp::Lt, m, sqrthf);
    let one = b.fconst(1.0);
    let m2 = b.fadd(m, m);
    let m_adj = b.pick(low, m2, m);
    let e_adj = b.pick(low, one, zero);
    let ef = b.fsub(ef, e_adj);
    let (c1, c2) = (b.fconst(0.693_359_375), b.fconst(-2.121_944_400_546_905_8e-4));
    let r = match w {
        FloatWidth::F32 => {
            let m = b.fsub(m_adj, one);
            let z = b.fmul(m, m);
            let p = horner(
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
            let p = b.fmul(p, m);
            let y = b.fmul(p, z);
            let t = b.fmul(ef, c2);
            let y = b.fadd(y, t);
            let mhalf = b.fconst(-0.5);
            let t = b.fmul(z, mhalf);
            let y = b.fadd(y, t);
            let r = b.fadd(m, y);
            let t = b.fmul(ef, c1);
            b.fadd(r, t)
        }
        FloatWidth::F64 => {
            // s = 2 (m - 1) / (m + 1); ln m = s + s^3 R(s^2) / S(s^2).
            let num = b.fsub(m_adj, one);
            let halfc = b.fconst(0.5);
            let hm = b.fmul(m_adj, halfc);
            let den = b.fadd(hm, halfc);
            let s = b.fdiv(num, den);
            let z = b.fmul(s, s);
            let rp = horner(b, z, &[-7.895_802_788_847_992e-1, 1.638_666_456_995_58e1, -6.414_099_529_587_156e1]);
            let sp = horner1(b, z, &[-3.567_227_982_563_243e1, 3.120_937_663_722_442e2, -7.696_919_435_504_6e2]);
            let q = b.fdiv(rp, sp);
            let zq = b.fmul(z, q);
            let y = b.fmul(s, zq);
            let t = b.fmul(ef, c2);
            let y = b.fadd(y, t);
            let r = b.fadd(y, s);
            let t = b.fmul(ef, c1);
            b.fadd(r, t)
        }
    };
    // ln 0 = -inf, ln of a negative = NaN, ln inf = inf (NaN stays NaN).
    let (inf, ninf, nan) = (b.fconst(f64::INFINITY), b.fconst(f64::NEG_INFINITY), b.fconst(f64::NAN));
    let is_inf = b.fcmp(Cmp::Eq, x, inf);
    let r = b.pick(is_inf, inf, r);
    let is_zero = b.fcmp(Cmp::Eq, x, zero);
    let r = b.pick(is_zero, ninf, r);
    let neg = b.fcmp(Cmp::Lt, x, zero);
    let r = b.pick(neg, nan, r);
    let unordered = b.fcmp(Cmp::Unordered, x, x);
    b.pick(unordered, x, r)
}

/// `ln(1 + x)` as `ln(u) * x / (u - 1)` with `u = 1 + x`, which cancels the
/// rounding of `u`.
pub fn log1p<B: MathBuilder>(b: &mut B, x: B::F) -> B::F {
    let one = b.fconst(1.0);
    let u = b.fadd(one, x);
    let lu = log(b, u);
    let um1 = b.fsub(u, one);
    let q = b.fdiv(x, um1);
    let r = b.fmul(lu, q);
    let exact = b.fcmp(Cmp::Eq, u, one);
    let r = b.pick(exact, x, r);
    let inf = b.fconst(f64::INFINITY);
    let is_inf = b.fcmp(Cmp::Eq, u, inf);
    b.pick(is_inf, inf, r)
}

/// `e^x - 1` as `(u - 1) * x / ln(u)` with `u = e^x` (Kahan's identity).
pub fn expm1<B: MathBuilder>(b: &mut B, x: B::F) -> B::F {
    let u = exp(b, x);
    let one = b.fconst(1.0);
    let um1 = b.fsub(u, one);
    let lu = log(b, u);
    let q = b.fdiv(x, lu);
    let r = b.fmul(um1, q);
    let exact = b.fcmp(Cmp::Eq, u, one);
    let r = b.pick(exact, x, r);
    let minus_one = b.fconst(-1.0);
    let saturated = b.fcmp(Cmp::Eq, um1, minus_one);
    let r = b.pick(saturated, minus_one, r);
    let inf = b.fconst(f64::INFINITY);
    let is_inf = b.fcmp(Cmp::Eq, u, inf);
    b.pick(is_inf, inf, r)
}

/// `tanh x`: an odd polynomial (`f32`) or rational function (`f64`) below
/// 0.625, else `1 - 2 / (e^{2|x|} + 1)` with the sign of `x`.
pub fn tanh<B: MathBuilder>(b: &mut B, x: B::F) -> B::F {
    let z = b.fmul(x, x);
    let small_value = match b.width() {
        FloatWidth::F32 => {
            let p = horner(b, z, &[-5.704_988_7e-3, 2.063_909e-2, -5.373_971_6e-2, 1.333_144_2e-1, -3.333_328e-1]);
            let p = b.fmul(p, z);
            let p = b.fmul(p, x);
            b.fadd(p, x)
        }
        FloatWidth::F64 => {
            let p = horner(b, z, &[-9.643_991_794_250_523e-1, -9.928_772_310_019_186e1, -1.614_687_684_417_084_5e3]);
            let q = horner1(b, z, &[1.128_116_784_916_329_4e2, 2.235_488_390_601_004_6e3, 4.844_063_053_251_255e3]);
            let r = b.fdiv(p, q);
            let r = b.fmul(r, z);
            let r = b.fmul(r, x);
            b.fadd(r, x)
        }
    };
    let a = b.fabs(x);
    let two_a = b.fadd(a, a);
    let e = exp(b, two_a);
    let one = b.fconst(1.0);
    let d = b.fadd(e, one);
    let two = b.fconst(2.0);
    let q = b.fdiv(two, d);
    let large = b.fsub(one, q);
    let zero = b.fconst(0.0);
    let neg = b.fcmp(Cmp::Lt, x, zero);
    let nlarge = b.fneg(large);
    let large = b.pick(neg, nlarge, large);
    let cut = b.fconst(0.625);
    let small = b.fcmp(Cmp::Lt, a, cut);
    b.pick(small, small_value, large)
}

/// With `e = exp(-|x|)`, which cannot overflow: `1 / (1 + e)` for `x >= 0`,
/// `e / (1 + e)` below.
pub fn sigmoid<B: MathBuilder>(b: &mut B, x: B::F) -> B::F {
    let a = b.fabs(x);
    let m = b.fneg(a);
    let e = exp(b, m);
    let one = b.fconst(1.0);
    let d = b.fadd(one, e);
    let s = b.fdiv(one, d);
    let es = b.fmul(e, s);
    let zero = b.fconst(0.0);
    let neg = b.fcmp(Cmp::Lt, x, zero);
    b.pick(neg, es, s)
}

/// `max(x, 0) + log1p(exp(-|x|))`.
pub fn softplus<B: MathBuilder>(b: &mut B, x: B::F) -> B::F {
    let zero = b.fconst(0.0);
    let positive = b.fcmp(Cmp::Gt, x, zero);
    let pos = b.pick(positive, x, zero);
    let a = b.fabs(x);
    let m = b.fneg(a);
    let e = exp(b, m);
    let t = log1p(b, e);
    b.fadd(pos, t)
}

/// `a^b` as `exp(b ln|a|)` with libm's special cases: a negative base
/// takes the sign of an odd integer exponent and gives NaN for a
/// non-integer one; `x^0 = 1` and `1^y = 1` even for NaN. Its error grows
/// with `|b ln a|`; on `f64` it is meant for `f32` results (computed in
/// `f64` and rounded once).
pub fn pow<B: MathBuilder>(b: &mut B, a: B::F, y: B::F) -> B::F {
    let abs = b.fabs(a);
    let l = log(b, abs);
    let t = b.fmul(y, l);
    let mag = exp(b, t);
    let zero = b.fconst(0.0);
    let one = b.fconst(1.0);
    let fl = b.floor(y);
    let integer = b.fcmp(Cmp::Eq, fl, y);
    let halfc = b.fconst(0.5);
    let hy = b.fmul(y, halfc);
    let hfl = b.floor(hy);
    let even = b.fcmp(Cmp::Eq, hfl, hy);
    // odd = integer and not even; the sign applies to negative bases (and -0).
    let neg_mag = b.fneg(mag);
    let odd_value = b.pick(even, mag, neg_mag);
    let signed = b.pick(integer, odd_value, mag);
    let nan = b.fconst(f64::NAN);
    let neg_base_value = b.pick(integer, signed, nan);
    let negative = b.fcmp(Cmp::Lt, a, zero);
    let r = b.pick(negative, neg_base_value, mag);
    // A zero base keeps its sign under an odd integer power: 1 / -0 < 0.
    let recip = b.fdiv(one, a);
    let minus_zero = b.fcmp(Cmp::Lt, recip, zero);
    let zero_value = b.pick(minus_zero, signed, mag);
    let is_zero = b.fcmp(Cmp::Eq, a, zero);
    let r = b.pick(is_zero, zero_value, r);
    // -inf takes the sign of an odd power and never gives NaN;
    // (+-1)^(+-inf) = 1.
    let ninf = b.fconst(f64::NEG_INFINITY);
    let a_ninf = b.fcmp(Cmp::Eq, a, ninf);
    let r = b.pick(a_ninf, signed, r);
    let inf = b.fconst(f64::INFINITY);
    let ay = b.fabs(y);
    let y_inf = b.fcmp(Cmp::Eq, ay, inf);
    let unit = b.pick(y_inf, one, r);
    let a_unit = b.fcmp(Cmp::Eq, abs, one);
    let r = b.pick(a_unit, unit, r);
    let y_zero = b.fcmp(Cmp::Eq, y, zero);
    let r = b.pick(y_zero, one, r);
    let a_one = b.fcmp(Cmp::Eq, a, one);
    b.pick(a_one, one, r)
}

/// Runs the algorithms on plain Rust floats, one value at a time: the
/// reference that code generators' results are compared with bit for bit,
/// and what the accuracy tests measure.
#[derive(Clone, Copy, Debug, Default)]
pub struct Soft<T>(std::marker::PhantomData<T>);

macro_rules! soft {
    ($f:ty, $i:ty, $w:expr) => {
        impl MathBuilder for Soft<$f> {
            type F = $f;
            type I = $i;
            type M = bool;
            fn width(&self) -> FloatWidth {
                $w
            }
            fn fconst(&mut self, x: f64) -> $f {
                x as $f
            }
            fn iconst(&mut self, x: i64) -> $i {
                x as $i
            }
            fn fadd(&mut self, a: $f, b: $f) -> $f {
                a + b
            }
            fn fsub(&mut self, a: $f, b: $f) -> $f {
                a - b
            }
            fn fmul(&mut self, a: $f, b: $f) -> $f {
                a * b
            }
            fn fdiv(&mut self, a: $f, b: $f) -> $f {
                a / b
            }
            fn fneg(&mut self, a: $f) -> $f {
                -a
            }
            fn fabs(&mut self, a: $f) -> $f {
                a.abs()
            }
            fn sqrt(&mut self, a: $f) -> $f {
                a.sqrt()
            }
            fn floor(&mut self, a: $f) -> $f {
                a.floor()
            }
            fn fcmp(&mut self, cmp: Cmp, a: $f, b: $f) -> bool {
                match cmp {
                    Cmp::Lt => a < b,
                    Cmp::Gt => a > b,
                    Cmp::Eq => a == b,
                    Cmp::Unordered => a.is_nan() || b.is_nan(),
                }
            }
            fn pick(&mut self, m: bool, a: $f, b: $f) -> $f {
                if m { a } else { b }
            }
            fn to_bits(&mut self, a: $f) -> $i {
                a.to_bits() as $i
            }
            fn bits_to_float(&mut self, a: $i) -> $f {
                <$f>::from_bits(a as _)
            }
            fn iadd(&mut self, a: $i, b: $i) -> $i {
                a.wrapping_add(b)
            }
            fn isub(&mut self, a: $i, b: $i) -> $i {
                a.wrapping_sub(b)
            }
            fn band(&mut self, a: $i, b: $i) -> $i {
                a & b
            }
            fn bor(&mut self, a: $i, b: $i) -> $i {
                a | b
            }
            fn shl(&mut self, a: $i, bits: u32) -> $i {
                a.wrapping_shl(bits)
            }
            fn sshr(&mut self, a: $i, bits: u32) -> $i {
                a >> bits
            }
            fn int_to_float(&mut self, a: $i) -> $f {
                a as $f
            }
        }
    };
}
soft!(f32, i32, FloatWidth::F32);
soft!(f64, i64, FloatWidth::F64);

impl Soft<f32> {
    /// `op(x)` on one `f32`, as every backend computes it.
    pub fn unary(op: UnaryOp, x: f32) -> f32 {
        unary(&mut Soft::<f32>::default(), op, x)
    }
}

impl Soft<f64> {
    /// `op(x)` on one `f64`, as the GPU computes it.
    pub fn unary(op: UnaryOp, x: f64) -> f64 {
        unary(&mut Soft::<f64>::default(), op, x)
    }

    /// `a^b` on `f64`, as the GPU computes it.
    pub fn pow(a: f64, b: f64) -> f64 {
        pow(&mut Soft::<f64>::default(), a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scalar::unary_f64;

    /// Distance in units in the last place between two `f64`s.
    fn ulps(a: f64, b: f64) -> u64 {
        if a == b || (a.is_nan() && b.is_nan()) {
            return 0;
        }
        if a.is_nan() || b.is_nan() || a.is_infinite() || b.is_infinite() {
            return u64::MAX;
        }
        let key = |x: f64| {
            let bits = x.to_bits() as i64;
            if bits < 0 { i64::MIN - bits } else { bits }
        };
        key(a).abs_diff(key(b))
    }

    /// A deterministic spread of `f64`s over `[lo, hi]`, plus the points
    /// near 0 and 1 where cancellation would show.
    fn samples(lo: f64, hi: f64) -> Vec<f64> {
        let mut v: Vec<f64> = (0..=200_000).map(|i| lo + (hi - lo) * i as f64 / 200_000.0).collect();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            v.push(lo + (hi - lo) * (state >> 11) as f64 / (1u64 << 53) as f64);
        }
        v.extend((1..60).flat_map(|k| [2f64.powi(-k), -(2f64.powi(-k)), 1.0 + 2f64.powi(-k), 1.0 - 2f64.powi(-k)]));
        v.retain(|x| (lo..=hi).contains(x));
        v
    }

    #[test]
    fn f64_algorithms_are_within_a_few_ulps_of_libm() {
        use UnaryOp::*;
        // (op, range, bound in ulps)
        let cases = [
            (Exp, -745.0, 709.0, 2),
            (Log, 1e-300, 1e300, 2),
            (Log, 0.01, 4.0, 2),
            (Log1p, -0.999, 10.0, 3),
            (Expm1, -40.0, 40.0, 3),
            (Tanh, -20.0, 20.0, 3),
            (Sigmoid, -700.0, 700.0, 3),
            (Softplus, -700.0, 700.0, 3),
            (Rsqrt, 1e-300, 1e300, 2),
        ];
        for (op, lo, hi, bound) in cases {
            let worst = samples(lo, hi)
                .into_iter()
                .map(|x| (ulps(Soft::<f64>::unary(op, x), unary_f64(op, x)), x))
                .max_by_key(|w| w.0)
                .unwrap();
            assert!(worst.0 <= bound, "{}: {} ulps at {:e}", op.name(), worst.0, worst.1);
            eprintln!("f64 {} on [{lo:e}, {hi:e}]: {} ulps at most", op.name(), worst.0);
        }
    }

    #[test]
    fn special_values_behave_as_libm() {
        use UnaryOp::*;
        for op in [Exp, Log, Log1p, Expm1, Tanh, Sigmoid, Softplus, Rsqrt] {
            for x in [0.0, -0.0, 1.0, -1.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 5e-324, f64::MAX, -f64::MAX] {
                let (got, want) = (Soft::<f64>::unary(op, x), unary_f64(op, x));
                assert!(ulps(got, want) <= 3, "{}({x:e}) = {got:e}, libm {want:e}", op.name());
                let (got, want) = (Soft::<f32>::unary(op, x as f32), unary_f64(op, x as f32 as f64) as f32);
                assert!(ulps(got as f64, want as f64) <= 3 * (1 << 29), "f32 {}({x:e}) = {got:e}, {want:e}", op.name());
            }
        }
    }

    #[test]
    fn pow_in_f64_rounds_to_the_f32_reference_and_keeps_libm_special_cases() {
        let bases =
            [0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 0.9, 0.999, 10.0, 1e-30, f64::INFINITY, -f64::INFINITY];
        let exps = [0.0, -0.0, 1.0, 2.0, 3.0, -1.0, -3.0, 0.5, -0.5, 2.5, 100.0, -100.0, f64::INFINITY, f64::NAN];
        for &a in bases.iter().chain(&[f64::NAN]) {
            for &y in &exps {
                let (got, want) = (Soft::<f64>::pow(a, y), a.powf(y));
                // The error of exp(y ln a) grows with |y ln a|.
                let bound = 4.0 + 2.0 * (y * a.abs().ln()).abs().min(1e6);
                assert!(
                    ulps(got, want) as f64 <= bound || (got.is_nan() && want.is_nan()),
                    "pow({a:e}, {y:e}) = {got:e}, libm {want:e}"
                );
                if !want.is_nan() {
                    assert_eq!(got.is_sign_negative(), want.is_sign_negative(), "sign of pow({a:e}, {y:e})");
                }
            }
        }
        // f32 results computed in f64 and rounded once: the interpreter's.
        for (a, y) in samples(0.01, 50.0).into_iter().zip(samples(-20.0, 20.0)).step_by(7) {
            let (a, y) = (a as f32 as f64, y as f32 as f64);
            let (got, want) = (Soft::<f64>::pow(a, y) as f32, a.powf(y) as f32);
            assert!(ulps(got as f64, want as f64) <= 1 << 29, "pow({a}, {y}) = {got:e}, {want:e}");
        }
    }
}
