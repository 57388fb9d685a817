//! Concrete tensor values: what inputs, constants, shared variables and
//! outputs hold.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::DType;

/// A dense row-major tensor of one of rhea's dtypes.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `f32` elements.
    F32(ArrayD<f32>),
    /// `f64` elements.
    F64(ArrayD<f64>),
    /// `i32` elements.
    I32(ArrayD<i32>),
    /// `i64` elements.
    I64(ArrayD<i64>),
    /// `bool` elements.
    Bool(ArrayD<bool>),
}

/// Applies an expression to the array inside a [`Value`], whatever its dtype.
#[macro_export]
macro_rules! with_array {
    ($value:expr, $a:ident => $body:expr) => {
        match $value {
            $crate::Value::F32($a) => $body,
            $crate::Value::F64($a) => $body,
            $crate::Value::I32($a) => $body,
            $crate::Value::I64($a) => $body,
            $crate::Value::Bool($a) => $body,
        }
    };
}

/// A tensor's elements in row-major order, writable in place: the dtype
/// and shape cannot change through it.
#[allow(missing_docs)]
pub enum ElementsMut<'a> {
    F32(&'a mut [f32]),
    F64(&'a mut [f64]),
    I32(&'a mut [i32]),
    I64(&'a mut [i64]),
    Bool(&'a mut [bool]),
}

impl Value {
    /// A value of `dtype` and `shape` whose element `i` (row-major) is
    /// `f(i)`, converted as `as` does; an error naming the bytes when the
    /// memory cannot be had, instead of an abort.
    pub fn try_from_fn(dtype: DType, shape: &[usize], f: impl Fn(usize) -> f64) -> Result<Value, String> {
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let bytes = n.and_then(|n| crate::memory::value_bytes(n, dtype));
        let (Some(n), Some(bytes)) = (n, bytes) else {
            return Err(format!("a {dtype}{shape:?} value is larger than this machine can address"));
        };
        let oom = |_| {
            format!(
                "out of memory: cannot allocate a {dtype}{shape:?} value of {}",
                crate::memory::format_bytes(bytes as u128)
            )
        };
        macro_rules! make {
            ($t:ty, $variant:ident, $conv:expr) => {{
                let mut data: Vec<$t> = Vec::new();
                data.try_reserve_exact(n).map_err(oom)?;
                data.extend((0..n).map(|i| $conv(f(i))));
                Value::$variant(ArrayD::from_shape_vec(IxDyn(shape), data).expect("sized to the shape"))
            }};
        }
        Ok(match dtype {
            DType::F32 => make!(f32, F32, |x: f64| x as f32),
            DType::F64 => make!(f64, F64, |x: f64| x),
            DType::I32 => make!(i32, I32, |x: f64| x as i32),
            DType::I64 => make!(i64, I64, |x: f64| x as i64),
            DType::Bool => make!(bool, Bool, |x: f64| x != 0.0),
        })
    }

    /// The elements in row-major order, for writing in place (a value not
    /// in row-major layout is first made so).
    pub fn elements_mut(&mut self) -> ElementsMut<'_> {
        if !with_array!(self, a => a.is_standard_layout()) {
            *self = with_array!(&*self, a => a.as_standard_layout().into_owned().into());
        }
        macro_rules! slice {
            ($a:expr) => {
                $a.as_slice_mut().expect("standard layout was ensured above")
            };
        }
        match self {
            Value::F32(a) => ElementsMut::F32(slice!(a)),
            Value::F64(a) => ElementsMut::F64(slice!(a)),
            Value::I32(a) => ElementsMut::I32(slice!(a)),
            Value::I64(a) => ElementsMut::I64(slice!(a)),
            Value::Bool(a) => ElementsMut::Bool(slice!(a)),
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Value::F32(_) => DType::F32,
            Value::F64(_) => DType::F64,
            Value::I32(_) => DType::I32,
            Value::I64(_) => DType::I64,
            Value::Bool(_) => DType::Bool,
        }
    }

    /// The sizes of the dims.
    pub fn shape(&self) -> &[usize] {
        with_array!(self, a => a.shape())
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_array!(self, a => a.len())
    }

    /// True if the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A scalar (0-d tensor) of `dtype` holding `x` converted like a cast.
    pub fn scalar(x: f64, dtype: DType) -> Value {
        Value::from_f64(dtype, &[], &[x]).expect("one element fits a 0-d shape")
    }

    /// A tensor of `dtype` and `shape` from `f64` data, converted like a cast
    /// (floats truncate toward zero into integers; non-zero is `true`).
    pub fn from_f64(dtype: DType, shape: &[usize], data: &[f64]) -> Result<Value, String> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(format!("{} elements do not fill shape {shape:?} ({n} elements)", data.len()));
        }
        Ok(match dtype {
            DType::F32 => Value::F32(shaped(shape, data.iter().map(|&x| x as f32).collect())),
            DType::F64 => Value::F64(shaped(shape, data.to_vec())),
            DType::I32 => Value::I32(shaped(shape, data.iter().map(|&x| x as i32).collect())),
            DType::I64 => Value::I64(shaped(shape, data.iter().map(|&x| x as i64).collect())),
            DType::Bool => Value::Bool(shaped(shape, data.iter().map(|&x| x != 0.0).collect())),
        })
    }

    /// The elements in row-major order as `f64` (`true` is 1).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            Value::F32(a) => a.iter().map(|&x| x as f64).collect(),
            Value::F64(a) => a.iter().copied().collect(),
            Value::I32(a) => a.iter().map(|&x| x as f64).collect(),
            Value::I64(a) => a.iter().map(|&x| x as f64).collect(),
            Value::Bool(a) => a.iter().map(|&x| x as u8 as f64).collect(),
        }
    }

    /// The `f32` array inside, if that is the dtype.
    pub fn as_f32(&self) -> Option<&ArrayD<f32>> {
        match self {
            Value::F32(a) => Some(a),
            _ => None,
        }
    }

    /// The `f64` array inside, if that is the dtype.
    pub fn as_f64(&self) -> Option<&ArrayD<f64>> {
        match self {
            Value::F64(a) => Some(a),
            _ => None,
        }
    }

    /// The elements as little-endian bytes in row-major order (the layout of
    /// safetensors files; `bool` is one byte, 0 or 1).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        fn bytes<T: Copy, const N: usize>(a: &ArrayD<T>, f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
            a.iter().flat_map(|&x| f(x)).collect()
        }
        match self {
            Value::F32(a) => bytes(a, f32::to_le_bytes),
            Value::F64(a) => bytes(a, f64::to_le_bytes),
            Value::I32(a) => bytes(a, i32::to_le_bytes),
            Value::I64(a) => bytes(a, i64::to_le_bytes),
            Value::Bool(a) => bytes(a, |b| [b as u8]),
        }
    }

    /// Reads little-endian row-major bytes; the byte count must match the
    /// shape exactly.
    pub fn from_le_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<Value, String> {
        let n = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("shape {shape:?} overflows usize"))?;
        let want = n.checked_mul(dtype.size_bytes()).ok_or_else(|| format!("shape {shape:?} overflows usize"))?;
        if bytes.len() != want {
            return Err(format!("{} bytes given for {dtype}{shape:?}, which needs {want}", bytes.len()));
        }
        fn read<T, const N: usize>(shape: &[usize], bytes: &[u8], f: impl Fn([u8; N]) -> T) -> ArrayD<T> {
            let v = bytes.chunks_exact(N).map(|c| f(c.try_into().expect("chunk of N bytes"))).collect();
            ArrayD::from_shape_vec(IxDyn(shape), v).expect("byte count checked above")
        }
        Ok(match dtype {
            DType::F32 => Value::F32(read(shape, bytes, f32::from_le_bytes)),
            DType::F64 => Value::F64(read(shape, bytes, f64::from_le_bytes)),
            DType::I32 => Value::I32(read(shape, bytes, i32::from_le_bytes)),
            DType::I64 => Value::I64(read(shape, bytes, i64::from_le_bytes)),
            DType::Bool => {
                if let Some(b) = bytes.iter().find(|&&b| b > 1) {
                    return Err(format!("bool tensor holds byte {b}; only 0 and 1 are valid"));
                }
                Value::Bool(read(shape, bytes, |[b]: [u8; 1]| b == 1))
            }
        })
    }

    /// Bitwise equality (NaN equals NaN with the same bits, 0.0 differs from
    /// -0.0): the identity used to intern constants.
    pub fn bit_eq(&self, other: &Value) -> bool {
        self.dtype() == other.dtype() && self.shape() == other.shape() && self.to_le_bytes() == other.to_le_bytes()
    }

    /// A one-line summary: dtype, shape, and a few statistics or values.
    pub fn summary(&self) -> String {
        let head = format!("{}{:?}", self.dtype(), self.shape());
        let v = self.to_f64_vec();
        if v.len() <= 6 {
            let items: Vec<String> = v.iter().map(|x| format_number(*x, self.dtype())).collect();
            return format!("{head} [{}]", items.join(", "));
        }
        let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        let non_finite = v.len() - finite.len();
        let (mut lo, mut hi, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
        for &x in &finite {
            lo = lo.min(x);
            hi = hi.max(x);
            sum += x;
        }
        let mean = if finite.is_empty() { f64::NAN } else { sum / finite.len() as f64 };
        let mut s = format!("{head} min {lo:.6} max {hi:.6} mean {mean:.6}");
        if non_finite > 0 {
            s.push_str(&format!(" ({non_finite} non-finite)"));
        }
        s
    }
}

