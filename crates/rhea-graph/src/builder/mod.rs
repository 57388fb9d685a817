//! The API a user builds graphs with: a [`Builder`] and [`Var`] handles that
//! read like numpy (`&x * &w + &b`, `x.dot(&w)?.relu()?`).
//!
//! Methods return `Result`; operator overloads, which cannot, panic with the
//! same message at the caller's line, and each has a method form (`add`,
//! `mul`...) that returns `Result` instead.

use std::cell::{Ref, RefCell, RefMut};
use std::fmt;
use std::panic::Location;
use std::rc::Rc;

use crate::op::{Normal, Uniform};
use crate::shape::{dim_product, normalize_axis};
use crate::{
    ArgReduceOp, BinaryOp, Conv2d, DType, Dim, F64, Graph, GraphError, Loc, NodeId, Op, Pool2d, ReduceOp, Shape,
    SliceSpec, TensorType, UnaryOp, Value,
};

type Result<T> = std::result::Result<T, GraphError>;

/// A handle on a graph under construction. Cloning it is cheap and gives
/// another handle on the same graph.
///
/// ```
/// use rhea_graph::{Builder, DType};
/// let g = Builder::new();
/// let x = g.input("x", DType::F32, [2, 3])?;
/// let y = (&x * 2.0 + 1.0).tanh()?.sum(&[1], false)?;
/// assert_eq!(y.ty().to_string(), "f32[2]");
/// # Ok::<(), rhea_graph::GraphError>(())
/// ```
#[derive(Clone, Default)]
pub struct Builder(Rc<RefCell<Graph>>);

/// A symbolic tensor: a node of a graph being built.
#[derive(Clone)]
pub struct Var {
    builder: Builder,
    id: NodeId,
}

impl Builder {
    /// A builder over a new, empty graph.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// A builder over an existing graph (say, one loaded from a file).
    pub fn from_graph(graph: Graph) -> Builder {
        Builder(Rc::new(RefCell::new(graph)))
    }

    /// A symbolic dim, bound when the compiled graph is called.
    pub fn dim(&self, name: &str) -> Result<Dim> {
        Dim::sym(name).map_err(GraphError::Mismatch)
    }

    /// A named input of the given dtype and shape.
    #[track_caller]
    pub fn input(&self, name: &str, dtype: DType, shape: impl Into<Shape>) -> Result<Var> {
        let loc = Loc::from_caller(Location::caller());
        let id = self.0.borrow_mut().add_input(name, TensorType::new(dtype, shape), Some(loc))?;
        Ok(self.var(id))
    }

    /// A named shared variable (a parameter) with an initial value.
    #[track_caller]
    pub fn shared(&self, name: &str, value: impl Into<Value>) -> Result<Var> {
        let loc = Loc::from_caller(Location::caller());
        let id = self.0.borrow_mut().add_shared(name, value.into(), Some(loc))?;
        Ok(self.var(id))
    }

    /// A shared variable of type `ty` whose value `make` makes, unless the
    /// builder only declares types ([`Builder::types_only`]): then `make` is
    /// not called and the variable has no value (a weight that costs nothing
    /// until it is given, from a file or by building again). The value
    /// must have type `ty`.
    #[track_caller]
    pub fn shared_with<E: From<GraphError>>(
        &self,
        name: &str,
        ty: TensorType,
        make: impl FnOnce() -> std::result::Result<Value, E>,
    ) -> std::result::Result<Var, E> {
        let loc = Some(Loc::from_caller(Location::caller()));
        if self.0.borrow().types_only() {
            let id = self.0.borrow_mut().add_shared_declared(name, ty, loc)?;
            return Ok(self.var(id));
        }
        let value = make()?;
        let made = TensorType::new(value.dtype(), Shape::known(value.shape()));
        if made != ty {
            return Err(
                GraphError::Mismatch(format!("shared variable {name:?}: declared {ty}, its value is {made}")).into()
            );
        }
        let id = self.0.borrow_mut().add_shared(name, value, loc)?;
        Ok(self.var(id))
    }

