//! The files the hostile cases start from, made once in a temporary folder:
//! good ones (which the cases then break) and the folders they write into.

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, array};
use rhea::{Builder, DType, Value};

pub struct Fixtures {
    pub dir: tempfile::TempDir,
    /// A small MLP: input `x` f32[batch,4], output `probs`.
    pub graph: PathBuf,
    pub graph_text: String,
    /// `x` for `graph`, two rows.
    pub inputs: PathBuf,
    pub inputs_bytes: Vec<u8>,
    /// `y = sum(log(x) * 2)`: NaN for a negative x (input `x` f32[3]).
    pub nan_graph: PathBuf,
    /// `x` = [1, -1, 2] for `nan_graph`.
    pub nan_inputs: PathBuf,
    /// A graph whose output needs 8 TB: a broadcast of `x` f32[1].
    pub huge_graph: PathBuf,
    /// A graph with a 200 MB output, for interrupted writes (input `x` f32[1]).
    pub wide_graph: PathBuf,
    /// `x` f32[1] for `huge_graph` and `wide_graph`.
    pub scalar_inputs: PathBuf,
    /// A graph file holding a 3-million-element shared value inline (~40 MB).
    pub fat_graph: PathBuf,
    /// A graph file of 400,000 nodes, an elementwise chain (~30 MB).
    pub long_graph: PathBuf,
    /// A 100 MB inputs file: `x` f32[25000000] (the wrong shape for `graph`).
    pub big_inputs: PathBuf,
    /// A sparse file of 1 TB (no disk used): larger than any memory.
    pub terabyte: PathBuf,
    /// Keras' image-folder layout: train/ and valid/, two classes, real photos.
    pub images: PathBuf,
    /// The Sonar CSV shipped with the repository.
    pub sonar: PathBuf,
    /// One 224x224 image `x` for the built-in vgg16.
    pub vgg_inputs: PathBuf,
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write fixture {}: {e}", path.display()));
}

fn mlp() -> rhea::Graph {
    let g = Builder::new();
    let batch = g.dim("batch").unwrap();
    let x = g.input("x", DType::F32, [batch, 4.into()]).unwrap();
    let w1 = g.shared("w1", Array2::from_shape_fn((4, 3), |(i, j)| (i as f32 - j as f32) / 4.0)).unwrap();
    let b1 = g.shared("b1", array![0.1f32, 0.0, -0.1]).unwrap();
    let w2 = g.shared("w2", Array2::from_shape_fn((3, 2), |(i, j)| (i + j) as f32 / 3.0 - 0.5)).unwrap();
    let hidden = x.dot(&w1).unwrap().add(&b1).unwrap().relu().unwrap();
    let probs = hidden.dot(&w2).unwrap().softmax(-1).unwrap();
    g.output("probs", &probs).unwrap();
    g.to_graph()
}