/// An array of `shape` from row-major data whose length was checked.
fn shaped<T>(shape: &[usize], data: Vec<T>) -> ArrayD<T> {
    ArrayD::from_shape_vec(IxDyn(shape), data).expect("data length checked against the shape")
}

fn format_number(x: f64, dtype: DType) -> String {
    match dtype {
        DType::Bool => (x != 0.0).to_string(),
        DType::I32 | DType::I64 => format!("{}", x as i64),
        // The shortest text that is this f32, not its widening to f64.
        DType::F32 => format!("{}", x as f32),
        DType::F64 => format!("{x}"),
    }
}

macro_rules! value_from_array {
    ($($t:ty => $variant:ident),*) => {$(
        impl<D: ndarray::Dimension> From<ndarray::Array<$t, D>> for Value {
            fn from(a: ndarray::Array<$t, D>) -> Value {
                Value::$variant(a.into_dyn())
            }
        }
        impl From<$t> for Value {
            fn from(x: $t) -> Value {
                Value::$variant(ndarray::arr0(x).into_dyn())
            }
        }
    )*};
}
value_from_array!(f32 => F32, f64 => F64, i32 => I32, i64 => I64, bool => Bool);

/// A constant's value, shared cheaply and compared bit for bit, so that
/// constants can be interned like any other node.
#[derive(Clone)]
pub struct Literal(Arc<Value>);

