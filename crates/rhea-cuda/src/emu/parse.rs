//! PTX text to decoded instructions: every operand resolved to a register
//! index, an immediate's bits, a special register, a parameter or a
//! shared-memory offset, and every branch to an instruction index. What
//! the emulator does not know is an error naming the line, never a guess.

use std::collections::HashMap;

/// A PTX type as an instruction names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Pred,
    U8,
    U32,
    S32,
    B32,
    U64,
    S64,
    B64,
    F32,
    F64,
}

impl Ty {
    fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "pred" => Ty::Pred,
            "u8" | "b8" => Ty::U8,
            "u32" => Ty::U32,
            "s32" => Ty::S32,
            "b32" => Ty::B32,
            "u64" => Ty::U64,
            "s64" => Ty::S64,
            "b64" => Ty::B64,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            _ => return None,
        })
    }

    /// Width in bits (1 for predicates).
    pub fn bits(self) -> u32 {
        match self {
            Ty::Pred => 1,
            Ty::U8 => 8,
            Ty::U32 | Ty::S32 | Ty::B32 | Ty::F32 => 32,
            Ty::U64 | Ty::S64 | Ty::B64 | Ty::F64 => 64,
        }
    }

    pub fn bytes(self) -> usize {
        (self.bits() as usize).div_ceil(8)
    }

    pub fn signed(self) -> bool {
        matches!(self, Ty::S32 | Ty::S64)
    }

    pub fn float(self) -> bool {
        matches!(self, Ty::F32 | Ty::F64)
    }
}

/// `%tid.x` and its kin (the x dimension only: rhea launches 1-d grids).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    Tid,
    Ntid,
    Ctaid,
    Nctaid,
}

/// A source operand.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Src {
    Reg(u32),
    /// An immediate's bits (an integer as two's complement, a float as
    /// written with `0f`/`0d`).
    Imm(u64),
    Special(Special),
    /// A shared array's address (its offset in the block's shared memory).
    Shared(u64),
    /// `{a, b}`: registers packed into one value, low first.
    Pack(Vec<u32>),
}

/// Float and integer comparisons of `setp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// The unordered variants: true when either side is NaN.
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

/// The rounding a `cvt` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rnd {
    None,
    /// To nearest, to float.
    Rn,
    /// To an integral value: nearest even, toward zero, down, up.
    Rni,
    Rzi,
    Rmi,
    Rpi,
}

/// Two-operand arithmetic and logic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bin {
    Add,
    Sub,
    /// `mul.lo` for integers, `mul.rn` for floats.
    Mul,
    /// `mul.wide`: the full product in a value twice as wide.
    MulWide,
    Div,
    Rem,
    And,
    Or,
    Xor,
    Shl,
    Shr,
    Min,
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Un {
    Neg,
    Abs,
    Not,
    Sqrt,
    Rcp,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    Mov(Ty),
    LdParam(usize),
    Cvta,
    Un(Un, Ty),
    Bin(Bin, Ty),
    /// `mad.lo`: `a * b + c`, low half.
    Mad(Ty),
    Setp(Cmp, Ty),
    Selp(Ty),
    Cvt {
        to: Ty,
        from: Ty,
        rnd: Rnd,
    },
    /// A load of `n` values (`.v4`: 4) from global or shared memory.
    Ld {
        shared: bool,
        ty: Ty,
        n: usize,
    },
    St {
        shared: bool,
        ty: Ty,
        n: usize,
    },
    /// `shfl.sync.down.b32 d, a, delta, clamp, mask`.
    ShflDown,
    Bar,
    Bra(usize),
    Ret,
}

/// One decoded instruction.
#[derive(Clone, Debug)]
pub(crate) struct Inst {
    /// Executed only where this predicate register is true (false when negated).
    pub guard: Option<(u32, bool)>,
    pub op: Op,
    /// Registers written (several for a vector load or an unpacking `mov`).
    pub dst: Vec<u32>,
    pub src: Vec<Src>,
    /// A memory operand: base register (or none) and byte offset.
    pub addr: Option<(Option<u32>, i64)>,
    /// The source text, for errors.
    pub text: String,
}

