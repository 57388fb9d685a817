//! Kernel filetests, in the manner of Cranelift's: each `tests/kernels/*.kir`
//! file holds a kernel in its text form (read by `Kernel::parse`), the sizes
//! of its symbolic dims (`; sizes batch=3`), and the expected output of three
//! sections: `; eval`, what the kernel evaluator gives on inputs made from
//! each element's index; `; clif`, the Cranelift IR the CPU backend
//! compiles; `; ptx`, the PTX module the CUDA backend writes for `sm_80`
//! (or the lowering's refusal). The CPU backend's results must also equal
//! the evaluator's (within a tolerance where rounding may differ).
//! `RHEA_BLESS=1 cargo test --test kernels` rewrites the expected sections;
//! review the diff. See `tests/kernels/README.md`.

mod values;

use std::path::{Path, PathBuf};

use rhea::Symbol;
use rhea::kernel::{Bindings, Kernel, eval_kernel, resolve};

/// The section headers, in the order they are written.
const SECTIONS: [&str; 3] = ["; eval", "; clif", "; ptx"];

/// The GPU architecture the PTX is written for (as in rhea-cuda's golden
/// tests).
const TARGET: rhea_cuda::Target = rhea_cuda::Target { sm: 80 };

/// A `.kir` file split at its first section header: the kernel text with its
/// comments, and the expected sections (empty if there are none yet).
struct File {
    head: String,
    expected: String,
}

fn split(text: &str) -> File {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if SECTIONS.contains(&line.trim_end()) {
            break;
        }
        offset += line.len();
    }
    File { head: text[..offset].to_string(), expected: text[offset..].to_string() }
}

/// The sizes a `; sizes batch=3 n=2` line binds.
fn sizes(head: &str) -> Result<Bindings, String> {
    let mut bindings = Bindings::new();
    for (n, line) in head.lines().enumerate() {
        let Some(rest) = line.trim().strip_prefix("; sizes") else { continue };
        for pair in rest.split_whitespace() {
            let bad = || format!("line {}: expected sizes like `; sizes batch=3 n=2`, found `{pair}`", n + 1);
            let (name, size) = pair.split_once('=').ok_or_else(bad)?;
            let size: usize = size.parse().map_err(|_| bad())?;
            bindings.insert(Symbol::new(name).map_err(|e| format!("line {}: {e}", n + 1))?, size);
        }
    }
    Ok(bindings)
}

/// A section's text, ending in a newline.
fn section(header: &str, body: &str) -> String {
    let mut s = format!("{header}\n{body}");
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Runs one file: its expected sections as they should be, or an error
/// that no blessing can fix (the kernel does not parse, or the CPU backend
/// disagrees with the evaluator).
fn run(path: &Path, head: &str) -> Result<String, String> {
    let kernel = Kernel::parse(head)?;
    let reprinted =
        Kernel::parse(&kernel.to_string()).map_err(|e| format!("the printed kernel does not parse: {e}"))?;
    if reprinted != kernel {
        return Err(format!("the printed kernel parses as another kernel:\n{kernel}"));
    }
    let bindings = sizes(head)?;
    let dims = resolve(&kernel.domain, &bindings)?;
    let shapes = kernel.inputs.iter().map(|i| resolve(&i.shape, &bindings)).collect::<Result<Vec<_>, _>>()?;
    let inputs: Vec<rhea::Value> =
        kernel.inputs.iter().zip(&shapes).enumerate().map(|(k, (i, s))| values::input(k, i.dtype, s)).collect();
    let refs: Vec<&rhea::Value> = inputs.iter().collect();

    let want = eval_kernel(&kernel, &refs, &bindings);
    let eval = match &want {
        Ok(outputs) => values::show(outputs),
        Err(e) => format!("error: {e}\n"),
    };

    let cpu = rhea_cpu::CpuKernels::compile_with_listings(std::slice::from_ref(&kernel));
    let clif = match &cpu {
        Ok(cpu) => cpu.clif(0).to_string(),
        Err(e) => format!("error: {e}\n"),
    };
    if let Ok(cpu) = &cpu {
        match (&want, cpu.run(0, &refs, &bindings)) {
            (Ok(want), Ok(got)) => values::compare(&kernel, want, &got).map_err(|e| format!("CPU backend: {e}"))?,
            (Err(_), Err(_)) => {}
            (Ok(_), Err(e)) => return Err(format!("the CPU backend fails where the evaluator does not: {e}")),
            (Err(e), Ok(_)) => return Err(format!("the CPU backend runs where the evaluator fails: {e}")),
        }
    }

    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("kernel");
    let name: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let ptx = match rhea_cuda::lower_kernel(&kernel, &name, &dims, &shapes) {
        Ok(l) => format!("// {}, grid {} x block {}\n{}", l.shape, l.grid, l.block, rhea_cuda::module(TARGET, &[&l])),
        Err(e) => format!("error: {e}\n"),
    };

    Ok([section(SECTIONS[0], &eval), section(SECTIONS[1], &clif), section(SECTIONS[2], &ptx)].join("\n"))
}

/// A line diff (longest common subsequence) of two small texts, naming
/// the lines of the file: `expected` starts at line `first`.
fn diff(expected: &str, actual: &str, first: usize) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    const MOST: usize = 40;
    let (mut i, mut j, mut out, mut shown) = (0, 0, String::new(), 0);
    while (i < a.len() || j < b.len()) && shown < MOST {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out += &format!("  line {:>4} - {}\n", first + i, a[i]);
            (i, shown) = (i + 1, shown + 1);
        } else {
            out += &format!("  line {:>4} + {}\n", first + i, b[j]);
            (j, shown) = (j + 1, shown + 1);
        }
    }
    if shown == MOST {
        out += "  ...\n";
    }
    out
}

