//! The graph file format: versioned JSON (see `docs/graph-format.md`).
//!
//! Writing renumbers nodes in topological order and puts one record per
//! line, so a dump is stable and diffable; loading rebuilds every node
//! through the ordinary shape rules and rejects a file whose recorded types
//! disagree with them.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::print::numbering;
use crate::{Graph, GraphError, Literal, Loc, NodeId, Op, TensorType};

/// The memory loading a graph file needs beyond its text, as a multiple of
/// the text's size (measured on node-heavy and value-heavy files alike).
const LOAD_FACTOR: usize = 5;

/// The `format` field of every graph file.
pub const FORMAT: &str = "rhea-graph";
/// The newest version this crate writes and reads: version 2 nests the
/// body graphs of loops (`scan`); a graph without loops is written as
/// version 1, which every version reads.
pub const VERSION: u32 = 2;
/// Shared values with at most this many elements are written inline by
/// [`to_json`]; larger ones are left to a weights file.
pub const INLINE_LIMIT: usize = 4096;

#[derive(Serialize, Deserialize)]
struct NodeRecord {
    id: usize,
    #[serde(flatten)]
    op: Op,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    inputs: Vec<usize>,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loc: Option<String>,
}

#[derive(Serialize)]
struct SharedRecord {
    name: String,
    value: Option<Literal>,
}

/// A shared record as read: the value is checked once its name is known.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SharedFileRecord {
    name: String,
    value: Option<crate::value::RawLiteral>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputRecord {
    name: String,
    node: usize,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRecord {
    shared: String,
    value: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphFile {
    format: String,
    version: u32,
    nodes: Nodes,
    #[serde(default)]
    shared: Vec<SharedFileRecord>,
    #[serde(default)]
    outputs: Vec<OutputRecord>,
    #[serde(default)]
    updates: Vec<UpdateRecord>,
    /// Written by optimized dumps to show the fused kernels; a graph file
    /// loads without them, so they are accepted and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    kernels: Option<serde_json::Value>,
}

/// The graph as a JSON graph file, shared values of up to [`INLINE_LIMIT`]
/// elements inline.
pub fn to_json(g: &Graph) -> String {
    to_json_with(g, INLINE_LIMIT)
}

/// The graph as a JSON graph file, shared values of up to `inline_limit`
/// elements inline and the others written as `null` (to be given by name
/// from a weights file when the graph runs).
pub fn to_json_with(g: &Graph, inline_limit: usize) -> String {
    let (order, number) = numbering(g);
    let line = |v: &dyn erased::Record| v.json();
    let mut nodes = Vec::with_capacity(order.len());
    let mut shared = Vec::new();
    for &id in &order {
        let node = g.node(id);
        nodes.push(line(&NodeRecord {
            id: number[&id],
            op: node.op.clone(),
            inputs: node.inputs.iter().map(|i| number[i]).collect(),
            ty: node.ty.to_string(),
            label: node.name.as_ref().map(|n| n.to_string()),
            loc: node.loc.as_ref().map(Loc::full),
        }));
        if let Op::Shared { name } = &node.op {
            let value = g.shared_value(id).filter(|v| v.len() <= inline_limit).map(|v| Literal::new(v.clone()));
            shared.push(line(&SharedRecord { name: name.to_string(), value }));
        }
    }
    let outputs: Vec<String> =
        g.outputs().iter().map(|(name, id)| line(&OutputRecord { name: name.to_string(), node: number[id] })).collect();
    let updates: Vec<String> = g
        .updates()
        .iter()
        .map(|(s, v)| line(&UpdateRecord { shared: g.leaf_name(*s).unwrap_or_default().to_string(), value: number[v] }))
        .collect();
    let section = |name: &str, items: &[String]| {
        if items.is_empty() {
            format!("  \"{name}\": []")
        } else {
            format!("  \"{name}\": [\n    {}\n  ]", items.join(",\n    "))
        }
    };
    let version = if order.iter().any(|&id| matches!(g.node(id).op, Op::Scan(_))) { VERSION } else { 1 };
    format!(
        "{{\n  \"format\": \"{FORMAT}\",\n  \"version\": {version},\n{},\n{},\n{},\n{}\n}}\n",
        section("nodes", &nodes),
        section("shared", &shared),
        section("outputs", &outputs),
        section("updates", &updates)
    )
}

mod erased {
    /// One compact JSON line per record.
    pub trait Record {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Record for T {
        fn json(&self) -> String {
            serde_json::to_string(self).expect("graph records always serialize")
        }
    }
}

fn format_err(msg: String) -> GraphError {
    GraphError::Format(msg)
}

/// The nodes of a graph file, built into a graph as they are read, one
/// record at a time, so that a large file never holds all its records at
/// once (a 111 MB file of 1.5 million nodes loads in 605 MB, not 871). The
/// first bad record's error is kept; the rest are read and dropped.
struct Nodes(Result<(Graph, Vec<NodeId>), GraphError>);

impl<'de> Deserialize<'de> for Nodes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Nodes, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Nodes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of node records")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Nodes, A::Error> {
                let mut g = Graph::new();
                let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(rec) = seq.next_element::<NodeRecord>()? {
                    if let Err(e) = add_record(&mut g, &mut ids, rec) {
                        // The rest is still read as records, so that a later
                        // malformed one is reported as before.
                        while seq.next_element::<NodeRecord>()?.is_some() {}
                        return Ok(Nodes(Err(e)));
                    }
                }
                Ok(Nodes(Ok((g, ids))))
            }
        }
        d.deserialize_seq(Visit)
    }
}

