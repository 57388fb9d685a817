//! `f32` transcendentals emitted inline as Cranelift IR: the algorithms of
//! `rhea_kernel::math`, on one lane (`F32`) or four (`F32X4`) with the same
//! instructions, so a vector loop and its scalar tail round alike, and the
//! GPU, which emits the same algorithms, rounds alike too. The maximum
//! error of each, measured over all `f32` inputs against the `f64`
//! reference, is stated in `docs/cpu-backend.md` and checked by
//! `tests/accuracy.rs`.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;
use rhea_graph::UnaryOp;
use rhea_kernel::math::{self, Cmp, FloatWidth, MathBuilder};

/// A Cranelift function being built, emitting `f32` lanes of one shape
/// (`F32` or `F32X4`).
struct Clif<'a, 'f> {
    b: &'a mut FunctionBuilder<'f>,
    lanes: Type,
}

impl Clif<'_, '_> {
    fn int(&self) -> Type {
        if self.lanes.is_vector() { types::I32X4 } else { types::I32 }
    }
    fn flags() -> MemFlagsData {
        MemFlagsData::new().with_endianness(Endianness::Little)
    }
}

impl MathBuilder for Clif<'_, '_> {
    type F = Value;
    type I = Value;
    type M = Value;
    fn width(&self) -> FloatWidth {
        FloatWidth::F32
    }
    fn fconst(&mut self, x: f64) -> Value {
        let c = self.b.ins().f32const(x as f32);
        if self.lanes.is_vector() { self.b.ins().splat(self.lanes, c) } else { c }
    }
    fn iconst(&mut self, x: i64) -> Value {
        let c = self.b.ins().iconst(types::I32, x as i32 as i64);
        let int = self.int();
        if self.lanes.is_vector() { self.b.ins().splat(int, c) } else { c }
    }
    fn fadd(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fadd(a, b)
    }
    fn fsub(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fsub(a, b)
    }
    fn fmul(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmul(a, b)
    }
    fn fdiv(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fdiv(a, b)
    }
    fn fneg(&mut self, a: Value) -> Value {
        self.b.ins().fneg(a)
    }
    fn fabs(&mut self, a: Value) -> Value {
        self.b.ins().fabs(a)
    }
    fn sqrt(&mut self, a: Value) -> Value {
        self.b.ins().sqrt(a)
    }
    fn floor(&mut self, a: Value) -> Value {
        self.b.ins().floor(a)
    }
    fn fcmp(&mut self, cmp: Cmp, a: Value, b: Value) -> Value {
        let cc = match cmp {
            Cmp::Lt => FloatCC::LessThan,
            Cmp::Gt => FloatCC::GreaterThan,
            Cmp::Eq => FloatCC::Equal,
            Cmp::Unordered => FloatCC::Unordered,
        };
        self.b.ins().fcmp(cc, a, b)
    }
    fn pick(&mut self, m: Value, a: Value, y: Value) -> Value {
        pick_lanes(self.b, self.lanes, m, a, y)
    }
    fn to_bits(&mut self, a: Value) -> Value {
        let int = self.int();
        self.b.ins().bitcast(int, Self::flags(), a)
    }
    fn bits_to_float(&mut self, a: Value) -> Value {
        self.b.ins().bitcast(self.lanes, Self::flags(), a)
    }
    fn iadd(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().iadd(a, b)
    }
    fn isub(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().isub(a, b)
    }
    fn band(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().band(a, b)
    }
    fn bor(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().bor(a, b)
    }
    fn shl(&mut self, a: Value, bits: u32) -> Value {
        self.b.ins().ishl_imm_u(a, bits as i64)
    }
    fn sshr(&mut self, a: Value, bits: u32) -> Value {
        self.b.ins().sshr_imm_u(a, bits as i64)
    }
    fn int_to_float(&mut self, a: Value) -> Value {
        self.b.ins().fcvt_from_sint(self.lanes, a)
    }
}

/// `a` where `cond` (a comparison of `lanes`) holds, else `y`.
fn pick_lanes(b: &mut FunctionBuilder, lanes: Type, cond: Value, a: Value, y: Value) -> Value {
    if lanes.is_vector() {
        let mask = b.ins().bitcast(lanes, MemFlagsData::new().with_endianness(Endianness::Little), cond);
        b.ins().bitselect(mask, a, y)
    } else {
        b.ins().select(cond, a, y)
    }
}

/// True if `op` on `f32` is emitted inline by [`unary`].
pub(crate) fn inline(op: UnaryOp) -> bool {
    math::has_algorithm(op)
}

/// Emits `op(x)` on `lanes` (`F32` or `F32X4`) for the ops [`inline`] accepts.
pub(crate) fn unary(b: &mut FunctionBuilder, lanes: Type, op: UnaryOp, x: Value) -> Value {
    math::unary(&mut Clif { b, lanes }, op, x)
}
