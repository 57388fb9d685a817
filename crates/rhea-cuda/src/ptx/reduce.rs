//! Reductions in PTX: a thread per output when few elements combine into
//! it, else a block of 256 threads combining with warp shuffles and shared
//! memory, over one or two stages. Float sums and means accumulate in `f64`.

use rhea_graph::DType;
use rhea_kernel::{Combine, Kernel, row_major};

use super::emit::{Emitter, Kind, R, ty};
use super::kernel::*;

/// How one reduced output accumulates.
#[derive(Clone, Copy)]
pub(super) struct Acc {
    combine: Combine,
    /// The output's dtype.
    dtype: DType,
    /// The accumulator's dtype (`f64` for float sums and means).
    acc: DType,
}

impl Acc {
    fn new(combine: Combine, dtype: DType) -> Result<Acc, String> {
        if dtype == DType::Bool {
            return Err("reductions of bool have no PTX lowering".into());
        }
        let acc = match combine {
            Combine::Sum | Combine::Mean if dtype.is_float() => DType::F64,
            _ => dtype,
        };
        Ok(Acc { combine, dtype, acc })
    }

    fn identity(&self, e: &mut Emitter) -> R {
        let d = self.acc;
        let value = match (self.combine, d.is_float()) {
            (Combine::Sum | Combine::Mean, _) => 0.0,
            (Combine::Prod, _) => 1.0,
            (Combine::Max, true) => f64::NEG_INFINITY,
            (Combine::Min, true) => f64::INFINITY,
            (Combine::Max, false) => return int(e, d, if d == DType::I32 { i32::MIN as i64 } else { i64::MIN }),
            (Combine::Min, false) => return int(e, d, if d == DType::I32 { i32::MAX as i64 } else { i64::MAX }),
        };
        if d.is_float() { e.float(value, d) } else { int(e, d, value as i64) }
    }

    /// `acc ⊕ v` for `v` already of the accumulator's dtype.
    fn combine(&self, e: &mut Emitter, acc: R, v: R) -> R {
        let (d, t) = (self.acc, ty(self.acc));
        match self.combine {
            Combine::Sum | Combine::Mean if d.is_float() => e.op2(&format!("add.rn.{t}"), Kind::of(d), acc, v),
            Combine::Sum | Combine::Mean => e.op2(&format!("add.{t}"), Kind::of(d), acc, v),
            Combine::Prod if d.is_float() => e.op2(&format!("mul.rn.{t}"), Kind::of(d), acc, v),
            Combine::Prod => e.op2(&format!("mul.lo.{t}"), Kind::of(d), acc, v),
            Combine::Max => e.max_min(d, true, acc, v),
            Combine::Min => e.max_min(d, false, acc, v),
        }
    }

    /// The output value from the accumulator over `count` elements.
    fn finish(&self, e: &mut Emitter, acc: R, count: usize) -> R {
        let mut v = acc;
        if self.combine == Combine::Mean {
            let f = if self.acc.is_float() { v } else { e.op1(&format!("cvt.rn.f64.{}", ty(self.acc)), Kind::F64, v) };
            let n = e.float(count as f64, DType::F64);
            let q = e.op2("div.rn.f64", Kind::F64, f, n);
            return e.cast(q, DType::F64, self.dtype);
        }
        if self.acc != self.dtype {
            v = e.cast(v, self.acc, self.dtype);
        }
        v
    }
}

/// Combines each lane's accumulators down to lane 0 of its warp.
pub(super) fn warp_reduce(e: &mut Emitter, accs: &[Acc], regs: &[R]) {
    for shift in [16, 8, 4, 2, 1] {
        for (a, &r) in accs.iter().zip(regs) {
            let other = if a.acc.size_bytes() == 8 {
                let (lo, hi) = (e.reg(Kind::B32), e.reg(Kind::B32));
                e.ins(format!("mov.b64 {{{lo}, {hi}}}, {r}"));
                let (lo2, hi2) = (e.reg(Kind::B32), e.reg(Kind::B32));
                e.ins(format!("shfl.sync.down.b32 {lo2}, {lo}, {shift}, 31, -1"));
                e.ins(format!("shfl.sync.down.b32 {hi2}, {hi}, {shift}, 31, -1"));
                let x = e.reg(Kind::of(a.acc));
                e.ins(format!("mov.b64 {x}, {{{lo2}, {hi2}}}"));
                x
            } else {
                let x = e.reg(Kind::of(a.acc));
                e.ins(format!("shfl.sync.down.b32 {x}, {r}, {shift}, 31, -1"));
                x
            };
            let c = a.combine(e, r, other);
            assign(e, r, c, a.acc);
        }
    }
}

