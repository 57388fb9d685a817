//! Running a decoded entry: blocks one after another, each block's warps
//! in turn, each warp's lanes in lock-step on the lowest program counter
//! among them (so lanes that branched apart meet again where their paths
//! join, as on the hardware). A warp stops at `bar.sync` until every
//! warp of its block has arrived; `shfl.sync` with a full mask requires
//! the whole warp to be there.
//!
//! The emulator is stricter than a GPU where a GPU would be silently
//! wrong: reading a register nothing wrote, a global access outside every
//! allocation or not aligned to its size, a shared access outside the
//! block's array, a barrier or shuffle reached by part of a warp, and an
//! endless loop are errors naming the instruction.

use super::Memory;
use super::parse::{Bin, Cmp, Entry, Inst, Op, Rnd, Special, Src, Ty, Un};

/// Warp-instructions one launch may execute before it is called endless.
const BUDGET: u64 = 2_000_000_000;
const WARP: usize = 32;

/// The bits of `v` that type `t` keeps.
fn trunc(t: Ty, v: u64) -> u64 {
    match t.bits() {
        1 => v & 1,
        8 => v & 0xff,
        32 => v & 0xffff_ffff,
        _ => v,
    }
}

/// `v` of type `t` as a signed or unsigned 64-bit integer.
fn int(t: Ty, v: u64) -> i128 {
    match (t.bits(), t.signed()) {
        (32, true) => v as u32 as i32 as i128,
        (64, true) => v as i64 as i128,
        _ => trunc(t, v) as i128,
    }
}

fn f32_of(v: u64) -> f32 {
    f32::from_bits(v as u32)
}

fn f64_of(v: u64) -> f64 {
    f64::from_bits(v)
}

/// A float operation on values of `t`, in that width.
fn float2(t: Ty, a: u64, b: u64, f32op: fn(f32, f32) -> f32, f64op: fn(f64, f64) -> f64) -> u64 {
    match t {
        Ty::F32 => f32op(f32_of(a), f32_of(b)).to_bits() as u64,
        _ => f64op(f64_of(a), f64_of(b)).to_bits(),
    }
}

fn float1(t: Ty, a: u64, f32op: fn(f32) -> f32, f64op: fn(f64) -> f64) -> u64 {
    match t {
        Ty::F32 => f32op(f32_of(a)).to_bits() as u64,
        _ => f64op(f64_of(a)).to_bits(),
    }
}

fn as_f64(t: Ty, v: u64) -> f64 {
    if t == Ty::F32 { f32_of(v) as f64 } else { f64_of(v) }
}

fn binary(op: Bin, t: Ty, a: u64, b: u64) -> Result<u64, String> {
    if t.float() {
        return Ok(match op {
            Bin::Add => float2(t, a, b, |x, y| x + y, |x, y| x + y),
            Bin::Sub => float2(t, a, b, |x, y| x - y, |x, y| x - y),
            Bin::Mul => float2(t, a, b, |x, y| x * y, |x, y| x * y),
            Bin::Div => float2(t, a, b, |x, y| x / y, |x, y| x / y),
            _ => return Err(format!("{op:?} on {t:?} is not emulated")),
        });
    }
    if t == Ty::Pred {
        return Ok(match op {
            Bin::And => a & b & 1,
            Bin::Or => (a | b) & 1,
            Bin::Xor => (a ^ b) & 1,
            _ => return Err(format!("{op:?} on predicates is not emulated")),
        });
    }
    let (x, y) = (int(t, a), int(t, b));
    let bits = t.bits();
    let v: i128 = match op {
        Bin::Add => x.wrapping_add(y),
        Bin::Sub => x.wrapping_sub(y),
        Bin::Mul => x.wrapping_mul(y),
        Bin::MulWide => return Ok((x * y) as u64),
        Bin::Div | Bin::Rem if y == 0 => return Err("integer division by zero".into()),
        Bin::Div => x / y,
        Bin::Rem => x % y,
        Bin::And => x & y,
        Bin::Or => x | y,
        Bin::Xor => x ^ y,
        // Shift amounts past the width give 0 (or the sign, shifting right).
        Bin::Shl => {
            if (b as u32) >= bits {
                0
            } else {
                x << (b as u32)
            }
        }
        Bin::Shr => x >> (b as u32).min(bits - 1 + u32::from(!t.signed())),
        Bin::Min => x.min(y),
        Bin::Max => x.max(y),
    };
    Ok(trunc(t, v as u64))
}

