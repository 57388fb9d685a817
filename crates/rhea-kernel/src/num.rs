//! Element arithmetic shared by the op implementations. Integer arithmetic
//! wraps (as numpy's does); float results are computed in `f64` and rounded
//! once, which for `f32` is at least as exact as native `f32` math.

/// A numeric element type: `f32`, `f64`, `i32` or `i64`.
#[allow(missing_docs)]
pub trait Num: Copy + PartialOrd + Send + Sync + std::fmt::Debug + 'static {
    const ZERO: Self;
    const ONE: Self;
    const IS_FLOAT: bool;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn neg(self) -> Self;
    fn abs(self) -> Self;
    fn is_nan(self) -> bool;
    fn to_f64(self) -> f64;
    fn from_f64(x: f64) -> Self;

    /// -1, 0 or 1; NaN stays NaN.
    fn sign(self) -> Self {
        if self.is_nan() {
            self
        } else if self > Self::ZERO {
            Self::ONE
        } else if self < Self::ZERO {
            Self::ONE.neg()
        } else {
            Self::ZERO
        }
    }

    /// numpy's `maximum`: a NaN on either side wins.
    fn max_nan(self, o: Self) -> Self {
        if self.is_nan() || o.is_nan() {
            if self.is_nan() { self } else { o }
        } else if o > self {
            o
        } else {
            self
        }
    }

    /// numpy's `minimum`: a NaN on either side wins.
    fn min_nan(self, o: Self) -> Self {
        if self.is_nan() || o.is_nan() {
            if self.is_nan() { self } else { o }
        } else if o < self {
            o
        } else {
            self
        }
    }
}

macro_rules! float_num {
    ($t:ty) => {
        impl Num for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const IS_FLOAT: bool = true;
            fn add(self, o: Self) -> Self {
                self + o
            }
            fn sub(self, o: Self) -> Self {
                self - o
            }
            fn mul(self, o: Self) -> Self {
                self * o
            }
            fn neg(self) -> Self {
                -self
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(x: f64) -> Self {
                x as $t
            }
        }
    };
}
float_num!(f32);
float_num!(f64);

macro_rules! int_num {
    ($t:ty) => {
        impl Num for $t {
            const ZERO: Self = 0;
            const ONE: Self = 1;
            const IS_FLOAT: bool = false;
            fn add(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            fn sub(self, o: Self) -> Self {
                self.wrapping_sub(o)
            }
            fn mul(self, o: Self) -> Self {
                self.wrapping_mul(o)
            }
            fn neg(self) -> Self {
                self.wrapping_neg()
            }
            fn abs(self) -> Self {
                self.wrapping_abs()
            }
            fn is_nan(self) -> bool {
                false
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(x: f64) -> Self {
                x as $t
            }
        }
    };
}
int_num!(i32);
int_num!(i64);

/// Conversions between every pair of element types, with Rust's `as`
/// semantics: floats truncate toward zero and saturate into integers (NaN
/// becomes 0), wider integers wrap into narrower ones, non-zero is `true`.
#[allow(missing_docs)]
pub trait Prim: Copy {
    fn as_f32(self) -> f32;
    fn as_f64(self) -> f64;
    fn as_i32(self) -> i32;
    fn as_i64(self) -> i64;
    fn as_bool(self) -> bool;
}

macro_rules! prim {
    ($($t:ty),*) => {$(
        impl Prim for $t {
            fn as_f32(self) -> f32 { self as f32 }
            fn as_f64(self) -> f64 { self as f64 }
            fn as_i32(self) -> i32 { self as i32 }
            fn as_i64(self) -> i64 { self as i64 }
            #[allow(clippy::float_cmp)]
            fn as_bool(self) -> bool { self != (0 as $t) }
        }
    )*};
}
prim!(f32, f64, i32, i64);

impl Prim for bool {
    fn as_f32(self) -> f32 {
        self as u8 as f32
    }
    fn as_f64(self) -> f64 {
        self as u8 as f64
    }
    fn as_i32(self) -> i32 {
        self as i32
    }
    fn as_i64(self) -> i64 {
        self as i64
    }
    fn as_bool(self) -> bool {
        self
    }
}

/// The reference definitions of the float functions, on `f64`.
pub mod float {
    /// `1 / (1 + exp(-x))` without overflow for large `|x|`.
    pub fn sigmoid(x: f64) -> f64 {
        if x >= 0.0 {
            1.0 / (1.0 + (-x).exp())
        } else {
            let e = x.exp();
            e / (1.0 + e)
        }
    }

    /// `log(1 + exp(x))` without overflow: `log1p(exp(-|x|)) + max(x, 0)`.
    pub fn softplus(x: f64) -> f64 {
        if x.is_nan() {
            return x;
        }
        (-x.abs()).exp().ln_1p() + x.max(0.0)
    }
}