    /// This builder declares shared variables made with
    /// [`Builder::shared_with`] by type only from now on (`rhea dump` of a
    /// built-in model: the graph without its weights).
    pub fn types_only(self) -> Builder {
        self.0.borrow_mut().set_types_only(true);
        self
    }

    /// A constant tensor.
    #[track_caller]
    pub fn constant(&self, value: impl Into<Value>) -> Var {
        let loc = Loc::from_caller(Location::caller());
        let id = self.0.borrow_mut().add_const(value.into(), Some(loc));
        self.var(id)
    }

    /// A scalar constant of `dtype`.
    #[track_caller]
    pub fn scalar(&self, x: f64, dtype: DType) -> Var {
        let loc = Loc::from_caller(Location::caller());
        let id = self.0.borrow_mut().add_const(Value::scalar(x, dtype), Some(loc));
        self.var(id)
    }

    /// Uniform random values in `[low, high)`; the same seed gives the same
    /// values on every backend.
    #[track_caller]
    pub fn uniform(&self, shape: impl Into<Shape>, dtype: DType, low: f64, high: f64, seed: u64) -> Result<Var> {
        let loc = Loc::from_caller(Location::caller());
        let op =
            Op::RandomUniform(Box::new(Uniform { shape: shape.into(), dtype, low: F64(low), high: F64(high), seed }));
        self.apply(op, &[], loc)
    }

    /// Normal random values with the given mean and standard deviation.
    #[track_caller]
    pub fn normal(&self, shape: impl Into<Shape>, dtype: DType, mean: f64, std: f64, seed: u64) -> Result<Var> {
        let loc = Loc::from_caller(Location::caller());
        let op =
            Op::RandomNormal(Box::new(Normal { shape: shape.into(), dtype, mean: F64(mean), std: F64(std), seed }));
        self.apply(op, &[], loc)
    }

    /// Declares `var` an output of the graph called `name`.
    pub fn output(&self, name: &str, var: &Var) -> Result<()> {
        self.own(var)?;
        self.0.borrow_mut().set_output(name, var.id);
        Ok(())
    }

    /// Declares that after each call `shared` takes the value of `value`.
    pub fn update(&self, shared: &Var, value: &Var) -> Result<()> {
        self.own(shared)?;
        self.own(value)?;
        self.0.borrow_mut().add_update(shared.id, value.id)
    }

    /// The graph, borrowed, with every shared value current: values whose
    /// newest copy is on a device are brought back first.
    ///
    /// # Panics
    /// If the graph is mutably borrowed through [`Builder::graph_mut`] at the
    /// same time.
    pub fn graph(&self) -> Ref<'_, Graph> {
        self.sync(None);
        self.0.borrow()
    }

    /// The graph, mutably borrowed, with every shared value current.
    pub fn graph_mut(&self) -> RefMut<'_, Graph> {
        self.sync(None);
        self.0.borrow_mut()
    }

    /// The graph, mutably borrowed, with every shared value current except
    /// those `owner` holds on its device (the backend that holds them uses
    /// its own copies).
    pub fn graph_mut_for(&self, owner: u64) -> RefMut<'_, Graph> {
        self.sync(Some(owner));
        self.0.borrow_mut()
    }

    /// Brings back shared values held elsewhere (see
    /// [`Graph::set_shared_pending`]). Skipped while the graph is borrowed,
    /// which cannot happen with values pending: they are only set through a
    /// mutable borrow that has ended. A value that cannot be fetched keeps
    /// its stale copy, and the reason is printed: there is no caller to
    /// return it to.
    fn sync(&self, except: Option<u64>) {
        let pending = self.0.try_borrow().is_ok_and(|g| g.has_pending_shared());
        if let (true, Ok(mut g)) = (pending, self.0.try_borrow_mut()) {
            for e in g.sync_shared(except) {
                eprintln!("rhea: {e}");
            }
        }
    }

    /// A copy of the graph as it is now.
    pub fn to_graph(&self) -> Graph {
        self.0.borrow().clone()
    }

    /// The graph itself, shared values included, without copying it (a
    /// model's weights can be most of the memory); this builder and every
    /// var of it are left with an empty graph.
    pub fn into_graph(self) -> Graph {
        self.0.replace(Graph::new())
    }

    /// A handle on node `id` of this builder's graph.
    pub fn var(&self, id: NodeId) -> Var {
        Var { builder: self.clone(), id }
    }

    /// The input or shared variable called `name`.
    pub fn find(&self, name: &str) -> Option<Var> {
        self.0.borrow().find(name).map(|id| self.var(id))
    }

    /// True if both handles are on the same graph.
    pub fn same_graph(&self, other: &Builder) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }

    fn own(&self, v: &Var) -> Result<()> {
        if self.same_graph(&v.builder) { Ok(()) } else { Err(GraphError::ForeignVar) }
    }

    /// Applies any op to vars of this graph: the one door every builder
    /// method goes through.
    pub fn apply(&self, op: Op, inputs: &[&Var], loc: Loc) -> Result<Var> {
        let mut ids = Vec::with_capacity(inputs.len());
        for v in inputs {
            self.own(v)?;
            ids.push(v.id);
        }
        let id = self.0.borrow_mut().add(op, &ids, Some(loc))?;
        Ok(self.var(id))
    }
}