fn unary(op: Un, t: Ty, a: u64) -> Result<u64, String> {
    Ok(match (op, t.float()) {
        (Un::Neg, true) => float1(t, a, |x| -x, |x| -x),
        (Un::Abs, true) => float1(t, a, f32::abs, f64::abs),
        (Un::Sqrt, true) => float1(t, a, f32::sqrt, f64::sqrt),
        (Un::Rcp, true) => float1(t, a, |x| 1.0 / x, |x| 1.0 / x),
        (Un::Neg, false) => trunc(t, int(t, a).wrapping_neg() as u64),
        (Un::Abs, false) => trunc(t, int(t, a).unsigned_abs() as u64),
        (Un::Not, false) => trunc(t, !a),
        _ => return Err(format!("{op:?} on {t:?} is not emulated")),
    })
}

fn compare(cmp: Cmp, t: Ty, a: u64, b: u64) -> bool {
    if t.float() {
        let (x, y) = (as_f64(t, a), as_f64(t, b));
        let unordered = x.is_nan() || y.is_nan();
        return match cmp {
            Cmp::Eq => x == y,
            Cmp::Ne => !unordered && x != y,
            Cmp::Lt => x < y,
            Cmp::Le => x <= y,
            Cmp::Gt => x > y,
            Cmp::Ge => x >= y,
            Cmp::Equ => unordered || x == y,
            Cmp::Neu => x != y,
            Cmp::Ltu => unordered || x < y,
            Cmp::Leu => unordered || x <= y,
            Cmp::Gtu => unordered || x > y,
            Cmp::Geu => unordered || x >= y,
            Cmp::Num => !unordered,
            Cmp::Nan => unordered,
        };
    }
    let (x, y) = (int(t, a), int(t, b));
    match cmp {
        Cmp::Eq | Cmp::Equ => x == y,
        Cmp::Ne | Cmp::Neu => x != y,
        Cmp::Lt | Cmp::Ltu => x < y,
        Cmp::Le | Cmp::Leu => x <= y,
        Cmp::Gt | Cmp::Gtu => x > y,
        Cmp::Ge | Cmp::Geu => x >= y,
        Cmp::Num => true,
        Cmp::Nan => false,
    }
}

/// `cvt`, as the PTX ISA defines it: float-to-integer conversions saturate;
/// NaN becomes 0 only from `f32` to a 32-bit integer (the hardware's rule,
/// which rhea's lowering relies on there and guards against elsewhere).
fn convert(to: Ty, from: Ty, rnd: Rnd, v: u64) -> Result<u64, String> {
    let round = |x: f64| match rnd {
        Rnd::Rni => Ok(x.round_ties_even()),
        Rnd::Rzi => Ok(x.trunc()),
        Rnd::Rmi => Ok(x.floor()),
        Rnd::Rpi => Ok(x.ceil()),
        _ => Err(format!("cvt.{to:?}.{from:?} needs an integral rounding")),
    };
    match (from.float(), to.float()) {
        (true, true) if from == to => {
            let x = round(as_f64(from, v))?;
            Ok(if to == Ty::F32 { (x as f32).to_bits() as u64 } else { x.to_bits() })
        }
        (true, true) if to == Ty::F64 => Ok((f32_of(v) as f64).to_bits()),
        (true, true) if rnd == Rnd::Rn => Ok((f64_of(v) as f32).to_bits() as u64),
        (true, true) => Err("a narrowing float cvt needs .rn".into()),
        (true, false) => {
            let x = as_f64(from, v);
            if x.is_nan() {
                let zero = from == Ty::F32 && to.bits() == 32;
                return Ok(if zero || !to.signed() { 0 } else { trunc(to, 1u64 << (to.bits() - 1)) });
            }
            let x = round(x)?;
            let v = match (to.bits(), to.signed()) {
                (32, true) => x as i32 as u32 as u64,
                (32, false) => x as u32 as u64,
                (64, true) => x as i64 as u64,
                _ => x as u64,
            };
            Ok(v)
        }
        (false, true) => {
            if rnd != Rnd::Rn {
                return Err("an integer-to-float cvt needs .rn".into());
            }
            let x = int(from, v);
            Ok(if to == Ty::F32 { (x as f32).to_bits() as u64 } else { (x as f64).to_bits() })
        }
        (false, false) => Ok(trunc(to, int(from, v) as u64)),
    }
}

