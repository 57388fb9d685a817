//! Writing PTX: typed virtual registers, instruction lines, labels, and the
//! scalar semantics of every kernel-IR instruction on those registers. The
//! instruction choices follow `rhea_kernel::scalar` exactly: `.rn` on
//! every float add, multiply and divide (so nothing is contracted into a
//! fused multiply-add), numpy's NaN-propagating maximum and minimum, Rust's
//! saturating float-to-integer casts, and the transcendental algorithms of
//! `rhea_kernel::math`, so results match the interpreter and the CPU.

use std::fmt::{self, Write};

use rhea_graph::{BinaryOp, DType, UnaryOp};
use rhea_kernel::Const;
use rhea_kernel::math::{self, Cmp, FloatWidth, MathBuilder};

/// A register class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Pred,
    B32,
    B64,
    F32,
    F64,
}

const KINDS: [(Kind, &str, &str); 5] = [
    (Kind::Pred, "pred", "p"),
    (Kind::B32, "b32", "r"),
    (Kind::B64, "b64", "rd"),
    (Kind::F32, "f32", "f"),
    (Kind::F64, "f64", "fd"),
];

impl Kind {
    pub fn of(dtype: DType) -> Kind {
        match dtype {
            DType::F32 => Kind::F32,
            DType::F64 => Kind::F64,
            DType::I32 => Kind::B32,
            DType::I64 => Kind::B64,
            DType::Bool => Kind::Pred,
        }
    }
    fn index(self) -> usize {
        KINDS.iter().position(|k| k.0 == self).expect("every kind is listed")
    }
}

/// A virtual register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct R {
    pub kind: Kind,
    n: u32,
}

impl fmt::Display for R {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}{}", KINDS[self.kind.index()].2, self.n)
    }
}

/// The PTX type suffix of a dtype's arithmetic.
pub(crate) fn ty(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::I32 => "s32",
        DType::I64 => "s64",
        DType::Bool => "pred",
    }
}

/// A float constant as PTX writes it (exact bits).
pub(crate) fn float_literal(x: f64, dtype: DType) -> String {
    if dtype == DType::F32 { format!("0f{:08X}", (x as f32).to_bits()) } else { format!("0d{:016X}", x.to_bits()) }
}

/// One kernel's body being written.
#[derive(Default)]
pub(crate) struct Emitter {
    text: String,
    counts: [u32; 5],
    labels: u32,
}

impl Emitter {
    pub fn reg(&mut self, kind: Kind) -> R {
        let n = &mut self.counts[kind.index()];
        *n += 1;
        R { kind, n: *n }
    }

