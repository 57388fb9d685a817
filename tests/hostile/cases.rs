//! The cases, by family: graph files, tensor files, data files, flags,
//! closed pipes, memory, file writes and signals, the NaN guard.

use std::time::Duration;

use crate::fixtures::{Fixtures, s};
use crate::runner::{Case, Expect, FileCheck, Prog, fails, killed, over_file_limit};

const SONAR: Prog = Prog::Example("sonar_mlp");
const VGG: Prog = Prog::Example("vgg16_dogscats");
const QUICK: Prog = Prog::Example("quickstart");

/// Every case.
pub fn all(fx: &Fixtures) -> Vec<Case> {
    let mut cases = Vec::new();
    graph_files(fx, &mut cases);
    tensor_files(fx, &mut cases);
    csv_files(fx, &mut cases);
    image_folders(fx, &mut cases);
    flags(fx, &mut cases);
    closed_pipes(fx, &mut cases);
    memory(fx, &mut cases);
    writes(fx, &mut cases);
    nan_guard(fx, &mut cases);
    threads(&mut cases);
    cases
}

/// Whether this process is root (`ulimit -u` binds only other users, so
/// the thread cases run as `nobody`, which only root can become).
fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Too few threads: one (no worker can start) or two (one worker).
fn threads(cases: &mut Vec<Case>) {
    if !is_root() {
        eprintln!("hostile: the thread-limit cases need root to run as nobody: not run");
        return;
    }
    // Files nobody can read: the repository's own data, if the checkout
    // and the binaries are open to other users.
    let root = env!("CARGO_MANIFEST_DIR");
    let sonar = format!("{root}/data/sonar/sonar.all-data");
    let images = format!("{root}/data/dogscats");
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_rhea"));
    let open_to_nobody = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", r#"test -x "$0" && test -r "$1""#])
        .arg(&exe)
        .arg(&sonar)
        .status()
        .is_ok_and(|s| s.success());
    if !open_to_nobody {
        eprintln!("hostile: the thread-limit cases need the checkout readable by nobody: not run");
        return;
    }
    for n in [1, 2] {
        let runs: Vec<(&str, Prog, Vec<&str>)> = vec![
            ("sonar_mlp", SONAR, vec!["--data", &sonar, "--epochs", "2", "--quiet"]),
            ("rhea bench", Prog::Rhea, vec!["bench", "--model", "sonar-mlp", "--backend", "cpu", "--rounds", "1"]),
            ("rhea dump", Prog::Rhea, vec!["dump", "sonar-mlp", "--stage", "optimized"]),
            (
                "vgg16_dogscats",
                VGG,
                vec!["--data", &images, "--width-div", "64", "--image-size", "32", "--epochs", "1", "--quiet"],
            ),
        ];
        for (name, prog, args) in runs {
            cases
                .push(Case::new(format!("threads ulimit -u {n}: {name}"), prog, &args, Expect::Success).max_threads(n));
        }
    }
}

/// `rhea dump`, `rhea run` (cpu) and `rhea run --backend interp` on one
/// broken graph file: each a clean error holding `words`.
fn on_graph(fx: &Fixtures, cases: &mut Vec<Case>, name: &str, text: &[u8], words: &[&str]) {
    let path = fx.file(&format!("g-{name}.json"), text);
    let inputs = s(&fx.inputs);
    let mut w = vec!["cannot load graph"];
    w.extend(words);
    cases.push(Case::new(format!("graph {name}: dump"), Prog::Rhea, &["dump", &path], fails(1, &w)));
    cases.push(Case::new(format!("graph {name}: run"), Prog::Rhea, &["run", &path, "--inputs", &inputs], fails(1, &w)));
    cases.push(Case::new(
        format!("graph {name}: run interp"),
        Prog::Rhea,
        &["run", &path, "--inputs", &inputs, "--backend", "interp"],
        fails(1, &w),
    ));
}