/// Where one thread is.
struct Lane {
    pc: usize,
    done: bool,
}

/// Where a warp stopped.
enum Stop {
    Barrier,
    Done,
}

struct Block<'a> {
    entry: &'a Entry,
    params: &'a [u64],
    nregs: usize,
    regs: Vec<u64>,
    written: Vec<bool>,
    shared: Vec<u8>,
    /// Per shared byte since the last barrier: the warp that wrote it (+1;
    /// 0 for none) and a mask of the warps that read it.
    writer: Vec<u8>,
    readers: Vec<u32>,
    /// The warp running now.
    warp: usize,
    lanes: Vec<Lane>,
    ctaid: u32,
    grid: u32,
    block: u32,
    budget: u64,
}

impl Block<'_> {
    fn get(&self, lane: usize, r: u32) -> Result<u64, String> {
        let i = lane * self.nregs + r as usize;
        if !self.written[i] {
            return Err(format!("thread {lane} reads {} before anything wrote it", self.entry.regs[r as usize]));
        }
        Ok(self.regs[i])
    }

    fn set(&mut self, lane: usize, r: u32, v: u64) {
        let i = lane * self.nregs + r as usize;
        self.regs[i] = v;
        self.written[i] = true;
    }

    fn src(&self, lane: usize, s: &Src, t: Ty) -> Result<u64, String> {
        Ok(match s {
            Src::Reg(r) => self.get(lane, *r)?,
            Src::Imm(v) => trunc(t, *v),
            Src::Special(Special::Tid) => lane as u64,
            Src::Special(Special::Ntid) => self.block as u64,
            Src::Special(Special::Ctaid) => self.ctaid as u64,
            Src::Special(Special::Nctaid) => self.grid as u64,
            Src::Shared(at) => *at,
            Src::Pack(regs) => {
                let width = 64 / regs.len() as u32;
                let mut v = 0u64;
                for (i, r) in regs.iter().enumerate() {
                    v |= (self.get(lane, *r)? & ((1u64 << width) - 1)) << (width * i as u32);
                }
                v
            }
        })
    }

    fn operand(&self, lane: usize, inst: &Inst, i: usize, t: Ty) -> Result<u64, String> {
        self.src(lane, inst.src.get(i).ok_or("too few operands")?, t)
    }

    fn address(&self, lane: usize, inst: &Inst) -> Result<u64, String> {
        let (base, off) = inst.addr.ok_or("no address")?;
        let b = match base {
            Some(r) => self.get(lane, r)?,
            None => 0,
        };
        Ok(b.wrapping_add(off as u64))
    }

    fn shared_range(&self, at: u64, len: usize) -> Result<std::ops::Range<usize>, String> {
        let at = at as usize;
        if !at.is_multiple_of(len) || at + len > self.shared.len() {
            return Err(format!("shared access of {len} bytes at {at} (the block has {} bytes)", self.shared.len()));
        }
        Ok(at..at + len)
    }

    /// Records a shared access by the running warp; an access that another
    /// warp's access since the last barrier conflicts with is a race.
    fn track(&mut self, r: std::ops::Range<usize>, write: bool) -> Result<(), String> {
        let me = self.warp;
        for i in r {
            let w = self.writer[i] as usize;
            if w != 0 && w - 1 != me {
                return Err(format!("a race: shared byte {i} was written by warp {} with no barrier since", w - 1));
            }
            if write {
                if self.readers[i] & !(1 << me) != 0 {
                    return Err(format!("a race: shared byte {i} was read by another warp with no barrier since"));
                }
                self.writer[i] = me as u8 + 1;
            } else {
                self.readers[i] |= 1 << me;
            }
        }
        Ok(())
    }

    /// Runs `inst` on one lane (its guard already true); the next pc.
    fn step(&mut self, lane: usize, pc: usize, inst: &Inst, mem: &mut Memory) -> Result<Option<usize>, String> {
        let dst = |k: usize| inst.dst.get(k).copied().ok_or_else(|| "missing destination".to_string());
        match &inst.op {
            Op::Mov(t) => {
                let v = self.operand(lane, inst, 0, *t)?;
                if inst.dst.len() > 1 {
                    // Unpacking into halves, low first.
                    let width = 64 / inst.dst.len() as u32;
                    for (i, &r) in inst.dst.iter().enumerate() {
                        self.set(lane, r, (v >> (width * i as u32)) & ((1u64 << width) - 1));
                    }
                } else {
                    self.set(lane, dst(0)?, trunc(*t, v));
                }
            }
            Op::LdParam(i) => {
                let v = *self.params.get(*i).ok_or("the launch passes too few parameters")?;
                self.set(lane, dst(0)?, v);
            }
            Op::Cvta => {
                let v = self.operand(lane, inst, 0, Ty::U64)?;
                self.set(lane, dst(0)?, v);
            }
            Op::Un(op, t) => {
                let v = self.operand(lane, inst, 0, *t)?;
                self.set(lane, dst(0)?, unary(*op, *t, v)?);
            }
            Op::Bin(op, t) => {
                let a = self.operand(lane, inst, 0, *t)?;
                // Shift amounts are u32 whatever the type.
                let b = self.operand(lane, inst, 1, if matches!(op, Bin::Shl | Bin::Shr) { Ty::U32 } else { *t })?;
                self.set(lane, dst(0)?, binary(*op, *t, a, b)?);
            }
            Op::Mad(t) => {
                let (a, b, c) = (
                    self.operand(lane, inst, 0, *t)?,
                    self.operand(lane, inst, 1, *t)?,
                    self.operand(lane, inst, 2, *t)?,
                );
                let v = binary(Bin::Add, *t, binary(Bin::Mul, *t, a, b)?, c)?;
                self.set(lane, dst(0)?, v);
            }
            Op::Setp(cmp, t) => {
                let (a, b) = (self.operand(lane, inst, 0, *t)?, self.operand(lane, inst, 1, *t)?);
                self.set(lane, dst(0)?, compare(*cmp, *t, a, b) as u64);
            }
            Op::Selp(t) => {
                let p = self.operand(lane, inst, 2, Ty::Pred)?;
                let v = self.operand(lane, inst, if p & 1 == 1 { 0 } else { 1 }, *t)?;
                self.set(lane, dst(0)?, v);
            }
            Op::Cvt { to, from, rnd } => {
                let v = self.operand(lane, inst, 0, *from)?;
                self.set(lane, dst(0)?, convert(*to, *from, *rnd, v)?);
            }
            Op::Ld { shared, ty, n } => {
                // One access for all `n` values (a `.v4` load is one 16-byte access).
                let (at, size) = (self.address(lane, inst)?, ty.bytes());
                let len = size * n;
                let mut raw = [0u8; 32];
                if *shared {
                    let r = self.shared_range(at, len)?;
                    self.track(r.clone(), false)?;
                    raw[..len].copy_from_slice(&self.shared[r]);
                } else {
                    mem.check_alignment(at, len)?;
                    raw[..len].copy_from_slice(mem.read(at, len)?);
                }
                for (k, bytes) in raw[..len].chunks_exact(size).enumerate() {
                    let mut v = [0u8; 8];
                    v[..size].copy_from_slice(bytes);
                    self.set(lane, dst(k)?, u64::from_le_bytes(v));
                }
            }
            Op::St { shared, ty, n } => {
                let (at, size) = (self.address(lane, inst)?, ty.bytes());
                let values: Vec<u64> = match inst.src.first() {
                    Some(Src::Pack(regs)) if *n > 1 => {
                        regs.iter().map(|&r| self.get(lane, r)).collect::<Result<_, _>>()?
                    }
                    _ => vec![self.operand(lane, inst, 0, *ty)?],
                };
                if values.len() != *n {
                    return Err(format!("a store of {n} values names {}", values.len()));
                }
                let len = size * n;
                let mut raw = [0u8; 32];
                for (k, v) in values.iter().enumerate() {
                    raw[k * size..(k + 1) * size].copy_from_slice(&v.to_le_bytes()[..size]);
                }
                if *shared {
                    let r = self.shared_range(at, len)?;
                    self.track(r.clone(), true)?;
                    self.shared[r].copy_from_slice(&raw[..len]);
                } else {
                    mem.check_alignment(at, len)?;
                    mem.write(at, &raw[..len])?;
                }
            }
            Op::Bra(target) => return Ok(Some(*target)),
            Op::Ret => return Ok(None),
            Op::ShflDown | Op::Bar => unreachable!("warp-wide instructions run in run_warp"),
        }
        Ok(Some(pc + 1))
    }

    fn guard(&self, lane: usize, inst: &Inst) -> Result<bool, String> {
        Ok(match inst.guard {
            None => true,
            Some((p, neg)) => (self.get(lane, p)? & 1 == 1) != neg,
        })
    }

    /// Runs warp `w` until it reaches a barrier or all its lanes return.
    fn run_warp(&mut self, w: usize, mem: &mut Memory) -> Result<Stop, String> {
        let lanes = w * WARP..((w + 1) * WARP).min(self.block as usize);
        loop {
            let live: Vec<usize> = lanes.clone().filter(|&l| !self.lanes[l].done).collect();
            let Some(pc) = live.iter().map(|&l| self.lanes[l].pc).min() else {
                return Ok(Stop::Done);
            };
            if self.budget == 0 {
                return Err(format!("more than {BUDGET} warp-instructions: an endless loop?"));
            }
            self.budget -= 1;
            let entry = self.entry;
            let inst = entry.insts.get(pc).ok_or("ran past the last instruction without ret")?;
            let here: Vec<usize> = live.iter().copied().filter(|&l| self.lanes[l].pc == pc).collect();
            let whole = here.len() == live.len();
            let at = |e: String| format!("`{}`: {e}", inst.text);
            match inst.op {
                Op::Bar => {
                    if !whole || inst.guard.is_some() {
                        return Err(at("a barrier reached by part of a warp".into()));
                    }
                    for &l in &here {
                        self.lanes[l].pc = pc + 1;
                    }
                    return Ok(Stop::Barrier);
                }
                Op::ShflDown => {
                    if here.len() != lanes.len() || inst.guard.is_some() {
                        return Err(at(format!(
                            "shfl.sync with a full mask reached by {} of the warp's {} lanes",
                            here.len(),
                            lanes.len()
                        )));
                    }
                    let values: Vec<u64> = here
                        .iter()
                        .map(|&l| self.operand(l, inst, 0, Ty::B32))
                        .collect::<Result<_, _>>()
                        .map_err(at)?;
                    for (i, &l) in here.iter().enumerate() {
                        let delta = self.operand(l, inst, 1, Ty::U32).map_err(at)? as usize;
                        let clamp = self.operand(l, inst, 2, Ty::U32).map_err(at)? as usize;
                        let mask = self.operand(l, inst, 3, Ty::B32).map_err(at)?;
                        if mask != 0xffff_ffff || clamp != 31 {
                            return Err(at("only full-mask shuffles over the whole warp are emulated".into()));
                        }
                        let j = if i % WARP + delta > 31 || i + delta >= values.len() { i } else { i + delta };
                        let d = inst.dst.first().copied().ok_or_else(|| at("missing destination".into()))?;
                        self.set(l, d, values[j]);
                        self.lanes[l].pc = pc + 1;
                    }
                }
                _ => {
                    for l in here {
                        let next = if self.guard(l, inst).map_err(at)? {
                            self.step(l, pc, inst, mem).map_err(at)?
                        } else {
                            Some(pc + 1)
                        };
                        match next {
                            Some(n) => self.lanes[l].pc = n,
                            None => self.lanes[l].done = true,
                        }
                    }
                }
            }
        }
    }
}