macro_rules! unary_methods {
    ($($name:ident => $fun:ident),* $(,)?) => {$(
        #[doc = concat!("Elementwise `", stringify!($name), "`.")]
        #[track_caller]
        pub fn $name(&self) -> Result<Var> {
            self.unary(UnaryOp::$fun, Loc::from_caller(Location::caller()))
        }
    )*};
}

macro_rules! binary_methods {
    ($($name:ident => $fun:ident),* $(,)?) => {$(
        #[doc = concat!("Elementwise `", stringify!($name), "`, broadcast like numpy.")]
        #[track_caller]
        pub fn $name(&self, other: impl Operand) -> Result<Var> {
            self.binary(BinaryOp::$fun, other, Loc::from_caller(Location::caller()))
        }
    )*};
}

macro_rules! reduce_methods {
    ($($name:ident => $fun:ident),* $(,)?) => {$(
        #[doc = concat!("`", stringify!($name), "` over `axes` (negative counts from the end; empty reduces nothing).")]
        #[track_caller]
        pub fn $name(&self, axes: &[isize], keepdims: bool) -> Result<Var> {
            self.reduce(ReduceOp::$fun, axes, keepdims, Loc::from_caller(Location::caller()))
        }
    )*};
}

impl Var {
    /// The node behind this var.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The builder of the graph it belongs to.
    pub fn builder(&self) -> &Builder {
        &self.builder
    }

    /// Its type.
    pub fn ty(&self) -> TensorType {
        self.builder.0.borrow().ty(self.id).clone()
    }

    /// Its dtype.
    pub fn dtype(&self) -> DType {
        self.builder.0.borrow().ty(self.id).dtype
    }

    /// Its shape.
    pub fn shape(&self) -> Shape {
        self.builder.0.borrow().ty(self.id).shape.clone()
    }

    /// Its rank.
    pub fn rank(&self) -> usize {
        self.builder.0.borrow().ty(self.id).shape.rank()
    }

    /// Names the node for dumps (the name does not change its identity).
    /// Identical expressions are one node, so the last name given to any of
    /// them is the one shown.
    pub fn named(self, name: &str) -> Var {
        self.builder.0.borrow_mut().set_name(self.id, name);
        self
    }

    fn apply(&self, op: Op, others: &[&Var], loc: Loc) -> Result<Var> {
        let mut inputs = vec![self];
        inputs.extend_from_slice(others);
        self.builder.apply(op, &inputs, loc)
    }

