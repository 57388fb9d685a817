//! `rhea run`: a graph file run on inputs from a safetensors file.

use super::*;

/// Splits the tensors of an inputs file into the graph's input feeds and
/// shared variable values (set on `graph`), rejecting any other name.
pub(crate) fn feed(
    graph: &mut Graph,
    tensors: Vec<(String, Value)>,
    file: Option<&Path>,
) -> Result<HashMap<String, Value>> {
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

pub(crate) fn run(args: &RunArgs) -> Result<()> {
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
