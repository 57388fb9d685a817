//! The `rhea` command-line tool: dump and run graph files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use rhea::{Graph, Op, TextOptions, Value};

mod bench;
mod check;
mod plot;

const MAIN_HELP: &str = "\
Examples:
  rhea dump model.json                       # the graph as text, one node per line
  rhea dump model.json --format dot -o model.dot && dot -Tsvg model.dot > model.svg
  rhea run model.json --inputs inputs.safetensors -o outputs.safetensors

Graph files are rhea's JSON graph format (docs/graph-format.md); tensors are
safetensors files. `cargo run --release --example quickstart` writes a graph and
an inputs file to try these on.";

const DUMP_HELP: &str = "\
Examples:
  rhea dump sonar-mlp --stage grad            # the Sonar MLP's training step: forward, loss, gradients, Adam
  rhea dump sonar-mlp --stage optimized --trace --explain-fusion   # after rewrites and fusion
  rhea dump model.json --stage optimized --after stabilize          # the graph right after one pass
  rhea dump model.json --stage optimized --kernels                  # each kernel's Cranelift IR
  rhea dump model.json --stage optimized --asm                      # and its machine code
  rhea dump model.json --stage grad --grad-of loss --wrt w,b
  rhea dump model.json
  rhea dump model.json --locs                 # with the source line that built each node
  rhea dump model.json --format dot -o model.dot && dot -Tsvg model.dot > model.svg
  rhea dump model.json --format json          # normalized: renumbered, one record per line";

const RUN_HELP: &str = "\
Each tensor in the inputs file is matched by name: a graph input is fed, a
shared variable (a weight) takes that value. Both must match the graph's
dtype and shape; a name that is neither is an error.

Example (making the inputs with numpy):
  python3 -c 'import numpy as np; from safetensors.numpy import save_file
  save_file({\"x\": np.random.rand(8, 4).astype(np.float32)}, \"inputs.safetensors\")'
  rhea run model.json --inputs inputs.safetensors -o outputs.safetensors
  rhea run model.json --inputs inputs.safetensors --grad-of loss --wrt w   # adds output grad/w";

/// A Theano-style tensor expression-graph compiler: inspect and run graph files.
#[derive(Parser)]
#[command(name = "rhea", version, after_help = MAIN_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a graph file as text (like Theano's debugprint), Graphviz DOT or normalized JSON.
    #[command(after_help = DUMP_HELP)]
    Dump(DumpArgs),
    /// Evaluate a graph file's named outputs on inputs from a safetensors file.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Time the models' training steps on each backend.
    #[command(after_help = BENCH_HELP)]
    Bench(BenchArgs),
    /// Run a graph node by node on two backends and report the first node whose values differ.
    #[command(after_help = CHECK_HELP)]
    Check(CheckArgs),
    /// List the devices rhea can run on: the CPU, and NVIDIA GPUs if a CUDA driver is present.
    Devices,
}

const CHECK_HELP: &str = "\
The interpreter evaluates the graph as written; the CPU backend compiles it
with every op its own kernel or library step (no rewrites, no fusion) and
keeps every intermediate. Nodes are compared in topological order, each
element within --tolerance relative to 1 + |interpreter's value| (NaN
matches NaN). The first node that differs is printed with the line that
built it, the element and both values, and the exit status is 1.

With --fused, the graph is optimized and fused as `function` compiles it, run
on the backend (cpu, cuda or cuda-emu) step by step with every step's
outputs kept, and compared with the interpreter evaluating the optimized
graph; a divergence names the fused kernel (and the nodes it fuses) or
library op that computed it.

Examples:
  rhea check model.json --inputs inputs.safetensors
  rhea check model.json --inputs inputs.safetensors --tolerance 0
  rhea check model.json --inputs inputs.safetensors --fused
  rhea check model.json --inputs inputs.safetensors --fused --backends interp,cuda
  rhea check model.json --inputs inputs.safetensors --backends interp,cuda";

