//! The dependency invariants of `docs/architecture.md`, checked against
//! `cargo metadata`.

use std::collections::BTreeMap;
use std::process::Command;

/// Each workspace crate's normal (non-dev) dependencies, by name.
fn dependencies() -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let mut crates = BTreeMap::new();
    for package in meta["packages"].as_array().expect("a package list") {
        let name = package["name"].as_str().expect("a package name").to_string();
        let deps = package["dependencies"]
            .as_array()
            .expect("a dependency list")
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().expect("a dependency name").to_string())
            .collect();
        crates.insert(name, deps);
    }
    crates
}

fn rhea_deps(deps: &[String]) -> Vec<&str> {
    deps.iter().map(String::as_str).filter(|d| d.starts_with("rhea")).collect()
}

#[test]
fn the_crates_of_the_architecture_doc_exist() {
    let crates = dependencies();
    for name in ["rhea", "rhea-graph", "rhea-interp"] {
        assert!(crates.contains_key(name), "{name} is not in the workspace: {:?}", crates.keys());
    }
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/architecture.md")).unwrap();
    for name in crates.keys() {
        assert!(doc.contains(&format!("`{name}`")), "docs/architecture.md does not describe crate {name}");
    }
}

#[test]
fn the_graph_crate_depends_on_no_rhea_crate_and_nothing_heavy() {
    let crates = dependencies();
    let graph = &crates["rhea-graph"];
    assert_eq!(rhea_deps(graph), Vec::<&str>::new(), "rhea-graph must not depend on other rhea crates");
    let light = ["ndarray", "petgraph", "serde", "serde_json", "thiserror"];
    for d in graph {
        assert!(light.contains(&d.as_str()), "rhea-graph depends on {d}; it may only use {light:?}");
    }
}

/// DESIGN.md's layers: `rhea-graph -> rhea-kernel -> rhea-opt -> backends
/// -> rhea`, with `rhea-nn` on the graph alone. Between the optimizer and the
/// backends sits the one executor, `rhea-exec`, on the interpreter's op
/// semantics (`rhea-interp`, whose engine it is); the CPU and CUDA backends
/// are devices of it. Each crate may depend on the rhea crates listed for it
/// and no others; a new crate must be added here.
const ALLOWED: &[(&str, &[&str])] = &[
    ("rhea-graph", &[]),
    ("rhea-kernel", &["rhea-graph"]),
    ("rhea-opt", &["rhea-graph", "rhea-kernel"]),
    ("rhea-interp", &["rhea-graph", "rhea-kernel", "rhea-opt"]),
    ("rhea-exec", &["rhea-graph", "rhea-kernel", "rhea-opt", "rhea-interp"]),
    ("rhea-cpu", &["rhea-graph", "rhea-kernel", "rhea-opt", "rhea-exec"]),
    ("rhea-cuda", &["rhea-graph", "rhea-kernel", "rhea-opt", "rhea-exec"]),
    ("rhea-nn", &["rhea-graph"]),
    (
        "rhea",
        &["rhea-graph", "rhea-kernel", "rhea-opt", "rhea-interp", "rhea-exec", "rhea-cpu", "rhea-cuda", "rhea-nn"],
    ),
];

#[test]
fn every_crate_depends_only_on_the_layers_below_it() {
    for (name, deps) in &dependencies() {
        let allowed = ALLOWED
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("crate {name} is missing from the layer table in tests/cli/architecture.rs"))
            .1;
        for d in rhea_deps(deps) {
            assert!(allowed.contains(&d), "{name} depends on {d}; it may depend on {allowed:?}");
        }
    }
}

#[test]
fn backends_never_depend_on_each_other_and_nothing_depends_on_the_facade() {
    let crates = dependencies();
    // The interpreter's semantics and the executor sit below the devices.
    let backends = ["rhea-cpu", "rhea-cuda"];
    let below = ["rhea-interp", "rhea-exec"];
    for (name, deps) in &crates {
        for d in rhea_deps(deps) {
            assert_ne!(d, "rhea", "{name} depends on the facade crate rhea");
            if below.contains(&name.as_str()) {
                assert!(!backends.contains(&d), "{name} depends on the backend {d}");
            }
            if backends.contains(&name.as_str()) {
                assert!(!backends.contains(&d), "backend {name} depends on backend {d}");
            }
        }
    }
}