pub(super) fn reduction(k: &Kernel, name: &str, dims: &[usize], strides: &[Vec<usize>]) -> Result<Lowered, String> {
    let r = k.reduce.as_ref().expect("a reduction kernel");
    let rank = dims.len();
    let kept: Vec<usize> = (0..rank).filter(|d| !r.axes.contains(d)).collect();
    let outs: usize = kept.iter().map(|&d| dims[d]).product();
    let count: usize = r.axes.iter().map(|&d| dims[d]).product();
    if count == 0 && matches!(r.combine, Combine::Max | Combine::Min) {
        return Err("reduction over an empty axis has no identity".into());
    }
    let total: usize = dims.iter().product();
    let ix = Ix::for_size(total.max(outs).max(count));
    let t = ix.t;
    let reduced: Vec<(usize, Acc)> = k
        .outputs
        .iter()
        .enumerate()
        .filter(|(_, o)| o.reduced)
        .map(|(i, _)| Ok((i, Acc::new(r.combine, k.output_dtype(i))?)))
        .collect::<Result<_, String>>()?;
    let accs: Vec<Acc> = reduced.iter().map(|(_, a)| *a).collect();
    // A thread per output reads coalesced when the innermost axis is kept
    // (a sum over the batch: neighbouring threads, neighbouring columns),
    // and there are outputs enough to fill the GPU.
    let innermost_kept = kept.last() == Some(&(rank - 1)) && rank > 0;
    let per_block = count > SERIAL_LIMIT && !(innermost_kept && outs >= COALESCED_OUTPUTS);
    // Few outputs of many elements each: several blocks per output.
    let parts = if per_block && outs < TWO_STAGE_OUTPUTS {
        TWO_STAGE_BLOCKS.div_ceil(outs.max(1)).min(count / MIN_PART).max(1)
    } else {
        1
    };
    let chunk = count.div_ceil(parts);
    let items = outs * parts;
    let params_count = k.inputs.len() + k.outputs.len() + usize::from(parts > 1);
    let mut e = Emitter::default();
    let (params, bases) = prologue(&mut e, name, params_count);
    let smem = format!("{name}_smem");
    if per_block {
        let bytes = (BLOCK as usize / 32) * accs.len().max(1) * 8;
        e.raw(format!(".shared .align 8 .b8 {smem}[{bytes}];"));
    }
    let (ctaid, ntid, tid, nctaid) =
        (special(&mut e, "ctaid.x"), special(&mut e, "ntid.x"), special(&mut e, "tid.x"), special(&mut e, "nctaid.x"));
    let (o, o_step) = if per_block {
        (widen(&mut e, ix, ctaid), widen(&mut e, ix, nctaid))
    } else {
        let start = e.reg(Kind::B32);
        e.ins(format!("mad.lo.u32 {start}, {ctaid}, {ntid}, {tid}"));
        let step = e.op2("mul.lo.u32", Kind::B32, nctaid, ntid);
        (widen(&mut e, ix, start), widen(&mut e, ix, step))
    };
    // A fresh register for o: the loop advances it in place.
    let o_reg = e.reg(ix.kind);
    e.ins(format!("mov.{t} {o_reg}, {o}"));
    let o = o_reg;
    let domain_strides = row_major(dims);
    let (top, done) = (e.label("outputs"), e.label("done"));
    e.place(&top);
    let finished = e.setp("ge", t, o, items);
    e.ins(format!("@{finished} bra {done}"));
    // Work item o_reg is part `part` of output `o`.
    let (o, part) = if parts > 1 {
        (e.op2(&format!("div.{t}"), ix.kind, o_reg, parts), Some(e.op2(&format!("rem.{t}"), ix.kind, o_reg, parts)))
    } else {
        (o_reg, None)
    };
    let kept_off: Vec<R> = strides.iter().map(|s| offset(&mut e, ix, o, &space(dims, &kept, s))).collect();
    let kept_dom = offset(&mut e, ix, o, &space(dims, &kept, &domain_strides));
    let acc_regs: Vec<R> = accs
        .iter()
        .map(|a| {
            let id = a.identity(&mut e);
            let reg = e.reg(Kind::of(a.acc));
            assign(&mut e, reg, id, a.acc);
            reg
        })
        .collect();
    let i = e.reg(ix.kind);
    let mut end = None;
    if per_block {
        let first = widen(&mut e, ix, tid);
        match part {
            Some(part) => {
                e.ins(format!("mad.lo.{t} {i}, {part}, {chunk}, {first}"));
                let stop = e.reg(ix.kind);
                e.ins(format!("mad.lo.{t} {stop}, {part}, {chunk}, {chunk}"));
                end = Some(e.op2(&format!("min.{t}"), ix.kind, stop, count));
            }
            None => e.ins(format!("mov.{t} {i}, {first}")),
        }
    } else {
        e.ins(format!("mov.{t} {i}, 0"));
    }
    let i_step = if per_block { widen(&mut e, ix, ntid) } else { int_reg(&mut e, ix, 1) };
    let (inner, inner_done) = (e.label("combine"), e.label("combined"));
    e.place(&inner);
    let end = match end {
        Some(stop) => e.setp("ge", t, i, stop),
        None => e.setp("ge", t, i, count),
    };
    e.ins(format!("@{end} bra {inner_done}"));
    let mut loaded = Vec::with_capacity(k.inputs.len());
    for (n, (spec, s)) in k.inputs.iter().zip(strides).enumerate() {
        let red = offset(&mut e, ix, i, &space(dims, &r.axes, s));
        let off = e.op2(&format!("add.{t}"), ix.kind, kept_off[n], red);
        let addr = address(&mut e, ix, bases[n], off, spec.dtype);
        loaded.push(load(&mut e, addr, spec.dtype));
    }
    let regs = body(&mut e, k, &loaded)?;
    let mut point: Option<R> = None;
    for (n, out) in k.outputs.iter().enumerate() {
        if out.reduced {
            continue;
        }
        let p = *point.get_or_insert_with(|| {
            let red = offset(&mut e, ix, i, &space(dims, &r.axes, &domain_strides));
            e.op2(&format!("add.{t}"), ix.kind, kept_dom, red)
        });
        let dtype = k.output_dtype(n);
        let addr = address(&mut e, ix, bases[k.inputs.len() + n], p, dtype);
        store(&mut e, addr, regs[out.value as usize], dtype);
    }
    for ((n, a), &acc) in reduced.iter().zip(&acc_regs) {
        let v = regs[k.outputs[*n].value as usize];
        let v = e.cast(v, a.dtype, a.acc);
        let c = a.combine(&mut e, acc, v);
        assign(&mut e, acc, c, a.acc);
    }
    e.ins(format!("add.{t} {i}, {i}, {i_step}"));
    e.ins(format!("bra {inner}"));
    e.place(&inner_done);
    let write = |e: &mut Emitter, acc_regs: &[R]| {
        for ((n, a), &acc) in reduced.iter().zip(acc_regs) {
            let v = a.finish(e, acc, count);
            let addr = address(e, ix, bases[k.inputs.len() + n], o, a.dtype);
            store(e, addr, v, a.dtype);
        }
    };
    if per_block {
        warp_reduce(&mut e, &accs, &acc_regs);
        let lane = e.op2("and.b32", Kind::B32, tid, 31);
        let warp = e.op2("shr.u32", Kind::B32, tid, 5);
        let not_lane0 = e.setp("ne", "u32", lane, 0);
        let skip = e.label("skip_share");
        e.ins(format!("@{not_lane0} bra {skip}"));
        let slots = accs.len() as u32;
        for (j, (a, &acc)) in accs.iter().zip(&acc_regs).enumerate() {
            let addr = shared_slot(&mut e, &smem, warp, slots, j);
            e.ins(format!("st.shared.{} [{addr}], {acc}", mov_ty(a.acc)));
        }
        e.place(&skip);
        e.ins("bar.sync 0");
        let not_warp0 = e.setp("ne", "u32", warp, 0);
        let after = e.label("after_block");
        e.ins(format!("@{not_warp0} bra {after}"));
        let warps = BLOCK / 32;
        let in_range = e.setp("lt", "u32", lane, warps);
        for (j, (a, &acc)) in accs.iter().zip(&acc_regs).enumerate() {
            let id = a.identity(&mut e);
            assign(&mut e, acc, id, a.acc);
            let addr = shared_slot(&mut e, &smem, lane, slots, j);
            e.ins(format!("@{in_range} ld.shared.{} {acc}, [{addr}]", mov_ty(a.acc)));
        }
        warp_reduce(&mut e, &accs, &acc_regs);
        let not_lane0 = e.setp("ne", "u32", lane, 0);
        e.ins(format!("@{not_lane0} bra {after}"));
        if parts > 1 {
            // The part's accumulators, raw, into 8-byte slots of the scratch.
            for (j, (a, &acc)) in accs.iter().zip(&acc_regs).enumerate() {
                let slot = e.op2(&format!("add.{t}"), ix.kind, o_reg, j * items);
                let addr = address(&mut e, ix, bases[params_count - 1], slot, DType::F64);
                e.ins(format!("st.global.{} [{addr}], {acc}", mov_ty(a.acc)));
            }
        } else {
            write(&mut e, &acc_regs);
        }
        e.place(&after);
        e.ins("bar.sync 0");
    } else {
        write(&mut e, &acc_regs);
    }
    e.ins(format!("add.{t} {o_reg}, {o_reg}, {o_step}"));
    e.ins(format!("bra {top}"));
    e.place(&done);
    e.ins("ret");
    let grid = if per_block { items.clamp(1, MAX_GRID) as u32 } else { blocks(outs, BLOCK as usize) };
    let mut text = entry(name, &params, e.finish());
    let (shape, finish, scratch) = if parts > 1 {
        let stage = format!("{name}_parts");
        text.push('\n');
        text.push_str(&combine_parts(&stage, params_count, k.inputs.len(), &reduced, outs, parts, count));
        let finish = Stage { name: stage, grid: blocks(outs, BLOCK as usize), block: BLOCK };
        ("reduction, several blocks per output", Some(finish), accs.len() * items * 8)
    } else if per_block {
        ("reduction, a block per output", None, 0)
    } else {
        ("reduction, a thread per output", None, 0)
    };
    Ok(Lowered { name: name.to_string(), text, grid, block: BLOCK, shape, finish, scratch })
}