#[derive(clap::Args)]
struct CheckArgs {
    /// The graph: a JSON graph file, or a built-in model.
    graph: PathBuf,
    /// A safetensors file with the graph's inputs and, optionally, shared variable values.
    #[arg(long, value_name = "FILE")]
    inputs: Option<PathBuf>,
    /// The backends to compare: the reference first.
    #[arg(long, value_name = "A,B", value_delimiter = ',', default_value = "interp,cpu")]
    backends: Vec<String>,
    /// Largest difference allowed, relative to 1 + |reference|.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f64,
    /// Check the optimized, fused program step by step instead of op by op:
    /// a divergence names the fused kernel that computed it.
    #[arg(long)]
    fused: bool,
}

const BENCH_HELP: &str = "\
Each model's training step is compiled (timed cold), called once (timed:
planning), warmed up, then timed over rounds of about 20 ms; the table
gives the median step with the fastest and slowest round, examples per
second, the matrix products' and convolutions' GFLOP/s and their share of
the machine's f32 GEMM rate, measured first. For sonar-mlp, also one epoch
(124 rows). vgg16 is the forward pass of the full model at 224x224 (30.9
GFLOP per image), at batch 1 and 8 unless --batch says otherwise.

Examples:
  rhea bench
  rhea bench --model theano-mlp --backend cpu --json bench.json
  rhea bench --model sonar-mlp,theano-mlp --backend cpu,cuda --plot bench.svg
  rhea bench --model sonar-mlp --backend cuda --cuda-graph";

#[derive(clap::Args)]
struct BenchArgs {
    /// Which models: sonar-mlp, theano-mlp, vgg16 (forward, 224x224) or all.
    #[arg(long, value_name = "NAME[,NAME]", value_delimiter = ',', default_value = "all")]
    model: Vec<String>,
    /// Which backends.
    #[arg(long, value_name = "NAME[,NAME]", value_delimiter = ',', default_value = "interp,cpu")]
    backend: Vec<String>,
    /// Rows per batch (default: each model's own, 10 and 60).
    #[arg(long)]
    batch: Option<usize>,
    /// Timed rounds per model and backend.
    #[arg(long, default_value_t = 15)]
    rounds: usize,
    /// Also write the results as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also draw the table as an SVG bar chart.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// On cuda and cuda-emu, also time each step captured as one CUDA graph
    /// (rows named cuda+graph), and print how it compares.
    #[arg(long)]
    cuda_graph: bool,
}

/// Built-in models that GRAPH may name instead of a file.
const MODELS: &[&str] = &["sonar-mlp", "theano-mlp", "vgg16"];

