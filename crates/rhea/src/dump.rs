//! `rhea dump`: a graph at each stage, as text, DOT or JSON, with the
//! optimizer's trace, fusion notes, kernels and PTX.

use super::*;

pub(crate) fn dump(args: &DumpArgs) -> Result<()> {
    let builtin = MODELS.contains(&args.graph.to_string_lossy().as_ref()) && !args.graph.exists();
    let training = args.stage != Stage::Raw && !args.grad.given();
    let mut graph = load_graph(&args.graph, training, true)?;
    match args.stage {
        Stage::Raw if args.grad.given() => {
            return Err(rhea::cli::usage("--grad-of and --wrt need --stage grad or optimized"));
        }
        Stage::Raw => {}
        _ if builtin && !args.grad.given() => {}
        Stage::Grad | Stage::Optimized if args.grad.given() || args.stage == Stage::Grad => {
            add_gradients(&mut graph, &args.grad)?
        }
        Stage::Grad | Stage::Optimized => {}
    }
    if args.stage == Stage::Optimized {
        return dump_optimized(args, graph);
    }
    let o = &args.opt;
    let options_given = o.trace || o.after.is_some() || o.explain_fusion || o.kernels || o.asm;
    if options_given || !o.include.is_empty() || !o.exclude.is_empty() {
        return Err(rhea::cli::usage(
            "--trace, --after, --explain-fusion, --kernels, --asm, --include and --exclude need --stage optimized",
        ));
    }
    let text = match args.format {
        Format::Text => rhea::to_text(&graph, TextOptions { locs: args.locs }),
        Format::Dot => rhea::to_dot(&graph),
        Format::Json => rhea::to_json(&graph),
    };
    write_or_print(args.output.as_deref(), &text)
}

fn dump_optimized(args: &DumpArgs, graph: Graph) -> Result<()> {
    let o = &args.opt;
    let opts = rhea::opt::Options {
        mode: match o.mode {
            ModeArg::Fast => rhea::Mode::Fast,
            ModeArg::None => rhea::Mode::None,
        },
        exclude: o.exclude.clone(),
        include: o.include.clone(),
        stop_after: o.after.clone(),
        verify: true,
        ..rhea::default_options()
    };
    if o.after.is_some() && o.explain_fusion {
        return Err(rhea::cli::usage(
            "--explain-fusion explains the end of the pipeline; it does not combine with --after",
        ));
    }
    let text = if o.after.is_some() {
        let mut g = graph;
        let report = rhea::opt::optimize(&mut g, &opts)?;
        let mut text = match args.format {
            Format::Text => rhea::to_text(&g, TextOptions { locs: args.locs }),
            Format::Dot => rhea::to_dot(&g),
            Format::Json => rhea::to_json(&g),
        };
        if o.trace && matches!(args.format, Format::Text) {
            let p = rhea::opt::Program { graph: g, fusion: Default::default(), steps: vec![], report, bodies: vec![] };
            text.push_str(&rhea::opt::print::trace(&p));
        }
        text
    } else {
        let p = rhea::opt::compile(graph, &opts)?;
        let target = match o.backend {
            KernelBackend::Cpu => rhea::Backend::Cpu.target(),
            KernelBackend::Cuda => rhea::Backend::Cuda.target(),
        };
        let decisions = rhea::opt::decide(&p, &target);
        let mut text = match args.format {
            Format::Text => rhea::opt::print::to_text_planned(&p, &decisions, TextOptions { locs: args.locs }),
            Format::Dot => rhea::opt::print::to_dot_optimized(&p),
            Format::Json => rhea::opt::print::to_json_optimized(&p),
        };
        let summary = rhea::opt::print::summary(&p);
        let mut notes = String::new();
        if o.trace {
            notes.push_str(&rhea::opt::print::trace(&p));
        }
        if o.explain_fusion {
            notes.push_str(&rhea::opt::print::explain_fusion(&p));
        }
        if o.kernels && o.backend == KernelBackend::Cuda {
            notes.push_str(&ptx_listing(&p, &o.dim, o.sm)?);
        } else if o.kernels || o.asm {
            let kernels: Vec<_> = p.fusion.groups.iter().map(|g| g.kernel.clone()).collect();
            let cpu = rhea_cpu::CpuKernels::compile_with_listings(&kernels)?;
            for k in 0..kernels.len() {
                if o.kernels {
                    notes.push_str(&format!("# kernel k{k}, Cranelift IR\n{}\n", cpu.clif(k)));
                }
                if o.asm {
                    notes.push_str(&format!("# kernel k{k}, x86-64\n{}\n", cpu.asm(k)));
                }
            }
        }
        match args.format {
            Format::Text => {
                text.push_str(&notes);
                text.push_str(&format!("# {summary}\n"));
            }
            // The dump itself stays a valid DOT or JSON file: the rest goes to stderr.
            _ => eprintln!("{notes}{summary}"),
        }
        text
    };
    write_or_print(args.output.as_deref(), &text)
}

