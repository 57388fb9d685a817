//! The plan's decisions for one backend: where each step runs (on the
//! device or on the host), which matrix products run the kernel after them
//! as an epilogue, and which shared-variable updates their kernels write in
//! place. A [`Target`] says what the backend can do; [`decide`] decides, the
//! memory plan honours it, the dump shows it and executors carry it out.

use rhea_graph::{DType, NodeId, Op, Shape};
use rhea_kernel::Kernel;

use crate::{Program, StepKind};

/// What a backend can run natively: an input to planning.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// The backend's name, for dumps.
    pub name: &'static str,
    /// Library ops it runs on the device: the op, its inputs' dtypes, its
    /// output's dtype, its inputs' ranks.
    pub library: fn(&Op, &[DType], DType, &[usize]) -> bool,
    /// Kernels it compiles (the others run on the host's evaluator).
    pub kernel: fn(&Kernel) -> bool,
    /// Kernels that may run on each block of a matrix product's output as
    /// it is computed (`None`: no epilogues on this backend).
    pub epilogue: Option<fn(&Kernel) -> bool>,
    /// Whether a kernel may write an update straight into its shared
    /// variable's storage.
    pub in_place_updates: bool,
}

impl Target {
    /// Everything on the host's evaluator: the reference interpreter.
    pub fn host() -> Target {
        Target {
            name: "interp",
            library: |_, _, _, _| false,
            kernel: |_| false,
            epilogue: None,
            in_place_updates: false,
        }
    }

    /// This target without epilogues and in-place updates: every step's
    /// inputs survive it (the NaN guard replays a failing step on them).
    pub fn unfused(self) -> Target {
        Target { epilogue: None, in_place_updates: false, ..self }
    }
}

/// Where a step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On the backend's device: a compiled kernel, a native library op, a copy.
    Device,
    /// On the host, through the interpreter's semantics (values cross over).
    Host,
}

/// The plan's decision for one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepPlan {
    /// Where it runs.
    pub placement: Placement,
    /// A kernel run as the epilogue of the matrix product in the step before it.
    pub epilogue: bool,
}

/// The plan's decisions for one program on one target.
#[derive(Clone, Debug)]
pub struct Decisions {
    /// The target decided for.
    pub target: &'static str,
    /// One per program step.
    pub steps: Vec<StepPlan>,
    /// One per graph update: written in place by the kernel computing it.
    pub in_place_updates: Vec<bool>,
}

impl Decisions {
    /// Decisions for a program with every step on the device and nothing fused.
    pub fn plain(p: &Program) -> Decisions {
        let step = StepPlan { placement: Placement::Device, epilogue: false };
        Decisions {
            target: "plain",
            steps: vec![step; p.steps.len()],
            in_place_updates: vec![false; p.graph.updates().len()],
        }
    }

    /// The number of updates written in place.
    pub fn updates_in_place(&self) -> usize {
        self.in_place_updates.iter().filter(|&&b| b).count()
    }
}

/// Decides placement, epilogues and in-place updates of `p` for `target`.
pub fn decide(p: &Program, target: &Target) -> Decisions {
    let g = &p.graph;
    let mut steps: Vec<StepPlan> = p
        .steps
        .iter()
        .map(|step| {
            let device = match &step.kind {
                StepKind::Kernel(k) => (target.kernel)(&p.fusion.groups[*k].kernel),
                StepKind::Op(id) => {
                    let node = g.node(*id);
                    let dtype = node.ty.dtype;
                    let ranks: Vec<usize> = node.inputs.iter().map(|&i| g.ty(i).shape.rank()).collect();
                    let dtypes: Vec<DType> = node.inputs.iter().map(|&i| g.ty(i).dtype).collect();
                    matches!(node.op, Op::Reshape { .. }) || (target.library)(&node.op, &dtypes, dtype, &ranks)
                }
            };
            StepPlan { placement: if device { Placement::Device } else { Placement::Host }, epilogue: false }
        })
        .collect();
    if let Some(accepts) = target.epilogue {
        for s in 1..p.steps.len() {
            if steps[s - 1].placement == Placement::Device
                && steps[s].placement == Placement::Device
                && !steps[s - 1].epilogue
                && is_epilogue(p, s, accepts)
            {
                steps[s].epilogue = true;
            }
        }
    }
    let in_place_updates = match target.in_place_updates {
        true => (0..g.updates().len()).map(|u| update_in_place(p, &steps, u)).collect(),
        false => vec![false; g.updates().len()],
    };
    Decisions { target: target.name, steps, in_place_updates }
}