impl Fixtures {
    pub fn make() -> Fixtures {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let root = dir.path();
        let graph = root.join("mlp.json");
        let graph_text = rhea::to_json(&mlp());
        write(&graph, graph_text.as_bytes());
        let inputs = root.join("in.safetensors");
        let x = Value::from(array![[0.5f32, -1.0, 2.0, 0.25], [1.0, 1.0, 1.0, 1.0]]);
        rhea::io::save_safetensors(&inputs, &[("x", &x)]).unwrap();
        let inputs_bytes = std::fs::read(&inputs).unwrap();

        let g = Builder::new();
        let xn = g.input("x", DType::F32, [3]).unwrap();
        let y = (&xn.log().unwrap() * 2.0).sum_all().unwrap();
        g.output("y", &y).unwrap();
        let nan_graph = root.join("nan.json");
        write(&nan_graph, rhea::to_json(&g.to_graph()).as_bytes());
        let nan_inputs = root.join("nan.safetensors");
        rhea::io::save_safetensors(&nan_inputs, &[("x", &Value::from(array![1.0f32, -1.0, 2.0]))]).unwrap();

        let broadcast = |n: &[usize]| {
            let g = Builder::new();
            let x = g.input("x", DType::F32, [1]).unwrap();
            let wide =
                (&x.broadcast_to(n.iter().map(|&d| d.into()).collect::<Vec<rhea::Dim>>()).unwrap() + 1.0).named("wide");
            g.output("y", &wide).unwrap();
            rhea::to_json(&g.to_graph())
        };
        let huge_graph = root.join("huge.json");
        write(&huge_graph, broadcast(&[1_000_000, 2_000_000, 1]).as_bytes());
        let wide_graph = root.join("wide.json");
        write(&wide_graph, broadcast(&[50_000_000]).as_bytes());
        let scalar_inputs = root.join("scalar.safetensors");
        rhea::io::save_safetensors(&scalar_inputs, &[("x", &Value::from(array![0.5f32]))]).unwrap();

        let g = Builder::new();
        let w = g.shared("w", Array1::from_shape_fn(3_000_000, |i| i as f32 * 0.001)).unwrap();
        g.output("s", &w.sum_all().unwrap()).unwrap();
        let fat_graph = root.join("fat.json");
        write(&fat_graph, rhea::to_json_with(&g.to_graph(), usize::MAX).as_bytes());

        let long_graph = root.join("long.json");
        let mut text = String::from(
            r#"{"format":"rhea-graph","version":1,"nodes":[{"id":0,"op":"input","name":"x","type":"f32[4]"}"#,
        );
        const LONG: usize = 400_000;
        for i in 1..LONG {
            let fun = if i % 2 == 1 { "relu" } else { "neg" };
            text.push_str(&format!(r#",{{"id":{i},"op":"unary","fun":"{fun}","inputs":[{}],"type":"f32[4]"}}"#, i - 1));
        }
        text.push_str(&format!(r#"],"outputs":[{{"name":"y","node":{}}}]}}"#, LONG - 1));
        write(&long_graph, text.as_bytes());

        let big_inputs = root.join("big.safetensors");
        {
            use std::io::Write;
            const N: usize = 25_000_000;
            let header = format!(r#"{{"x":{{"dtype":"F32","shape":[{N}],"data_offsets":[0,{}]}}}}"#, 4 * N);
            let mut f = std::io::BufWriter::new(std::fs::File::create(&big_inputs).unwrap());
            f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
            f.write_all(header.as_bytes()).unwrap();
            let zeros = vec![0u8; 1 << 20];
            let mut left = 4 * N;
            while left > 0 {
                let n = left.min(zeros.len());
                f.write_all(&zeros[..n]).unwrap();
                left -= n;
            }
        }

        let terabyte = root.join("terabyte.bin");
        std::fs::File::create(&terabyte).unwrap().set_len(1 << 40).unwrap();

        let images = root.join("images");
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/dogscats");
        for part in ["train", "valid"] {
            for class in ["cats", "dogs"] {
                let to = images.join(part).join(class);
                std::fs::create_dir_all(&to).unwrap();
                let mut files: Vec<PathBuf> = std::fs::read_dir(shipped.join(part).join(class))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
                    .collect();
                files.sort();
                for f in files.iter().take(2) {
                    std::fs::copy(f, to.join(f.file_name().unwrap())).unwrap();
                }
            }
        }
        let sonar = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sonar/sonar.all-data");
        let vgg_inputs = root.join("vgg-x.safetensors");
        let image = Value::from(ndarray::Array4::from_shape_fn((1, 3, 224, 224), |(_, c, y, x)| {
            ((c + y + x) % 7) as f32 / 7.0
        }));
        rhea::io::save_safetensors(&vgg_inputs, &[("x", &image)]).unwrap();
        Fixtures {
            dir,
            graph,
            graph_text,
            inputs,
            inputs_bytes,
            nan_graph,
            nan_inputs,
            huge_graph,
            wide_graph,
            scalar_inputs,
            fat_graph,
            long_graph,
            big_inputs,
            terabyte,
            images,
            sonar,
            vgg_inputs,
        }
    }

    /// A new path in the fixtures' folder (unique per name).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `bytes` to a new file `name`; returns its path as a string.
    pub fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.path(name);
        write(&path, bytes);
        s(&path)
    }

    /// A copy of the image folder with `change` applied to it.
    pub fn images_with(&self, name: &str, change: impl FnOnce(&Path)) -> String {
        let to = self.path(name);
        for entry in walk(&self.images) {
            let rel = entry.strip_prefix(&self.images).unwrap();
            let dest = to.join(rel);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&entry, dest).unwrap();
        }
        change(&to);
        s(&to)
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

/// A path as a command-line argument.
pub fn s(path: &Path) -> String {
    path.to_str().expect("temporary paths are UTF-8").to_string()
}