    fn unary(&self, fun: UnaryOp, loc: Loc) -> Result<Var> {
        self.apply(Op::Unary { fun }, &[], loc)
    }

    fn binary(&self, fun: BinaryOp, other: impl Operand, loc: Loc) -> Result<Var> {
        let other = other.to_var(self, &loc)?;
        self.apply(Op::Binary { fun }, &[&other], loc)
    }

    unary_methods!(
        neg => Neg, abs => Abs, sign => Sign, exp => Exp, log => Log, log1p => Log1p, expm1 => Expm1,
        sqrt => Sqrt, rsqrt => Rsqrt, reciprocal => Reciprocal, square => Square, tanh => Tanh,
        sigmoid => Sigmoid, softplus => Softplus, relu => Relu, sin => Sin, cos => Cos, floor => Floor,
        ceil => Ceil, round => Round, logical_not => Not, isnan => IsNan, isinf => IsInf,
    );

    binary_methods!(
        add => Add, sub => Sub, mul => Mul, div => Div, pow => Pow, maximum => Maximum, minimum => Minimum,
        equal => Eq, not_equal => Ne, less => Lt, less_equal => Le, greater => Gt, greater_equal => Ge,
        logical_and => And, logical_or => Or,
    );

    /// Applies a unary function chosen at run time.
    #[track_caller]
    pub fn map(&self, fun: UnaryOp) -> Result<Var> {
        self.unary(fun, Loc::from_caller(Location::caller()))
    }

    /// Applies a binary function chosen at run time.
    #[track_caller]
    pub fn zip(&self, fun: BinaryOp, other: impl Operand) -> Result<Var> {
        self.binary(fun, other, Loc::from_caller(Location::caller()))
    }

    /// `where(self, a, b)`: `a` where this bool tensor is true, else `b`.
    #[track_caller]
    pub fn select(&self, a: impl Operand, b: impl Operand) -> Result<Var> {
        let loc = Loc::from_caller(Location::caller());
        let a = a.to_var(self, &loc)?;
        let b = b.to_var(&a, &loc)?;
        self.apply(Op::Where, &[&a, &b], loc)
    }

    /// Elementwise conversion to `dtype`.
    #[track_caller]
    pub fn cast(&self, dtype: DType) -> Result<Var> {
        self.apply(Op::Cast { to: dtype }, &[], Loc::from_caller(Location::caller()))
    }

    fn axes(&self, axes: &[isize]) -> Result<Box<[usize]>> {
        let rank = self.rank();
        let mut out = axes.iter().map(|&a| normalize_axis(a, rank)).collect::<std::result::Result<Vec<_>, _>>();
        if let Ok(v) = &mut out {
            v.sort_unstable();
            if v.windows(2).any(|w| w[0] == w[1]) {
                return Err(GraphError::Mismatch(format!("axes {axes:?} name an axis twice")));
            }
        }
        out.map(Into::into).map_err(GraphError::Mismatch)
    }

    fn axis(&self, axis: isize, rank: usize) -> Result<usize> {
        normalize_axis(axis, rank).map_err(GraphError::Mismatch)
    }

    fn reduce(&self, fun: ReduceOp, axes: &[isize], keepdims: bool, loc: Loc) -> Result<Var> {
        let axes = self.axes(axes)?;
        self.apply(Op::Reduce { fun, axes, keepdims }, &[], loc)
    }

    reduce_methods!(sum => Sum, mean => Mean, prod => Prod, max => Max, min => Min, logsumexp => LogSumExp);

    /// Sum of all elements, a scalar.
    #[track_caller]
    pub fn sum_all(&self) -> Result<Var> {
        let all: Vec<isize> = (0..self.rank() as isize).collect();
        self.reduce(ReduceOp::Sum, &all, false, Loc::from_caller(Location::caller()))
    }

    /// Mean of all elements, a scalar.
    #[track_caller]
    pub fn mean_all(&self) -> Result<Var> {
        let all: Vec<isize> = (0..self.rank() as isize).collect();
        self.reduce(ReduceOp::Mean, &all, false, Loc::from_caller(Location::caller()))
    }