/// Whether kernel step `s` can run on each block of the 2-d matrix product
/// of step `s - 1`: it reads the product's output, pointwise over exactly
/// its shape (other inputs the same shape or single elements).
fn is_epilogue(p: &Program, s: usize, accepts: fn(&Kernel) -> bool) -> bool {
    let (StepKind::Op(product), StepKind::Kernel(k)) = (&p.steps[s - 1].kind, &p.steps[s].kind) else {
        return false;
    };
    let g = &p.graph;
    let out: &Shape = &g.ty(*product).shape;
    if !matches!(g.node(*product).op, Op::Gemm { .. } | Op::Dot) || out.rank() != 2 {
        return false;
    }
    let group = &p.fusion.groups[*k];
    let kernel = &group.kernel;
    let single = |sh: &Shape| sh.iter().all(|d| *d == rhea_graph::Dim::Known(1));
    let covers = &kernel.domain == out
        && (0..kernel.outputs.len()).all(|o| &kernel.output_shape(o) == out)
        && kernel.inputs.iter().all(|i| &i.shape == out || single(&i.shape));
    covers && group.inputs.contains(product) && accepts(kernel)
}

/// Whether update `u` can be written by its kernel straight into the
/// shared variable, invisibly: the kernel reads the variable's old value
/// only at the point it writes (or not at all) and reduces nothing, no later
/// step reads the old value or the new one, neither is also an output or
/// another update's value, and no step from there on runs on the host (so a
/// call that fails there still changes nothing).
fn update_in_place(p: &Program, steps: &[StepPlan], u: usize) -> bool {
    let g = &p.graph;
    let (shared, value) = g.updates()[u];
    let Some(t) = p.steps.iter().position(|st| st.outputs.contains(&value)) else { return false };
    let StepKind::Kernel(k) = p.steps[t].kind else { return false };
    let group = &p.fusion.groups[k];
    let reads_pointwise = group
        .inputs
        .iter()
        .zip(&group.kernel.inputs)
        .filter(|(n, _)| **n == shared)
        .all(|(_, spec)| spec.is_pointwise(&group.kernel.domain));
    let reduces = group.kernel.outputs.iter().any(|o| o.reduced);
    // An epilogue's product must not read what the kernel overwrites.
    let product_reads = steps[t].epilogue && p.steps[t - 1].inputs.contains(&shared);
    let read_later = p.steps[t + 1..].iter().any(|st| st.inputs.contains(&shared) || st.inputs.contains(&value));
    let outputs: Vec<NodeId> = g.outputs().iter().map(|(_, id)| *id).collect();
    let elsewhere = outputs.contains(&shared)
        || outputs.contains(&value)
        || g.updates().iter().enumerate().any(|(j, &(_, v))| j != u && (v == value || v == shared));
    let host_later = steps[t..].iter().any(|st| st.placement == Placement::Host);
    reads_pointwise && !reduces && !product_reads && !read_later && !elsewhere && !host_later
}

#[cfg(test)]
mod tests {
    use rhea_graph::{Builder, DType};

    use super::*;
    use crate::{Options, compile};

    fn cpu_like(epilogue: bool) -> Target {
        Target {
            name: "test",
            library: |op, _, _, _| matches!(op, Op::Gemm { .. } | Op::Dot),
            kernel: |k| k.reduce.is_none(),
            epilogue: if epilogue { Some(|_| true) } else { None },
            in_place_updates: true,
        }
    }