#[derive(clap::Args)]
struct DumpArgs {
    /// The graph: a JSON graph file, or a built-in model (sonar-mlp, theano-mlp, vgg16).
    graph: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Which stage of compilation to show.
    #[arg(long, value_enum, default_value_t = Stage::Raw)]
    stage: Stage,
    /// Show the source location (file:line) that built each node (text format).
    #[arg(long)]
    locs: bool,
    #[command(flatten)]
    grad: GradArgs,
    #[command(flatten)]
    opt: OptArgs,
    /// Write to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// One line per node: id, op, inputs, dtype and shape.
    Text,
    /// Graphviz DOT.
    Dot,
    /// rhea's JSON graph format, which loads back.
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Stage {
    /// The graph as built (or as stored in the file).
    Raw,
    /// With gradient nodes: of --grad-of with respect to --wrt, output as
    /// `grad/<name>`; a built-in model shows its whole training step.
    Grad,
    /// After the optimizer: rewritten, fused into kernels (whose bodies are
    /// printed), scheduled.
    Optimized,
}

/// How to optimize, for `--stage optimized`.
#[derive(clap::Args)]
struct OptArgs {
    /// Optimizer mode: fast (every pass) or none (no rewrites, one kernel per op).
    #[arg(long, value_enum, default_value_t = ModeArg::Fast)]
    mode: ModeArg,
    /// Switch a rewrite rule off (repeatable, or comma-separated).
    #[arg(long, value_name = "RULE", value_delimiter = ',')]
    exclude: Vec<String>,
    /// Switch a rewrite rule on (with --mode none, the only rules that run).
    #[arg(long, value_name = "RULE", value_delimiter = ',')]
    include: Vec<String>,
    /// Print every rewrite that fired (and risky patterns left).
    #[arg(long)]
    trace: bool,
    /// Show the graph right after the named pass instead of the end result.
    #[arg(long, value_name = "PASS")]
    after: Option<String>,
    /// Say for each elementwise node why it was or was not fused with its neighbours.
    #[arg(long)]
    explain_fusion: bool,
    /// Print each fused kernel's code: Cranelift IR (--backend cpu) or PTX (--backend cuda).
    #[arg(long)]
    kernels: bool,
    /// The backend planned for (where each step runs, epilogues, updates in
    /// place) and whose code --kernels prints.
    #[arg(long, value_enum, default_value_t = KernelBackend::Cpu)]
    backend: KernelBackend,
    /// PTX is specialized to sizes: the value of a symbolic dimension (repeatable; others are 8).
    #[arg(long, value_name = "NAME=N", value_delimiter = ',')]
    dim: Vec<String>,
    /// The GPU architecture the PTX is written for (80: A100, 90: H100).
    #[arg(long, default_value_t = 80)]
    sm: u32,
    /// Print each fused kernel's x86-64 machine code (Cranelift's listing).
    #[arg(long)]
    asm: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KernelBackend {
    /// Cranelift IR, as the CPU backend compiles it.
    Cpu,
    /// PTX, as the CUDA backend loads it.
    Cuda,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Every pass.
    Fast,
    /// No rewrites, one kernel per op.
    None,
}

/// Which gradients to add.
#[derive(clap::Args)]
struct GradArgs {
    /// The output to differentiate (a float scalar); needed unless the graph has one output.
    #[arg(long, value_name = "OUTPUT")]
    grad_of: Option<String>,
    /// Inputs or shared variables to differentiate with respect to (default: every float shared variable).
    #[arg(long, value_name = "NAME[,NAME]", value_delimiter = ',')]
    wrt: Vec<String>,
}

impl GradArgs {
    fn given(&self) -> bool {
        self.grad_of.is_some() || !self.wrt.is_empty()
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// The graph: a JSON graph file, or a built-in model (sonar-mlp, theano-mlp, vgg16).
    graph: PathBuf,
    /// A safetensors file with the graph's inputs and, optionally, shared variable values.
    #[arg(long, value_name = "FILE")]
    inputs: Option<PathBuf>,
    /// Which backend evaluates the graph: cpu compiles it (optimizer, then
    /// Cranelift and native kernels); interp evaluates the graph as written.
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    backend: Backend,
    /// Also write the outputs, by name, to this safetensors file.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Also compute gradients, written as outputs `grad/<name>`.
    #[command(flatten)]
    grad: GradArgs,
    /// Refuse to run if intermediate values would need more than this
    /// (300M, 1.5G, 2GiB, ...), before allocating them.
    #[arg(long, value_name = "SIZE", value_parser = rhea::cli::parse_bytes)]
    max_memory: Option<u64>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// The reference interpreter (ndarray), on the graph as written.
    Interp,
    /// The optimized graph compiled for this CPU.
    Cpu,
    /// The optimized graph as PTX on an NVIDIA GPU.
    Cuda,
    /// The cuda backend on rhea's PTX emulator (no GPU needed; slow).
    #[value(name = "cuda-emu")]
    CudaEmu,
}

fn check_command(args: &CheckArgs) -> Result<()> {
    let pair: Vec<&str> = args.backends.iter().map(String::as_str).collect();
    let (backend, name) = match pair.as_slice() {
        ["interp", "cpu"] => (rhea::Backend::Cpu, "cpu"),
        ["interp", "cuda"] => (rhea::Backend::Cuda, "cuda"),
        ["interp", "cuda-emu"] => (rhea::Backend::CudaEmulated, "cuda-emu"),
        _ => {
            return Err(rhea::cli::usage(format!(
                "rhea check compares the interpreter with one backend (--backends interp,cpu, interp,cuda or interp,cuda-emu); got {:?}",
                pair.join(",")
            )));
        }
    };
    if args.tolerance.is_nan() || args.tolerance < 0.0 {
        return Err(rhea::cli::usage(format!("--tolerance must be a number >= 0, got {}", args.tolerance)));
    }
    let mut graph = load_graph(&args.graph, false, false)?;
    let tensors = match &args.inputs {
        Some(path) => rhea::io::load_safetensors(path)?,
        None => Vec::new(),
    };
    let feeds = feed(&mut graph, tensors, args.inputs.as_deref())?;
    let report = if args.fused {
        check::check_fused(&graph, &feeds, args.tolerance, backend)
    } else {
        check::check(&graph, &feeds, args.tolerance, backend)
    }
    .with_context(|| format!("checking {}", args.graph.display()))?;
    match report.first {
        None => {
            let what = if args.fused { "step outputs of the fused program" } else { "nodes" };
            rhea::outln!("checked {} {what}: interp and {name} agree within {}", report.compared, args.tolerance)?;
            Ok(())
        }
        Some(d) => {
            let shown = rhea::outln!(
                "node {} ({}) differs at element {}: interp {:e}, {name} {:e} (largest relative difference {:e}, tolerance {}); {} nodes compared",
                d.node,
                d.what,
                d.element,
                d.values.0,
                d.values.1,
                d.worst,
                args.tolerance,
                report.compared
            );
            // Nothing is left to drop but stdout's buffer; a closed pipe
            // still exits 1, the verdict.
            let _ = shown.and_then(|()| std::io::Write::flush(&mut std::io::stdout()));
            std::process::exit(1);
        }
    }
}

fn bench_command(args: &BenchArgs) -> Result<()> {
    let models: Vec<&str> = if args.model.iter().any(|m| m == "all") {
        bench::MODELS.to_vec()
    } else {
        args.model.iter().map(String::as_str).collect()
    };
    for m in &models {
        if !bench::MODELS.contains(m) {
            return Err(rhea::cli::usage(format!("unknown model {m:?}; available: {}, all", bench::MODELS.join(", "))));
        }
    }
    let backends: Vec<rhea::Backend> = args
        .backend
        .iter()
        .map(|b| b.parse().map_err(|e: String| rhea::cli::usage(format!("--backend: {e}"))))
        .collect::<Result<_>>()?;
    if backends.contains(&rhea::Backend::Cuda) {
        // Before building any model: no GPU is a quick answer.
        rhea_cuda::open_shared(0).context("backend cuda")?;
    }
    if args.batch == Some(0) || args.rounds == 0 {
        return Err(rhea::cli::usage("--batch and --rounds must be at least 1"));
    }
    let peak = bench::gemm_peak()?;
    let everything = args.model.iter().any(|m| m == "all");
    let mut rows = Vec::new();
    for model in &models {
        for &backend in &backends {
            if everything && *model == "vgg16" && backend == rhea::Backend::Interp {
                eprintln!("note: vgg16 on the interpreter takes minutes per image; ask for it with --model vgg16");
                continue;
            }
            // VGG16 at batch 1 and 8 unless a batch is given.
            let batches = match (args.batch, *model) {
                (None, "vgg16") => vec![Some(1), Some(8)],
                (b, _) => vec![b],
            };
            let gpu = matches!(backend, rhea::Backend::Cuda | rhea::Backend::CudaEmulated);
            let graphs: &[bool] = if args.cuda_graph && gpu { &[false, true] } else { &[false] };
            for batch in batches {
                for &cuda_graph in graphs {
                    let target = bench::Target { backend, cuda_graph };
                    rows.push(bench::measure(model, target, batch, args.rounds)?);
                }
            }
        }
    }
    write_or_print(None, &bench::table(&rows, peak))?;
    if let Some(path) = &args.json {
        let json = serde_json::json!({ "gemm_peak_gflops": peak, "rows": rows });
        write_file(path, (serde_json::to_string_pretty(&json)? + "\n").as_bytes())?;
    }
    if let Some(path) = &args.plot {
        let machine = bench::table(&[], peak);
        let svg = plot::svg(&rows, machine.lines().next().unwrap_or_default());
        write_file(path, svg.as_bytes())?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dump(args) => dump(&args),
        Command::Run(args) => run(&args),
        Command::Bench(args) => bench_command(&args),
        Command::Check(args) => check_command(&args),
        Command::Devices => devices(),
    };
    rhea::cli::exit_code(result)
}

/// `rhea devices`: the CPU always; GPUs where the driver finds them, or why not.
fn devices() -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    rhea::outln!("cpu     {} ({threads} threads)  backends: interp, cpu", std::env::consts::ARCH)?;
    match rhea_cuda::devices() {
        Ok(gpus) if gpus.is_empty() => rhea::outln!("cuda    none: the CUDA driver reports no GPU")?,
        Ok(gpus) => {
            for gpu in gpus {
                rhea::outln!("{gpu}  backend: cuda")?;
            }
        }
        Err(e) => rhea::outln!("cuda    not available: {e}")?,
    }
    rhea::outln!(
        "emu     rhea's PTX emulator: the cuda backend's code run on the host, no GPU needed  backend: cuda-emu"
    )?;
    Ok(())
}

/// Loads a graph file, or builds a built-in model: its training step for
/// `training`, else its forward graph and loss. With `types_only` (to
/// inspect it), a large model's weights are declared by type only, so that
/// a dump costs what the graph costs.
fn load_graph(path: &Path, training: bool, types_only: bool) -> Result<Graph> {
    let name = path.to_string_lossy();
    if !path.exists() && MODELS.contains(&name.as_ref()) {
        let graph = match (name.as_ref(), training) {
            ("theano-mlp", _) => rhea::nn::models::theano_mlp(1)?.graph,
            // Inference: the forward graph to the logits, torchvision's 1000 classes.
            ("vgg16", _) => {
                let opts = rhea::nn::models::VggOptions { types_only, ..Default::default() };
                rhea::nn::models::vgg16(&opts)?.graph
            }
            (_, true) => rhea::nn::models::sonar_mlp(1)?.graph,
            (_, false) => rhea::nn::models::sonar_mlp_forward(1)?.graph,
        };
        return Ok(graph.into_graph());
    }
    let bytes = rhea::io::read_file(path)
        .with_context(|| format!("cannot read graph {} (built-in models: {})", path.display(), MODELS.join(", ")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "cannot load graph {}: byte {} is not UTF-8 text: a graph file is JSON",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    rhea::from_json(&text).with_context(|| format!("cannot load graph {}", path.display()))
}

/// Adds the gradients of `--grad-of` with respect to `--wrt` as outputs
/// named `grad/<name>`.
fn add_gradients(graph: &mut Graph, args: &GradArgs) -> Result<()> {
    let outputs: Vec<(String, rhea::NodeId)> = graph.outputs().iter().map(|(n, id)| (n.to_string(), *id)).collect();
    let names = || outputs.iter().map(|(n, _)| format!("{n:?}")).collect::<Vec<_>>().join(", ");
    let cost = match (&args.grad_of, outputs.as_slice()) {
        (Some(name), _) => outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
            .with_context(|| format!("--grad-of {name:?} is not an output of the graph (outputs: {})", names()))?,
        (None, [(_, id)]) => *id,
        (None, []) => bail!("the graph declares no outputs: there is nothing to differentiate"),
        (None, _) => {
            bail!("the graph has several outputs; say which to differentiate with --grad-of (outputs: {})", names())
        }
    };
    let wrt: Vec<String> = if args.wrt.is_empty() {
        graph
            .shared()
            .into_iter()
            .filter(|&id| graph.ty(id).dtype.is_float())
            .filter_map(|id| graph.leaf_name(id).map(str::to_string))
            .collect()
    } else {
        args.wrt.clone()
    };
    let ids = wrt
        .iter()
        .map(|n| {
            graph.find(n).with_context(|| format!("--wrt {n:?} is neither an input nor a shared variable of the graph"))
        })
        .collect::<Result<Vec<_>>>()?;
    let grads = rhea::grad_nodes(graph, cost, &ids, rhea::Disconnected::Raise)?;
    for (name, g) in wrt.iter().zip(grads) {
        graph.set_output(&format!("grad/{name}"), g);
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: on failure the previous file stays.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    rhea::io::write_atomic(path, bytes)
        .with_context(|| format!("cannot write {} (the previous file, if any, is unchanged)", path.display()))
}

/// Writes `text` to `output`, or to standard output (where a closed pipe
/// drops the rest of the output, `rhea::nn::console`).
fn write_or_print(output: Option<&Path>, text: &str) -> Result<()> {
    match output {
        Some(path) => write_file(path, text.as_bytes()),
        None => Ok(rhea::nn::console::write(text.as_bytes())?),
    }
}

fn dump(args: &DumpArgs) -> Result<()> {
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

/// Splits the tensors of an inputs file into the graph's input feeds and
/// shared variable values (set on `graph`), rejecting any other name.
fn feed(graph: &mut Graph, tensors: Vec<(String, Value)>, file: Option<&Path>) -> Result<HashMap<String, Value>> {
    let shown = file.map_or_else(String::new, |f| f.display().to_string());
    let mut feeds = HashMap::new();
    let mut unknown = Vec::new();
    for (name, value) in tensors {
        let Some(id) = graph.find(&name) else {
            unknown.push(name);
            continue;
        };
        if matches!(graph.node(id).op, Op::Input { .. }) {
            feeds.insert(name, value);
        } else {
            graph.set_shared_value(id, value).with_context(|| shown.clone())?;
        }
    }
    if !unknown.is_empty() {
        let quoted = |names: Vec<&str>| names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
        let inputs = graph.inputs().into_iter().filter_map(|id| graph.leaf_name(id)).collect();
        let shared = graph.shared().into_iter().filter_map(|id| graph.leaf_name(id)).collect();
        bail!(
            "{shown} has tensors that are neither inputs nor shared variables of the graph: {} \
             (inputs: [{}]; shared variables: [{}])",
            quoted(unknown.iter().map(String::as_str).collect()),
            quoted(inputs),
            quoted(shared),
        );
    }
    let missing: Vec<String> = graph
        .inputs()
        .into_iter()
        .filter(|&id| !feeds.contains_key(graph.leaf_name(id).unwrap_or_default()))
        .map(|id| format!("{:?} ({})", graph.leaf_name(id).unwrap_or_default(), graph.ty(id)))
        .collect();
    if !missing.is_empty() {
        let (s, it) = if missing.len() > 1 { ("s", "them") } else { ("", "it") };
        let from = match file {
            Some(_) => format!("{shown} does not have {it}"),
            None => "no inputs file was given (--inputs FILE)".to_string(),
        };
        bail!("missing input{s} {}: {from}", missing.join(", "));
    }
    Ok(feeds)
}

/// Compiles the graph's outputs into a function on `backend` and calls it
/// once with the feeds.
fn run_compiled(
    graph: Graph,
    feeds: HashMap<String, Value>,
    ids: &[rhea::NodeId],
    backend: rhea::Backend,
    max_memory: Option<u64>,
) -> Result<Vec<Value>> {
    let inputs: Vec<(rhea::NodeId, String)> =
        graph.inputs().into_iter().map(|id| (id, graph.leaf_name(id).unwrap_or_default().to_string())).collect();
    let builder = rhea::Builder::from_graph(graph);
    let input_vars: Vec<rhea::Var> = inputs.iter().map(|&(id, _)| builder.var(id)).collect();
    let output_vars: Vec<rhea::Var> = ids.iter().map(|&id| builder.var(id)).collect();
    let mut f = rhea::function(&input_vars.iter().collect::<Vec<_>>(), &output_vars.iter().collect::<Vec<_>>())
        .backend(backend);
    if let Some(limit) = max_memory {
        f = f.max_memory(limit);
    }
    let mut f = f.compile()?;
    // The feeds move into the call: a large input is not copied.
    let mut feeds = feeds;
    let values: Vec<Value> = inputs
        .iter()
        .map(|(_, name)| feeds.remove(name).with_context(|| format!("input {name:?} was not given")))
        .collect::<Result<_>>()?;
    Ok(f.call(&values)?)
}

fn run(args: &RunArgs) -> Result<()> {
    if matches!(args.backend, Backend::Cuda) {
        // Before building a model's weights: no GPU is a quick answer.
        rhea_cuda::open_shared(0).context("backend cuda")?;
    }
    let mut graph = load_graph(&args.graph, false, false)?;
    if args.grad.given() {
        add_gradients(&mut graph, &args.grad)?;
    }
    let tensors = match &args.inputs {
        Some(path) => rhea::io::load_safetensors(path)?,
        None => Vec::new(),
    };
    let feeds = feed(&mut graph, tensors, args.inputs.as_deref())?;
    let outputs: Vec<(String, rhea::NodeId)> = graph.outputs().iter().map(|(n, id)| (n.to_string(), *id)).collect();
    if outputs.is_empty() {
        bail!("{} declares no outputs: there is nothing to run", args.graph.display());
    }
    let ids: Vec<rhea::NodeId> = outputs.iter().map(|(_, id)| *id).collect();
    let updates = graph.updates().len();
    // The graph moves into the function: its weights are not copied.
    let values = match args.backend {
        Backend::Interp => {
            // RHEA_NAN_GUARD=1 guards every backend, the interpreter too.
            let nan_guard = std::env::var("RHEA_NAN_GUARD").is_ok_and(|v| !v.is_empty() && v != "0");
            let options = rhea::interp::RunOptions { nan_guard, max_memory: args.max_memory };
            rhea::interp::run_checked(&graph, &feeds, &ids, &options).map_err(anyhow::Error::from)
        }
        Backend::Cpu => run_compiled(graph, feeds, &ids, rhea::Backend::Cpu, args.max_memory),
        Backend::Cuda => run_compiled(graph, feeds, &ids, rhea::Backend::Cuda, args.max_memory),
        Backend::CudaEmu => run_compiled(graph, feeds, &ids, rhea::Backend::CudaEmulated, args.max_memory),
    }
    .with_context(|| format!("running {}", args.graph.display()))?;
    if updates > 0 {
        eprintln!("note: the graph's {updates} update(s) are not applied: `rhea run` evaluates outputs only");
    }
    if let Some(path) = &args.output {
        let named: Vec<(&str, &Value)> = outputs.iter().map(|(n, _)| n.as_str()).zip(&values).collect();
        rhea::io::save_safetensors(path, &named)?;
    }
    let width = outputs.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for ((name, _), value) in outputs.iter().zip(&values) {
        rhea::outln!("{name:<width$}  {}", value.summary())?;
    }
    Ok(())
}
