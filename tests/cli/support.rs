//! Helpers: running the `rhea` binary, golden files, and the small graphs
//! the tests share.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use ndarray::array;
use rhea::{Builder, DType, Graph, SliceSpec, Value, concat, where_};

/// What one run of the `rhea` binary did.
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    args: String,
}

impl Outcome {
    /// Asserts the run succeeded and returns its standard output.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(!self.stderr.contains("panicked"), "`rhea {}` panicked:\n{}", self.args, self.stderr);
        assert_eq!(self.code, Some(0), "`rhea {}` failed:\n{}", self.args, self.stderr);
        &self.stdout
    }

    /// Asserts the run failed cleanly (exit code != 0, an `error: ` line,
    /// no panic) and returns its standard error.
    #[track_caller]
    pub fn fails(&self) -> &str {
        assert!(!self.stderr.contains("panicked"), "`rhea {}` panicked:\n{}", self.args, self.stderr);
        assert!(
            self.code.is_some_and(|c| c != 0),
            "`rhea {}` should have failed but exited with {:?}\nstdout:\n{}",
            self.args,
            self.code,
            self.stdout
        );
        &self.stderr
    }

    /// Asserts a clean failure whose message contains every one of `parts`.
    #[track_caller]
    pub fn fails_with(&self, parts: &[&str]) {
        let err = self.fails();
        for p in parts {
            assert!(err.contains(p), "`rhea {}`: expected {p:?} in the error, got:\n{err}", self.args);
        }
    }
}

/// Runs the `rhea` binary built by cargo for this test.
pub fn rhea<S: AsRef<OsStr>>(args: &[S]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_rhea")).args(args).output().expect("the rhea binary runs");
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        args: args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect::<Vec<_>>().join(" "),
    }
}

/// A fresh temporary directory, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// `dir/name` as a string, the form command lines take.
pub fn path_in(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().expect("temporary paths are UTF-8").to_string()
}

/// Writes `graph` as a JSON graph file `name` under `dir`; returns its path.
pub fn write_graph(dir: &Path, name: &str, graph: &Graph) -> String {
    write_text(dir, name, &rhea::to_json(graph))
}

/// Writes `text` to file `name` under `dir`; returns its path.
pub fn write_text(dir: &Path, name: &str, text: &str) -> String {
    let path = path_in(dir, name);
    std::fs::write(&path, text).expect("writing a test file");
    path
}

/// Writes named tensors to a safetensors file `name` under `dir`; returns
/// its path.
pub fn write_tensors(dir: &Path, name: &str, tensors: &[(&str, Value)]) -> String {
    let path = path_in(dir, name);
    let refs: Vec<(&str, &Value)> = tensors.iter().map(|(n, v)| (*n, v)).collect();
    rhea::io::save_safetensors(&path, &refs).expect("writing a safetensors file");
    path
}

/// Compares `actual` with `tests/golden/{name}`, or rewrites the file when
/// `RHEA_BLESS=1`.
#[track_caller]
pub fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var("RHEA_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, actual).expect("writing a golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read golden file {}: {e}\n(run with RHEA_BLESS=1 to create it)", path.display())
    });
    if expected != actual {
        panic!(
            "{} differs from the output (- golden, + actual); rerun with RHEA_BLESS=1 to accept the new output:\n{}",
            path.display(),
            diff(&expected, actual)
        );
    }
}

/// A line diff (longest common subsequence), enough for small golden files.
pub fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out += &format!("  {}\n", a[i]);
            (i, j) = (i + 1, j + 1);
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out += &format!("+ {}\n", b[j]);
            j += 1;
        } else {
            out += &format!("- {}\n", a[i]);
            i += 1;
        }
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out += "(the two differ in their final newline)\n";
    }
    out
}

/// A two-layer classifier: `probs = softmax(relu(x . w1 + b1) . w2 + b2)`.
pub fn mlp() -> Graph {
    let g = Builder::new();
    let batch = g.dim("batch").unwrap();
    let x = g.input("x", DType::F32, [batch, 4.into()]).unwrap();
    let w1 =
        g.shared("w1", array![[0.5f32, -0.25, 1.0], [0.0, 0.75, -0.5], [1.0, 0.5, 0.25], [-1.0, 0.25, 0.0]]).unwrap();
    let b1 = g.shared("b1", array![0.1f32, 0.0, -0.1]).unwrap();
    let w2 = g.shared("w2", array![[1.0f32, -1.0], [0.5, 0.5], [-0.5, 1.5]]).unwrap();
    let b2 = g.shared("b2", array![0.0f32, 0.25]).unwrap();
    let hidden = x.dot(&w1).unwrap().add(&b1).unwrap().relu().unwrap().named("hidden");
    let probs = hidden.dot(&w2).unwrap().add(&b2).unwrap().softmax(-1).unwrap().named("probs");
    g.output("probs", &probs).unwrap();
    g.to_graph()
}

/// Symbolic dims, a constant holding NaN and infinities, labels, an update.
pub fn symbolic() -> Graph {
    let g = Builder::new();
    let (batch, seq) = (g.dim("batch").unwrap(), g.dim("seq").unwrap());
    let x = g.input("x", DType::F32, [batch, seq, 3.into()]).unwrap();
    let limits = g.constant(array![f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
    let pooled = x.sum(&[1], false).unwrap().named("pooled");
    let clipped = pooled.maximum(&limits).unwrap();
    let bad = clipped.isnan().unwrap().named("bad rows");
    let steps = g.shared("steps", Value::from(0i64)).unwrap();
    g.update(&steps, &steps.add(1i64).unwrap()).unwrap();
    g.output("clipped", &clipped).unwrap();
    g.output("bad", &bad).unwrap();
    g.to_graph()
}

/// Comparisons, `where`, integer and bool outputs, slicing and concat.
pub fn branches() -> Graph {
    let g = Builder::new();
    let x = g.input("x", DType::F64, [2, 3]).unwrap();
    let positive = x.greater(0.0).unwrap();
    let relu = where_(&positive, &x, 0.0).unwrap();
    let first = x.slice(&[SliceSpec::FULL, SliceSpec::range(0, 1)]).unwrap();
    let joined = concat(&[&relu, &first], 1).unwrap().named("joined");
    g.output("joined", &joined).unwrap();
    g.output("best", &x.argmax(1, false).unwrap()).unwrap();
    g.output("positive", &positive).unwrap();
    g.output("count", &positive.cast(DType::I32).unwrap().sum_all().unwrap()).unwrap();
    g.to_graph()
}

/// The shared graphs by name, for tests that go over all of them.
pub fn all_graphs() -> Vec<(&'static str, Graph)> {
    vec![("mlp", mlp()), ("symbolic", symbolic()), ("branches", branches())]
}

/// An example binary cargo built next to this test's binary.
pub fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("tests run from target/<profile>/deps");
    let path = dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} is missing: `cargo test` builds the examples before the tests", path.display());
    path
}