/// One `.entry`.
#[derive(Debug)]
pub(crate) struct Entry {
    pub insts: Vec<Inst>,
    /// Registers used, by name (index = position).
    pub regs: Vec<String>,
    pub params: usize,
    pub shared_bytes: usize,
}

/// Every entry of a module, by name.
pub(crate) fn parse_module(text: &str) -> Result<HashMap<String, Entry>, String> {
    let mut entries = HashMap::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix(".visible .entry ").or_else(|| line.strip_prefix(".entry ")) else {
            continue;
        };
        let name = rest.trim_end_matches('(').trim().to_string();
        let mut params = Vec::new();
        for (_, l) in lines.by_ref() {
            let l = l.trim();
            if l.starts_with(')') {
                break;
            }
            let p =
                l.trim_end_matches(',').split_whitespace().last().ok_or(format!("line {}: bad parameter", n + 1))?;
            params.push(p.to_string());
        }
        let mut body = Vec::new();
        for (m, l) in lines.by_ref() {
            let l = l.trim();
            if l == "{" {
                continue;
            }
            if l == "}" {
                break;
            }
            body.push((m + 1, l));
        }
        let entry = parse_entry(&params, &body).map_err(|e| format!("entry {name}: {e}"))?;
        entries.insert(name, entry);
    }
    if entries.is_empty() {
        return Err("the module has no .entry".into());
    }
    Ok(entries)
}

struct Names<'a> {
    regs: HashMap<String, u32>,
    order: Vec<String>,
    params: &'a [String],
    shared: HashMap<String, u64>,
}

impl Names<'_> {
    fn reg(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.regs.get(name) {
            return i;
        }
        let i = self.order.len() as u32;
        self.regs.insert(name.to_string(), i);
        self.order.push(name.to_string());
        i
    }
}