    /// Index of the maximum along `axis` (`i64`).
    #[track_caller]
    pub fn argmax(&self, axis: isize, keepdims: bool) -> Result<Var> {
        let axis = self.axis(axis, self.rank())?;
        self.apply(
            Op::ArgReduce { fun: ArgReduceOp::Argmax, axis, keepdims },
            &[],
            Loc::from_caller(Location::caller()),
        )
    }

    /// Index of the minimum along `axis` (`i64`).
    #[track_caller]
    pub fn argmin(&self, axis: isize, keepdims: bool) -> Result<Var> {
        let axis = self.axis(axis, self.rank())?;
        self.apply(
            Op::ArgReduce { fun: ArgReduceOp::Argmin, axis, keepdims },
            &[],
            Loc::from_caller(Location::caller()),
        )
    }

    /// Matrix product with numpy `matmul` semantics.
    #[track_caller]
    pub fn dot(&self, other: &Var) -> Result<Var> {
        self.apply(Op::Dot, &[other], Loc::from_caller(Location::caller()))
    }

    /// Reshape to known sizes, one of which may be `-1` (inferred, also when
    /// it stands for a symbolic dim: `[batch, 3, 4]` to `[-1, 12]`).
    #[track_caller]
    pub fn reshape(&self, shape: &[i64]) -> Result<Var> {
        let loc = Loc::from_caller(Location::caller());
        let bad = |msg: String| GraphError::Mismatch(format!("reshape of {} to {shape:?}: {msg}", self.shape()));
        let infer_at: Vec<usize> = shape.iter().enumerate().filter(|(_, d)| **d == -1).map(|(i, _)| i).collect();
        if infer_at.len() > 1 || shape.iter().any(|&d| d < -1) {
            return Err(bad("only one -1 is allowed and no other negative size".into()));
        }
        let mut dims: Vec<Dim> = shape.iter().map(|&d| Dim::Known(d.max(0) as usize)).collect();
        if let Some(&at) = infer_at.first() {
            let known: Vec<Dim> = dims.iter().enumerate().filter(|(i, _)| *i != at).map(|(_, d)| *d).collect();
            dims[at] = infer_dim(&self.shape(), &known).map_err(bad)?;
        }
        self.apply(Op::Reshape { shape: dims.into() }, &[], loc)
    }

    /// Reshape to an exact shape, symbolic dims allowed.
    #[track_caller]
    pub fn reshape_to(&self, shape: impl Into<Shape>) -> Result<Var> {
        self.apply(Op::Reshape { shape: shape.into() }, &[], Loc::from_caller(Location::caller()))
    }

    /// Keeps axes before `start_axis` and merges the rest into one.
    #[track_caller]
    pub fn flatten(&self, start_axis: usize) -> Result<Var> {
        let loc = Loc::from_caller(Location::caller());
        let shape = self.shape();
        if start_axis > shape.rank() {
            return Err(GraphError::Mismatch(format!(
                "flatten from axis {start_axis} of a rank-{} tensor",
                shape.rank()
            )));
        }
        let mut dims = shape[..start_axis].to_vec();
        dims.push(infer_dim(&shape, &dims).map_err(|m| GraphError::Mismatch(format!("flatten of {shape}: {m}")))?);
        self.apply(Op::Reshape { shape: dims.into() }, &[], loc)
    }

    /// Theano's dimshuffle: output axis `i` takes input axis `pattern[i]`, or
    /// is a new size-1 axis where it is `None`.
    #[track_caller]
    pub fn dimshuffle(&self, pattern: &[Option<usize>]) -> Result<Var> {
        self.apply(Op::DimShuffle { pattern: pattern.into() }, &[], Loc::from_caller(Location::caller()))
    }