    /// `y = relu(x . w)`, `w <- w * w`, and with `total`, `total = sum(y)`.
    fn program(total: bool) -> Program {
        let g = Builder::new();
        let x = g.input("x", DType::F32, [4, 3]).unwrap();
        let w = g.shared("w", rhea_graph::Value::from_f64(DType::F32, &[3, 2], &[1.0; 6]).unwrap()).unwrap();
        let y = x.dot(&w).unwrap().map(rhea_graph::UnaryOp::Relu).unwrap();
        g.output("y", &y).unwrap();
        if total {
            g.output("total", &y.sum_all().unwrap()).unwrap();
        }
        g.update(&w, &(&w * &w)).unwrap();
        let graph = g.to_graph();
        compile(graph, &Options::default()).unwrap()
    }

    #[test]
    fn placement_follows_the_target() {
        let p = program(true);
        let d = decide(&p, &cpu_like(false));
        for (step, plan) in p.steps.iter().zip(&d.steps) {
            let device = match step.kind {
                StepKind::Kernel(k) => p.fusion.groups[k].kernel.reduce.is_none(),
                StepKind::Op(_) => true,
            };
            assert_eq!(plan.placement == Placement::Device, device, "{step:?}");
        }
        let host = decide(&p, &Target::host());
        assert!(host.steps.iter().all(|s| s.placement == Placement::Host && !s.epilogue));
        assert_eq!(host.updates_in_place(), 0);
    }

    #[test]
    fn a_flat_kernel_reading_a_product_is_its_epilogue_only_where_the_target_has_them() {
        // Without the sum, relu is a flat kernel of its own over the product.
        let p = program(false);
        let product = p.steps.iter().position(|s| matches!(s.kind, StepKind::Op(_))).unwrap();
        let with = decide(&p, &cpu_like(true));
        assert!(with.steps[product + 1].epilogue, "{with:?}");
        assert_eq!(with.steps.iter().filter(|s| s.epilogue).count(), 1);
        assert!(decide(&p, &cpu_like(false)).steps.iter().all(|s| !s.epilogue));
        assert!(decide(&p, &cpu_like(true).unfused()).steps.iter().all(|s| !s.epilogue));
    }

    #[test]
    fn an_update_is_in_place_only_when_nothing_later_reads_the_old_value_and_nothing_runs_on_the_host() {
        let p = program(true);
        // The product reads w after the update's kernel may run: whether the
        // update is in place depends on the schedule, and must say so.
        let d = decide(&p, &cpu_like(true));
        let (shared, value) = p.graph.updates()[0];
        let t = p.steps.iter().position(|s| s.outputs.contains(&value)).unwrap();
        let read_later = p.steps[t + 1..].iter().any(|s| s.inputs.contains(&shared));
        let host_later = d.steps[t..].iter().any(|s| s.placement == Placement::Host);
        assert_eq!(d.in_place_updates[0], !read_later && !host_later, "{d:?}");
        // The sum's kernel reduces: on this target it runs on the host, so no
        // update before it may be written in place.
        let reduce = p.steps.iter().position(|s| match s.kind {
            StepKind::Kernel(k) => p.fusion.groups[k].kernel.reduce.is_some(),
            StepKind::Op(_) => false,
        });
        if reduce.is_some_and(|r| r >= t) {
            assert!(!d.in_place_updates[0]);
        }
        assert!(!decide(&p, &cpu_like(true).unfused()).in_place_updates[0]);
        // Without the sum nothing runs on the host, and the product (the only
        // other reader of w) is scheduled before the update's kernel.
        let p = program(false);
        let (_, value) = p.graph.updates()[0];
        let t = p.steps.iter().position(|s| s.outputs.contains(&value)).unwrap();
        let product = p.steps.iter().position(|s| matches!(s.kind, StepKind::Op(_))).unwrap();
        assert!(product < t, "{:?}", p.steps);
        assert!(decide(&p, &cpu_like(true)).in_place_updates[0]);
    }
}