    /// One instruction (without its `;`).
    pub fn ins(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.text, "\t{};", line.as_ref());
    }

    /// A fresh label name.
    pub fn label(&mut self, what: &str) -> String {
        self.labels += 1;
        format!("$L_{what}_{}", self.labels)
    }

    pub fn place(&mut self, label: &str) {
        let _ = writeln!(self.text, "{label}:");
    }

    /// A line that is not an instruction (a declaration, a comment).
    pub fn raw(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.text, "\t{}", line.as_ref());
    }

    /// The register declarations this body needs, then the body.
    pub fn finish(self) -> String {
        let mut out = String::new();
        for (kind, t, prefix) in KINDS {
            let n = self.counts[kind.index()];
            if n > 0 {
                let _ = writeln!(out, "\t.reg .{t} %{prefix}<{}>;", n + 1);
            }
        }
        out + &self.text
    }

    /// A new register holding `op(a)` for a type suffix `t`.
    pub fn op1(&mut self, op: &str, kind: Kind, a: R) -> R {
        let r = self.reg(kind);
        self.ins(format!("{op} {r}, {a}"));
        r
    }

    /// A new register holding `op(a, b)`.
    pub fn op2(&mut self, op: &str, kind: Kind, a: impl fmt::Display, b: impl fmt::Display) -> R {
        let r = self.reg(kind);
        self.ins(format!("{op} {r}, {a}, {b}"));
        r
    }

    /// A predicate from a comparison `setp.{cmp}.{t}`.
    pub fn setp(&mut self, cmp: &str, t: &str, a: impl fmt::Display, b: impl fmt::Display) -> R {
        let p = self.reg(Kind::Pred);
        self.ins(format!("setp.{cmp}.{t} {p}, {a}, {b}"));
        p
    }

    /// `a` where `p`, else `b`, of `dtype`.
    pub fn select(&mut self, dtype: DType, p: R, a: R, b: R) -> R {
        if dtype == DType::Bool {
            // (p and a) or (not p and b)
            let x = self.op2("and.pred", Kind::Pred, p, a);
            let np = self.op1("not.pred", Kind::Pred, p);
            let y = self.op2("and.pred", Kind::Pred, np, b);
            return self.op2("or.pred", Kind::Pred, x, y);
        }
        let r = self.reg(Kind::of(dtype));
        self.ins(format!("selp.{} {r}, {a}, {b}, {p}", selp_ty(dtype)));
        r
    }

    /// A constant of `dtype`, converted as the reference converts it.
    pub fn constant(&mut self, value: Const, dtype: DType) -> R {
        use rhea_kernel::scalar::Scalar;
        let r = match value.value(dtype) {
            Scalar::Bool(on) => return self.setp("eq", "u32", 1, if on { 1 } else { 0 }),
            Scalar::F32(x) => (float_literal(x as f64, DType::F32), self.reg(Kind::F32)),
            Scalar::F64(x) => (float_literal(x, DType::F64), self.reg(Kind::F64)),
            Scalar::I32(x) => (x.to_string(), self.reg(Kind::B32)),
            Scalar::I64(x) => (x.to_string(), self.reg(Kind::B64)),
        };
        self.ins(format!("mov.{} {}, {}", ty(dtype), r.1, r.0));
        r.1
    }

    /// The float `x` of `dtype` as a register.
    pub fn float(&mut self, x: f64, dtype: DType) -> R {
        self.constant(Const::Float(rhea_graph::F64(x)), dtype)
    }

    /// numpy's maximum (`max`) or minimum: a NaN on either side wins.
    pub fn max_min(&mut self, dtype: DType, max: bool, a: R, b: R) -> R {
        let t = ty(dtype);
        if !dtype.is_float() {
            return self.op2(&format!("{}.{t}", if max { "max" } else { "min" }), Kind::of(dtype), a, b);
        }
        let better = self.setp(if max { "gt" } else { "lt" }, t, b, a);
        let r = self.select(dtype, better, b, a);
        let b_nan = self.setp("nan", t, b, b);
        let r = self.select(dtype, b_nan, b, r);
        let a_nan = self.setp("nan", t, a, a);
        self.select(dtype, a_nan, a, r)
    }

    /// `op(x)` for `x` of `dtype`; `Err` for what has no PTX lowering here.
    pub fn unary(&mut self, op: UnaryOp, x: R, dtype: DType) -> Result<R, String> {
        use UnaryOp::*;
        let t = ty(dtype);
        let k = Kind::of(dtype);
        let float = dtype.is_float();
        Ok(match op {
            Not => self.op1("not.pred", Kind::Pred, x),
            IsNan if float => self.setp("nan", t, x, x),
            IsInf if float => {
                let a = self.op1(&format!("abs.{t}"), k, x);
                let inf = self.float(f64::INFINITY, dtype);
                self.setp("eq", t, a, inf)
            }
            IsNan | IsInf => self.setp("eq", "u32", 1, 0),
            Neg => self.op1(&format!("neg.{t}"), k, x),
            Abs if float => self.op1(&format!("abs.{t}"), k, x),
            Abs => {
                // Wrapping: |MIN| is MIN.
                let zero = self.constant(Const::Int(0), dtype);
                let negative = self.setp("lt", t, x, zero);
                let n = self.op1(&format!("neg.{t}"), k, x);
                self.select(dtype, negative, n, x)
            }
            Sign => {
                let (zero, one, minus) = if float {
                    (self.float(0.0, dtype), self.float(1.0, dtype), self.float(-1.0, dtype))
                } else {
                    (
                        self.constant(Const::Int(0), dtype),
                        self.constant(Const::Int(1), dtype),
                        self.constant(Const::Int(-1), dtype),
                    )
                };
                let pos = self.setp("gt", t, x, zero);
                let r = self.select(dtype, pos, one, zero);
                let neg = self.setp("lt", t, x, zero);
                let r = self.select(dtype, neg, minus, r);
                if float {
                    let nan = self.setp("nan", t, x, x);
                    self.select(dtype, nan, x, r)
                } else {
                    r
                }
            }
            Square if float => self.op2(&format!("mul.rn.{t}"), k, x, x),
            Square => self.op2(&format!("mul.lo.{t}"), k, x, x),
            Relu => {
                let zero = if float { self.float(0.0, dtype) } else { self.constant(Const::Int(0), dtype) };
                // max_nan(x, 0): NaN and -0 stay as they are.
                let below = self.setp("lt", t, x, zero);
                self.select(dtype, below, zero, x)
            }
            Sqrt => self.op1(&format!("sqrt.rn.{t}"), k, x),
            Reciprocal => self.op1(&format!("rcp.rn.{t}"), k, x),
            Floor => self.op1(&format!("cvt.rmi.{t}.{t}"), k, x),
            Ceil => self.op1(&format!("cvt.rpi.{t}.{t}"), k, x),
            Round => self.op1(&format!("cvt.rni.{t}.{t}"), k, x),
            op if float && math::has_algorithm(op) => {
                let width = if dtype == DType::F32 { FloatWidth::F32 } else { FloatWidth::F64 };
                math::unary(&mut PtxMath { e: self, width }, op, x)
            }
            other => return Err(format!("{} on {dtype} has no PTX lowering (it runs on the host)", other.name())),
        })
    }

    /// `op(a, b)` for operands of `dtype`.
    pub fn binary(&mut self, op: BinaryOp, a: R, b: R, dtype: DType) -> Result<R, String> {
        use BinaryOp::*;
        let t = ty(dtype);
        let k = Kind::of(dtype);
        let float = dtype.is_float();
        if dtype == DType::Bool {
            return Ok(match op {
                And => self.op2("and.pred", Kind::Pred, a, b),
                Or => self.op2("or.pred", Kind::Pred, a, b),
                Ne => self.op2("xor.pred", Kind::Pred, a, b),
                Eq => {
                    let x = self.op2("xor.pred", Kind::Pred, a, b);
                    self.op1("not.pred", Kind::Pred, x)
                }
                // false < true
                Lt | Ge => {
                    let na = self.op1("not.pred", Kind::Pred, a);
                    let lt = self.op2("and.pred", Kind::Pred, na, b);
                    if op == Lt { lt } else { self.op1("not.pred", Kind::Pred, lt) }
                }
                Gt | Le => {
                    let nb = self.op1("not.pred", Kind::Pred, b);
                    let gt = self.op2("and.pred", Kind::Pred, a, nb);
                    if op == Gt { gt } else { self.op1("not.pred", Kind::Pred, gt) }
                }
                other => return Err(format!("{} on bool has no PTX lowering", other.name())),
            });
        }
        let cmp = |op| match op {
            Eq => "eq",
            Ne if float => "neu",
            Ne => "ne",
            Lt => "lt",
            Le => "le",
            Gt => "gt",
            _ => "ge",
        };
        Ok(match op {
            Add | Sub | Mul if float => {
                let name = match op {
                    Add => "add",
                    Sub => "sub",
                    _ => "mul",
                };
                self.op2(&format!("{name}.rn.{t}"), k, a, b)
            }
            Add => self.op2(&format!("add.{t}"), k, a, b),
            Sub => self.op2(&format!("sub.{t}"), k, a, b),
            Mul => self.op2(&format!("mul.lo.{t}"), k, a, b),
            Div if float => self.op2(&format!("div.rn.{t}"), k, a, b),
            Div => {
                // As the reference: through f64, truncated and saturated.
                let fa = self.op1(&format!("cvt.rn.f64.{t}"), Kind::F64, a);
                let fb = self.op1(&format!("cvt.rn.f64.{t}"), Kind::F64, b);
                let q = self.op2("div.rn.f64", Kind::F64, fa, fb);
                self.cast(q, DType::F64, dtype)
            }
            Pow if float => {
                let (fa, fb) = if dtype == DType::F32 {
                    (self.op1("cvt.f64.f32", Kind::F64, a), self.op1("cvt.f64.f32", Kind::F64, b))
                } else {
                    (a, b)
                };
                let r = math::pow(&mut PtxMath { e: self, width: FloatWidth::F64 }, fa, fb);
                if dtype == DType::F32 { self.op1("cvt.rn.f32.f64", Kind::F32, r) } else { r }
            }
            Maximum => self.max_min(dtype, true, a, b),
            Minimum => self.max_min(dtype, false, a, b),
            Eq | Ne | Lt | Le | Gt | Ge => self.setp(cmp(op), t, a, b),
            other => return Err(format!("{} on {dtype} has no PTX lowering (it runs on the host)", other.name())),
        })
    }

    /// Converts `x` of `from` to `to` with Rust's `as` semantics.
    pub fn cast(&mut self, x: R, from: DType, to: DType) -> R {
        if from == to {
            return x;
        }
        let (tf, tt) = (ty(from), ty(to));
        match (from, to) {
            (_, DType::Bool) => {
                let zero = if from.is_float() { self.float(0.0, from) } else { self.constant(Const::Int(0), from) };
                // NaN is not zero, so it is true.
                self.setp(if from.is_float() { "neu" } else { "ne" }, tf, x, zero)
            }
            (DType::Bool, _) => {
                let (one, zero) = if to.is_float() {
                    (float_literal(1.0, to), float_literal(0.0, to))
                } else {
                    ("1".to_string(), "0".to_string())
                };
                let r = self.reg(Kind::of(to));
                self.ins(format!("selp.{} {r}, {one}, {zero}, {x}", selp_ty(to)));
                r
            }
            (DType::F32, DType::F64) => self.op1("cvt.f64.f32", Kind::F64, x),
            (DType::F64, DType::F32) => self.op1("cvt.rn.f32.f64", Kind::F32, x),
            // Truncating and saturating. NaN must give 0, which cvt only
            // does from f32 to a 32-bit integer; elsewhere it gives MIN.
            (f, _) if f.is_float() => {
                let r = self.op1(&format!("cvt.rzi.{tt}.{tf}"), Kind::of(to), x);
                if f == DType::F32 && to == DType::I32 {
                    return r;
                }
                let nan = self.setp("nan", tf, x, x);
                let zero = self.constant(Const::Int(0), to);
                self.select(to, nan, zero, r)
            }
            (_, t) if t.is_float() => self.op1(&format!("cvt.rn.{tt}.{tf}"), Kind::of(to), x),
            (DType::I64, DType::I32) => self.op1("cvt.u32.u64", Kind::B32, x),
            _ => self.op1("cvt.s64.s32", Kind::B64, x),
        }
    }
}

