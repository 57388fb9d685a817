//! Kernel IR to PTX text: [`lower_kernel`] writes one entry per kernel,
//! specialized to concrete sizes, and [`module`] puts a plan's entries in
//! one module for one GPU architecture.

mod emit;
mod kernel;
mod random;
mod reduce;
mod window;

pub use kernel::{BLOCK, Lowered, Stage, lower_kernel};
pub use random::dropout;
pub use window::{MAX_TAPS, Pooling, Window, col2im, im2col, pool, pool_grad};

/// A GPU architecture PTX is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Compute capability as `major * 10 + minor` (80 for A100, 90 for H100).
    pub sm: u32,
}

impl Target {
    /// The oldest architecture the generated code needs: `sm_80`
    /// (`max.NaN`, `shfl.sync`, the PTX 7.8 ISA).
    pub const MIN: Target = Target { sm: 80 };

    /// The newest architecture written as such: PTX 7.8 knows sm_90, and the
    /// driver compiles PTX for an older target on newer GPUs.
    pub const MAX: Target = Target { sm: 90 };

    /// The target for a device of compute capability `major.minor`, or an
    /// error naming why it cannot run rhea's kernels.
    pub fn for_device(major: i32, minor: i32) -> Result<Target, String> {
        let sm = (major * 10 + minor) as u32;
        if sm < Target::MIN.sm {
            return Err(format!("compute capability {major}.{minor} is older than the sm_80 rhea's PTX needs"));
        }
        Ok(Target { sm: sm.min(Target::MAX.sm) })
    }

    /// `sm_80`, `sm_90`...
    pub fn arch(&self) -> String {
        format!("sm_{}", self.sm)
    }
}

/// A PTX module holding `kernels`, for `target`.
pub fn module(target: Target, kernels: &[&Lowered]) -> String {
    let mut out = format!(".version 7.8\n.target {}\n.address_size 64\n", target.arch());
    for k in kernels {
        out.push('\n');
        out.push_str(&k.text);
    }
    out
}

/// Whether the PTX lowering takes kernel `k`, asked at small sizes (every
/// symbolic dim 2): what it refuses (a function with no PTX lowering, a
/// reduction of bools) runs on the host.
pub fn lowers(k: &rhea_kernel::Kernel) -> bool {
    let mut bindings = rhea_kernel::Bindings::new();
    let shapes = std::iter::once(&k.domain).chain(k.inputs.iter().map(|i| &i.shape));
    for d in shapes.flat_map(|s| s.iter()) {
        if let rhea_graph::Dim::Sym(s) = d {
            bindings.insert(*s, 2);
        }
    }
    let resolve = |s: &rhea_graph::Shape| rhea_kernel::resolve(s, &bindings);
    let (Ok(dims), Ok(shapes)) =
        (resolve(&k.domain), k.inputs.iter().map(|i| resolve(&i.shape)).collect::<Result<Vec<_>, _>>())
    else {
        return false;
    };
    lower_kernel(k, "probe", &dims, &shapes).is_ok()
}
