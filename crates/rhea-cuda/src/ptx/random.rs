//! Dropout on the device. Its mask is `rhea_graph::rng`'s counter-based
//! random numbers (SplitMix64 over the seed, the call's key and the element
//! index), written here in PTX integer arithmetic, so the GPU drops exactly
//! the elements the interpreter drops and scales the rest the same way
//! (in `f64`, rounded once to the output's dtype).

use rhea_graph::{DType, rng};

use super::emit::{Emitter, Kind, R, float_literal};
use super::kernel::{BLOCK, GridLoop, Ix, Lowered, address, blocks, entry, load, prologue, store};

/// A 64-bit integer constant as PTX writes it (two's complement decimal:
/// `ptxas` reads literals as signed 64-bit numbers).
fn int64(x: u64) -> String {
    (x as i64).to_string()
}

/// `rng::splitmix64(z)` on a 64-bit register.
fn splitmix64(e: &mut Emitter, z: R) -> R {
    let z = e.op2("add.u64", Kind::B64, z, int64(0x9E37_79B9_7F4A_7C15));
    let mix = |e: &mut Emitter, z: R, shift: u32, factor: u64| {
        let s = e.op2("shr.u64", Kind::B64, z, shift);
        let x = e.op2("xor.b64", Kind::B64, z, s);
        e.op2("mul.lo.u64", Kind::B64, x, int64(factor))
    };
    let z = mix(e, z, 30, 0xBF58_476D_1CE4_E5B9);
    let z = mix(e, z, 27, 0x94D0_49BB_1331_11EB);
    let s = e.op2("shr.u64", Kind::B64, z, 31);
    e.op2("xor.b64", Kind::B64, z, s)
}

/// Dropout of `items` elements of `dtype` at `rate` with `seed`: parameter
/// 0 the input, then (if `keyed`) the `i64` key, then the output. Element
/// `i` is zero where `rng::uniform01(stream, i) < rate`, else `x * 1 /
/// (1 - rate)`; out of training it is the input unchanged.
pub fn dropout(name: &str, dtype: DType, items: usize, rate: f64, seed: u64, training: bool, keyed: bool) -> Lowered {
    let (rate, scale) = if training { (rate, 1.0 / (1.0 - rate)) } else { (0.0, 1.0) };
    let mut e = Emitter::default();
    let (params, bases) = prologue(&mut e, name, if keyed { 3 } else { 2 });
    // The stream: rng::stream(seed, key), the key read once per thread.
    let stream = if keyed {
        let key = e.reg(Kind::B64);
        e.ins(format!("ld.global.u64 {key}, [{}]", bases[1]));
        let mixed = splitmix64(&mut e, key);
        let seeded = e.op2("xor.b64", Kind::B64, mixed, int64(seed));
        splitmix64(&mut e, seeded)
    } else {
        let s = e.reg(Kind::B64);
        e.ins(format!("mov.u64 {s}, {}", int64(rng::stream(seed, 0))));
        s
    };
    let ix = Ix::for_size(items);
    let lp = GridLoop::open(&mut e, ix, items);
    let i = if ix.kind == Kind::B64 { lp.idx } else { e.op1("cvt.u64.u32", Kind::B64, lp.idx) };
    // rng::bits(stream, i) = splitmix64(stream ^ splitmix64(2i + 1)).
    let twice = e.op2("shl.b64", Kind::B64, i, 1);
    let odd = e.op2("or.b64", Kind::B64, twice, 1);
    let h = splitmix64(&mut e, odd);
    let x = e.op2("xor.b64", Kind::B64, stream, h);
    let bits = splitmix64(&mut e, x);
    // rng::uniform01: the top 53 bits over 2^53 (both steps exact).
    let top = e.op2("shr.u64", Kind::B64, bits, 11);
    let whole = e.op1("cvt.rn.f64.u64", Kind::F64, top);
    let u = e.op2("mul.rn.f64", Kind::F64, whole, float_literal(1.0 / (1u64 << 53) as f64, DType::F64));
    let dropped = e.setp("lt", "f64", u, float_literal(rate, DType::F64));
    let in_addr = address(&mut e, ix, bases[0], lp.idx, dtype);
    let v = load(&mut e, in_addr, dtype);
    let wide = e.cast(v, dtype, DType::F64);
    let scaled = e.op2("mul.rn.f64", Kind::F64, wide, float_literal(scale, DType::F64));
    let zero = e.float(0.0, DType::F64);
    let kept = e.select(DType::F64, dropped, zero, scaled);
    let out = e.cast(kept, DType::F64, dtype);
    let out_addr = address(&mut e, ix, bases[bases.len() - 1], lp.idx, dtype);
    store(&mut e, out_addr, out, dtype);
    lp.close(&mut e);
    Lowered {
        name: name.to_string(),
        text: entry(name, &params, e.finish()),
        grid: blocks(items, BLOCK as usize),
        block: BLOCK,
        shape: "dropout",
        finish: None,
        scratch: 0,
    }
}
