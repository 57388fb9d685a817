//! The attribute records of ops with many attributes (slices, windows,
//! random values).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{DType, F64, Shape};

/// Python's `start:stop:step` for one axis. `None` means the default for the
/// step's direction; negative bounds count from the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SliceSpec {
    /// First index taken (default 0, or the last for a negative step).
    pub start: Option<i64>,
    /// Index where the slice stops, not taken.
    pub stop: Option<i64>,
    /// Stride; never 0.
    pub step: i64,
}

impl SliceSpec {
    /// The whole axis, `:`.
    pub const FULL: SliceSpec = SliceSpec { start: None, stop: None, step: 1 };

    /// `start:stop:step` with explicit values.
    pub fn new(start: Option<i64>, stop: Option<i64>, step: i64) -> SliceSpec {
        SliceSpec { start, stop, step }
    }

    /// `start:stop` with step 1.
    pub fn range(start: i64, stop: i64) -> SliceSpec {
        SliceSpec { start: Some(start), stop: Some(stop), step: 1 }
    }

    /// Python's `slice.indices(len)`: the first index and the count taken
    /// (a count of 0 means the slice is empty). Exact for any bounds and
    /// steps, with no overflow.
    fn span(&self, len: usize) -> Result<(i128, usize), String> {
        if self.step == 0 {
            return Err("slice step cannot be zero".into());
        }
        let (len, step) = (len as i128, self.step as i128);
        let resolve = |v: i64, lo: i128, hi: i128| {
            let v = v as i128;
            (if v < 0 { v + len } else { v }).clamp(lo, hi)
        };
        let (start, stop) = if step > 0 {
            (self.start.map_or(0, |v| resolve(v, 0, len)), self.stop.map_or(len, |v| resolve(v, 0, len)))
        } else {
            (self.start.map_or(len - 1, |v| resolve(v, -1, len - 1)), self.stop.map_or(-1, |v| resolve(v, -1, len - 1)))
        };
        let gap = if step > 0 { stop - start } else { start - stop };
        let count = if gap > 0 { (gap - 1) / step.abs() + 1 } else { 0 };
        Ok((start, count as usize))
    }

    /// The first index this slice takes from an axis of length `len` (0 when
    /// it takes none) and how many it takes, each `step` apart.
    pub fn first_and_count(&self, len: usize) -> Result<(usize, usize), String> {
        let (start, count) = self.span(len)?;
        Ok((if count == 0 { 0 } else { start as usize }, count))
    }

    /// How many indices this slice takes from an axis of length `len`.
    pub fn count(&self, len: usize) -> Result<usize, String> {
        self.span(len).map(|(_, n)| n)
    }

    /// The indices this slice takes from an axis of length `len`, in order,
    /// following Python's `slice.indices`.
    pub fn indices(&self, len: usize) -> Result<Vec<usize>, String> {
        let (start, count) = self.span(len)?;
        Ok((0..count as i128).map(|k| (start + k * self.step as i128) as usize).collect())
    }

    /// True for `:` (the whole axis in order).
    pub fn is_full(&self) -> bool {
        *self == SliceSpec::FULL
    }

    /// `::-1`: the whole axis, reversed.
    pub const REVERSE: SliceSpec = SliceSpec { start: None, stop: None, step: -1 };
}

impl fmt::Display for SliceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.start {
            write!(f, "{s}")?;
        }
        f.write_str(":")?;
        if let Some(s) = self.stop {
            write!(f, "{s}")?;
        }
        if self.step != 1 {
            write!(f, ":{}", self.step)?;
        }
        Ok(())
    }
}

/// Attributes of [`Op::Conv2d`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Conv2d {
    /// Step between windows, (height, width).
    pub stride: [usize; 2],
    /// Zero padding on each side, (height, width).
    pub padding: [usize; 2],
    /// Spacing between kernel taps, (height, width).
    pub dilation: [usize; 2],
    /// Channel groups; input and output channels must both divide by it.
    pub groups: usize,
}

impl Default for Conv2d {
    fn default() -> Conv2d {
        Conv2d { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 }
    }
}

/// Attributes of [`Op::MaxPool2d`] and [`Op::AvgPool2d`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pool2d {
    /// Window size, (height, width).
    pub kernel: [usize; 2],
    /// Step between windows, (height, width).
    pub stride: [usize; 2],
    /// Padding on each side, (height, width); at most half the kernel.
    pub padding: [usize; 2],
    /// Average pooling only: divide by the whole window including padding
    /// (PyTorch's default, and the default in graph files) rather than by
    /// the valid elements.
    #[serde(default = "yes")]
    pub count_include_pad: bool,
}

fn yes() -> bool {
    true
}

impl Pool2d {
    /// A `k`x`k` window with stride `k` and no padding (the usual 2x2 pool).
    pub fn square(k: usize) -> Pool2d {
        Pool2d { kernel: [k, k], stride: [k, k], padding: [0, 0], count_include_pad: true }
    }
}

/// Attributes of the convolution gradients.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConvGrad {
    /// The forward convolution.
    pub conv: Conv2d,
    /// Spatial size of the result: the input's `[H, W]` or the kernel's `[KH, KW]`.
    pub size: [usize; 2],
}

/// Attributes of [`Op::AvgPool2dGrad`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PoolGrad {
    /// The forward pooling.
    pub pool: Pool2d,
    /// The forward input's `[H, W]`.
    pub size: [usize; 2],
}

/// Attributes of [`Op::RandomUniform`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Uniform {
    /// Output shape.
    pub shape: Shape,
    /// Output dtype (a float).
    pub dtype: DType,
    /// Lower bound, included.
    pub low: F64,
    /// Upper bound, excluded.
    pub high: F64,
    /// Seed.
    pub seed: u64,
}

/// Attributes of [`Op::RandomNormal`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Normal {
    /// Output shape.
    pub shape: Shape,
    /// Output dtype (a float).
    pub dtype: DType,
    /// Mean.
    pub mean: F64,
    /// Standard deviation.
    pub std: F64,
    /// Seed.
    pub seed: u64,
}
