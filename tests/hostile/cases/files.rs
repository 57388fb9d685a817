//! Broken files: graph JSON, safetensors, CSV, image folders.

use super::{SONAR, VGG};
use crate::fixtures::{Fixtures, s};
use crate::runner::{Case, Expect, Prog, fails};

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

pub fn graph_files(fx: &Fixtures, cases: &mut Vec<Case>) {
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
    loops(fx, cases);
    // Not a file: a folder, a missing path, a device.
    let dir = s(fx.dir.path());
    for (name, path) in [("a folder", dir.as_str()), ("missing", "/no/such/graph.json"), ("/dev/null", "/dev/null")] {
        cases.push(Case::new(format!("graph {name}: dump"), Prog::Rhea, &["dump", path], fails(1, &["graph"])));
    }
}

/// Broken loops (version 2 files): a body that is not a graph, that reads
/// what the loop does not give, nested past the parser's depth, and more
/// steps than memory can stack.
fn loops(fx: &Fixtures, cases: &mut Vec<Case>) {
    let good = include_str!("../../../fuzz/corpus/graph_json/scan.json");
    let edit = |from: &str, to: &str| {
        assert!(good.contains(from), "the loop fixture has {from:?}");
        good.replacen(from, to, 1).into_bytes()
    };
    let body_at = good.find("\"body\":").expect("a scan record") + "\"body\":".len();
    let body_end = good.find(",\"n_steps\"").expect("the body ends before n_steps");
    let with_body = |body: &str| format!("{}{body}{}", &good[..body_at], &good[body_end..]).into_bytes();
    on_graph(fx, cases, "loop body not a graph", &with_body("[1,2]"), &["graph file", "body"]);
    on_graph(fx, cases, "loop body nested deep", &with_body(&"[".repeat(20_000)), &["graph file"]);
    on_graph(
        fx,
        cases,
        "loop body reads what no one gives",
        &edit("\"name\":\"seq0\"", "\"name\":\"seq7\""),
        &["graph file", "seq"],
    );
    on_graph(
        fx,
        cases,
        "loop past memory",
        &edit("\"n_steps\":\"t\"", "\"n_steps\":4611686018427387904"),
        &["graph file"],
    );
    on_graph(fx, cases, "loop version 9", &edit("\"version\": 2", "\"version\": 9"), &["version 9 is not supported"]);
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

pub fn tensor_files(fx: &Fixtures, cases: &mut Vec<Case>) {
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

pub fn csv_files(fx: &Fixtures, cases: &mut Vec<Case>) {
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

pub fn image_folders(fx: &Fixtures, cases: &mut Vec<Case>) {
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