/// Adds node record number `ids.len()` to `g`, checked against the shape
/// rules and the type the file states.
fn add_record(g: &mut Graph, ids: &mut Vec<NodeId>, rec: NodeRecord) -> Result<(), GraphError> {
    let i = ids.len();
    let what = format!("node {i} ({})", rec.op.name());
    if rec.id != i {
        return Err(format_err(format!("{what}: has id {}, but ids must count up from 0 in file order", rec.id)));
    }
    let ty: TensorType = rec.ty.parse().map_err(|e| format_err(format!("{what}: {e}")))?;
    let loc = match &rec.loc {
        Some(s) => Some(Loc::parse(s).ok_or_else(|| format_err(format!("{what}: loc {s:?} is not file:line:column")))?),
        None => None,
    };
    let mut inputs = Vec::with_capacity(rec.inputs.len());
    for &j in &rec.inputs {
        if j >= i {
            return Err(format_err(format!(
                "{what}: input {j} is not defined before it (a cycle or a dangling reference)"
            )));
        }
        inputs.push(ids[j]);
    }
    let in_ctx = |e: GraphError| format_err(format!("{what}: {e}"));
    let id = match &rec.op {
        Op::Input { name } if inputs.is_empty() => g.add_input(name, ty.clone(), loc).map_err(in_ctx)?,
        Op::Shared { name } if inputs.is_empty() => g.add_shared_declared(name, ty.clone(), loc).map_err(in_ctx)?,
        Op::Input { .. } | Op::Shared { .. } => {
            return Err(format_err(format!("{what}: a leaf cannot have inputs")));
        }
        op => g.add(op.clone(), &inputs, loc).map_err(in_ctx)?,
    };
    if g.ty(id) != &ty {
        return Err(format_err(format!("{what}: the file says {ty}, but its inputs give {}", g.ty(id))));
    }
    if let Some(label) = &rec.label {
        g.set_name(id, label);
    }
    ids.push(id);
    Ok(())
}