impl Literal {
    /// Wraps a value.
    pub fn new(v: Value) -> Literal {
        Literal(Arc::new(v))
    }

    /// The value.
    pub fn value(&self) -> &Value {
        &self.0
    }

    /// The single element as `f64`, if this is a tensor of one element.
    pub fn as_scalar(&self) -> Option<f64> {
        (self.0.len() == 1).then(|| self.0.to_f64_vec()[0])
    }
}

impl PartialEq for Literal {
    fn eq(&self, other: &Literal) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.bit_eq(&other.0)
    }
}

impl Eq for Literal {}

impl Hash for Literal {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.dtype().hash(state);
        self.0.shape().hash(state);
        self.0.to_le_bytes().hash(state);
    }
}

impl fmt::Debug for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Up to eight elements are printed; larger constants print as their type.
impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.0;
        let items: Vec<String> = v.to_f64_vec().iter().take(9).map(|x| format_number(*x, v.dtype())).collect();
        match (v.shape().len(), items.len()) {
            (0, _) => f.write_str(&items[0]),
            (_, 0..=8) => write!(f, "[{}]", items.join(", ")),
            _ => write!(f, "<{} x {}>", v.dtype(), v.len()),
        }
    }
}

/// Serialized as `{"dtype": "f32", "shape": [2], "data": [1.5, "nan"]}`:
/// non-finite floats are the strings `"nan"`, `"inf"` and `"-inf"`, since
/// JSON has no such numbers.
impl Serialize for Literal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v: &Value = &self.0;
        let data: Vec<serde_json::Value> = match v {
            Value::F32(a) => a.iter().map(|&x| float_to_json(x as f64, Some(x))).collect(),
            Value::F64(a) => a.iter().map(|&x| float_to_json(x, None)).collect(),
            Value::I32(a) => a.iter().map(|&x| x.into()).collect(),
            Value::I64(a) => a.iter().map(|&x| x.into()).collect(),
            Value::Bool(a) => a.iter().map(|&x| x.into()).collect(),
        };
        #[derive(Serialize)]
        struct Raw<'a> {
            dtype: DType,
            shape: &'a [usize],
            data: Vec<serde_json::Value>,
        }
        Raw { dtype: v.dtype(), shape: v.shape(), data }.serialize(s)
    }
}

