//! Shapes: static dims, named symbolic dims, numpy broadcasting.

use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::DType;

/// A named symbolic dimension such as `batch`, interned process-wide so that
/// a [`Dim`] stays `Copy` and prints without a lookup table.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(u32);

struct Interner {
    names: Vec<&'static str>,
    ids: HashMap<&'static str, u32>,
}

fn interner() -> &'static Mutex<Interner> {
    static INTERNER: OnceLock<Mutex<Interner>> = OnceLock::new();
    INTERNER.get_or_init(|| Mutex::new(Interner { names: Vec::new(), ids: HashMap::new() }))
}

impl Symbol {
    /// Interns `name`. A name must look like an identifier (letters, digits,
    /// `_`, not starting with a digit) so that it never reads as a number.
    pub fn new(name: &str) -> Result<Symbol, String> {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            if name.strip_prefix('-').is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit())) {
                return Err(format!("a size cannot be negative: {name}"));
            }
            return Err(format!(
                "invalid symbolic dim name '{name}': use letters, digits and '_', not starting with a digit"
            ));
        }
        // The lock is only poisoned if a thread panicked while interning, which
        // cannot happen between the two statements below.
        let mut table = interner().lock().expect("symbol interner lock poisoned");
        if let Some(&id) = table.ids.get(name) {
            return Ok(Symbol(id));
        }
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        let id = table.names.len() as u32;
        table.names.push(leaked);
        table.ids.insert(leaked, id);
        Ok(Symbol(id))
    }

    /// The symbol's name.
    pub fn name(self) -> &'static str {
        interner().lock().expect("symbol interner lock poisoned").names[self.0 as usize]
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One dimension of a shape: a known size or a named symbol bound at call time.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A size known when the graph is built.
    Known(usize),
    /// A size named now and bound when the graph is called (a batch size).
    Sym(Symbol),
}

impl Dim {
    /// A symbolic dim named `name` (see [`Symbol::new`] for the naming rule).
    pub fn sym(name: &str) -> Result<Dim, String> {
        Symbol::new(name).map(Dim::Sym)
    }

    /// The size, if known.
    pub fn known(self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(n),
            Dim::Sym(_) => None,
        }
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Dim {
        Dim::Known(n)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s.name()),
        }
    }
}

impl fmt::Debug for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Dim {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Dim::Known(n) => s.serialize_u64(*n as u64),
            Dim::Sym(sym) => s.serialize_str(sym.name()),
        }
    }
}

impl<'de> Deserialize<'de> for Dim {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dim, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Known(u64),
            Sym(String),
            Negative(i64),
            Other(serde_json::Value),
        }
        const FORMS: &str = "a dim is a size (0, 1, 2, ...) or the name of a symbolic dim";
        match Raw::deserialize(d)? {
            Raw::Known(n) => usize::try_from(n)
                .map(Dim::Known)
                .map_err(|_| serde::de::Error::custom(format!("dim {n} does not fit in usize"))),
            Raw::Sym(name) => Dim::sym(&name).map_err(serde::de::Error::custom),
            Raw::Negative(n) => Err(serde::de::Error::custom(format!(
                "{FORMS}, got {n} (shapes are written out in full: numpy's -1 for \"the rest\" is not accepted, give the size)"
            ))),
            Raw::Other(v) => Err(serde::de::Error::custom(format!("{FORMS}, got {v}"))),
        }
    }
}

/// The dims of a tensor, outermost first (row-major).
#[derive(Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Shape(Box<[Dim]>);

impl Shape {
    /// The shape of a scalar: no dims.
    pub fn scalar() -> Shape {
        Shape(Box::new([]))
    }

    /// A shape of known sizes.
    pub fn known(dims: &[usize]) -> Shape {
        dims.iter().map(|&n| Dim::Known(n)).collect()
    }

    /// Number of dims.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// All sizes, if none is symbolic.
    pub fn to_known(&self) -> Option<Vec<usize>> {
        self.0.iter().map(|d| d.known()).collect()
    }