/// Every kernel of `p` as PTX, at the sizes `--dim` gives (8 for others):
/// the fused kernels, then those of library ops (convolutions, pooling).
fn ptx_listing(p: &rhea::opt::Program, dims: &[String], sm: u32) -> Result<String> {
    let mut bindings = rhea::kernel::Bindings::new();
    let mut given = HashMap::new();
    for d in dims {
        let (name, value) =
            d.split_once('=').ok_or_else(|| rhea::cli::usage(format!("--dim {d:?}: expected NAME=N")))?;
        let n: usize = value.parse().map_err(|_| rhea::cli::usage(format!("--dim {d:?}: {value:?} is not a size")))?;
        given.insert(name.to_string(), n);
    }
    let target = rhea_cuda::Target { sm };
    if sm < rhea_cuda::Target::MIN.sm {
        return Err(rhea::cli::usage(format!("--sm {sm}: rhea's PTX needs sm_80 or newer")));
    }
    let mut used = Vec::new();
    let mut out = String::new();
    let mut bind = |shapes: &mut dyn Iterator<Item = &rhea::Shape>, bindings: &mut rhea::kernel::Bindings| {
        for dim in shapes.flat_map(|s| s.dims().to_vec()) {
            if let rhea::Dim::Sym(sym) = dim
                && !bindings.contains_key(&sym)
            {
                let n = given.get(sym.name()).copied().unwrap_or(8);
                bindings.insert(sym, n);
                used.push(format!("{}={n}", sym.name()));
            }
        }
    };
    for (k, group) in p.fusion.groups.iter().enumerate() {
        let kernel = &group.kernel;
        bind(&mut std::iter::once(&kernel.domain).chain(kernel.inputs.iter().map(|i| &i.shape)), &mut bindings);
        let size = |s: &rhea::Shape| rhea::kernel::resolve(s, &bindings).map_err(anyhow::Error::msg);
        let dims = size(&kernel.domain)?;
        let inputs = kernel.inputs.iter().map(|i| size(&i.shape)).collect::<Result<Vec<_>>>()?;
        match rhea_cuda::lower_kernel(kernel, &format!("k{k}"), &dims, &inputs) {
            Ok(l) => out.push_str(&format!(
                "# kernel k{k}, PTX ({}, grid {} x block {})\n{}\n",
                l.shape,
                l.grid,
                l.block,
                rhea_cuda::module(target, &[&l])
            )),
            Err(e) => out.push_str(&format!("# kernel k{k}: runs on the host ({e})\n\n")),
        }
    }
    for (s, step) in p.steps.iter().enumerate() {
        let rhea::opt::StepKind::Op(id) = step.kind else { continue };
        let nodes: Vec<rhea::NodeId> = step.inputs.iter().copied().chain([id]).collect();
        bind(&mut nodes.iter().map(|&n| &p.graph.ty(n).shape), &mut bindings);
        let size = |n: rhea::NodeId| rhea::kernel::resolve(&p.graph.ty(n).shape, &bindings).map_err(anyhow::Error::msg);
        let inputs = step.inputs.iter().map(|&n| size(n)).collect::<Result<Vec<_>>>()?;
        let refs: Vec<&[usize]> = inputs.iter().map(|v| v.as_slice()).collect();
        let op = &p.graph.node(id).op;
        let Some(plan) = rhea_cuda::op_kernels(op, p.graph.ty(id).dtype, &refs, &size(id)?, &format!("s{s}")) else {
            continue;
        };
        let how = match (plan.blas, plan.kernels.is_empty()) {
            (true, true) => "cuBLAS",
            (true, false) => "cuBLAS products and the kernels below",
            (false, _) => "the kernel below",
        };
        out.push_str(&format!("# step s{s}, {} ({id}): {how}\n", op.name()));
        for l in plan.kernels {
            let ptx = rhea_cuda::module(target, &[&l]);
            out.push_str(&format!("# kernel {} ({}, grid {} x block {})\n{ptx}\n", l.name, l.shape, l.grid, l.block));
        }
    }
    if !used.is_empty() {
        out = format!("# PTX specialized to {} (set with --dim)\n{out}", used.join(", "));
    }
    Ok(out)
}