    /// Reverses the axes (numpy's `.T`).
    #[track_caller]
    pub fn transpose(&self) -> Result<Var> {
        let pattern: Vec<Option<usize>> = (0..self.rank()).rev().map(Some).collect();
        self.apply(Op::DimShuffle { pattern: pattern.into() }, &[], Loc::from_caller(Location::caller()))
    }

    /// Reorders the axes: output axis `i` is input axis `axes[i]`.
    #[track_caller]
    pub fn permute(&self, axes: &[usize]) -> Result<Var> {
        if axes.len() != self.rank() {
            return Err(GraphError::Mismatch(format!("permute needs {} axes, got {axes:?}", self.rank())));
        }
        let pattern: Vec<Option<usize>> = axes.iter().map(|&a| Some(a)).collect();
        self.apply(Op::DimShuffle { pattern: pattern.into() }, &[], Loc::from_caller(Location::caller()))
    }

    /// Inserts a size-1 axis at `axis` (negative counts from the end of the
    /// result, as in numpy).
    #[track_caller]
    pub fn expand_dims(&self, axis: isize) -> Result<Var> {
        let rank = self.rank();
        let at = self.axis(axis, rank + 1)?;
        let mut pattern: Vec<Option<usize>> = (0..rank).map(Some).collect();
        pattern.insert(at, None);
        self.apply(Op::DimShuffle { pattern: pattern.into() }, &[], Loc::from_caller(Location::caller()))
    }

    /// Removes size-1 axes: those named, or all of them if `axes` is empty.
    #[track_caller]
    pub fn squeeze(&self, axes: &[isize]) -> Result<Var> {
        let shape = self.shape();
        let drop: Vec<usize> = if axes.is_empty() {
            (0..shape.rank()).filter(|&a| shape[a] == Dim::Known(1)).collect()
        } else {
            self.axes(axes)?.to_vec()
        };
        let pattern: Vec<Option<usize>> = (0..shape.rank()).filter(|a| !drop.contains(a)).map(Some).collect();
        self.apply(Op::DimShuffle { pattern: pattern.into() }, &[], Loc::from_caller(Location::caller()))
    }

    /// Broadcasts to `shape` (numpy's `broadcast_to`).
    #[track_caller]
    pub fn broadcast_to(&self, shape: impl Into<Shape>) -> Result<Var> {
        self.apply(Op::BroadcastTo { shape: shape.into() }, &[], Loc::from_caller(Location::caller()))
    }

    /// Python slicing with one spec per leading axis.
    #[track_caller]
    pub fn slice(&self, specs: &[SliceSpec]) -> Result<Var> {
        self.apply(Op::Slice { specs: specs.into() }, &[], Loc::from_caller(Location::caller()))
    }

    /// `start:stop:step` along one axis, the others whole.
    #[track_caller]
    pub fn slice_axis(&self, axis: isize, start: Option<i64>, stop: Option<i64>, step: i64) -> Result<Var> {
        let axis = self.axis(axis, self.rank())?;
        let mut specs = vec![SliceSpec::FULL; axis + 1];
        specs[axis] = SliceSpec::new(start, stop, step);
        self.apply(Op::Slice { specs: specs.into() }, &[], Loc::from_caller(Location::caller()))
    }

    /// numpy's `take(self, indices, axis)`.
    #[track_caller]
    pub fn take(&self, indices: &Var, axis: isize) -> Result<Var> {
        let axis = self.axis(axis, self.rank())?;
        self.apply(Op::Gather { axis }, &[indices], Loc::from_caller(Location::caller()))
    }

    /// One-hot encoding of these integer indices along a new last axis.
    #[track_caller]
    pub fn one_hot(&self, depth: usize, dtype: DType) -> Result<Var> {
        self.apply(Op::OneHot { depth, dtype }, &[], Loc::from_caller(Location::caller()))
    }

    /// Pads each axis with `(before, after)` copies of `value`.
    #[track_caller]
    pub fn pad(&self, widths: &[(usize, usize)], value: f64) -> Result<Var> {
        self.apply(Op::Pad { widths: widths.into(), value: F64(value) }, &[], Loc::from_caller(Location::caller()))
    }