/// A literal as written in a file, before its data is checked against its
/// dtype and shape (so that the error can name whose value it is).
#[derive(Deserialize)]
pub(crate) struct RawLiteral {
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<serde_json::Value>,
}

impl RawLiteral {
    /// The literal, or what is wrong with the data.
    pub(crate) fn into_literal(self) -> Result<Literal, String> {
        literal_from_json(self.dtype, &self.shape, &self.data)
    }
}

impl<'de> Deserialize<'de> for Literal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Literal, D::Error> {
        RawLiteral::deserialize(d)?.into_literal().map_err(D::Error::custom)
    }
}

fn float_to_json(x: f64, as_f32: Option<f32>) -> serde_json::Value {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf".into() } else { "-inf".into() }
    } else if let Some(f) = as_f32 {
        // Shortest text that reads back as the same f32, not as f64.
        serde_json::from_str(&format!("{f:?}")).expect("Debug of a finite f32 is valid JSON")
    } else {
        serde_json::Number::from_f64(x).expect("finite").into()
    }
}

/// Reads a float written by [`Literal`]'s serializer, or by a person.
pub(crate) fn float_from_json(v: &serde_json::Value) -> Result<f64, String> {
    match v {
        serde_json::Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a float")),
        serde_json::Value::String(s) => match s.as_str() {
            "nan" => Ok(f64::NAN),
            "inf" => Ok(f64::INFINITY),
            "-inf" => Ok(f64::NEG_INFINITY),
            _ => Err(format!("'{s}' is not a float (non-finite values are \"nan\", \"inf\", \"-inf\")")),
        },
        other => Err(format!("{other} is not a float")),
    }
}

fn literal_from_json(dtype: DType, shape: &[usize], data: &[serde_json::Value]) -> Result<Literal, String> {
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows usize"))?;
    if n != data.len() {
        return Err(format!("{} data elements do not fill shape {shape:?} ({n} elements)", data.len()));
    }
    let bad = |i: usize, what: &str| format!("element {i} ({}) is not {what}", data[i]);
    let value = match dtype {
        DType::F32 => Value::F32(shaped(
            shape,
            data.iter()
                .enumerate()
                .map(|(i, x)| match x {
                    // Parse the text as f32 directly: going through f64 could round twice.
                    serde_json::Value::Number(num) => num.to_string().parse::<f32>().map_err(|_| bad(i, "an f32")),
                    _ => float_from_json(x).map(|f| f as f32).map_err(|_| bad(i, "an f32")),
                })
                .collect::<Result<_, _>>()?,
        )),
        DType::F64 => Value::F64(shaped(
            shape,
            data.iter()
                .enumerate()
                .map(|(i, x)| float_from_json(x).map_err(|_| bad(i, "an f64")))
                .collect::<Result<_, _>>()?,
        )),
        DType::I32 => Value::I32(shaped(
            shape,
            data.iter()
                .enumerate()
                .map(|(i, x)| x.as_i64().and_then(|v| i32::try_from(v).ok()).ok_or_else(|| bad(i, "an i32")))
                .collect::<Result<_, _>>()?,
        )),
        DType::I64 => Value::I64(shaped(
            shape,
            data.iter()
                .enumerate()
                .map(|(i, x)| x.as_i64().ok_or_else(|| bad(i, "an i64")))
                .collect::<Result<_, _>>()?,
        )),
        DType::Bool => Value::Bool(shaped(
            shape,
            data.iter()
                .enumerate()
                .map(|(i, x)| x.as_bool().ok_or_else(|| bad(i, "a bool")))
                .collect::<Result<_, _>>()?,
        )),
    };
    Ok(Literal::new(value))
}

/// An `f64` attribute (a pad value, a dropout rate) that hashes and compares
/// by bits, so ops holding it can be interned.
#[derive(Clone, Copy)]
pub struct F64(pub f64);

impl PartialEq for F64 {
    fn eq(&self, other: &F64) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for F64 {}

impl Hash for F64 {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

impl fmt::Debug for F64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for F64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for F64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        float_to_json(self.0, None).serialize(s)
    }
}