fn graph_files(fx: &Fixtures, cases: &mut Vec<Case>) {
    let good = fx.graph_text.as_str();
    // Cut anywhere: 40 places through the file.
    for i in 1..=40 {
        let at = good.len() * i / 41;
        on_graph(fx, cases, &format!("cut at byte {at}"), &good.as_bytes()[..at], &["graph file"]);
    }
    let edit = |from: &str, to: &str| {
        assert!(good.contains(from), "the fixture graph has {from:?}");
        good.replacen(from, to, 1).into_bytes()
    };
    let named: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("empty", vec![], vec!["empty"]),
        ("blank", b"  \n\t ".to_vec(), vec!["empty"]),
        ("array", b"[1, 2, 3]".to_vec(), vec!["JSON object", "starts with '['"]),
        ("number", b"42".to_vec(), vec!["JSON object"]),
        ("string", b"\"rhea\"".to_vec(), vec!["JSON object"]),
        ("null", b"null".to_vec(), vec!["JSON object"]),
        ("binary", vec![0xff, 0xfe, 0x00, 0x01, 0x80], vec!["byte 0 is not UTF-8"]),
        ("nested", "{\"a\":".repeat(20_000).into_bytes(), vec!["graph file"]),
        ("format", edit("\"rhea-graph\"", "\"onnx\""), vec!["format is \"onnx\""]),
        ("version", edit("\"version\": 1", "\"version\": 7"), vec!["version 7 is not supported"]),
        ("version type", edit("\"version\": 1", "\"version\": \"1\""), vec!["graph file"]),
        ("unknown op", edit("\"op\":\"dot\"", "\"op\":\"fft\""), vec!["unknown variant `fft`"]),
        ("unknown field", edit("\"format\"", "\"colour\": 1, \"format\""), vec!["unknown field"]),
        ("no nodes", edit("\"nodes\"", "\"nodez\""), vec!["graph file"]),
        ("id gap", edit("{\"id\":1,", "{\"id\":5,"), vec!["has id 5"]),
        (
            "dangling input",
            edit("\"op\":\"dot\",\"inputs\":[0,1]", "\"op\":\"dot\",\"inputs\":[0,99]"),
            vec!["input 99"],
        ),
        ("bad type", edit("\"type\":\"f32[batch,4]\"", "\"type\":\"f33[batch,4]\""), vec!["f33"]),
        ("wrong type", edit("\"type\":\"f32[batch,4]\"", "\"type\":\"f32[batch,5]\""), vec!["graph file"]),
        ("bad dtype", edit("\"dtype\":\"f32\"", "\"dtype\":\"q8\""), vec!["graph file"]),
        (
            "short shared",
            edit("\"shape\":[3],\"data\":[", "\"shape\":[30],\"data\":["),
            vec!["shared variable \"b1\"", "do not fill"],
        ),
        ("shared not a number", edit("\"data\":[0.1", "\"data\":[\"oops\""), vec!["shared variable"]),
        (
            "shared huge shape",
            edit("\"shape\":[3],\"data\":[", "\"shape\":[4294967296,4294967296,4294967296],\"data\":["),
            vec!["overflows"],
        ),
        (
            "output to nowhere",
            edit("{\"name\":\"probs\",\"node\":", "{\"name\":\"probs\",\"node\":9"),
            vec!["graph file"],
        ),
        (
            "update a non-shared",
            edit("\"updates\": []", "\"updates\": [{\"shared\":\"x\",\"value\":2}]"),
            vec!["not a shared variable"],
        ),
    ];
    for (name, text, words) in named {
        on_graph(fx, cases, name, &text, &words);
    }
    // A node that reads itself: a one-node cycle.
    let dot = good.find("\"op\":\"dot\",\"inputs\":[").expect("the fixture has a dot");
    let id_start = good[..dot].rfind("{\"id\":").expect("a node record") + "{\"id\":".len();
    let id = &good[id_start..dot - 1];
    let inputs_at = dot + "\"op\":\"dot\",\"inputs\":[".len();
    let first_end = inputs_at + good[inputs_at..].find(',').unwrap();
    let looped = format!("{}{id}{}", &good[..inputs_at], &good[first_end..]);
    on_graph(fx, cases, "self input", looped.as_bytes(), &[&format!("input {id} is not defined before it")]);
    // Shapes: numpy's -1, symbolic dims nothing binds, sizes past usize.
    let minimal = |node: &str, ty: &str| {
        format!(
            r#"{{"format":"rhea-graph","version":1,"nodes":[{{"id":0,"op":"input","name":"x","type":"{ty}"}},{node}],"outputs":[{{"name":"y","node":1}}]}}"#
        )
        .into_bytes()
    };
    on_graph(
        fx,
        cases,
        "reshape -1",
        &minimal(r#"{"id":1,"op":"reshape","shape":[-1],"inputs":[0],"type":"f32[8]"}"#, "f32[2,4]"),
        &["got -1", "numpy's -1"],
    );
    on_graph(
        fx,
        cases,
        "unbound symbol",
        &minimal(r#"{"id":1,"op":"broadcast_to","shape":["n",4],"inputs":[0],"type":"f32[n,4]"}"#, "f32[4]"),
        &["symbolic dim n", "no input has"],
    );
    on_graph(
        fx,
        cases,
        "dim past usize",
        &minimal(r#"{"id":1,"op":"reshape","shape":[99999999999999999999],"inputs":[0],"type":"f32[8]"}"#, "f32[8]"),
        &["graph file"],
    );
    on_graph(
        fx,
        cases,
        "dim float",
        &minimal(r#"{"id":1,"op":"relu","inputs":[0],"type":"f32[8]"}"#, "f32[2.5]"),
        &["graph file"],
    );
    // Not a file: a folder, a missing path, a device.
    let dir = s(fx.dir.path());
    for (name, path) in [("a folder", dir.as_str()), ("missing", "/no/such/graph.json"), ("/dev/null", "/dev/null")] {
        cases.push(Case::new(format!("graph {name}: dump"), Prog::Rhea, &["dump", path], fails(1, &["graph"])));
    }
}

/// `rhea run` on a broken inputs file, on the CPU and on the interpreter.
fn on_inputs(fx: &Fixtures, cases: &mut Vec<Case>, name: &str, bytes: &[u8], words: &[&str]) {
    let path = fx.file(&format!("t-{name}.safetensors"), bytes);
    let graph = s(&fx.graph);
    for backend in ["cpu", "interp"] {
        cases.push(Case::new(
            format!("inputs {name}: {backend}"),
            Prog::Rhea,
            &["run", &graph, "--inputs", &path, "--backend", backend],
            fails(1, words),
        ));
    }
}

fn header_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

fn tensor_files(fx: &Fixtures, cases: &mut Vec<Case>) {
    let good = &fx.inputs_bytes;
    for i in 1..=20 {
        let at = good.len() * i / 21;
        on_inputs(fx, cases, &format!("cut at byte {at}"), &good[..at], &["safetensors"]);
    }
    let x = |dtype: &str, shape: &str, end: usize| {
        format!(r#"{{"x":{{"dtype":"{dtype}","shape":{shape},"data_offsets":[0,{end}]}}}}"#)
    };
    let named: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("empty", vec![], vec!["safetensors"]),
        ("huge header length", u64::MAX.to_le_bytes().to_vec(), vec!["safetensors"]),
        ("header past the end", header_file("{}", &[])[..6].to_vec(), vec!["safetensors"]),
        ("header not JSON", header_file("{not json", &[]), vec!["safetensors"]),
        ("header an array", header_file("[1,2]", &[]), vec!["safetensors"]),
        ("bf16", header_file(&x("BF16", "[2,4]", 16), &[0; 16]), vec!["BF16", "does not support"]),
        ("unknown dtype", header_file(&x("Q4", "[2,4]", 16), &[0; 16]), vec!["safetensors"]),
        ("data short", header_file(&x("F32", "[2,4]", 32), &[0; 16]), vec!["safetensors"]),
        ("offsets past data", header_file(&x("F32", "[2,4]", 999), &[0; 32]), vec!["safetensors"]),
        ("shape and bytes disagree", header_file(&x("F32", "[2,4]", 16), &[0; 16]), vec!["safetensors"]),
        ("trailing bytes", header_file(&x("F32", "[2,4]", 32), &[0; 40]), vec!["safetensors"]),
        ("wrong shape", header_file(&x("F32", "[4]", 16), &[0; 16]), vec!["input \"x\"", "expected f32[batch,4]"]),
        ("wrong dtype", header_file(&x("F64", "[2,4]", 64), &[0; 64]), vec!["input \"x\"", "got f64"]),
        (
            "unknown name",
            header_file(&x("F32", "[2,4]", 32).replace("\"x\"", "\"z\""), &[0; 32]),
            vec!["\"z\"", "neither"],
        ),
        (
            "shared wrong shape",
            header_file(r#"{"w1":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, &[0; 8]),
            vec!["shared variable \"w1\""],
        ),
        (
            "reversed offsets",
            header_file(&x("F32", "[2,4]", 32).replace("[0,32]", "[32,0]"), &[0; 32]),
            vec!["safetensors"],
        ),
    ];
    for (name, bytes, words) in named {
        on_inputs(fx, cases, name, &bytes, &words);
    }
    let graph = s(&fx.graph);
    cases.push(Case::new(
        "inputs missing file",
        Prog::Rhea,
        &["run", &graph, "--inputs", "/no/such.safetensors"],
        fails(1, &["/no/such.safetensors"]),
    ));
    cases.push(Case::new(
        "inputs not given",
        Prog::Rhea,
        &["run", &graph],
        fails(1, &["missing input \"x\"", "--inputs"]),
    ));
    cases.push(Case::new(
        "inputs a folder",
        Prog::Rhea,
        &["run", &graph, "--inputs", &s(fx.dir.path())],
        fails(1, &["Is a directory"]),
    ));
    // Resuming from a broken checkpoint.
    let broken = fx.file("ck-broken.safetensors", &good[..good.len() / 2]);
    let images = s(&fx.images);
    let small = ["--width-div", "64", "--image-size", "32", "--epochs", "1", "--quiet"];
    let mut args = vec!["--data", images.as_str(), "--resume", broken.as_str()];
    args.extend(small);
    cases.push(Case::new("vgg16 --resume broken", VGG, &args, fails(1, &["safetensors"])));
    let mut args = vec!["--data", images.as_str(), "--weights", broken.as_str()];
    args.extend(small);
    cases.push(Case::new("vgg16 --weights broken", VGG, &args, fails(1, &["safetensors"])));
}

fn csv_files(fx: &Fixtures, cases: &mut Vec<Case>) {
    let row = |label: &str| format!("{}{label}\n", "0.5,".repeat(60));
    let named: Vec<(&str, String, Vec<&str>)> = vec![
        ("empty", String::new(), vec!["csv"]),
        ("one class", row("R").repeat(10), vec!["two classes"]),
        ("ragged", format!("{}0.1,0.2,M\n", row("R")), vec!["fields"]),
        ("not a number", format!("{}{}", row("R"), row("M").replacen("0.5", "zero", 1)), vec!["zero"]),
        ("label only", "R\nM\n".into(), vec!["field"]),
        ("binary", "\u{0}\u{1}\u{2}".into(), vec!["NUL"]),
    ];
    for (name, text, words) in named {
        let path = fx.file(&format!("c-{name}.csv"), text.as_bytes());
        cases.push(Case::new(format!("csv {name}"), SONAR, &["--data", &path, "--epochs", "1"], fails(1, &words)));
    }
    for (name, path) in [("/dev/zero", "/dev/zero"), ("missing", "/no/such.csv")] {
        cases.push(
            Case::new(format!("csv {name}"), SONAR, &["--data", path, "--epochs", "1"], fails(1, &[path]))
                .ulimit("-v 1000000"),
        );
    }
    let dir = s(fx.dir.path());
    cases.push(Case::new("csv a folder", SONAR, &["--data", &dir, "--epochs", "1"], fails(1, &[dir.as_str()])));
}

fn image_folders(fx: &Fixtures, cases: &mut Vec<Case>) {
    let small = ["--width-div", "64", "--image-size", "32", "--epochs", "1", "--quiet"];
    let mut run = |name: &str, data: String, expect: Expect| {
        let mut args = vec!["--data".to_string(), data];
        args.extend(small.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cases.push(Case::new(format!("images {name}"), VGG, &refs, expect));
    };
    let corrupt_all = |root: &std::path::Path| {
        for part in ["train", "valid"] {
            for class in ["cats", "dogs"] {
                for e in std::fs::read_dir(root.join(part).join(class)).unwrap() {
                    std::fs::write(e.unwrap().path(), b"\xff\xd8\xff not a jpeg").unwrap();
                }
            }
        }
    };
    run("all unreadable", fx.images_with("img-bad", corrupt_all), fails(1, &["none of the", "could be read"]));
    run(
        "empty class folder",
        fx.images_with("img-empty", |r| {
            for e in std::fs::read_dir(r.join("train/dogs")).unwrap() {
                std::fs::remove_file(e.unwrap().path()).unwrap();
            }
        }),
        fails(1, &["dogs", "has no .jpg"]),
    );
    run(
        "one class",
        fx.images_with("img-one", |r| {
            std::fs::remove_dir_all(r.join("train/dogs")).unwrap();
            std::fs::remove_dir_all(r.join("valid/dogs")).unwrap();
        }),
        fails(1, &["two classes"]),
    );
    run(
        "no valid",
        fx.images_with("img-novalid", |r| std::fs::remove_dir_all(r.join("valid")).unwrap()),
        fails(1, &["valid"]),
    );
    run(
        "truncated images",
        fx.images_with("img-cut", |r| {
            for e in std::fs::read_dir(r.join("train/cats")).unwrap() {
                let p = e.unwrap().path();
                let bytes = std::fs::read(&p).unwrap();
                std::fs::write(&p, &bytes[..bytes.len() / 3]).unwrap();
            }
        }),
        Expect::Success,
    );
    run(
        "a file where a class folder is",
        fx.images_with("img-file", |r| std::fs::write(r.join("train/readme.txt"), b"hello").unwrap()),
        Expect::Success,
    );
    run("missing", s(&fx.path("img-nowhere")), fails(1, &["img-nowhere"]));
}

fn flags(fx: &Fixtures, cases: &mut Vec<Case>) {
    let graph = s(&fx.graph);
    let inputs = s(&fx.inputs);
    let g = graph.as_str();
    let i = inputs.as_str();
    let rhea_usage: Vec<(&str, Vec<&str>, &str)> = vec![
        ("run --backend bogus", vec!["run", g, "--inputs", i, "--backend", "bogus"], "bogus"),
        ("dump --stage bogus", vec!["dump", g, "--stage", "bogus"], "bogus"),
        ("dump --format bogus", vec!["dump", g, "--format", "bogus"], "bogus"),
        ("unknown subcommand", vec!["frobnicate"], "frobnicate"),
        ("check --tolerance -1", vec!["check", g, "--inputs", i, "--tolerance=-1"], "--tolerance"),
        ("check --tolerance NaN", vec!["check", g, "--inputs", i, "--tolerance", "NaN"], "--tolerance"),
        (
            "check --backends cpu,interp",
            vec!["check", g, "--inputs", i, "--backends", "cpu,interp"],
            "compares the interpreter",
        ),
        ("bench --batch 0", vec!["bench", "--model", "sonar-mlp", "--batch", "0"], "at least 1"),
        ("bench --rounds 0", vec!["bench", "--model", "sonar-mlp", "--rounds", "0"], "at least 1"),
        ("bench --model nope", vec!["bench", "--model", "nope"], "unknown model"),
        ("bench --backend bogus", vec!["bench", "--model", "sonar-mlp", "--backend", "bogus"], "unknown backend"),
        ("dump --trace raw", vec!["dump", g, "--trace"], "need --stage optimized"),
        ("dump --wrt raw", vec!["dump", g, "--wrt", "w1"], "--stage grad"),
        (
            "dump --after and --explain-fusion",
            vec!["dump", g, "--stage", "optimized", "--after", "fuse", "--explain-fusion"],
            "does not combine",
        ),
        (
            "dump --dim without =",
            vec!["dump", g, "--stage", "optimized", "--kernels", "--backend", "cuda", "--dim", "batch"],
            "NAME=N",
        ),
        (
            "dump --dim not a size",
            vec!["dump", g, "--stage", "optimized", "--kernels", "--backend", "cuda", "--dim", "batch=x"],
            "not a size",
        ),
        (
            "dump --sm 70",
            vec!["dump", g, "--stage", "optimized", "--kernels", "--backend", "cuda", "--sm", "70"],
            "sm_80",
        ),
        ("run --max-memory abc", vec!["run", g, "--inputs", i, "--max-memory", "abc"], "not a size"),
        ("run --max-memory 0", vec!["run", g, "--inputs", i, "--max-memory", "0"], "not a usable"),
        ("run --max-memory -5G", vec!["run", g, "--inputs", i, "--max-memory=-5G"], "not a size"),
    ];
    for (name, args, word) in rhea_usage {
        cases.push(Case::new(format!("flags rhea {name}"), Prog::Rhea, &args, fails(2, &[word])));
    }
    cases.push(Case::new(
        "flags rhea --grad-of unknown",
        Prog::Rhea,
        &["run", g, "--inputs", i, "--grad-of", "nope"],
        fails(1, &["nope"]),
    ));
    cases.push(Case::new(
        "flags rhea --wrt unknown",
        Prog::Rhea,
        &["run", g, "--inputs", i, "--wrt", "nope"],
        fails(1, &["nope"]),
    ));
    let sonar = s(&fx.sonar);
    let sonar_usage: Vec<(&str, Vec<&str>, &str)> = vec![
        ("--batch-size 0", vec!["--batch-size", "0"], "--batch-size"),
        ("--epochs 0", vec!["--epochs", "0"], "--epochs"),
        ("--cv 1", vec!["--cv", "1"], "--cv"),
        ("--cv 0", vec!["--cv", "0"], "--cv"),
        ("--backend bogus", vec!["--backend", "bogus"], "bogus"),
        ("--epochs -1", vec!["--epochs=-1"], "-1"),
        ("--seed x", vec!["--seed", "x"], "x"),
    ];
    for (name, mut args, word) in sonar_usage {
        args.extend(["--data", sonar.as_str()]);
        cases.push(Case::new(format!("flags sonar {name}"), SONAR, &args, fails(2, &[word])));
    }
    cases.push(Case::new(
        "flags sonar --cv 500",
        SONAR,
        &["--data", &sonar, "--cv", "500", "--epochs", "1"],
        fails(1, &["500"]),
    ));
    let images = s(&fx.images);
    let vgg_usage: Vec<(&str, Vec<&str>, &str)> = vec![
        ("--batch-size 0", vec!["--batch-size", "0"], "--batch-size"),
        ("--epochs 0", vec!["--epochs", "0"], "--epochs"),
        ("--lr NaN", vec!["--lr", "NaN"], "--lr"),
        ("--lr -1", vec!["--lr=-1"], "--lr"),
        ("--lr inf", vec!["--lr", "inf"], "--lr"),
        ("--lr 0", vec!["--lr", "0"], "--lr"),
        ("--width-div 0", vec!["--width-div", "0"], "--width-div"),
        ("--width-div 1000", vec!["--width-div", "1000"], "no channels"),
        ("--image-size 0", vec!["--image-size", "0"], "--image-size"),
        ("--image-size 33", vec!["--image-size", "33"], "multiple of 32"),
        ("--backend bogus", vec!["--backend", "bogus"], "bogus"),
    ];
    for (name, mut args, word) in vgg_usage {
        args.extend(["--data", images.as_str()]);
        cases.push(Case::new(format!("flags vgg16 {name}"), VGG, &args, fails(2, &[word])));
    }
    cases.push(Case::new(
        "flags quickstart --out /dev/null/x",
        QUICK,
        &["--out", "/dev/null/x"],
        fails(1, &["/dev/null/x"]),
    ));
}

fn closed_pipes(fx: &Fixtures, cases: &mut Vec<Case>) {
    let graph = s(&fx.graph);
    let inputs = s(&fx.inputs);
    let sonar = s(&fx.sonar);
    let images = s(&fx.images);
    let runs: Vec<(&str, Prog, Vec<&str>)> = vec![
        ("rhea run", Prog::Rhea, vec!["run", &graph, "--inputs", &inputs]),
        ("rhea run interp", Prog::Rhea, vec!["run", &graph, "--inputs", &inputs, "--backend", "interp"]),
        ("rhea check", Prog::Rhea, vec!["check", &graph, "--inputs", &inputs]),
        ("rhea check --fused", Prog::Rhea, vec!["check", &graph, "--inputs", &inputs, "--fused"]),
        ("rhea devices", Prog::Rhea, vec!["devices"]),
        ("rhea bench", Prog::Rhea, vec!["bench", "--model", "sonar-mlp", "--backend", "cpu", "--rounds", "1"]),
        ("rhea dump", Prog::Rhea, vec!["dump", &graph]),
        ("rhea dump optimized", Prog::Rhea, vec!["dump", &graph, "--stage", "optimized", "--kernels"]),
        ("rhea dump sonar-mlp", Prog::Rhea, vec!["dump", "sonar-mlp", "--stage", "grad"]),
        ("rhea --help", Prog::Rhea, vec!["--help"]),
        ("sonar_mlp", SONAR, vec!["--data", &sonar, "--epochs", "2"]),
        ("sonar_mlp --cv", SONAR, vec!["--data", &sonar, "--epochs", "1", "--cv", "2"]),
        ("vgg16_dogscats", VGG, vec!["--data", &images, "--width-div", "64", "--image-size", "32", "--epochs", "1"]),
    ];
    for (name, prog, args) in runs {
        cases.push(Case::new(format!("closed stdout {name}"), prog, &args, Expect::Success).closed_stdout());
    }
    // The files asked for are still written after the pipe closed.
    let quick = fx.path("quick-out");
    cases.push(
        Case::new("closed stdout quickstart writes its files", QUICK, &["--out", &s(&quick)], Expect::Success)
            .closed_stdout()
            .file(FileCheck::Written(quick.join("inputs.safetensors"))),
    );
    let json = fx.path("closed-bench.json");
    cases.push(
        Case::new(
            "closed stdout rhea bench writes --json",
            Prog::Rhea,
            &["bench", "--model", "sonar-mlp", "--backend", "cpu", "--rounds", "1", "--json", &s(&json)],
            Expect::Success,
        )
        .closed_stdout()
        .file(FileCheck::Written(json)),
    );
    let out = fx.path("closed-run.safetensors");
    cases.push(
        Case::new(
            "closed stdout rhea run writes -o",
            Prog::Rhea,
            &["run", &graph, "--inputs", &inputs, "-o", &s(&out)],
            Expect::Success,
        )
        .closed_stdout()
        .file(FileCheck::Written(out)),
    );
    let ck = fx.path("closed-ck.safetensors");
    let args = ["--data", &images, "--width-div", "64", "--image-size", "32", "--epochs", "1", "--checkpoint", &s(&ck)];
    cases.push(
        Case::new("closed stdout vgg16 writes --checkpoint", VGG, &args, Expect::Success)
            .closed_stdout()
            .file(FileCheck::Written(ck)),
    );
}

fn memory(fx: &Fixtures, cases: &mut Vec<Case>) {
    let huge = s(&fx.huge_graph);
    let scalar = s(&fx.scalar_inputs);
    for (backend, words) in [
        ("interp", ["out of memory", "f32[1000000,2000000,1]"]),
        ("cpu", ["out of memory", "f32[1000000,2000000,1]"]),
        ("cuda-emu", ["out of GPU memory", "8000000000000 bytes"]),
    ] {
        cases.push(Case::new(
            format!("memory 8 TB value: {backend}"),
            Prog::Rhea,
            &["run", &huge, "--inputs", &scalar, "--backend", backend],
            fails(1, &words),
        ));
    }
    let graph = s(&fx.graph);
    let inputs = s(&fx.inputs);
    for backend in ["interp", "cpu", "cuda-emu"] {
        cases.push(Case::new(
            format!("memory budget: {backend}"),
            Prog::Rhea,
            &["run", &graph, "--inputs", &inputs, "--backend", backend, "--max-memory", "8"],
            fails(1, &["memory budget of 8 bytes"]),
        ));
        cases.push(Case::new(
            format!("memory budget enough: {backend}"),
            Prog::Rhea,
            &["run", &graph, "--inputs", &inputs, "--backend", backend, "--max-memory", "1M"],
            Expect::Success,
        ));
    }
    // The whole VGG16 (138 M parameters, 553 MB) under address-space limits:
    // each run either fits or says it is out of memory, never aborts.
    let vgg_x = s(&fx.vgg_inputs);
    for limit in ["300000", "700000", "1000000", "1300000", "1700000"] {
        cases.push(
            Case::new(
                format!("memory rhea run vgg16 under ulimit -v {limit}"),
                Prog::Rhea,
                &["run", "vgg16", "--inputs", &vgg_x],
                Expect::SucceedsOr(vec!["out of memory".into()]),
            )
            .ulimit(&format!("-v {limit}")),
        );
    }
    cases.push(
        Case::new(
            "memory rhea run vgg16 under ulimit -v 300000 says so",
            Prog::Rhea,
            &["run", "vgg16", "--inputs", &vgg_x],
            fails(1, &["out of memory", "f32[25088, 4096]"]),
        )
        .ulimit("-v 300000"),
    );
    // Inspecting a built-in model costs what its graph costs, not its
    // 553 MB of weights; no GPU is said before any weight is made.
    for (name, args) in [
        ("dump vgg16", vec!["dump", "vgg16"]),
        (
            "dump vgg16 optimized",
            vec!["dump", "vgg16", "--stage", "optimized", "--trace", "--explain-fusion", "--kernels"],
        ),
        ("dump vgg16 json", vec!["dump", "vgg16", "--format", "json"]),
        ("dump vgg16 ptx", vec!["dump", "vgg16", "--stage", "optimized", "--kernels", "--backend", "cuda"]),
    ] {
        cases.push(
            Case::new(format!("memory {name} in 300 MB"), Prog::Rhea, &args, Expect::Success)
                .ulimit("-v 300000")
                .closed_stdout(),
        );
    }
    if !std::path::Path::new("/dev/nvidiactl").exists() {
        cases.push(
            Case::new(
                "no GPU: rhea run vgg16 --backend cuda in 300 MB",
                Prog::Rhea,
                &["run", "vgg16", "--inputs", &vgg_x, "--backend", "cuda"],
                fails(1, &["backend cuda", "no CUDA driver"]),
            )
            .ulimit("-v 300000"),
        );
        cases.push(
            Case::new(
                "no GPU: rhea bench vgg16 --backend cuda in 300 MB",
                Prog::Rhea,
                &["bench", "--model", "vgg16", "--backend", "cuda"],
                fails(1, &["backend cuda", "no CUDA driver"]),
            )
            .ulimit("-v 300000"),
        );
    }
    // A 100 MB inputs file: refused by size when it cannot be held, and
    // never copied on the way to the shape check.
    let big = s(&fx.big_inputs);
    cases.push(
        Case::new(
            "memory 100 MB inputs in 150 MB",
            Prog::Rhea,
            &["run", &graph, "--inputs", &big],
            fails(1, &["out of memory", "100.0 MB"]),
        )
        .ulimit("-v 150000"),
    );
    for limit in ["250000", "300000", "400000"] {
        cases.push(
            Case::new(
                format!("memory 100 MB inputs under ulimit -v {limit}"),
                Prog::Rhea,
                &["run", &graph, "--inputs", &big],
                fails(1, &[]),
            )
            .ulimit(&format!("-v {limit}")),
        );
    }
    cases.push(
        Case::new(
            "memory 100 MB inputs in 2 GB",
            Prog::Rhea,
            &["run", &graph, "--inputs", &big],
            fails(1, &["input \"x\"", "got f32[25000000]"]),
        )
        .ulimit("-v 2000000"),
    );
    // A file larger than any memory, as each loader's input.
    let tb = s(&fx.terabyte);
    cases.push(Case::new(
        "memory a 1 TB graph file",
        Prog::Rhea,
        &["dump", &tb],
        fails(1, &["out of memory", "1.1 TB"]),
    ));
    cases.push(Case::new(
        "memory a 1 TB inputs file",
        Prog::Rhea,
        &["run", &graph, "--inputs", &tb],
        fails(1, &["out of memory", "1.1 TB"]),
    ));
    cases.push(Case::new("memory a 1 TB CSV", SONAR, &["--data", &tb], fails(1, &["out of memory", "1.1 TB"])));
    // A long graph file: loaded in bounded memory, or refused by name.
    let long = s(&fx.long_graph);
    cases.push(
        Case::new("memory a 30 MB graph of 400,000 nodes", Prog::Rhea, &["dump", &long], Expect::Success)
            .closed_stdout(),
    );
    cases.push(
        Case::new(
            "memory a 30 MB graph in 150 MB",
            Prog::Rhea,
            &["dump", &long],
            fails(1, &["out of memory", "loading a graph file of"]),
        )
        .ulimit("-v 150000")
        .closed_stdout(),
    );
    // Around the edge: it fits, or it says so before the parser runs out.
    for limit in ["170000", "180000", "190000", "200000", "250000"] {
        cases.push(
            Case::new(
                format!("memory a 30 MB graph under ulimit -v {limit}"),
                Prog::Rhea,
                &["dump", &long],
                Expect::SucceedsOr(vec!["out of memory".into()]),
            )
            .ulimit(&format!("-v {limit}"))
            .closed_stdout(),
        );
    }
    let fat = s(&fx.fat_graph);
    cases.push(Case::new("memory a 40 MB graph file", Prog::Rhea, &["dump", &fat], Expect::Success).closed_stdout());
    cases.push(
        Case::new("memory a 40 MB graph file under ulimit -v 2000000", Prog::Rhea, &["dump", &fat], Expect::Success)
            .ulimit("-v 2000000")
            .closed_stdout(),
    );
}

fn writes(fx: &Fixtures, cases: &mut Vec<Case>) {
    let graph = s(&fx.graph);
    let inputs = s(&fx.inputs);
    let previous = b"the previous output, which must survive".to_vec();
    let keep = |name: &str| {
        let path = fx.path(name);
        std::fs::write(&path, &previous).unwrap();
        path
    };
    // Output files under a file-size limit (1 KB blocks): the old file stays.
    let wide = s(&fx.wide_graph);
    let scalar = s(&fx.scalar_inputs);
    for (name, args) in [
        ("rhea run -o", vec!["run", wide.as_str(), "--inputs", scalar.as_str(), "-o"]),
        ("rhea dump -o", vec!["dump", "sonar-mlp", "--stage", "optimized", "--format", "json", "-o"]),
    ] {
        let out = keep(&format!("limited-{}.out", name.replace(' ', "-")));
        let mut args = args.clone();
        let out_s = s(&out);
        args.push(&out_s);
        cases.push(
            Case::new(format!("write under ulimit -f: {name}"), Prog::Rhea, &args, over_file_limit())
                .ulimit("-f 4")
                .file(FileCheck::Unchanged(out.clone(), previous.clone())),
        );
    }
    // Killed mid-write: the target is the old file or a whole new one.
    for (i, ms) in [30u64, 80, 150, 300, 600].iter().enumerate() {
        let out = keep(&format!("killed-{i}.safetensors"));
        let before = std::fs::read(&out).unwrap();
        cases.push(
            Case::new(
                format!("SIGKILL after {ms} ms: rhea run -o"),
                Prog::Rhea,
                &["run", &wide, "--inputs", &scalar, "-o", &s(&out)],
                killed(),
            )
            .kill_after(Duration::from_millis(*ms))
            .file(FileCheck::OldOrComplete(out, before)),
        );
    }
    // Full disks and impossible places.
    let sonar = s(&fx.sonar);
    let images = s(&fx.images);
    let small = ["--width-div", "64", "--image-size", "32", "--epochs", "1", "--quiet"];
    let full: Vec<(&str, Prog, Vec<&str>)> = vec![
        ("rhea run -o", Prog::Rhea, vec!["run", &graph, "--inputs", &inputs, "-o"]),
        ("rhea dump -o", Prog::Rhea, vec!["dump", &graph, "-o"]),
        (
            "rhea bench --json",
            Prog::Rhea,
            vec!["bench", "--model", "sonar-mlp", "--backend", "cpu", "--rounds", "1", "--json"],
        ),
        (
            "rhea bench --plot",
            Prog::Rhea,
            vec!["bench", "--model", "sonar-mlp", "--backend", "cpu", "--rounds", "1", "--plot"],
        ),
        ("sonar --dump-graph", SONAR, vec!["--data", &sonar, "--epochs", "1", "--quiet", "--dump-graph"]),
        ("vgg16 --checkpoint", VGG, [vec!["--data", images.as_str()], small.to_vec(), vec!["--checkpoint"]].concat()),
        (
            "vgg16 --predictions",
            VGG,
            [vec!["--data", images.as_str(), "--predict", images.as_str()], small.to_vec(), vec!["--predictions"]]
                .concat(),
        ),
    ];
    for (name, prog, args) in &full {
        for (place, target, word) in [
            ("/dev/full", "/dev/full".to_string(), "No space left"),
            ("a missing folder", "/no/such/folder/out".to_string(), "/no/such/folder/out"),
            ("a folder", s(fx.dir.path()), "cannot write"),
        ] {
            let mut a = args.clone();
            a.push(&target);
            cases.push(Case::new(format!("write to {place}: {name}"), *prog, &a, fails(1, &[word])));
        }
    }
    // A checkpoint written over an old one under a file-size limit.
    let ck = keep("old-checkpoint.safetensors");
    let ck_s = s(&ck);
    let args = [vec!["--data", images.as_str()], small.to_vec(), vec!["--checkpoint", ck_s.as_str()]].concat();
    cases.push(
        Case::new("write under ulimit -f: vgg16 --checkpoint", VGG, &args, over_file_limit())
            .ulimit("-f 8")
            .file(FileCheck::Unchanged(ck, previous.clone())),
    );
    // A successful write replaces the file whole.
    let out = keep("replaced.safetensors");
    cases.push(
        Case::new(
            "write replaces: rhea run -o",
            Prog::Rhea,
            &["run", &graph, "--inputs", &inputs, "-o", &s(&out)],
            Expect::Success,
        )
        .file(FileCheck::OldOrComplete(out, b"never equal".to_vec())),
    );
}

fn nan_guard(fx: &Fixtures, cases: &mut Vec<Case>) {
    let graph = s(&fx.nan_graph);
    let inputs = s(&fx.nan_inputs);
    for backend in ["interp", "cpu", "cuda-emu"] {
        cases.push(
            Case::new(
                format!("NaN guard: {backend}"),
                Prog::Rhea,
                &["run", &graph, "--inputs", &inputs, "--backend", backend],
                fails(1, &["NaN guard: log", "NaN", "element 1", "min -1"]),
            )
            .env("RHEA_NAN_GUARD", "1"),
        );
        cases.push(Case::new(
            format!("NaN unguarded: {backend}"),
            Prog::Rhea,
            &["run", &graph, "--inputs", &inputs, "--backend", backend],
            Expect::Success,
        ));
    }
}