/// Loads a graph file, checking every node against the shape rules.
pub fn from_json(text: &str) -> Result<Graph, GraphError> {
    match text.trim_start().chars().next() {
        Some('{') => {}
        None => return Err(format_err("the file is empty; a graph file is a JSON object".into())),
        Some(c) => {
            return Err(format_err(format!(
                "a graph file is a JSON object ({{\"format\": \"{FORMAT}\", \"version\": {VERSION}, \"nodes\": [...]}}), \
                 but this one starts with {c:?}"
            )));
        }
    }
    // Loading holds the records' strings and the graph's nodes: about five
    // times the file's size, measured (a 111 MB file of 1.5 million nodes
    // peaks at 605 MB with its text). Check that much is there first: the
    // parser's own allocations cannot fail as errors.
    let needed = text.len().saturating_mul(LOAD_FACTOR);
    if crate::memory::can_allocate(needed).is_err() {
        return Err(format_err(format!(
            "out of memory: loading a graph file of {} needs about {} more",
            crate::memory::format_bytes(text.len() as u128),
            crate::memory::format_bytes(needed as u128)
        )));
    }
    let file: GraphFile = serde_json::from_str(text).map_err(|e| format_err(e.to_string()))?;
    if file.format != FORMAT {
        return Err(format_err(format!("format is {:?}, expected {FORMAT:?}", file.format)));
    }
    if !(1..=VERSION).contains(&file.version) {
        return Err(format_err(format!(
            "version {} is not supported; this rhea reads versions 1 to {VERSION}",
            file.version
        )));
    }
    let (mut g, ids) = file.nodes.0?;
    let node = |j: usize, what: &str| {
        ids.get(j).copied().ok_or_else(|| format_err(format!("{what} refers to node {j}, which does not exist")))
    };
    let shared_named = |g: &Graph, name: &str, what: &str| {
        g.find(name)
            .filter(|&id| matches!(g.node(id).op, Op::Shared { .. }))
            .ok_or_else(|| format_err(format!("{what} names {name:?}, which is not a shared variable of the graph")))
    };
    for rec in file.shared {
        let id = shared_named(&g, &rec.name, "a shared value")?;
        if let Some(raw) = rec.value {
            let lit = raw.into_literal().map_err(|e| format_err(format!("shared variable {:?}: {e}", rec.name)))?;
            g.set_shared_value(id, lit.value().clone()).map_err(|e| format_err(e.to_string()))?;
        }
    }
    let mut seen = HashSet::new();
    for rec in file.outputs {
        if !seen.insert(rec.name.clone()) {
            return Err(format_err(format!("output {:?} is declared twice", rec.name)));
        }
        let id = node(rec.node, &format!("output {:?}", rec.name))?;
        g.set_output(&rec.name, id);
    }
    for rec in file.updates {
        let what = format!("the update of {:?}", rec.shared);
        let shared = shared_named(&g, &rec.shared, &what)?;
        let value = node(rec.value, &what)?;
        g.add_update(shared, value).map_err(|e| format_err(e.to_string()))?;
    }
    g.check_symbols_bound().map_err(format_err)?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Builder, DType, Dim, Value};

    fn sample() -> Graph {
        let g = Builder::new();
        let b = g.dim("batch").unwrap();
        let x = g.input("x", DType::F32, [b, Dim::Known(2)]).unwrap();
        let w = g.shared("w", ndarray::array![[1.0f32, f32::NAN], [f32::NEG_INFINITY, 0.5]]).unwrap();
        let big = g.shared("big", ndarray::Array1::<f32>::zeros(10)).unwrap();
        let h = x.dot(&w).unwrap().named("hidden");
        let y = (&h * 0.1).sum(&[1], false).unwrap();
        let s = (&big * 2.0).sum_all().unwrap();
        g.output("y", &y).unwrap();
        g.output("s", &s).unwrap();
        g.update(&big, &(&big + 1.0)).unwrap();
        g.to_graph()
    }

    fn nodes_line(json: &str, from: &str, to: &str) -> String {
        json.replacen(from, to, 1)
    }

    #[test]
    fn dump_load_dump_is_byte_identical() {
        let text = to_json(&sample());
        let again = to_json(&from_json(&text).unwrap());
        assert_eq!(text, again);
        assert!(text.contains(r#""label":"hidden""#));
        assert!(text.contains(r#""type":"f32[batch,2]""#));
        assert!(text.contains(r#""nan""#) && text.contains(r#""-inf""#));
    }

    #[test]
    fn large_shared_values_are_left_out_and_reported_missing() {
        let text = to_json_with(&sample(), 5);
        assert!(text.contains(r#"{"name":"big","value":null}"#), "{text}");
        let g = from_json(&text).unwrap();
        assert!(g.shared_value(g.find("big").unwrap()).is_none());
        assert!(g.shared_value(g.find("w").unwrap()).is_some());
        assert_eq!(to_json_with(&g, 5), text);
    }

    #[test]
    fn loader_rejects_bad_files_naming_the_node() {
        let text = to_json(&sample());
        let err = |t: &str| from_json(t).unwrap_err().to_string();
        assert!(err("{").starts_with("graph file: EOF while parsing"));
        assert!(err(&text.replace("\"version\": 1", "\"version\": 9")).contains("version 9 is not supported"));
        assert!(err(&text.replace("\"rhea-graph\"", "\"onnx\"")).contains("format is \"onnx\""));
        // A forward reference is a cycle or a dangling input.
        let dot = r#"{"id":3,"op":"dot","inputs":[0,1]"#;
        assert!(text.contains(dot), "{text}");
        let e = err(&nodes_line(&text, dot, r#"{"id":3,"op":"dot","inputs":[0,9]"#));
        assert_eq!(e, "graph file: node 3 (dot): input 9 is not defined before it (a cycle or a dangling reference)");
        let e = err(&nodes_line(&text, dot, r#"{"id":3,"op":"dot","inputs":[3,2]"#));
        assert!(e.contains("input 3 is not defined before it"), "{e}");
        let e = err(&nodes_line(&text, r#""type":"f32[batch,2]","label""#, r#""type":"f32[batch,3]","label""#));
        assert_eq!(e, "graph file: node 3 (dot): the file says f32[batch,3], but its inputs give f32[batch,2]");
        let e = err(&nodes_line(&text, dot, r#"{"id":3,"op":"dot","inputs":[0]"#));
        assert!(e.starts_with("graph file: node 3 (dot): dot: dot takes 2 input(s), got 1"), "{e}");
        let e = err(&nodes_line(&text, r#""id":3,"#, r#""id":4,"#));
        assert!(e.contains("node 3 (dot): has id 4"), "{e}");
        let e = err(&text.replace(r#""op":"dot""#, r#""op":"fft""#));
        assert!(e.contains("unknown variant `fft`"), "{e}");
        let e = err(&text.replace(r#"{"name":"y","node":"#, r#"{"name":"y","node":99"#));
        assert!(e.starts_with("graph file:"), "{e}");
        let e = err(&text.replace(r#"{"shared":"big""#, r#"{"shared":"x""#));
        assert!(e.contains("names \"x\", which is not a shared variable"), "{e}");
        let e = err(&text.replace(
            r#"{"name":"w","value":{"dtype":"f32","shape":[2,2]"#,
            r#"{"name":"w","value":{"dtype":"f32","shape":[4]"#,
        ));
        assert!(e.contains("shared variable \"w\": expected f32[2,2], got f32[4]"), "{e}");
    }

    #[test]
    fn outputs_refer_to_existing_nodes() {
        let text = to_json(&sample());
        let start = text.find(r#"{"name":"y","node":"#).unwrap();
        let end = start + text[start..].find('}').unwrap();
        let broken = format!("{}{{\"name\":\"y\",\"node\":99{}", &text[..start], &text[end..]);
        let e = from_json(&broken).unwrap_err().to_string();
        assert_eq!(e, "graph file: output \"y\" refers to node 99, which does not exist");
        let dup = text.replacen(r#"{"name":"s","node":"#, r#"{"name":"y","node":"#, 1);
        assert!(from_json(&dup).unwrap_err().to_string().contains("declared twice"));
    }

    #[test]
    fn values_keep_their_bits() {
        let g = from_json(&to_json(&sample())).unwrap();
        let w = g.shared_value(g.find("w").unwrap()).unwrap();
        assert!(w.bit_eq(&Value::from(ndarray::array![[1.0f32, f32::NAN], [f32::NEG_INFINITY, 0.5]])));
    }

    /// Random bit patterns of f64 and f32 (finite, subnormal, NaN, infinite)
    /// in shared values and f64 constants: dump and load keep every bit.
    #[test]
    fn random_floats_survive_dump_and_load_bit_for_bit() {
        const N: usize = 100_000;
        let draw = |stream: u64, i: usize| crate::rng::bits(crate::rng::stream(7, stream as i64), i as u64);
        let f64s: Vec<f64> = (0..N).map(|i| f64::from_bits(draw(1, i))).collect();
        let f32s: Vec<f32> = (0..N).map(|i| f32::from_bits(draw(2, i) as u32)).collect();
        let g = Builder::new();
        let a = g.shared("a", ndarray::Array1::from(f64s.clone())).unwrap();
        let b = g.shared("b", ndarray::Array1::from(f32s.clone())).unwrap();
        // f64 attributes of ops (a scalar constant) go through the same parser.
        let scalars: Vec<f64> = (0..200).map(|i| f64::from_bits(draw(3, i))).filter(|x| x.is_finite()).collect();
        let mut total = a.sum_all().unwrap();
        for &c in &scalars {
            total = &total + &g.scalar(c, DType::F64);
        }
        g.output("a", &total).unwrap();
        g.output("b", &b.sum_all().unwrap()).unwrap();
        let text = to_json_with(&g.to_graph(), usize::MAX);
        let back = from_json(&text).unwrap();
        let value = |name: &str| back.shared_value(back.find(name).unwrap()).unwrap().clone();
        // Every number keeps its bits; a NaN stays a NaN (JSON has no payloads).
        let same = |a: f64, b: f64| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        let a = value("a");
        for (i, (&got, &want)) in a.as_f64().unwrap().iter().zip(&f64s).enumerate() {
            assert!(same(got, want), "f64 {i}: {want:e} ({:#x}) came back as {got:e}", want.to_bits());
        }
        let b = value("b");
        for (i, (&got, &want)) in b.as_f32().unwrap().iter().zip(&f32s).enumerate() {
            assert!(same(got.into(), want.into()), "f32 {i}: {want:e} ({:#x}) came back as {got:e}", want.to_bits());
        }
        let loaded: Vec<f64> = back
            .topo_order()
            .into_iter()
            .flat_map(|id| match &back.node(id).op {
                Op::Const { value } => value.value().to_f64_vec(),
                _ => vec![],
            })
            .collect();
        for c in &scalars {
            assert!(loaded.iter().any(|l| l.to_bits() == c.to_bits()), "constant {c:e} did not survive");
        }
        // A second round trip writes the same text.
        assert_eq!(to_json_with(&back, usize::MAX), text);
    }

    /// 17 significant digits name one double: the loader rounds correctly
    /// (serde_json's default parser is off by an ulp on some of these).
    #[test]
    fn seventeen_digit_literals_load_correctly_rounded() {
        for text in [
            "0.30000000000000004",
            "2.2250738585072014e-308",
            "1.7976931348623157e308",
            "9007199254740993",
            "0.1000000000000000055511151231257827",
            "4.9406564584124654e-324",
            "1.2345678901234567e-17",
        ] {
            let json = format!(r#"{{"dtype":"f64","shape":[1],"data":[{text}]}}"#);
            let lit: Literal = serde_json::from_str(&json).unwrap();
            let want: f64 = text.parse().unwrap();
            assert_eq!(lit.value().to_f64_vec()[0].to_bits(), want.to_bits(), "{text}");
        }
    }
}
