//! The fuzz targets, one function per untrusted-input loader. cargo-fuzz
//! runs them for as long as one likes (`fuzz/`, coverage-guided); the test
//! suite runs them on the committed corpus and a fixed budget of its
//! mutations (`tests/fuzz/main.rs`). Each must return, never panic, on any
//! bytes; where a loader accepts its input, what it built must behave.

use std::path::Path;

/// The graph JSON loader. A graph it accepts dumps as text, DOT and JSON,
/// loads back from that JSON to the same JSON, and goes through the
/// optimizer without panicking.
/// Each returns whether the loader accepted the input.
pub fn graph_json(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let Ok(graph) = rhea::from_json(text) else { return false };
    let json = rhea::to_json(&graph);
    let again = rhea::from_json(&json).unwrap_or_else(|e| panic!("a dumped graph must load back: {e}\n{json}"));
    assert_eq!(rhea::to_json(&again), json, "dump -> load -> dump must be stable");
    let _ = rhea::to_text(&graph, rhea::TextOptions::default());
    let _ = rhea::to_dot(&graph);
    if !graph.outputs().is_empty() {
        let _ = rhea::opt::compile(graph, &rhea::default_options());
    }
    true
}

/// The safetensors loader: any bytes give tensors or an error.
pub fn safetensors(data: &[u8]) -> bool {
    let Ok(tensors) = rhea::io::parse_safetensors(Path::new("fuzz.safetensors"), data) else { return false };
    for (_, v) in tensors {
        assert_eq!(v.len(), v.shape().iter().product::<usize>());
    }
    true
}

/// The CSV loader: any bytes give a table whose rows all have the same
/// width, or an error.
pub fn csv(data: &[u8]) -> bool {
    let Ok(table) = rhea::nn::data::parse_csv(Path::new("fuzz.csv"), data) else { return false };
    assert_eq!(table.features.nrows(), table.labels.len());
    assert!(table.features.iter().all(|x| x.is_finite()));
    true
}

/// The image-folder loader's decoder: any bytes give a `[3, 16, 16]` tensor
/// of finite values (the first byte decides the flip), or an error.
pub fn image(data: &[u8]) -> bool {
    let t = rhea::nn::images::Transform::imagenet(16);
    let flip = data.first().is_some_and(|b| b & 1 == 1);
    let Ok(img) = rhea::nn::images::decode_image(data, Path::new("fuzz.png"), &t, flip) else { return false };
    assert_eq!(img.shape(), [3, 16, 16]);
    assert!(img.iter().all(|x| x.is_finite()));
    true
}