    /// Number of elements, if every dim is known; `None` also on overflow.
    pub fn known_size(&self) -> Option<usize> {
        self.0.iter().try_fold(1usize, |acc, d| acc.checked_mul(d.known()?))
    }

    /// The dims as a slice.
    pub fn dims(&self) -> &[Dim] {
        &self.0
    }
}

impl Deref for Shape {
    type Target = [Dim];
    fn deref(&self) -> &[Dim] {
        &self.0
    }
}

impl FromIterator<Dim> for Shape {
    fn from_iter<I: IntoIterator<Item = Dim>>(iter: I) -> Shape {
        Shape(iter.into_iter().collect())
    }
}

impl From<Vec<Dim>> for Shape {
    fn from(v: Vec<Dim>) -> Shape {
        Shape(v.into_boxed_slice())
    }
}

impl From<&[Dim]> for Shape {
    fn from(v: &[Dim]) -> Shape {
        Shape(v.into())
    }
}

impl<const N: usize> From<[Dim; N]> for Shape {
    fn from(v: [Dim; N]) -> Shape {
        Shape(Box::new(v) as Box<[Dim]>)
    }
}

impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Shape {
        Shape::known(v)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Shape {
        Shape::known(&v)
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Shape {
        Shape::known(&v)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The static type of a node's value: dtype and shape.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Dims, outermost first.
    pub shape: Shape,
}

impl TensorType {
    /// A type from its parts.
    pub fn new(dtype: DType, shape: impl Into<Shape>) -> TensorType {
        TensorType { dtype, shape: shape.into() }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}

/// numpy broadcasting of two shapes: align from the right, a dim of 1
/// stretches. Two different symbols, or a symbol against a known size other
/// than 1, do not broadcast: the result would depend on call-time values.
pub fn broadcast_shapes(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let rank = a.rank().max(b.rank());
    let mut out = vec![Dim::Known(1); rank];
    for (i, slot) in out.iter_mut().enumerate() {
        let da = (i + a.rank()).checked_sub(rank).map_or(Dim::Known(1), |j| a[j]);
        let db = (i + b.rank()).checked_sub(rank).map_or(Dim::Known(1), |j| b[j]);
        *slot = match (da, db) {
            (x, y) if x == y => x,
            (Dim::Known(1), y) => y,
            (x, Dim::Known(1)) => x,
            _ => {
                return Err(format!(
                    "shapes {a} and {b} do not broadcast: dim {da} against {db} (numpy rule: equal, or one of them 1)"
                ));
            }
        };
    }
    Ok(out.into())
}

/// Normalizes a possibly negative axis against `rank` (numpy's convention).
pub fn normalize_axis(axis: isize, rank: usize) -> Result<usize, String> {
    let r = rank as isize;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// The product of a list of dims as (known factor, sorted symbols), so that
/// element counts with symbols can be compared and divided.
pub(crate) fn dim_product(dims: &[Dim]) -> Option<(usize, Vec<Symbol>)> {
    let mut known = 1usize;
    let mut syms = Vec::new();
    for d in dims {
        match d {
            Dim::Known(n) => known = known.checked_mul(*n)?,
            Dim::Sym(s) => syms.push(*s),
        }
    }
    syms.sort();
    Some((known, syms))
}

/// Checks that a shape's known element count fits in memory arithmetic for
/// `dtype` (no usize overflow of the byte size).
pub(crate) fn check_size(shape: &Shape, dtype: DType) -> Result<(), String> {
    let mut bytes = dtype.size_bytes();
    for d in shape.iter() {
        if let Dim::Known(n) = d {
            bytes =
                bytes.checked_mul(*n).ok_or_else(|| format!("shape {shape} of {dtype} overflows the address space"))?;
        }
    }
    if bytes > isize::MAX as usize {
        return Err(format!("shape {shape} of {dtype} overflows the address space"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(dims: &[usize]) -> Shape {
        Shape::known(dims)
    }

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shapes(&s(&[3, 1]), &s(&[4])).unwrap(), s(&[3, 4]));
        assert_eq!(broadcast_shapes(&s(&[]), &s(&[2, 3])).unwrap(), s(&[2, 3]));
        assert_eq!(broadcast_shapes(&s(&[2, 1, 5]), &s(&[7, 1])).unwrap(), s(&[2, 7, 5]));
        assert_eq!(broadcast_shapes(&s(&[0, 1]), &s(&[1, 4])).unwrap(), s(&[0, 4]));
        let err = broadcast_shapes(&s(&[3]), &s(&[4])).unwrap_err();
        assert!(err.contains("[3] and [4] do not broadcast"), "{err}");
    }

    #[test]
    fn symbols_broadcast_only_with_themselves_or_one() {
        let b = Dim::sym("batch").unwrap();
        let n = Dim::sym("n").unwrap();
        let x: Shape = [b, Dim::Known(3)].into();
        assert_eq!(broadcast_shapes(&x, &s(&[3])).unwrap(), x);
        assert_eq!(broadcast_shapes(&x, &s(&[1, 1])).unwrap(), x);
        assert!(broadcast_shapes(&x, &[n, Dim::Known(3)].into()).is_err());
        assert!(broadcast_shapes(&x, &s(&[5, 3])).is_err());
    }

    #[test]
    fn symbols_are_interned_and_validated() {
        assert!(Dim::sym("batch").unwrap() == Dim::sym("batch").unwrap());
        assert_eq!(Dim::sym("batch").unwrap().to_string(), "batch");
        assert!(Dim::sym("9lives").is_err());
        assert!(Dim::sym("").is_err());
        let json = serde_json::to_string(&Shape::from([Dim::sym("b").unwrap(), Dim::Known(4)])).unwrap();
        assert_eq!(json, r#"["b",4]"#);
        let back: Shape = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_string(), "[b,4]");
    }

    #[test]
    fn overflowing_shapes_are_rejected() {
        assert!(check_size(&s(&[usize::MAX / 2, 4]), DType::F32).is_err());
        assert!(check_size(&s(&[1024, 1024]), DType::F64).is_ok());
        assert_eq!(s(&[usize::MAX, 2]).known_size(), None);
    }

    #[test]
    fn axes_normalize_like_numpy() {
        assert_eq!(normalize_axis(-1, 3).unwrap(), 2);
        assert_eq!(normalize_axis(0, 1).unwrap(), 0);
        assert!(normalize_axis(3, 3).is_err());
        assert!(normalize_axis(-4, 3).is_err());
    }
}

/// Parses the form `Display` writes: `f32[batch,60]`, `bool[]`.
impl std::str::FromStr for TensorType {
    type Err = String;
    fn from_str(s: &str) -> Result<TensorType, String> {
        let bad = || format!("'{s}' is not a type like f32[batch,60]");
        let open = s.find('[').ok_or_else(bad)?;
        let body = s[open..].strip_prefix('[').and_then(|b| b.strip_suffix(']')).ok_or_else(bad)?;
        let dtype: DType = s[..open].parse()?;
        let dims = if body.is_empty() {
            Vec::new()
        } else {
            body.split(',')
                .map(|d| match d.trim().parse::<usize>() {
                    Ok(n) => Ok(Dim::Known(n)),
                    Err(_) => Dim::sym(d.trim()),
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(TensorType::new(dtype, dims))
    }
}

#[cfg(test)]
mod type_text_tests {
    use super::*;

    #[test]
    fn types_parse_back() {
        for s in ["f32[batch,60]", "bool[]", "i64[0,1,2]"] {
            assert_eq!(s.parse::<TensorType>().unwrap().to_string(), s);
        }
        assert!("f32".parse::<TensorType>().is_err());
        assert!("f16[2]".parse::<TensorType>().is_err());
        assert!("f32[2,-1]".parse::<TensorType>().is_err());
    }
}
