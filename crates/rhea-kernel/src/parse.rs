//! Reading a kernel back from its text form: [`Kernel::parse`] is the exact
//! inverse of `impl Display for Kernel`, so that kernels can be written by
//! hand in tests and filetests and printed kernels can be read back.
//!
//! ```text
//! kernel [batch,8] reduce sum axes=[1] keepdims
//!   in0: f32[batch,8]
//!   in1: f32[8] view [_,0]
//!   %0 = load in0 : f32
//!   %1 = load in1 : f32
//!   %2 = add %0, %1 : f32
//!   out0 = %2
//!   out1 = reduce(%2)
//! ```
//!
//! Blank lines and lines starting with `;` (comments) are skipped, and
//! indentation is free. Errors name the line (counted from 1) and what was
//! expected there.

use rhea_graph::{BinaryOp, DType, Dim, F64, Shape, UnaryOp};

use crate::ir::{Combine, Const, Inst, Kernel, KernelInput, KernelOutput, Reduction, Reg};

/// Every way a reduction combines.
const COMBINES: [Combine; 5] = [Combine::Sum, Combine::Prod, Combine::Max, Combine::Min, Combine::Mean];

/// The name `Display` writes for a combine (its serde name).
fn combine_name(c: Combine) -> String {
    serde_json::to_value(c).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Which part of the kernel the parser is in: inputs, then the body, then
/// the outputs.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Inputs,
    Body,
    Outputs,
}

impl Kernel {
    /// Parses the text `Display` writes for a kernel (see the module docs),
    /// and checks the result with [`Kernel::verify`]. An error names the
    /// line and what was expected. Printing the result gives `text` back,
    /// up to comments, blank lines and indentation.
    pub fn parse(text: &str) -> Result<Kernel, String> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with(';'));
        let Some((n, first)) = lines.next() else {
            return Err("expected a header like `kernel [2,3]`, found no kernel text".into());
        };
        let mut k = header(first).map_err(|e| format!("line {n}: {e}"))?;
        let mut part = Part::Inputs;
        for (n, line) in lines {
            let (this, result) = if line.starts_with('%') {
                (Part::Body, instruction(&mut k, line))
            } else if line.starts_with("out") {
                (Part::Outputs, output(&mut k, line))
            } else if line.starts_with("in") {
                (Part::Inputs, input(&mut k, line))
            } else {
                let e = "expected an input (`in0: f32[4]`), an instruction (`%0 = load in0 : f32`) \
                         or an output (`out0 = %0`)";
                return Err(format!("line {n}: {e}, found `{line}`"));
            };
            if this < part {
                let order = "inputs come first, then the instructions, then the outputs";
                return Err(format!("line {n}: `{line}` is out of place: {order}"));
            }
            part = this;
            result.map_err(|e| format!("line {n}: {e}"))?;
        }
        k.verify().map_err(|e| format!("the kernel does not verify: {e}"))?;
        Ok(k)
    }
}

/// `kernel [2,3]`, `kernel [batch,8] reduce sum axes=[1] keepdims`.
fn header(line: &str) -> Result<Kernel, String> {
    const EXPECTED: &str = "expected a header like `kernel [2,3]` or `kernel [2,3] reduce sum axes=[1] keepdims`";
    let rest = line.strip_prefix("kernel ").ok_or_else(|| format!("{EXPECTED}, found `{line}`"))?.trim_start();
    let (domain, rest) = bracketed(rest).ok_or_else(|| format!("{EXPECTED}, found `{line}`"))?;
    let domain = shape(domain)?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let reduce = match words.as_slice() {
        [] => None,
        ["reduce", name, axes, flags @ ..] => {
            let combine = COMBINES.into_iter().find(|&c| combine_name(c) == *name).ok_or_else(|| {
                let names: Vec<String> = COMBINES.into_iter().map(combine_name).collect();
                format!("unknown reduction `{name}` (expected one of {})", names.join(", "))
            })?;
            let list = axes
                .strip_prefix("axes=")
                .ok_or_else(|| format!("expected the reduced axes as `axes=[1]`, found `{axes}`"))?;
            let axes = axis_list(list)?;
            if let Some(&a) = axes.iter().find(|&&a| a >= domain.rank()) {
                return Err(format!("reduction axis {a} is out of range for the domain {domain}"));
            }
            if axes.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("reduction axes {list} must be ascending and distinct"));
            }
            let keepdims = match flags {
                [] => false,
                ["keepdims"] => true,
                _ => return Err(format!("expected `keepdims` or the end of the line, found `{}`", flags.join(" "))),
            };
            Some(Reduction { combine, axes, keepdims })
        }
        _ => return Err(format!("{EXPECTED}, found `{line}`")),
    };
    Ok(Kernel { domain, inputs: Vec::new(), body: Vec::new(), outputs: Vec::new(), reduce })
}

