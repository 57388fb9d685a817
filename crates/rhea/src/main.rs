//! The `rhea` command-line tool: dump and run graph files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use rhea::{Graph, Op, TextOptions, Value};

mod bench;
mod check;
mod dump;
mod plot;
mod run;

use dump::dump;
use run::{feed, run};

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
    /// Which models: sonar-mlp, theano-mlp, vgg16 (forward, 224x224), lstm,
    /// elman (recurrent training steps written with scan) or all.
    #[arg(long, value_name = "NAME[,NAME]", value_delimiter = ',', default_value = "all")]
    model: Vec<String>,
    /// Which backends.
    #[arg(long, value_name = "NAME[,NAME]", value_delimiter = ',', default_value = "interp,cpu")]
    backend: Vec<String>,
    /// Rows per batch (default: each model's own, 10 and 60).
    #[arg(long)]
    batch: Option<usize>,
    /// Steps of the recurrent models (default: 100 for lstm, 200 for elman).
    #[arg(long)]
    seq_len: Option<usize>,
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
    if args.batch == Some(0) || args.rounds == 0 || args.seq_len == Some(0) {
        return Err(rhea::cli::usage("--batch, --seq-len and --rounds must be at least 1"));
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
                    let target = bench::Target { backend, cuda_graph, seq_len: args.seq_len };
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