/// Runs `entry` over a `grid` of `block`-thread blocks.
pub(crate) fn launch(entry: &Entry, grid: u32, block: u32, params: &[u64], mem: &mut Memory) -> Result<(), String> {
    if params.len() != entry.params {
        return Err(format!("the entry takes {} parameters, the launch passes {}", entry.params, params.len()));
    }
    if block == 0 || block > 1024 || grid == 0 {
        return Err(format!("cannot launch {grid} blocks of {block} threads"));
    }
    let nregs = entry.regs.len();
    let threads = block as usize;
    let mut b = Block {
        entry,
        params,
        nregs,
        regs: vec![0; nregs * threads],
        written: vec![false; nregs * threads],
        shared: vec![0; entry.shared_bytes],
        writer: vec![0; entry.shared_bytes],
        readers: vec![0; entry.shared_bytes],
        warp: 0,
        lanes: Vec::new(),
        ctaid: 0,
        grid,
        block,
        budget: BUDGET,
    };
    let warps = threads.div_ceil(WARP);
    // Blocks run last to first and warps likewise: any order is legal, and
    // one unlike the hardware's usual order shows a dependence on order.
    for ctaid in (0..grid).rev() {
        b.ctaid = ctaid;
        b.written.fill(false);
        b.shared.fill(0xA5);
        b.lanes = (0..threads).map(|_| Lane { pc: 0, done: false }).collect();
        loop {
            // What happened before a barrier is ordered before what follows it.
            b.writer.fill(0);
            b.readers.fill(0);
            let mut waiting = 0;
            for w in (0..warps).rev() {
                b.warp = w;
                if let Stop::Barrier = b.run_warp(w, mem).map_err(|e| format!("block {ctaid}, warp {w}: {e}"))? {
                    waiting += 1;
                }
            }
            if waiting == 0 {
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_follow_the_ptx_rules() {
        let nan32 = f32::NAN.to_bits() as u64;
        assert_eq!(convert(Ty::S32, Ty::F32, Rnd::Rzi, nan32).unwrap(), 0);
        assert_eq!(convert(Ty::S64, Ty::F32, Rnd::Rzi, nan32).unwrap(), 1 << 63);
        assert_eq!(convert(Ty::S32, Ty::F32, Rnd::Rzi, (-2.7f32).to_bits() as u64).unwrap(), (-2i32) as u32 as u64);
        assert_eq!(convert(Ty::S32, Ty::F64, Rnd::Rzi, 1e20f64.to_bits()).unwrap(), i32::MAX as u64);
        assert_eq!(convert(Ty::F32, Ty::F32, Rnd::Rni, 2.5f32.to_bits() as u64).unwrap(), 2f32.to_bits() as u64);
        assert_eq!(convert(Ty::S64, Ty::S32, Rnd::None, (-1i32) as u32 as u64).unwrap(), u64::MAX);
        assert_eq!(convert(Ty::U32, Ty::U64, Rnd::None, u64::MAX).unwrap(), 0xffff_ffff);
    }

    #[test]
    fn integer_arithmetic_wraps_at_its_width() {
        assert_eq!(binary(Bin::Add, Ty::U32, 0xffff_ffff, 1).unwrap(), 0);
        assert_eq!(binary(Bin::MulWide, Ty::U32, 0xffff_ffff, 2).unwrap(), 0x1_ffff_fffe);
        assert_eq!(binary(Bin::Shr, Ty::S32, (-8i32) as u32 as u64, 1).unwrap(), (-4i32) as u32 as u64);
        assert_eq!(binary(Bin::Shr, Ty::U32, 0x8000_0000, 31).unwrap(), 1);
        assert_eq!(binary(Bin::Max, Ty::S64, (-1i64) as u64, 0).unwrap(), 0);
        assert!(binary(Bin::Div, Ty::U32, 1, 0).is_err());
    }
}