    /// Softmax along `axis`.
    #[track_caller]
    pub fn softmax(&self, axis: isize) -> Result<Var> {
        let axis = self.axis(axis, self.rank())?;
        self.apply(Op::Softmax { axis }, &[], Loc::from_caller(Location::caller()))
    }

    /// Log-softmax along `axis`.
    #[track_caller]
    pub fn log_softmax(&self, axis: isize) -> Result<Var> {
        let axis = self.axis(axis, self.rank())?;
        self.apply(Op::LogSoftmax { axis }, &[], Loc::from_caller(Location::caller()))
    }

    /// 2-d convolution of this NCHW input with OIHW `weights`.
    #[track_caller]
    pub fn conv2d(&self, weights: &Var, params: Conv2d) -> Result<Var> {
        self.apply(Op::Conv2d(Box::new(params)), &[weights], Loc::from_caller(Location::caller()))
    }

    /// Max pooling of this NCHW input.
    #[track_caller]
    pub fn max_pool2d(&self, params: Pool2d) -> Result<Var> {
        self.apply(Op::MaxPool2d(Box::new(params)), &[], Loc::from_caller(Location::caller()))
    }

    /// Average pooling of this NCHW input.
    #[track_caller]
    pub fn avg_pool2d(&self, params: Pool2d) -> Result<Var> {
        self.apply(Op::AvgPool2d(Box::new(params)), &[], Loc::from_caller(Location::caller()))
    }

    /// Inverted dropout with a fixed mask per seed (identity unless `training`).
    #[track_caller]
    pub fn dropout(&self, rate: f64, seed: u64, training: bool) -> Result<Var> {
        self.apply(Op::Dropout { rate: F64(rate), seed, training }, &[], Loc::from_caller(Location::caller()))
    }

    /// Dropout whose mask also depends on `key`, an `i64` scalar (a step
    /// counter gives a new mask each step).
    #[track_caller]
    pub fn dropout_keyed(&self, rate: f64, seed: u64, training: bool, key: &Var) -> Result<Var> {
        self.apply(Op::Dropout { rate: F64(rate), seed, training }, &[key], Loc::from_caller(Location::caller()))
    }
}

/// The one dim that makes `shape`'s element count equal to `others`' times it.
fn infer_dim(shape: &Shape, others: &[Dim]) -> std::result::Result<Dim, String> {
    let (from_known, mut from_syms) = dim_product(shape).ok_or("size overflows")?;
    let (to_known, to_syms) = dim_product(others).ok_or("size overflows")?;
    for s in &to_syms {
        match from_syms.iter().position(|x| x == s) {
            Some(i) => {
                from_syms.remove(i);
            }
            None => return Err(format!("symbolic dim {} is not in the input", s.name())),
        }
    }
    if to_known == 0 {
        return Err("cannot infer a dim next to a size-0 dim".into());
    }
    if from_known % to_known != 0 {
        return Err(format!("{from_known} elements do not divide into groups of {to_known}"));
    }
    let ratio = from_known / to_known;
    match (from_syms.as_slice(), ratio) {
        ([], n) => Ok(Dim::Known(n)),
        ([s], 1) => Ok(Dim::Sym(*s)),
        (syms, n) => {
            let names: Vec<&str> = syms.iter().map(|s| s.name()).collect();
            Err(format!(
                "the inferred dim would be {n} x {}, and a dim is one number or one symbol (keep the symbolic dims as their own axes)",
                names.join(" x ")
            ))
        }
    }
}

impl fmt::Debug for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Var({}: {})", self.id, self.ty())
    }
}

mod free;
mod operand;
mod operators;
mod scan;
pub use free::{concat, stack, where_};
pub use operand::Operand;
use operand::scalar_like;
pub use scan::{ScanArgs, ScanOut, State, Step, StepOut};
#[cfg(test)]
mod tests;
