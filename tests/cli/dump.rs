//! `rhea dump`: golden text and DOT dumps, JSON that loads back byte for
//! byte, and the help texts.

use crate::support::{all_graphs, golden, mlp, path_in, rhea, symbolic, tempdir, write_graph, write_text};

#[test]
fn text_and_dot_dumps_match_the_golden_files() {
    let dir = tempdir();
    for (name, graph) in all_graphs() {
        let g = &write_graph(dir.path(), &format!("{name}.json"), &graph);
        let text = rhea(&["dump", g, "--format", "text"]).ok().to_string();
        golden(&format!("{name}.txt"), &text);
        assert_eq!(text, rhea::to_text(&graph, rhea::TextOptions::default()), "{name}: the CLI and the library agree");
        let dot = rhea(&["dump", g, "--format", "dot"]).ok().to_string();
        golden(&format!("{name}.dot"), &dot);
    }
}

#[test]
fn text_is_the_default_format() {
    let dir = tempdir();
    let g = &write_graph(dir.path(), "g.json", &mlp());
    let out = rhea(&["dump", g]);
    assert_eq!(out.ok(), rhea::to_text(&mlp(), rhea::TextOptions::default()));
    let staged = rhea(&["dump", g, "--stage", "raw"]);
    assert_eq!(staged.ok(), out.stdout);
}

#[test]
fn json_dump_load_dump_is_byte_identical() {
    let dir = tempdir();
    for (name, graph) in all_graphs() {
        let written = rhea::to_json(&graph);
        let g = &write_graph(dir.path(), &format!("{name}.json"), &graph);
        let dumped = rhea(&["dump", g, "--format", "json"]).ok().to_string();
        assert_eq!(dumped, written, "{name}: rhea dump --format json changed the file");
        // Load what the tool wrote and write it again, this time to a file.
        let first = write_text(dir.path(), &format!("{name}.1.json"), &dumped);
        let second = path_in(dir.path(), &format!("{name}.2.json"));
        let out = rhea(&["dump", &first, "--format", "json", "-o", &second]);
        assert_eq!(out.ok(), "", "with -o nothing goes to standard output");
        assert_eq!(std::fs::read_to_string(&second).unwrap(), written, "{name}: second round trip");
        let loaded = rhea::from_json(&written).unwrap();
        assert_eq!(
            rhea::to_text(&loaded, rhea::TextOptions { locs: true }),
            rhea::to_text(&graph, rhea::TextOptions { locs: true })
        );
    }
}

#[test]
fn the_symbolic_graph_exercises_the_tricky_parts_of_the_format() {
    let json = rhea::to_json(&symbolic());
    for part in [
        r#""type":"f32[batch,seq,3]""#,
        r#""nan""#,
        r#""inf""#,
        r#""-inf""#,
        r#""label":"bad rows""#,
        r#"{"shared":"steps","value":"#,
    ] {
        assert!(json.contains(part), "{part} is not in\n{json}");
    }
    let loaded = rhea::from_json(&json).unwrap();
    assert_eq!(loaded.updates().len(), 1);
    let text = rhea::to_text(&loaded, rhea::TextOptions::default());
    assert!(text.contains("const [NaN, inf, -inf]"), "{text}");
}

#[test]
fn locs_show_where_each_node_was_built() {
    let dir = tempdir();
    let g = &write_graph(dir.path(), "g.json", &mlp());
    let text = rhea(&["dump", g, "--locs"]).ok().to_string();
    let input_line = text.lines().next().unwrap();
    assert!(input_line.contains("# @ tests/cli/support.rs:"), "{input_line}");
    assert!(text.contains("# probs @ tests/cli/support.rs:"), "{text}");
}

#[test]
fn help_says_what_each_command_does_with_an_example() {
    let main = rhea(&["--help"]).ok().to_string();
    for part in ["dump", "run", "Examples:", "rhea dump model.json", "rhea run model.json --inputs"] {
        assert!(main.contains(part), "{part} missing from rhea --help:\n{main}");
    }
    let dump = rhea(&["dump", "--help"]).ok().to_string();
    for part in ["--format", "text", "dot", "json", "--stage", "--locs", "rhea dump model.json --format dot"] {
        assert!(dump.contains(part), "{part} missing from rhea dump --help:\n{dump}");
    }
    let run = rhea(&["run", "--help"]).ok().to_string();
    for part in ["--inputs", "--backend", "interp", "safetensors.numpy", "rhea run model.json --inputs"] {
        assert!(run.contains(part), "{part} missing from rhea run --help:\n{run}");
    }
}

#[test]
fn stages_and_formats_that_do_not_exist_are_refused() {
    let dir = tempdir();
    let g = &write_graph(dir.path(), "g.json", &mlp());
    rhea(&["dump", g, "--stage", "lowered"]).fails_with(&["lowered", "raw", "optimized"]);
    rhea(&["dump", g, "--format", "svg"]).fails_with(&["svg"]);
    rhea(&["frobnicate"]).fails_with(&["frobnicate"]);
}