/// Splits `[...]rest` into `[...]` and `rest` (trimmed).
fn bracketed(s: &str) -> Option<(&str, &str)> {
    if !s.starts_with('[') {
        return None;
    }
    let close = s.find(']')?;
    Some((&s[..=close], s[close + 1..].trim()))
}

/// The items of `[a,b,c]`, trimmed; none for `[]`.
fn items(s: &str) -> Option<Vec<&str>> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?.trim();
    Some(if inner.is_empty() { Vec::new() } else { inner.split(',').map(str::trim).collect() })
}

/// `[batch,8]`: known sizes and symbolic dims.
fn shape(s: &str) -> Result<Shape, String> {
    let dims = items(s).ok_or_else(|| format!("expected a shape like `[batch,8]`, found `{s}`"))?;
    dims.into_iter()
        .map(|d| match d.parse::<usize>() {
            Ok(n) => Ok(Dim::Known(n)),
            Err(_) => Dim::sym(d).map_err(|e| format!("in the shape {s}: {e}")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Shape::from)
}

/// `[0,2]`: axis numbers.
fn axis_list(s: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("expected axes like `[0,2]`, found `{s}`");
    items(s).ok_or_else(bad)?.into_iter().map(|a| number(a).ok_or_else(bad)).collect()
}

/// A decimal number written as `Display` writes it (no sign, no leading
/// zeros).
fn number(s: &str) -> Option<usize> {
    s.parse::<usize>().ok().filter(|n| n.to_string() == s)
}

/// The `N` of `{prefix}N`.
fn numbered(s: &str, prefix: &str) -> Option<usize> {
    s.strip_prefix(prefix).and_then(number)
}

/// `in1: f32[8] view [_,0]`.
fn input(k: &mut Kernel, line: &str) -> Result<(), String> {
    let i = k.inputs.len();
    let expected = format!("expected input `in{i}: <dtype>[<dims>]`, optionally followed by `view [..]`");
    let (name, rest) = line.split_once(':').ok_or_else(|| format!("{expected}, found `{line}`"))?;
    if numbered(name.trim(), "in") != Some(i) {
        return Err(format!("{expected}, found `{}` (inputs are numbered in order from in0)", name.trim()));
    }
    let rest = rest.trim();
    let open = rest.find('[').ok_or_else(|| format!("{expected}, found `{line}`"))?;
    let dtype: DType = rest[..open].parse()?;
    let (dims, view) = bracketed(&rest[open..]).ok_or_else(|| format!("{expected}, found `{line}`"))?;
    let shape = shape(dims)?;
    let rank = k.domain.rank();
    let axes: Vec<Option<usize>> = if view.is_empty() {
        if shape.rank() != rank {
            return Err(format!(
                "in{i} is {dtype}{shape}, of rank {}, but the domain {} has rank {rank}: \
                 give a view `view [..]` saying which input axis each domain axis reads",
                shape.rank(),
                k.domain
            ));
        }
        (0..rank).map(Some).collect()
    } else {
        let list = view.strip_prefix("view").map(str::trim).filter(|v| v.starts_with('['));
        let list = list.ok_or_else(|| format!("expected `view [..]` or the end of the line, found `{view}`"))?;
        let bad =
            || format!("expected a view like `view [_,0]` (an input axis or `_` per domain axis), found `{list}`");
        let axes = items(list)
            .ok_or_else(bad)?
            .into_iter()
            .map(|a| if a == "_" { Ok(None) } else { number(a).map(Some).ok_or_else(bad) })
            .collect::<Result<Vec<_>, _>>()?;
        check_view(&axes, &shape, &k.domain).map_err(|e| format!("in{i}: view {list}: {e}"))?;
        axes
    };
    k.inputs.push(KernelInput { dtype, shape, axes });
    Ok(())
}

/// The checks [`Kernel::verify`] makes of a view, with clearer messages.
fn check_view(axes: &[Option<usize>], shape: &Shape, domain: &Shape) -> Result<(), String> {
    if axes.len() != domain.rank() {
        return Err(format!("has {} axes but the domain {domain} has rank {}", axes.len(), domain.rank()));
    }
    let mut seen = vec![false; shape.rank()];
    for &a in axes.iter().flatten() {
        if a >= shape.rank() {
            return Err(format!("axis {a} is out of range for the input's shape {shape}"));
        }
        if std::mem::replace(&mut seen[a], true) {
            return Err(format!("axis {a} is read along two domain axes"));
        }
    }
    if let Some(a) = (0..shape.rank()).find(|&a| !seen[a] && shape[a] != Dim::Known(1)) {
        return Err(format!("axis {a} of the input's shape {shape} is never read (only size-1 axes may be left out)"));
    }
    Ok(())
}

/// `%N`, which must already be defined (`defined` registers are).
fn register(s: &str, defined: usize) -> Result<Reg, String> {
    let r = numbered(s, "%").ok_or_else(|| format!("expected a register like `%0`, found `{s}`"))?;
    if r >= defined {
        let have = match defined {
            0 => "no register is defined yet".to_string(),
            1 => "only %0 is".to_string(),
            n => format!("%0 to %{} are", n - 1),
        };
        return Err(format!("%{r} is not defined here ({have})"));
    }
    Ok(r as Reg)
}

/// `%2 = add %0, %1 : f32`.
fn instruction(k: &mut Kernel, line: &str) -> Result<(), String> {
    let r = k.body.len();
    let expected = format!("expected an instruction `%{r} = <operation> <operands> : <dtype>`");
    let (lhs, rhs) = line.split_once('=').ok_or_else(|| format!("{expected}, found `{line}`"))?;
    if numbered(lhs.trim(), "%") != Some(r) {
        return Err(format!("{expected}, found `{}` (registers are numbered in order from %0)", lhs.trim()));
    }
    let (op, dtype) = rhs.rsplit_once(':').ok_or_else(|| format!("{expected}: the dtype is missing in `{line}`"))?;
    let dtype: DType = dtype.trim().parse()?;
    let op = op.trim();
    let (name, operands) = op.split_once(char::is_whitespace).unwrap_or((op, ""));
    let operands: Vec<&str> =
        if operands.trim().is_empty() { Vec::new() } else { operands.split(',').map(str::trim).collect() };
    let arity = |n: usize, form: &str| {
        if operands.len() == n {
            Ok(())
        } else {
            Err(format!("`{name}` takes {n} operand{} ({form}), found `{}`", if n == 1 { "" } else { "s" }, op))
        }
    };
    let reg = |i: usize| register(operands[i], r);
    let inst = match name {
        "load" => {
            arity(1, "an input like in0")?;
            let i = numbered(operands[0], "in")
                .ok_or_else(|| format!("`load` reads an input like `in0`, found `{}`", operands[0]))?;
            let spec = k.inputs.get(i).ok_or_else(|| match k.inputs.len() {
                0 => format!("in{i} does not exist (the kernel has no inputs)"),
                n => format!("in{i} does not exist (the inputs are in0 to in{})", n - 1),
            })?;
            if spec.dtype != dtype {
                return Err(format!("in{i} is {}, but the load says {dtype}", spec.dtype));
            }
            Inst::Load { input: i as u32 }
        }
        "const" => {
            arity(1, "a number, true or false")?;
            Inst::Const { value: constant(operands[0], dtype)? }
        }
        "select" => {
            arity(3, "%cond, %a, %b")?;
            Inst::Select { cond: reg(0)?, a: reg(1)?, b: reg(2)? }
        }
        "cast" => {
            arity(1, "%x")?;
            Inst::Cast { x: reg(0)? }
        }
        _ => {
            if let Some(op) = UnaryOp::ALL.into_iter().find(|u| u.name() == name) {
                arity(1, "%x")?;
                Inst::Unary { op, x: reg(0)? }
            } else if let Some(op) = BinaryOp::ALL.into_iter().find(|b| b.name() == name) {
                arity(2, "%a, %b")?;
                Inst::Binary { op, a: reg(0)?, b: reg(1)? }
            } else {
                return Err(format!(
                    "unknown operation `{name}` (expected load, const, select, cast, a unary function \
                     such as exp or neg, or a binary function such as add or lt)"
                ));
            }
        }
    };
    k.body.push((inst, dtype));
    Ok(())
}

/// How `Display` writes constant `c` in a register of `dtype`.
fn shown(c: Const, dtype: DType) -> String {
    match c {
        Const::Float(x) if dtype == DType::F32 => (x.0 as f32).to_string(),
        c => c.to_string(),
    }
}

/// A constant of a register of `dtype`. The text alone cannot always tell
/// a float from an integer constant (`2`), so the form that prints back as
/// `text` is taken, preferring the dtype's own kind. `f32` registers print
/// their float constants as `f32`, so those are read as `f32` and widened.
fn constant(text: &str, dtype: DType) -> Result<Const, String> {
    let bool_ = match text {
        "true" => Some(Const::Bool(true)),
        "false" => Some(Const::Bool(false)),
        _ => None,
    };
    let int = text.parse::<i64>().ok().map(Const::Int);
    let float = if dtype == DType::F32 { text.parse::<f32>().map(f64::from).ok() } else { text.parse::<f64>().ok() };
    let float = float.map(|x| Const::Float(F64(x)));
    let candidates: Vec<Const> =
        if dtype.is_float() { [bool_, float, int] } else { [bool_, int, float] }.into_iter().flatten().collect();
    candidates
        .iter()
        .find(|&&c| shown(c, dtype) == text)
        .or(candidates.first())
        .copied()
        .ok_or_else(|| format!("`{text}` is not a constant (expected a number, true or false)"))
}

/// `out0 = %3`, `out1 = reduce(%3)`.
fn output(k: &mut Kernel, line: &str) -> Result<(), String> {
    let i = k.outputs.len();
    let expected = format!("expected an output `out{i} = %N` or `out{i} = reduce(%N)`");
    let (lhs, rhs) = line.split_once('=').ok_or_else(|| format!("{expected}, found `{line}`"))?;
    if numbered(lhs.trim(), "out") != Some(i) {
        return Err(format!("{expected}, found `{}` (outputs are numbered in order from out0)", lhs.trim()));
    }
    let rhs = rhs.trim();
    let (value, reduced) = match rhs.strip_prefix("reduce(").and_then(|r| r.strip_suffix(')')) {
        Some(v) => (v.trim(), true),
        None => (rhs, false),
    };
    if reduced && k.reduce.is_none() {
        return Err(format!("out{i} is reduced, but the header has no `reduce <how> axes=[..]`"));
    }
    let value = register(value, k.body.len())?;
    k.outputs.push(KernelOutput { value, reduced });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses, prints, parses again: the text and the kernel both survive.
    fn round_trip(text: &str) -> Kernel {
        let k = Kernel::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(k.to_string(), text);
        assert_eq!(Kernel::parse(&k.to_string()).unwrap(), k);
        k
    }

    fn err(text: &str) -> String {
        Kernel::parse(text).expect_err(text)
    }

    #[test]
    fn printed_kernels_parse_back() {
        let k = round_trip(
            "kernel [2,3] reduce sum axes=[1]\n  in0: f32[2,3]\n  in1: f32[3] view [_,0]\n  %0 = load in0 : f32\n  \
             %1 = load in1 : f32\n  %2 = add %0, %1 : f32\n  %3 = relu %2 : f32\n  out0 = %3\n  out1 = reduce(%3)\n",
        );
        assert_eq!(k.inputs[1].axes, vec![None, Some(0)]);
        assert_eq!(k.reduce, Some(Reduction { combine: Combine::Sum, axes: vec![1], keepdims: false }));
        assert_eq!(
            k.outputs,
            vec![KernelOutput { value: 3, reduced: false }, KernelOutput { value: 3, reduced: true }]
        );
        let k = round_trip(
            "kernel [batch,4,n] reduce mean axes=[0,2] keepdims\n  in0: f64[n,1,batch] view [2,_,0]\n  \
             in1: f64[4,1] view [_,0,1]\n  %0 = load in0 : f64\n  %1 = load in1 : f64\n  %2 = pow %0, %1 : f64\n  \
             out0 = reduce(%2)\n",
        );
        assert_eq!(k.domain, Shape::from(vec![Dim::sym("batch").unwrap(), Dim::Known(4), Dim::sym("n").unwrap()]));
        assert_eq!(k.inputs[1].axes, vec![None, Some(0), Some(1)]);
        round_trip(
            "kernel [4]\n  in0: i32[4]\n  in1: i32[] view [_]\n  %0 = load in0 : i32\n  %1 = load in1 : i32\n  \
             %2 = lt %0, %1 : bool\n  %3 = const -7 : i32\n  %4 = select %2, %0, %3 : i32\n  %5 = cast %4 : f64\n  \
             %6 = not %2 : bool\n  out0 = %4\n  out1 = %5\n  out2 = %6\n",
        );
    }

    #[test]
    fn scalar_domains_and_kernels_without_inputs_parse() {
        let k = round_trip("kernel []\n  %0 = const 1.5 : f64\n  %1 = exp %0 : f64\n  out0 = %1\n");
        assert_eq!(k.domain, Shape::scalar());
        assert_eq!(k.body[0].0, Inst::Const { value: Const::Float(F64(1.5)) });
        round_trip("kernel [3] reduce max axes=[0]\n  in0: f32[3]\n  %0 = load in0 : f32\n  out0 = reduce(%0)\n");
    }

    #[test]
    fn every_function_name_parses() {
        let mut text = String::from("kernel [2]\n  in0: f64[2]\n  %0 = load in0 : f64\n");
        for (r, u) in UnaryOp::ALL.into_iter().enumerate() {
            text += &format!("  %{} = {} %0 : f64\n", r + 1, u.name());
        }
        let base = UnaryOp::ALL.len() + 1;
        for (r, b) in BinaryOp::ALL.into_iter().enumerate() {
            text += &format!("  %{} = {} %0, %{} : f64\n", base + r, b.name(), r + 1);
        }
        text += &format!("  out0 = %{}\n", base + BinaryOp::ALL.len() - 1);
        let k = round_trip(&text);
        for (r, u) in UnaryOp::ALL.into_iter().enumerate() {
            assert_eq!(k.body[r + 1].0, Inst::Unary { op: u, x: 0 });
        }
        for (r, b) in BinaryOp::ALL.into_iter().enumerate() {
            assert_eq!(k.body[base + r].0, Inst::Binary { op: b, a: 0, b: r as Reg + 1 });
        }
        for c in COMBINES {
            let name = combine_name(c);
            let k = round_trip(&format!(
                "kernel [2] reduce {name} axes=[0]\n  in0: f64[2]\n  %0 = load in0 : f64\n  out0 = reduce(%0)\n"
            ));
            assert_eq!(k.reduce.unwrap().combine, c);
        }
    }

    #[test]
    fn constants_print_back_exactly() {
        let cases = [
            (Const::Float(F64(0.1)), DType::F32),
            (Const::Float(F64(0.1)), DType::F64),
            (Const::Float(F64(2.0)), DType::F64),
            (Const::Float(F64(-0.0)), DType::F32),
            (Const::Float(F64(f64::NAN)), DType::F64),
            (Const::Float(F64(f64::NEG_INFINITY)), DType::F32),
            (Const::Float(F64(1e300)), DType::F64),
            (Const::Float(F64(2.5)), DType::I32),
            (Const::Int(i64::MAX), DType::F64),
            (Const::Int(16_777_217), DType::F32),
            (Const::Int(-3), DType::I64),
            (Const::Bool(true), DType::Bool),
            (Const::Bool(false), DType::F32),
            (Const::Int(1), DType::Bool),
        ];
        for (value, dtype) in cases {
            let k = Kernel {
                domain: Shape::known(&[2]),
                inputs: vec![],
                body: vec![(Inst::Const { value }, dtype)],
                outputs: vec![KernelOutput { value: 0, reduced: false }],
                reduce: None,
            };
            let text = k.to_string();
            let back = Kernel::parse(&text).unwrap();
            assert_eq!(back.to_string(), text, "{value:?} as {dtype}");
            let Inst::Const { value: got } = back.body[0].0 else { panic!("a constant") };
            assert_eq!(got.value(dtype).to_f64().to_bits(), value.value(dtype).to_f64().to_bits(), "{text}");
        }
        // f32 constants are read as f32, widened.
        let k = Kernel::parse("kernel []\n  %0 = const 0.1 : f32\n  out0 = %0\n").unwrap();
        assert_eq!(k.body[0].0, Inst::Const { value: Const::Float(F64(0.1f32 as f64)) });
        let k = Kernel::parse("kernel []\n  %0 = const 3 : i64\n  %1 = const 3 : f64\n  out0 = %1\n").unwrap();
        assert_eq!(k.body[0].0, Inst::Const { value: Const::Int(3) });
        assert_eq!(k.body[1].0, Inst::Const { value: Const::Float(F64(3.0)) });
    }

    #[test]
    fn comments_blank_lines_and_indentation_are_free() {
        let k =
            Kernel::parse("; a comment\n\nkernel [2]\nin0: f32[2]\n    %0 = load in0 : f32\n; out next\nout0 = %0\n")
                .unwrap();
        assert_eq!(k.to_string(), "kernel [2]\n  in0: f32[2]\n  %0 = load in0 : f32\n  out0 = %0\n");
    }

    #[test]
    fn bad_text_is_an_error_naming_the_line() {
        let head = "kernel [2,3]\n  in0: f32[2,3]\n  %0 = load in0 : f32\n";
        let e = err(&format!("{head}  %1 = frobnicate %0 : f32\n  out0 = %1\n"));
        assert!(e.starts_with("line 4: unknown operation `frobnicate`"), "{e}");
        let e = err(&format!("{head}  %1 = add %0, %7 : f32\n  out0 = %1\n"));
        assert_eq!(e, "line 4: %7 is not defined here (only %0 is)");
        let e = err(&format!("{head}  out0 = %3\n"));
        assert_eq!(e, "line 4: %3 is not defined here (only %0 is)");
        let e = err("kernel [2,3]\n  in0: f32[3] view [0]\n");
        assert_eq!(e, "line 2: in0: view [0]: has 1 axes but the domain [2,3] has rank 2");
        let e = err("kernel [2,3]\n  in0: f32[3] view [_,1]\n");
        assert!(e.starts_with("line 2: in0: view [_,1]: axis 1 is out of range"), "{e}");
        let e = err("kernel [2,3]\n  in0: f32[3,3] view [0,0]\n");
        assert!(e.contains("axis 0 is read along two domain axes"), "{e}");
        let e = err("kernel [2,3]\n  in0: f32[4,3] view [_,1]\n");
        assert!(e.contains("axis 0 of the input's shape [4,3] is never read"), "{e}");
        let e = err("kernel [2,3]\n  in0: f32[3] view [_,x]\n");
        assert!(e.starts_with("line 2: expected a view like `view [_,0]`"), "{e}");
        let e = err("kernel [2,3]\n  in0: f32[3]\n");
        assert!(e.starts_with("line 2: in0 is f32[3], of rank 1, but the domain [2,3] has rank 2"), "{e}");
    }

    #[test]
    fn malformed_headers_inputs_and_outputs_are_errors() {
        assert!(err("").contains("found no kernel text"));
        assert!(err("kernal [2]\n").starts_with("line 1: expected a header like `kernel [2,3]`"));
        assert!(err("kernel [2] reduce avg axes=[0]\n").contains("unknown reduction `avg` (expected one of sum"));
        assert!(err("kernel [2] reduce sum axes=[1]\n").contains("reduction axis 1 is out of range"));
        assert!(err("kernel [2,2] reduce sum axes=[1,0]\n").contains("must be ascending and distinct"));
        assert!(err("kernel [2] reduce sum axes=[0] keep\n").contains("expected `keepdims`"));
        assert!(err("kernel [2,-1]\n").contains("a size cannot be negative"));
        assert!(err("kernel [2]\n  in0: f16[2]\n").starts_with("line 2: unknown dtype 'f16'"));
        assert!(err("kernel [2]\n  in1: f32[2]\n").contains("inputs are numbered in order from in0"));
        let e = err("kernel [2]\n  in0: f32[2]\n  %0 = load in1 : f32\n");
        assert_eq!(e, "line 3: in1 does not exist (the inputs are in0 to in0)");
        let e = err("kernel [2]\n  in0: f32[2]\n  %0 = load in0 : f64\n");
        assert_eq!(e, "line 3: in0 is f32, but the load says f64");
        let e = err("kernel [2]\n  in0: f32[2]\n  %0 = load in0 : f32\n  %1 = add %0 : f32\n");
        assert!(e.starts_with("line 4: `add` takes 2 operands (%a, %b)"), "{e}");
        assert!(err("kernel [2]\n  %1 = const 1 : f32\n").contains("registers are numbered in order from %0"));
        assert!(err("kernel [2]\n  %0 = const one : f32\n").contains("`one` is not a constant"));
        assert!(err("kernel [2]\n  %0 = const 1\n").contains("the dtype is missing"));
        let e = err("kernel [2]\n  %0 = const 1 : f32\n  out0 = reduce(%0)\n");
        assert!(e.starts_with("line 3: out0 is reduced, but the header has no"), "{e}");
        let e = err("kernel [2]\n  %0 = const 1 : f32\n  out0 = %0\n  in0: f32[2]\n");
        assert!(e.starts_with("line 4: `in0: f32[2]` is out of place"), "{e}");
        assert!(err("kernel [2]\n  x = 1\n").starts_with("line 2: expected an input"));
    }
}