/// Section `header` of `text` (its lines up to the next header) and the
/// index of its first line; empty if it has none.
fn part<'a>(text: &'a str, header: &str) -> (Vec<&'a str>, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines.iter().position(|l| *l == header) else { return (Vec::new(), 0) };
    let end = lines[start + 1..].iter().position(|l| SECTIONS.contains(l)).map_or(lines.len(), |e| start + 1 + e);
    (lines[start..end].to_vec(), start)
}

/// Checks (or with `RHEA_BLESS=1` rewrites) one file; the failure, if any.
fn check(path: &Path, bless: bool) -> Option<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return Some(format!("{}: {e}", path.display())),
    };
    let file = split(&text);
    let actual = match run(path, &file.head) {
        Ok(a) => a,
        Err(e) => return Some(format!("{}: {e}", path.display())),
    };
    if bless {
        let blessed = format!("{}\n\n{actual}", file.head.trim_end());
        if blessed != text {
            std::fs::write(path, blessed).expect("writing a .kir file");
        }
        return None;
    }
    if file.expected == actual {
        return None;
    }
    if file.expected.is_empty() {
        return Some(format!("{}: no expected sections; run with RHEA_BLESS=1 to write them", path.display()));
    }
    // Line numbers in the file: the expected sections follow the head.
    let first = file.head.lines().count() + 1;
    let mut report = String::new();
    for header in SECTIONS {
        let (want, at) = part(&file.expected, header);
        let (got, _) = part(&actual, header);
        if want != got {
            let (want, got) = (want.join("\n"), got.join("\n"));
            report += &format!("section `{header}` (- expected, + actual):\n{}", diff(&want, &got, first + at));
        }
    }
    if report.is_empty() {
        report = "the sections differ in blank lines or in their order\n".into();
    }
    Some(format!(
        "{}: the output differs from the file; rerun with RHEA_BLESS=1 if the change is intended\n{report}",
        path.display()
    ))
}

fn kir_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kernels");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "kir"))
        .collect();
    files.sort();
    files
}

#[test]
fn kernel_filetests() {
    let bless = std::env::var("RHEA_BLESS").is_ok_and(|v| v == "1");
    let files = kir_files();
    assert!(!files.is_empty(), "no .kir files in tests/kernels");
    let failures: Vec<String> = files.iter().filter_map(|p| check(p, bless)).collect();
    assert!(
        failures.is_empty(),
        "{} of {} kernel filetests failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn sizes_lines_bind_symbols_and_reject_bad_pairs() {
    let b = sizes("; sizes batch=3 n=2\nkernel [batch]\n").unwrap();
    assert_eq!(b[&Symbol::new("batch").unwrap()], 3);
    assert_eq!(b[&Symbol::new("n").unwrap()], 2);
    assert!(sizes("; sizes batch\n").unwrap_err().contains("line 1"));
    let file = split("kernel [2]\n; eval\nout0: f32[2] = 1 2\n");
    assert_eq!((file.head.as_str(), file.expected.as_str()), ("kernel [2]\n", "; eval\nout0: f32[2] = 1 2\n"));
}
