//! The kernel IR: one backend-neutral loop kernel. A kernel iterates over a
//! domain (a shape); at each point it loads its inputs through views,
//! computes a typed scalar SSA body, and either stores outputs elementwise
//! or combines them over the reduced axes.

use std::fmt;

use rhea_graph::{BinaryOp, DType, F64, Shape, UnaryOp, reduced_shape};
use serde::{Deserialize, Serialize};

/// An SSA value: the index of the instruction that defines it.
pub type Reg = u32;

/// A constant element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Const {
    /// A float, by bits.
    Float(F64),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

/// One instruction of the scalar body. There are six kinds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Inst {
    /// The current element of input `input`.
    Load {
        /// Index into the kernel's inputs.
        input: u32,
    },
    /// A constant.
    Const {
        /// Its value.
        value: Const,
    },
    /// An elementwise function of one value.
    Unary {
        /// Which function.
        op: UnaryOp,
        /// Its argument.
        x: Reg,
    },
    /// An elementwise function of two values.
    Binary {
        /// Which function.
        op: BinaryOp,
        /// Left argument.
        a: Reg,
        /// Right argument.
        b: Reg,
    },
    /// `a` if `cond` else `b`.
    Select {
        /// A bool value.
        cond: Reg,
        /// Taken where `cond` is true.
        a: Reg,
        /// Taken where `cond` is false.
        b: Reg,
    },
    /// Conversion to another dtype.
    Cast {
        /// Its argument.
        x: Reg,
    },
}

/// How an input is read at each point of the domain: for each domain axis,
/// the input axis it indexes (`None`: the input does not vary along it).
/// Input axes of size 1 are broadcast. This covers numpy broadcasting,
/// transposes and inserted axes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KernelInput {
    /// Element type.
    pub dtype: DType,
    /// The input buffer's shape (row-major, contiguous).
    pub shape: Shape,
    /// For each domain axis, the input axis it indexes.
    pub axes: Vec<Option<usize>>,
}

impl KernelInput {
    /// True if every point of `domain` reads this input at the same point:
    /// same shape, axes in order (no broadcast, no transpose).
    pub fn is_pointwise(&self, domain: &Shape) -> bool {
        &self.shape == domain && self.axes.iter().enumerate().all(|(d, a)| *a == Some(d))
    }

    /// The input's stride in elements along each domain axis, for a buffer of
    /// `shape` (row-major) and a domain of `dims`: 0 where it is broadcast.
    pub fn strides(&self, shape: &[usize], dims: &[usize]) -> Result<Vec<usize>, String> {
        let rm = row_major(shape);
        self.axes
            .iter()
            .enumerate()
            .map(|(d, a)| match a {
                Some(a) if shape[*a] != 1 => {
                    if shape[*a] == dims[d] {
                        Ok(rm[*a])
                    } else {
                        Err(format!("axis {a} has size {} against domain size {}", shape[*a], dims[d]))
                    }
                }
                _ => Ok(0),
            })
            .collect()
    }
}

/// Row-major strides in elements of a shape.
pub fn row_major(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        s[a] = s[a + 1] * shape[a + 1];
    }
    s
}

/// A value the kernel writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KernelOutput {
    /// The body value written.
    pub value: Reg,
    /// Combined over the reduced axes (else stored at every point).
    pub reduced: bool,
}

/// How reduced outputs are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Combine {
    Sum,
    Prod,
    Max,
    Min,
    /// The sum divided by the number of elements combined.
    Mean,
}

/// The reduction a kernel ends in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reduction {
    /// How values combine.
    pub combine: Combine,
    /// The domain axes combined, ascending.
    pub axes: Vec<usize>,
    /// Keep reduced axes as size 1 in the output shape.
    pub keepdims: bool,
}

/// A loop kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Kernel {
    /// The iteration space.
    pub domain: Shape,
    /// Inputs, read through views.
    pub inputs: Vec<KernelInput>,
    /// Typed SSA body: instruction `i` defines register `i`.
    pub body: Vec<(Inst, DType)>,
    /// Values written.
    pub outputs: Vec<KernelOutput>,
    /// The trailing reduction, if any.
    pub reduce: Option<Reduction>,
}

impl Kernel {
    /// The shape of output `i`.
    pub fn output_shape(&self, i: usize) -> Shape {
        match (&self.reduce, self.outputs[i].reduced) {
            (Some(r), true) => reduced_shape(&self.domain, &r.axes, r.keepdims),
            _ => self.domain.clone(),
        }
    }

    /// The dtype of output `i`.
    pub fn output_dtype(&self, i: usize) -> DType {
        self.body[self.outputs[i].value as usize].1
    }

