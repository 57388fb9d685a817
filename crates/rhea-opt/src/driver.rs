//! The pass manager: named passes, each driven to a fixed point within an
//! iteration budget, every rewrite recorded, the graph verified between
//! passes in debug and test builds.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rhea_graph::{Graph, Loc, NodeId, Op, Value};

use crate::rule::{Ctx, Rule};
use crate::rules;
use crate::verify::verify;

/// How much to optimize, as Theano's modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Every pass.
    #[default]
    Fast,
    /// No rewrites (only rules named with `include`), one kernel per op.
    None,
}

/// Evaluates one op on constants (the facade passes the interpreter's).
pub type Evaluator = fn(&Op, &[&Value]) -> Result<Value, String>;

/// How to optimize.
#[derive(Clone, Debug)]
pub struct Options {
    /// The mode.
    pub mode: Mode,
    /// Rules switched off by name.
    pub exclude: Vec<String>,
    /// Rules switched on by name (in `Mode::None`, the only ones that run).
    pub include: Vec<String>,
    /// Sweeps over the graph a pass may make before it stops.
    pub budget: usize,
    /// Constants up to this many elements are folded.
    pub fold_limit: usize,
    /// How to evaluate constant subgraphs; without one nothing is folded.
    pub evaluator: Option<Evaluator>,
    /// Stop after the named pass (to see the graph at that point).
    pub stop_after: Option<String>,
    /// Verify the graph after every pass.
    pub verify: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            mode: Mode::Fast,
            exclude: Vec::new(),
            include: Vec::new(),
            budget: 50,
            fold_limit: 1 << 16,
            evaluator: None,
            stop_after: None,
            verify: cfg!(debug_assertions),
        }
    }
}

/// Why a pass stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// No rule fires any more.
    Saturated,
    /// The sweep budget ran out first.
    IterationLimit,
}

/// One rewrite that fired.
#[derive(Clone, Debug)]
pub struct Rewrite {
    /// The pass it ran in.
    pub pass: &'static str,
    /// The rule.
    pub rule: &'static str,
    /// The expression replaced.
    pub before: String,
    /// Its replacement.
    pub after: String,
    /// Where the user built the replaced node.
    pub loc: Option<Loc>,
}

/// What one pass did.
#[derive(Clone, Debug)]
pub struct PassReport {
    /// Its name.
    pub name: &'static str,
    /// Rewrites that fired.
    pub rewrites: usize,
    /// Nodes removed as dead afterwards.
    pub removed: usize,
    /// Time spent.
    pub time: Duration,
    /// Why it stopped.
    pub stop: Stop,
}

/// What the optimizer did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Per pass, in order.
    pub passes: Vec<PassReport>,
    /// Every rewrite, in order.
    pub rewrites: Vec<Rewrite>,
    /// Risky numerical patterns it could not rewrite: (node, what).
    pub risks: Vec<(NodeId, String)>,
    /// Nodes before optimizing.
    pub nodes_before: usize,
    /// Nodes after.
    pub nodes_after: usize,
}

/// A pass of the pipeline.
#[derive(Clone, Copy)]
enum Pass {
    /// Hash-consing keeps the graph free of duplicates (on insert and on
    /// every replacement); with `verify` on, this pass checks it.
    Merge,
    /// Removes nodes no output or update needs.
    Dead,
    /// Evaluates subgraphs whose inputs are all constants.
    Fold,
    /// A family of rules, to a fixed point.
    Rules(&'static [Rule]),
}

/// The pipeline, in the order Theano and PyTensor converged on.
const PIPELINE: &[(&str, Pass)] = &[
    ("merge", Pass::Merge),
    ("dead", Pass::Dead),
    ("useless", Pass::Rules(rules::useless::RULES)),
    ("fold", Pass::Fold),
    ("canonicalize", Pass::Rules(rules::canonicalize::RULES)),
    ("stabilize", Pass::Rules(rules::stabilize::RULES)),
    ("specialize", Pass::Rules(rules::specialize::RULES)),
    ("loops", Pass::Rules(rules::loops::RULES)),
    ("useless_again", Pass::Rules(rules::useless::RULES)),
    ("merge_again", Pass::Merge),
];

/// The names of the rewrite passes, in order (fusion and the memory plan
/// follow them).
pub fn pass_names() -> Vec<&'static str> {
    PIPELINE.iter().map(|(n, _)| *n).collect()
}

