//! The float functions compiled kernels call where nothing is emitted
//! inline: the reference definitions from `rhea_kernel::scalar` on `f64`
//! (every `f64` transcendental, and `sin`, `cos` and `pow` on `f32`), so
//! those results round exactly as the interpreter's do.

use rhea_graph::UnaryOp;
use rhea_kernel::scalar::unary_f64;

macro_rules! exported {
    ($($name:ident => $op:ident),* $(,)?) => {
        $(
            extern "C" fn $name(x: f64) -> f64 {
                unary_f64(UnaryOp::$op, x)
            }
        )*
        /// The symbol and address of each unary function kernels may call.
        pub fn unary_symbols() -> Vec<(UnaryOp, &'static str, *const u8)> {
            vec![$((UnaryOp::$op, stringify!($name), $name as *const u8)),*]
        }
    };
}

exported!(
    rhea_exp => Exp, rhea_log => Log, rhea_log1p => Log1p, rhea_expm1 => Expm1, rhea_tanh => Tanh,
    rhea_sigmoid => Sigmoid, rhea_softplus => Softplus, rhea_sin => Sin, rhea_cos => Cos, rhea_rsqrt => Rsqrt,
);

/// `pow` on `f64`.
pub extern "C" fn rhea_pow(a: f64, b: f64) -> f64 {
    a.powf(b)
}

/// True if `op` has a helper here (the float functions with no instruction).
pub fn calls_helper(op: UnaryOp) -> bool {
    use UnaryOp::*;
    matches!(op, Exp | Log | Log1p | Expm1 | Tanh | Sigmoid | Softplus | Sin | Cos | Rsqrt)
}