    /// Checks the kernel's internal consistency: registers defined before
    /// use, views that fit, outputs in range, reductions well formed.
    pub fn verify(&self) -> Result<(), String> {
        let rank = self.domain.rank();
        for (i, input) in self.inputs.iter().enumerate() {
            if input.axes.len() != rank {
                return Err(format!("input {i}: view has {} axes for a domain of rank {rank}", input.axes.len()));
            }
            let mut seen = vec![false; input.shape.rank()];
            for &a in input.axes.iter().flatten() {
                if a >= input.shape.rank() || std::mem::replace(&mut seen[a], true) {
                    return Err(format!("input {i}: view axis {a} is out of range or repeated"));
                }
            }
            for (a, used) in seen.iter().enumerate() {
                if !used && input.shape[a] != rhea_graph::Dim::Known(1) {
                    return Err(format!("input {i}: axis {a} of {} is never indexed", input.shape));
                }
            }
        }
        for (r, (inst, _)) in self.body.iter().enumerate() {
            let uses: Vec<Reg> = match inst {
                Inst::Load { input } if *input as usize >= self.inputs.len() => {
                    return Err(format!("%{r}: loads input {input}, which does not exist"));
                }
                Inst::Load { .. } | Inst::Const { .. } => vec![],
                Inst::Unary { x, .. } | Inst::Cast { x } => vec![*x],
                Inst::Binary { a, b, .. } => vec![*a, *b],
                Inst::Select { cond, a, b } => vec![*cond, *a, *b],
            };
            if let Some(u) = uses.iter().find(|&&u| u as usize >= r) {
                return Err(format!("%{r}: uses %{u} before it is defined"));
            }
        }
        for o in &self.outputs {
            if o.value as usize >= self.body.len() {
                return Err(format!("output %{} is not defined", o.value));
            }
            if o.reduced && self.reduce.is_none() {
                return Err("a reduced output in a kernel without a reduction".into());
            }
        }
        if let Some(r) = &self.reduce
            && r.axes.iter().any(|&a| a >= rank)
        {
            return Err(format!("reduction axes {:?} out of range for rank {rank}", r.axes));
        }
        Ok(())
    }
}

impl Const {
    /// The constant as an element of `dtype`, converted as `as` converts.
    pub fn value(self, dtype: DType) -> crate::scalar::Scalar {
        use crate::scalar::Scalar;
        match self {
            Const::Float(x) => Scalar::F64(x.0).cast(dtype),
            Const::Int(x) => Scalar::I64(x).cast(dtype),
            Const::Bool(x) => Scalar::Bool(x).cast(dtype),
        }
    }
}

impl fmt::Display for Const {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Const::Float(x) => write!(f, "{x}"),
            Const::Int(x) => write!(f, "{x}"),
            Const::Bool(x) => write!(f, "{x}"),
        }
    }
}

/// ```text
/// kernel [batch,8] reduce sum axes=[1]
///   in0: f32[batch,8]
///   in1: f32[8] view [_,0]
///   %0 = load in0 : f32
///   ...
///   out0 = %3
///   out1 = reduce(%3)
/// ```
impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel {}", self.domain)?;
        if let Some(r) = &self.reduce {
            let axes: Vec<String> = r.axes.iter().map(|a| a.to_string()).collect();
            let combine = serde_json::to_value(r.combine).ok();
            let name = combine.as_ref().and_then(|v| v.as_str()).unwrap_or("?");
            write!(f, " reduce {name} axes=[{}]{}", axes.join(","), if r.keepdims { " keepdims" } else { "" })?;
        }
        writeln!(f)?;
        for (i, input) in self.inputs.iter().enumerate() {
            write!(f, "  in{i}: {}{}", input.dtype, input.shape)?;
            let identity =
                input.shape.rank() == self.domain.rank() && input.axes.iter().enumerate().all(|(d, a)| *a == Some(d));
            if !identity {
                let axes: Vec<String> = input.axes.iter().map(|a| a.map_or("_".into(), |a| a.to_string())).collect();
                write!(f, " view [{}]", axes.join(","))?;
            }
            writeln!(f)?;
        }
        for (r, (inst, dtype)) in self.body.iter().enumerate() {
            let rhs = match inst {
                Inst::Load { input } => format!("load in{input}"),
                Inst::Const { value: Const::Float(x) } if *dtype == DType::F32 => format!("const {}", x.0 as f32),
                Inst::Const { value } => format!("const {value}"),
                Inst::Unary { op, x } => format!("{} %{x}", op.name()),
                Inst::Binary { op, a, b } => format!("{} %{a}, %{b}", op.name()),
                Inst::Select { cond, a, b } => format!("select %{cond}, %{a}, %{b}"),
                Inst::Cast { x } => format!("cast %{x}"),
            };
            writeln!(f, "  %{r} = {rhs} : {dtype}")?;
        }
        for (i, o) in self.outputs.iter().enumerate() {
            if o.reduced {
                writeln!(f, "  out{i} = reduce(%{})", o.value)?;
            } else {
                writeln!(f, "  out{i} = %{}", o.value)?;
            }
        }
        Ok(())
    }
}
