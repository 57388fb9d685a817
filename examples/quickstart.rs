//! Quickstart: build a small 3-layer network as a rhea graph, run it on a
//! batch with the reference interpreter, and write the graph's text, DOT and
//! JSON dumps (plus an inputs file) for the `rhea` command-line tool.
//!
//! ```text
//! cargo run --release --example quickstart [-- --out DIR]
//! ```

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use ndarray::{Array1, Array2, array};
use rhea::{Builder, DType, TextOptions, Value, Var};

/// Builds, runs and dumps a 3-layer network.
#[derive(Parser)]
struct Args {
    /// Where to write graph.txt, graph.dot, graph.json and inputs.safetensors.
    #[arg(long, value_name = "DIR", default_value = "target/quickstart")]
    out: PathBuf,
}

/// Glorot-uniform weights from rhea's counter-based generator, so every run
/// (and every machine) builds the same network.
fn glorot(seed: u64, n_in: usize, n_out: usize) -> Array2<f32> {
    let limit = (6.0 / (n_in + n_out) as f64).sqrt();
    let stream = rhea::rng::stream(seed, 0);
    Array2::from_shape_fn((n_in, n_out), |(i, j)| {
        let u = rhea::rng::uniform01(stream, (i * n_out + j) as u64);
        ((2.0 * u - 1.0) * limit) as f32
    })
}

/// `x . w + b` with weights `{name}.w` `[n_in, n_out]` and bias `{name}.b`.
fn dense(g: &Builder, name: &str, x: &Var, n_in: usize, n_out: usize, seed: u64) -> Result<Var> {
    let w = g.shared(&format!("{name}.w"), glorot(seed, n_in, n_out))?;
    let b = g.shared(&format!("{name}.b"), Array1::<f32>::zeros(n_out))?;
    Ok(x.dot(&w)?.add(&b)?)
}

fn main() -> std::process::ExitCode {
    rhea::cli::exit_code(run(Args::parse()))
}

fn run(args: Args) -> Result<()> {
    // x [batch, 4] -> dense + relu -> dense + tanh -> dense + softmax -> probs [batch, 3]
    let g = Builder::new();
    let batch = g.dim("batch")?;
    let x = g.input("x", DType::F32, [batch, 4.into()])?;
    let h1 = dense(&g, "layer1", &x, 4, 8, 1)?.relu()?.named("hidden1");
    let h2 = dense(&g, "layer2", &h1, 8, 8, 2)?.tanh()?.named("hidden2");
    let probs = dense(&g, "layer3", &h2, 8, 3, 3)?.softmax(-1)?.named("probs");
    g.output("probs", &probs)?;

    // Run it on a batch of three rows.
    let batch_x = array![[5.1f32, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]];
    let feeds = HashMap::from([("x".to_string(), Value::from(batch_x.clone()))]);
    let out = rhea::interp::run(&g.graph(), &feeds, &[probs.id()])?;

    let graph = g.graph();
    rhea::outln!("The graph ({} nodes):\n", graph.len())?;
    rhea::outln!("{}", rhea::to_text(&graph, TextOptions::default()).trim_end())?;
    rhea::outln!("\nprobs = {}", out[0].summary())?;
    let rows = out[0].as_f32().context("probs is f32")?;
    for (i, row) in rows.outer_iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|p| format!("{p:.4}")).collect();
        rhea::outln!("  row {i}: [{}]  (sum {:.4})", cells.join(", "), row.sum())?;
    }

    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let write = |name: &str, text: String| -> Result<PathBuf> {
        let path = args.out.join(name);
        rhea::io::write_atomic(&path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    };
    let txt = write("graph.txt", rhea::to_text(&graph, TextOptions { locs: true }))?;
    let dot = write("graph.dot", rhea::to_dot(&graph))?;
    let json = write("graph.json", rhea::to_json(&graph))?;
    let inputs = args.out.join("inputs.safetensors");
    rhea::io::save_safetensors(&inputs, &[("x", &Value::from(batch_x))])?;

    rhea::outln!("\nWrote {}, {}, {} and {}.", txt.display(), dot.display(), json.display(), inputs.display())?;
    rhea::outln!("Run the saved graph with the command-line tool:")?;
    rhea::outln!("  cargo run --release -- run {} --inputs {}", json.display(), inputs.display())?;
    rhea::outln!("or draw it (with Graphviz): dot -Tsvg {} > graph.svg", dot.display())?;
    Ok(())
}