fn parse_entry(params: &[String], body: &[(usize, &str)]) -> Result<Entry, String> {
    let mut names = Names { regs: HashMap::new(), order: Vec::new(), params, shared: HashMap::new() };
    let mut shared_bytes = 0usize;
    let mut labels: HashMap<&str, usize> = HashMap::new();
    let mut raw: Vec<(usize, &str)> = Vec::new();
    for &(n, l) in body {
        if l.is_empty() || l.starts_with("//") || l.starts_with(".reg") {
            continue;
        }
        if let Some(decl) = l.strip_prefix(".shared") {
            // `.shared .align 8 .b8 name[bytes];`
            let decl = decl.trim_end_matches(';');
            let last = decl.split_whitespace().last().ok_or(format!("line {n}: bad .shared"))?;
            let (sym, bytes) = last.split_once('[').ok_or(format!("line {n}: bad .shared"))?;
            let bytes: usize = bytes.trim_end_matches(']').parse().map_err(|_| format!("line {n}: bad .shared"))?;
            shared_bytes = shared_bytes.div_ceil(16) * 16;
            names.shared.insert(sym.to_string(), shared_bytes as u64);
            shared_bytes += bytes;
        } else if let Some(label) = l.strip_suffix(':') {
            labels.insert(label, raw.len());
        } else {
            raw.push((n, l.strip_suffix(';').ok_or(format!("line {n}: `{l}` does not end in ;"))?));
        }
    }
    let insts = raw
        .iter()
        .map(|&(n, text)| parse_inst(text, &mut names, &labels).map_err(|e| format!("line {n} `{text}`: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Entry { insts, regs: names.order, params: params.len(), shared_bytes })
}

/// Splits operands at top-level commas (not inside `{}` or `[]`).
fn operands(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if !s[start..].trim().is_empty() {
        out.push(s[start..].trim());
    }
    out
}

fn parse_inst(text: &str, names: &mut Names, labels: &HashMap<&str, usize>) -> Result<Inst, String> {
    let mut rest = text.trim();
    let mut guard = None;
    if let Some(g) = rest.strip_prefix('@') {
        let (p, r) = g.split_once(char::is_whitespace).ok_or("a guard without an instruction")?;
        let (neg, p) = match p.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, p),
        };
        guard = Some((names.reg(p), neg));
        rest = r.trim();
    }
    let (opcode, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let args = operands(args);
    let parts: Vec<&str> = opcode.split('.').collect();
    let tys: Vec<Ty> = parts.iter().filter_map(|p| Ty::parse(p)).collect();
    let last_ty = || tys.last().copied().ok_or(format!("`{opcode}` names no type"));
    let has = |m: &str| parts.contains(&m);
    let op = match parts[0] {
        "mov" => Op::Mov(last_ty()?),
        "ld" if has("param") => {
            let sym = args.get(1).ok_or("ld.param needs an address")?.trim_matches(|c| c == '[' || c == ']');
            let i = names.params.iter().position(|p| p == sym).ok_or(format!("no parameter {sym}"))?;
            Op::LdParam(i)
        }
        "cvta" => Op::Cvta,
        "ld" | "st" => {
            let shared = has("shared");
            if !shared && !has("global") {
                return Err("only global, shared and param loads are emulated".into());
            }
            let n = if has("v4") {
                4
            } else if has("v2") {
                2
            } else {
                1
            };
            let ty = last_ty()?;
            if parts[0] == "ld" { Op::Ld { shared, ty, n } } else { Op::St { shared, ty, n } }
        }
        "neg" => Op::Un(Un::Neg, last_ty()?),
        "abs" => Op::Un(Un::Abs, last_ty()?),
        "not" => Op::Un(Un::Not, last_ty()?),
        "sqrt" if has("rn") => Op::Un(Un::Sqrt, last_ty()?),
        "rcp" if has("rn") => Op::Un(Un::Rcp, last_ty()?),
        "add" | "sub" | "mul" | "div" | "rem" | "and" | "or" | "xor" | "shl" | "shr" | "min" | "max" => {
            let ty = last_ty()?;
            if ty.float() && matches!(parts[0], "add" | "sub" | "mul" | "div") && !has("rn") {
                return Err("float arithmetic other than .rn is not emulated".into());
            }
            if ty.float() && matches!(parts[0], "min" | "max") {
                return Err("float min/max is not emulated (rhea writes numpy's NaN rule with setp/selp)".into());
            }
            if parts[0] == "mul" && !ty.float() && !has("lo") && !has("wide") {
                return Err("integer mul needs .lo or .wide".into());
            }
            let bin = match parts[0] {
                "add" => Bin::Add,
                "sub" => Bin::Sub,
                "mul" if has("wide") => Bin::MulWide,
                "mul" => Bin::Mul,
                "div" => Bin::Div,
                "rem" => Bin::Rem,
                "and" => Bin::And,
                "or" => Bin::Or,
                "xor" => Bin::Xor,
                "shl" => Bin::Shl,
                "shr" => Bin::Shr,
                "min" => Bin::Min,
                _ => Bin::Max,
            };
            Op::Bin(bin, ty)
        }
        "mad" if has("lo") => Op::Mad(last_ty()?),
        "setp" => {
            let cmp = match parts.get(1).copied().unwrap_or("") {
                "eq" => Cmp::Eq,
                "ne" => Cmp::Ne,
                "lt" => Cmp::Lt,
                "le" => Cmp::Le,
                "gt" => Cmp::Gt,
                "ge" => Cmp::Ge,
                "equ" => Cmp::Equ,
                "neu" => Cmp::Neu,
                "ltu" => Cmp::Ltu,
                "leu" => Cmp::Leu,
                "gtu" => Cmp::Gtu,
                "geu" => Cmp::Geu,
                "num" => Cmp::Num,
                "nan" => Cmp::Nan,
                other => return Err(format!("unknown comparison {other}")),
            };
            Op::Setp(cmp, last_ty()?)
        }
        "selp" => Op::Selp(last_ty()?),
        "cvt" => {
            let rnd = match parts.get(1).copied() {
                Some("rn") => Rnd::Rn,
                Some("rni") => Rnd::Rni,
                Some("rzi") => Rnd::Rzi,
                Some("rmi") => Rnd::Rmi,
                Some("rpi") => Rnd::Rpi,
                Some(p) if Ty::parse(p).is_some() => Rnd::None,
                other => return Err(format!("cvt rounding {other:?} is not emulated")),
            };
            if tys.len() != 2 {
                return Err("cvt needs two types".into());
            }
            Op::Cvt { to: tys[0], from: tys[1], rnd }
        }
        "shfl" if has("down") && has("sync") && has("b32") => Op::ShflDown,
        "bar" if args == ["0"] => Op::Bar,
        "bra" => {
            let l = args.first().ok_or("bra needs a label")?;
            Op::Bra(*labels.get(l).ok_or(format!("no label {l}"))?)
        }
        "ret" | "exit" => Op::Ret,
        _ => return Err(format!("`{opcode}` is not emulated")),
    };
    let mut inst = Inst { guard, op, dst: Vec::new(), src: Vec::new(), addr: None, text: text.to_string() };
    // Operand roles: the first is written, except for stores and branches.
    let (dsts, srcs): (&[&str], &[&str]) = match inst.op {
        Op::St { .. } => (&[], &args[..]),
        Op::Bra(_) | Op::Bar | Op::Ret => (&[], &[]),
        Op::LdParam(_) => (&args[..1], &[]),
        _ => args.split_at(1.min(args.len())),
    };
    for d in dsts {
        match d.strip_prefix('{') {
            Some(list) => {
                for r in list.trim_end_matches('}').split(',') {
                    inst.dst.push(names.reg(r.trim()));
                }
            }
            None => inst.dst.push(names.reg(d)),
        }
    }
    for s in srcs {
        if let Some(a) = s.strip_prefix('[') {
            inst.addr = Some(parse_addr(a.trim_end_matches(']'), names)?);
        } else {
            inst.src.push(parse_src(s, names)?);
        }
    }
    if matches!(inst.op, Op::Ld { .. } | Op::St { .. }) && inst.addr.is_none() {
        return Err("a memory instruction without an address".into());
    }
    Ok(inst)
}

fn parse_addr(a: &str, names: &mut Names) -> Result<(Option<u32>, i64), String> {
    let (base, off) = match a.split_once('+') {
        Some((b, o)) => (b.trim(), o.trim().parse::<i64>().map_err(|_| format!("bad offset {o}"))?),
        None => (a.trim(), 0),
    };
    if base.starts_with('%') {
        Ok((Some(names.reg(base)), off))
    } else if let Some(&at) = names.shared.get(base) {
        Ok((None, at as i64 + off))
    } else {
        Err(format!("unknown address {base}"))
    }
}

fn parse_src(s: &str, names: &mut Names) -> Result<Src, String> {
    let special = |n: &str| match n {
        "%tid.x" => Some(Special::Tid),
        "%ntid.x" => Some(Special::Ntid),
        "%ctaid.x" => Some(Special::Ctaid),
        "%nctaid.x" => Some(Special::Nctaid),
        _ => None,
    };
    if let Some(sp) = special(s) {
        return Ok(Src::Special(sp));
    }
    if let Some(list) = s.strip_prefix('{') {
        return Ok(Src::Pack(list.trim_end_matches('}').split(',').map(|r| names.reg(r.trim())).collect()));
    }
    if s.starts_with('%') {
        return Ok(Src::Reg(names.reg(s)));
    }
    if let Some(&at) = names.shared.get(s) {
        return Ok(Src::Shared(at));
    }
    if let Some(h) = s.strip_prefix("0f") {
        return u32::from_str_radix(h, 16).map(|b| Src::Imm(b as u64)).map_err(|_| format!("bad float {s}"));
    }
    if let Some(h) = s.strip_prefix("0d") {
        return u64::from_str_radix(h, 16).map(Src::Imm).map_err(|_| format!("bad double {s}"));
    }
    s.parse::<i64>()
        .map(|v| Src::Imm(v as u64))
        .or_else(|_| s.parse::<u64>().map(Src::Imm))
        .map_err(|_| format!("bad operand {s}"))
}
