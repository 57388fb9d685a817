//! Faults: closed pipes, memory and file-size limits, full disks,
//! signals, thread limits, the NaN guard.

use std::time::Duration;

use super::{QUICK, SONAR, VGG};
use crate::fixtures::{Fixtures, s};
use crate::runner::{Case, Expect, FileCheck, Prog, fails, killed, over_file_limit};

pub fn closed_pipes(fx: &Fixtures, cases: &mut Vec<Case>) {
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

pub fn memory(fx: &Fixtures, cases: &mut Vec<Case>) {
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
    let limits: [(&str, &[&str]); 5] = [
        ("150000", &["out of memory", "100.0 MB"]),
        ("250000", &[]),
        ("300000", &[]),
        ("400000", &[]),
        ("2000000", &["input \"x\"", "got f32[25000000]"]),
    ];
    for (limit, words) in limits {
        cases.push(
            Case::new(
                format!("memory 100 MB inputs under ulimit -v {limit}"),
                Prog::Rhea,
                &["run", &graph, "--inputs", &big],
                fails(1, words),
            )
            .ulimit(&format!("-v {limit}")),
        );
    }
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
    // Streams of unknown size grow fallibly.
    cases.push(
        Case::new(
            "memory --inputs /dev/zero in 300 MB",
            Prog::Rhea,
            &["run", &graph, "--inputs", "/dev/zero"],
            fails(1, &["out of memory", "/dev/zero"]),
        )
        .ulimit("-v 300000"),
    );
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

pub fn writes(fx: &Fixtures, cases: &mut Vec<Case>) {
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
    // Standard output as a file name: written in place, into the pipe.
    cases.push(Case::new(
        "write to /dev/stdout: rhea run -o",
        Prog::Rhea,
        &["run", &graph, "--inputs", &inputs, "-o", "/dev/stdout"],
        Expect::Success,
    ));
    cases.push(Case::new(
        "write to /dev/stdout: rhea dump -o",
        Prog::Rhea,
        &["dump", &graph, "-o", "/dev/stdout"],
        Expect::Success,
    ));
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

pub fn nan_guard(fx: &Fixtures, cases: &mut Vec<Case>) {
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

/// Whether this process is root (`ulimit -u` binds only other users, so
/// the thread cases run as `nobody`, which only root can become).
fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Too few threads: one (no worker can start) or two (one worker).
pub fn threads(cases: &mut Vec<Case>) {
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