impl<'de> Deserialize<'de> for F64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<F64, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        float_from_json(&v).map(F64).map_err(D::Error::custom)
    }
}

/// The NaN guard's finding on one value: `None` if it is not a float or
/// every element is finite; else the first NaN or infinity, where it is,
/// and the statistics of the `inputs` of the step that made it.
pub fn nan_report(v: &Value, inputs: &[&Value]) -> Option<String> {
    if !v.dtype().is_float() {
        return None;
    }
    let (i, x) = v.to_f64_vec().into_iter().enumerate().find(|(_, x)| !x.is_finite())?;
    let stats: Vec<String> = inputs
        .iter()
        .filter(|v| v.dtype().is_float())
        .map(|v| {
            let all = v.to_f64_vec();
            let finite: Vec<f64> = all.iter().copied().filter(|x| x.is_finite()).collect();
            let (lo, hi) = finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
            let mean = finite.iter().sum::<f64>() / finite.len().max(1) as f64;
            let bad = all.len() - finite.len();
            format!("{}{:?} min {lo:.4e} max {hi:.4e} mean {mean:.4e}, {bad} non-finite", v.dtype(), v.shape())
        })
        .collect();
    let what = if x.is_nan() { "NaN" } else { "an infinity" };
    let inputs = if stats.is_empty() { String::new() } else { format!("; inputs: {}", stats.join(", ")) };
    Some(format!("{what} ({x}) at element {i}{inputs}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn literals_round_trip_through_json_bit_for_bit() {
        let cases = [
            Value::from(array![0.1f32, -0.0, f32::NAN, f32::INFINITY, f32::MIN_POSITIVE, 3.4028235e38]),
            Value::from(array![[0.1f64, f64::NEG_INFINITY], [1e-300, 2.5]]),
            Value::from(array![i32::MIN, i32::MAX]),
            Value::from(array![i64::MIN, 7]),
            Value::from(array![true, false]),
            Value::from(1.5f32),
        ];
        for v in cases {
            let json = serde_json::to_string(&Literal::new(v.clone())).unwrap();
            let back: Literal = serde_json::from_str(&json).unwrap();
            assert!(back.value().bit_eq(&v), "{json}");
            assert_eq!(serde_json::to_string(&back).unwrap(), json);
        }
    }

    #[test]
    fn f32_text_is_shortest() {
        let json = serde_json::to_string(&Literal::new(Value::from(0.1f32))).unwrap();
        assert_eq!(json, r#"{"dtype":"f32","shape":[],"data":[0.1]}"#);
    }

    #[test]
    fn malformed_literals_are_errors() {
        let short = r#"{"dtype":"f32","shape":[3],"data":[1,2]}"#;
        assert!(serde_json::from_str::<Literal>(short).unwrap_err().to_string().contains("do not fill"));
        let big = r#"{"dtype":"i32","shape":[1],"data":[3000000000]}"#;
        assert!(serde_json::from_str::<Literal>(big).unwrap_err().to_string().contains("not an i32"));
        let word = r#"{"dtype":"f64","shape":[1],"data":["many"]}"#;
        assert!(serde_json::from_str::<Literal>(word).is_err());
    }

    #[test]
    fn bytes_round_trip_and_are_checked() {
        let v = Value::from(array![[1.0f32, 2.0], [3.0, -4.5]]);
        let b = v.to_le_bytes();
        assert_eq!(Value::from_le_bytes(DType::F32, &[2, 2], &b).unwrap(), v);
        assert!(Value::from_le_bytes(DType::F32, &[2, 3], &b).unwrap_err().contains("needs 24"));
        assert!(Value::from_le_bytes(DType::Bool, &[1], &[7]).is_err());
        assert!(Value::from_le_bytes(DType::F64, &[usize::MAX, 2], &[]).is_err());
    }

    #[test]
    fn literal_identity_is_bitwise() {
        let a = Literal::new(Value::from(0.0f32));
        let b = Literal::new(Value::from(-0.0f32));
        assert_ne!(a, b);
        let n1 = Literal::new(Value::from(f32::NAN));
        let n2 = Literal::new(Value::from(f32::NAN));
        assert_eq!(n1, n2);
        assert_ne!(Literal::new(Value::from(1.0f32)), Literal::new(Value::from(1.0f64)));
    }
}