/// Every rule, by family.
pub fn all_rules() -> Vec<(&'static str, &'static Rule)> {
    PIPELINE
        .iter()
        .filter(|(n, _)| *n != "useless_again")
        .filter_map(|(n, p)| match p {
            Pass::Rules(rules) => Some(rules.iter().map(move |r| (*n, r))),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Why optimizing failed: options naming no rule or pass, or a compiler bug
/// named by the pass that broke the graph.
#[derive(Debug, thiserror::Error)]
#[error("{}", if pass == "options" { format!("invalid optimizer options: {msg}") } else { format!("optimizer bug in pass {pass}: {msg}") })]
pub struct OptError {
    /// The pass that broke the graph (`options` for bad options).
    pub pass: String,
    /// What is wrong.
    pub msg: String,
}

/// Rewrites `g` in place through the pipeline.
pub fn optimize(g: &mut Graph, opts: &Options) -> Result<Report, OptError> {
    let known: HashSet<&str> = all_rules().iter().map(|(_, r)| r.name).collect();
    for name in opts.include.iter().chain(&opts.exclude) {
        if !known.contains(name.as_str()) {
            let mut names: Vec<&str> = known.iter().copied().collect();
            names.sort();
            return Err(OptError {
                pass: "options".into(),
                msg: format!("unknown rule {name:?}; rules: {}", names.join(", ")),
            });
        }
    }
    if let Some(stop) = &opts.stop_after
        && !PIPELINE.iter().any(|(n, _)| n == stop)
    {
        return Err(OptError {
            pass: "options".into(),
            msg: format!("unknown pass {stop:?}; passes: {}", pass_names().join(", ")),
        });
    }
    let mut report = Report { nodes_before: g.len(), ..Report::default() };
    for &(name, pass) in PIPELINE {
        let start = Instant::now();
        let (rewrites, stop) = match pass {
            Pass::Merge if opts.verify => {
                (check_merged(g).map_err(|msg| OptError { pass: name.into(), msg })?, Stop::Saturated)
            }
            Pass::Merge => (0, Stop::Saturated),
            Pass::Dead => (0, Stop::Saturated),
            Pass::Fold if opts.mode == Mode::Fast => (fold(g, opts, &mut report), Stop::Saturated),
            Pass::Fold => (0, Stop::Saturated),
            Pass::Rules(rules) => {
                let enabled: Vec<&Rule> = rules
                    .iter()
                    .filter(|r| match opts.mode {
                        Mode::Fast => !opts.exclude.iter().any(|e| e == r.name),
                        Mode::None => opts.include.iter().any(|i| i == r.name),
                    })
                    .collect();
                fixed_point(g, name, &enabled, opts.budget, &mut report)
                    .map_err(|msg| OptError { pass: name.into(), msg })?
            }
        };
        let removed = g.remove_dead();
        if opts.verify {
            verify(g).map_err(|msg| OptError { pass: name.into(), msg })?;
        }
        report.passes.push(PassReport { name, rewrites, removed, time: start.elapsed(), stop });
        if name == "stabilize" || opts.stop_after.as_deref() == Some(name) {
            report.risks = rules::stabilize::risks(g);
        }
        if opts.stop_after.as_deref() == Some(name) {
            break;
        }
    }
    report.nodes_after = g.len();
    Ok(report)
}

/// The ids that must stay: outputs, update targets and values, inputs.
fn roots(g: &Graph) -> HashSet<NodeId> {
    let mut r: HashSet<NodeId> = g.outputs().iter().map(|(_, id)| *id).collect();
    r.extend(g.updates().iter().flat_map(|&(s, v)| [s, v]));
    r.extend(g.inputs());
    r
}

/// A short description of the expression at `id`, two levels deep.
pub fn describe(g: &Graph, id: NodeId, depth: usize) -> String {
    let node = g.node(id);
    match &node.op {
        Op::Input { name } | Op::Shared { name } => name.to_string(),
        Op::Const { value } => value.to_string(),
        op if depth == 0 => format!("{}(..)", op.name()),
        op => {
            let args: Vec<String> = node.inputs.iter().map(|&i| describe(g, i, depth - 1)).collect();
            format!("{}({})", op.name(), args.join(", "))
        }
    }
}

fn fixed_point(
    g: &mut Graph,
    pass: &'static str,
    rules: &[&Rule],
    budget: usize,
    report: &mut Report,
) -> Result<(usize, Stop), String> {
    let mut total = 0;
    for _ in 0..budget {
        let mut fired = 0;
        let mut keep = roots(g);
        for id in g.topo_order() {
            if g.get(id).is_none() || (!g.is_used(id) && !keep.contains(&id)) {
                continue;
            }
            for rule in rules {
                let mut cx = Ctx::new(g, id);
                let Some(new) = (rule.apply)(&mut cx) else { continue };
                if new == id || g.ty(new) != g.ty(id) {
                    continue;
                }
                report.rewrites.push(Rewrite {
                    pass,
                    rule: rule.name,
                    before: describe(g, id, 2),
                    after: describe(g, new, 2),
                    loc: g.node(id).loc.clone(),
                });
                g.replace_all_uses(id, new).map_err(|e| format!("rule {}: {e}", rule.name))?;
                if keep.contains(&id) {
                    keep.insert(new);
                }
                fired += 1;
                break;
            }
        }
        g.remove_dead();
        total += fired;
        if fired == 0 {
            return Ok((total, Stop::Saturated));
        }
    }
    Ok((total, Stop::IterationLimit))
}

/// Replaces each node whose inputs are all constants by its value.
fn fold(g: &mut Graph, opts: &Options, report: &mut Report) -> usize {
    let Some(eval) = opts.evaluator else { return 0 };
    let mut folded = 0;
    for id in g.topo_order() {
        let node = g.node(id);
        let foldable = !node.op.is_leaf()
            && !node.inputs.is_empty()
            && node.inputs.iter().all(|&i| matches!(g.node(i).op, Op::Const { .. }))
            && node.ty.shape.known_size().is_some_and(|n| n <= opts.fold_limit);
        if !foldable {
            continue;
        }
        let values: Vec<Value> = node
            .inputs
            .iter()
            .map(|&i| match &g.node(i).op {
                Op::Const { value } => value.value().clone(),
                _ => unreachable!("checked above"),
            })
            .collect();
        let refs: Vec<&Value> = values.iter().collect();
        let Ok(v) = eval(&node.op, &refs) else { continue };
        let loc = node.loc.clone();
        let before = describe(g, id, 2);
        let c = g.add_const(v, loc.clone());
        if g.ty(c) != g.ty(id) || g.replace_all_uses(id, c).is_err() {
            continue;
        }
        report.rewrites.push(Rewrite { pass: "fold", rule: "fold", before, after: describe(g, c, 0), loc });
        folded += 1;
    }
    folded
}

/// Hash-consing keeps the graph free of duplicates; this checks it.
fn check_merged(g: &Graph) -> Result<usize, String> {
    let mut seen = std::collections::HashMap::new();
    for id in g.node_ids() {
        let n = g.node(id);
        if let Some(other) = seen.insert((n.op.clone(), n.inputs.clone()), id) {
            return Err(format!("{id} and {other} are identical but distinct"));
        }
    }
    Ok(0)
}
