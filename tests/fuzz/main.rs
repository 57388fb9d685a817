//! The fuzz targets (`targets.rs`) on the committed corpus (`fuzz/corpus/`)
//! and on deterministic mutations of it: bit flips, byte changes,
//! truncations, insertions, duplicated and spliced ranges. A panic fails
//! the test and saves the input under `target/fuzz-failures/` to replay.
//! `RHEA_FUZZ_ITERS=N` sets the mutations per target (default 3000); for
//! coverage-guided runs of hours, see `fuzz/README.md`.

mod targets;

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let inputs: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(inputs.len() >= 3, "{}: the corpus needs seeds", dir.display());
    inputs
}

/// xorshift64*: the mutations are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to the formats: digits, signs, quotes, brackets,
/// separators, and the edges of integer ranges.
const INTERESTING: &[&[u8]] = &[
    b"0",
    b"-1",
    b"1e309",
    b"NaN",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\n",
    b"\r\n",
    b"18446744073709551615",
    b"9223372036854775807",
    b"4294967296",
    b"null",
    b"\xff\xff\xff\xff",
    b"\x00",
];

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut x = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let n = x.len();
        match rng.below(7) {
            0 if n > 0 => {
                let i = rng.below(n);
                x[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                x[i] = rng.next() as u8;
            }
            2 => x.truncate(rng.below(n + 1)),
            3 => {
                let token = INTERESTING[rng.below(INTERESTING.len())];
                let at = rng.below(n + 1);
                x.splice(at..at, token.iter().copied());
            }
            4 if n > 0 => {
                let (a, b) = (rng.below(n), rng.below(n));
                let (lo, hi) = (a.min(b), a.max(b));
                let copy = x[lo..hi].to_vec();
                let at = rng.below(n + 1);
                x.splice(at..at, copy);
            }
            5 if !other.is_empty() => {
                let cut = rng.below(n + 1);
                let from = rng.below(other.len());
                x.truncate(cut);
                x.extend_from_slice(&other[from..]);
            }
            _ if n > 0 => {
                // Overwrite a run of digits with another number.
                let i = rng.below(n);
                let token = INTERESTING[rng.below(3)];
                let end = (i + token.len()).min(n);
                x.splice(i..end, token.iter().copied());
            }
            _ => x.push(rng.next() as u8),
        }
    }
    x
}

/// Runs `target` on the corpus and its mutations: (inputs, accepted).
/// A mutation that keeps JSON well-formed: one value deep inside replaced,
/// removed or duplicated, so the loader's checks past the parser are hit.
fn mutate_json(rng: &mut Rng, seed: &[u8]) -> Option<Vec<u8>> {
    use serde_json::{Value, json};
    fn replace(rng: &mut Rng, v: &mut Value) {
        const NUMBERS: &[f64] = &[0.0, -1.0, 1.0, 2.0, 3.0, 7.0, 0.5, 1e300, -1e-300, 9.3e18, 1.8e19, 4.6e18];
        const STRINGS: &[&str] = &[
            "f32[2]",
            "f64[batch,3]",
            "i64[]",
            "bool[0]",
            "f32[-1]",
            "i32[4611686018427387904,8]",
            "f32[batch]",
            "exp",
            "add",
            "dot",
            "conv2d",
            "reshape",
            "sum",
            "input",
            "shared",
            "",
            "x",
            "y",
            "nan",
        ];
        *v = match v {
            Value::Number(_) => json!(NUMBERS[rng.below(NUMBERS.len())]),
            Value::String(_) => json!(STRINGS[rng.below(STRINGS.len())]),
            Value::Bool(b) => json!(!*b),
            Value::Null => json!(0),
            _ => json!(null),
        };
    }
    fn walk(rng: &mut Rng, v: &mut Value) {
        match v {
            Value::Array(a) if !a.is_empty() && rng.below(5) != 0 => {
                let i = rng.below(a.len());
                match rng.below(10) {
                    0 => {
                        a.remove(i);
                    }
                    1 => {
                        let c = a[i].clone();
                        a.insert(rng.below(a.len() + 1), c);
                    }
                    _ => walk(rng, &mut a[i]),
                }
            }
            Value::Object(o) if !o.is_empty() && rng.below(5) != 0 => {
                let key = o.keys().nth(rng.below(o.len())).cloned().expect("in range");
                if rng.below(12) == 0 {
                    o.remove(&key);
                } else if let Some(child) = o.get_mut(&key) {
                    walk(rng, child);
                }
            }
            leaf => replace(rng, leaf),
        }
    }
    let mut v: Value = serde_json::from_slice(seed).ok()?;
    for _ in 0..1 + rng.below(3) {
        walk(rng, &mut v);
    }
    serde_json::to_vec(&v).ok()
}

/// Runs `target` on the corpus and its mutations: (inputs, accepted).
fn run(name: &str, target: fn(&[u8]) -> bool) -> (usize, usize) {
    let iters: usize = std::env::var("RHEA_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    let seeds = corpus(name);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    // Structured mutations start from seeds the loader accepts, so that they
    // reach the checks past the parser.
    let valid: Vec<&Vec<u8>> =
        seeds.iter().filter(|s| std::panic::catch_unwind(|| target(s)).unwrap_or(false)).collect();
    let inputs = seeds.iter().cloned().chain((0..iters).map(|_| {
        let a = &seeds[rng.below(seeds.len())];
        let b = &seeds[rng.below(seeds.len())];
        let structured = match name == "graph_json" && !valid.is_empty() && rng.below(4) != 0 {
            true => {
                let base = valid[rng.below(valid.len())];
                mutate_json(&mut rng, base)
            }
            false => None,
        };
        structured.unwrap_or_else(|| mutate(&mut rng, a, b))
    }));
    let (mut count, mut accepted) = (0, 0);
    for input in inputs {
        count += 1;
        let outcome = std::panic::catch_unwind(|| target(&input));
        accepted += matches!(outcome, Ok(true)) as usize;
        if outcome.is_err() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join(format!("crash-{count}"));
            std::fs::write(&file, &input).unwrap();
            panic!("fuzz target {name} panicked on input {count}; saved to {}", file.display());
        }
    }
    (count, accepted)
}

#[test]
fn graph_json_loader_survives_its_corpus_and_mutations() {
    let (n, ok) = run("graph_json", targets::graph_json);
    println!("graph_json: {n} inputs, {ok} accepted");
    assert!(ok >= 4, "the seeds themselves must load: {ok} accepted");
}

#[test]
fn safetensors_loader_survives_its_corpus_and_mutations() {
    let (n, ok) = run("safetensors", targets::safetensors);
    println!("safetensors: {n} inputs, {ok} accepted");
    assert!(ok >= 4, "the seeds themselves must load: {ok} accepted");
}

#[test]
fn csv_loader_survives_its_corpus_and_mutations() {
    let (n, ok) = run("csv", targets::csv);
    println!("csv: {n} inputs, {ok} accepted");
    assert!(ok >= 3, "the seeds themselves must load: {ok} accepted");
}

#[test]
fn image_decoder_survives_its_corpus_and_mutations() {
    let (n, ok) = run("image", targets::image);
    println!("image: {n} inputs, {ok} accepted");
    assert!(ok >= 4, "the seeds themselves must load: {ok} accepted");
}