/// The second stage of a two-stage reduction: a thread per output combines
/// its `parts` partial accumulators (in the last parameter, 8-byte slots,
/// accumulator by accumulator) in order and writes the output.
pub(super) fn combine_parts(
    name: &str,
    params_count: usize,
    inputs: usize,
    reduced: &[(usize, Acc)],
    outs: usize,
    parts: usize,
    count: usize,
) -> String {
    let items = outs * parts;
    let ix = Ix::for_size(items * reduced.len().max(1));
    let t = ix.t;
    let mut e = Emitter::default();
    let (params, bases) = prologue(&mut e, name, params_count);
    let lp = GridLoop::open(&mut e, ix, outs);
    let o = lp.idx;
    let first = e.op2(&format!("mul.lo.{t}"), ix.kind, o, parts);
    for (j, (n, a)) in reduced.iter().enumerate() {
        let id = a.identity(&mut e);
        let acc = e.reg(Kind::of(a.acc));
        assign(&mut e, acc, id, a.acc);
        let p = e.reg(ix.kind);
        e.ins(format!("mov.{t} {p}, 0"));
        let (top, done) = (e.label("parts"), e.label("parts_done"));
        e.place(&top);
        let end = e.setp("ge", t, p, parts);
        e.ins(format!("@{end} bra {done}"));
        let slot = e.op2(&format!("add.{t}"), ix.kind, first, p);
        let slot = e.op2(&format!("add.{t}"), ix.kind, slot, j * items);
        let addr = address(&mut e, ix, bases[params_count - 1], slot, DType::F64);
        let v = e.reg(Kind::of(a.acc));
        e.ins(format!("ld.global.{} {v}, [{addr}]", mov_ty(a.acc)));
        let c = a.combine(&mut e, acc, v);
        assign(&mut e, acc, c, a.acc);
        e.ins(format!("add.{t} {p}, {p}, 1"));
        e.ins(format!("bra {top}"));
        e.place(&done);
        let v = a.finish(&mut e, acc, count);
        let addr = address(&mut e, ix, bases[inputs + n], o, a.dtype);
        store(&mut e, addr, v, a.dtype);
    }
    lp.close(&mut e);
    entry(name, &params, e.finish())
}

/// The shared-memory address of accumulator `j` of warp `warp` (8 bytes
/// each, `slots` per warp).
pub(super) fn shared_slot(e: &mut Emitter, smem: &str, warp: R, slots: u32, j: usize) -> R {
    let slot = e.reg(Kind::B32);
    e.ins(format!("mad.lo.u32 {slot}, {warp}, {}, {}", slots * 8, j * 8));
    let wide = e.op1("cvt.u64.u32", Kind::B64, slot);
    let base = e.reg(Kind::B64);
    e.ins(format!("mov.u64 {base}, {smem}"));
    e.op2("add.s64", Kind::B64, base, wide)
}