/// The type `selp` takes for values of `dtype`.
fn selp_ty(dtype: DType) -> &'static str {
    match dtype {
        DType::I32 => "b32",
        DType::I64 => "b64",
        other => ty(other),
    }
}

/// [`MathBuilder`] on PTX registers of one float width.
struct PtxMath<'a> {
    e: &'a mut Emitter,
    width: FloatWidth,
}

impl PtxMath<'_> {
    fn dtype(&self) -> DType {
        if self.width == FloatWidth::F32 { DType::F32 } else { DType::F64 }
    }
    fn t(&self) -> &'static str {
        ty(self.dtype())
    }
    fn fk(&self) -> Kind {
        Kind::of(self.dtype())
    }
    fn ik(&self) -> Kind {
        if self.width == FloatWidth::F32 { Kind::B32 } else { Kind::B64 }
    }
    fn it(&self) -> &'static str {
        if self.width == FloatWidth::F32 { "s32" } else { "s64" }
    }
    fn bt(&self) -> &'static str {
        if self.width == FloatWidth::F32 { "b32" } else { "b64" }
    }
}

impl MathBuilder for PtxMath<'_> {
    type F = R;
    type I = R;
    type M = R;
    fn width(&self) -> FloatWidth {
        self.width
    }
    fn fconst(&mut self, x: f64) -> R {
        let d = self.dtype();
        self.e.float(x, d)
    }
    fn iconst(&mut self, x: i64) -> R {
        let r = self.e.reg(self.ik());
        let x = if self.width == FloatWidth::F32 { x as i32 as i64 } else { x };
        self.e.ins(format!("mov.{} {r}, {x}", self.it()));
        r
    }
    fn fadd(&mut self, a: R, b: R) -> R {
        self.e.op2(&format!("add.rn.{}", self.t()), self.fk(), a, b)
    }
    fn fsub(&mut self, a: R, b: R) -> R {
        self.e.op2(&format!("sub.rn.{}", self.t()), self.fk(), a, b)
    }
    fn fmul(&mut self, a: R, b: R) -> R {
        self.e.op2(&format!("mul.rn.{}", self.t()), self.fk(), a, b)
    }
    fn fdiv(&mut self, a: R, b: R) -> R {
        self.e.op2(&format!("div.rn.{}", self.t()), self.fk(), a, b)
    }
    fn fneg(&mut self, a: R) -> R {
        self.e.op1(&format!("neg.{}", self.t()), self.fk(), a)
    }
    fn fabs(&mut self, a: R) -> R {
        self.e.op1(&format!("abs.{}", self.t()), self.fk(), a)
    }
    fn sqrt(&mut self, a: R) -> R {
        self.e.op1(&format!("sqrt.rn.{}", self.t()), self.fk(), a)
    }
    fn floor(&mut self, a: R) -> R {
        let t = self.t();
        self.e.op1(&format!("cvt.rmi.{t}.{t}"), self.fk(), a)
    }
    fn fcmp(&mut self, cmp: Cmp, a: R, b: R) -> R {
        let c = match cmp {
            Cmp::Lt => "lt",
            Cmp::Gt => "gt",
            Cmp::Eq => "eq",
            Cmp::Unordered => "nan",
        };
        let t = self.t();
        self.e.setp(c, t, a, b)
    }
    fn pick(&mut self, m: R, a: R, b: R) -> R {
        let d = self.dtype();
        self.e.select(d, m, a, b)
    }
    fn to_bits(&mut self, a: R) -> R {
        self.e.op1(&format!("mov.{}", self.bt()), self.ik(), a)
    }
    fn bits_to_float(&mut self, a: R) -> R {
        self.e.op1(&format!("mov.{}", self.bt()), self.fk(), a)
    }
    fn iadd(&mut self, a: R, b: R) -> R {
        self.e.op2(&format!("add.{}", self.it()), self.ik(), a, b)
    }
    fn isub(&mut self, a: R, b: R) -> R {
        self.e.op2(&format!("sub.{}", self.it()), self.ik(), a, b)
    }
    fn band(&mut self, a: R, b: R) -> R {
        self.e.op2(&format!("and.{}", self.bt()), self.ik(), a, b)
    }
    fn bor(&mut self, a: R, b: R) -> R {
        self.e.op2(&format!("or.{}", self.bt()), self.ik(), a, b)
    }
    fn shl(&mut self, a: R, bits: u32) -> R {
        self.e.op2(&format!("shl.{}", self.bt()), self.ik(), a, bits)
    }
    fn sshr(&mut self, a: R, bits: u32) -> R {
        self.e.op2(&format!("shr.{}", self.it()), self.ik(), a, bits)
    }
    fn int_to_float(&mut self, a: R) -> R {
        self.e.op1(&format!("cvt.rn.{}.{}", self.t(), self.it()), self.fk(), a)
    }
}
