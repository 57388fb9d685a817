//! Flags that cannot make a run, for the CLI and the examples.

use super::{QUICK, SONAR, VGG};
use crate::fixtures::{Fixtures, s};
use crate::runner::{Case, Prog, fails};

pub fn flags(fx: &Fixtures, cases: &mut Vec<Case>) {
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
