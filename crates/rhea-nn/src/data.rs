//! Tabular data: a CSV loader, a label encoder, seeded shuffling and
//! splitting (plain and stratified k-fold), and standardization.

use std::path::Path;

use ndarray::{Array1, Array2, Axis};
use rhea_graph::rng;

use crate::{NnError, Result};

/// Rows of numeric features with a string label in the last column.
#[derive(Clone, Debug)]
pub struct Table {
    /// One row per example.
    pub features: Array2<f32>,
    /// The last column of each row.
    pub labels: Vec<String>,
}

/// Reads a headerless CSV whose last column is a label and the others
/// numbers. A row with the wrong number of fields, or a field that is not a
/// number, is an error naming the file, line and field.
pub fn read_csv(path: &Path) -> Result<Table> {
    let io = |error| NnError::Io { path: path.to_path_buf(), error };
    let file = std::fs::File::open(path).map_err(io)?;
    // A first check, before any parsing: a table takes about twice its
    // text's size (rows of short labels more; the parser's growth is
    // fallible for those).
    let size = file.metadata().map_err(io)?.len();
    let table_bytes = usize::try_from(size).ok().and_then(|n| n.checked_mul(2));
    if table_bytes.is_none_or(|n| rhea_graph::memory::can_allocate(n).is_err()) {
        return Err(NnError::Data(format!(
            "{}: out of memory: a table from this {} file needs up to {}",
            path.display(),
            rhea_graph::memory::format_bytes(size.into()),
            rhea_graph::memory::format_bytes(u128::from(size) * 2)
        )));
    }
    parse_csv(path, file)
}

/// The longest line a data file may have: far beyond any real row, and a
/// bound on what one line can cost in memory.
const MAX_LINE_BYTES: usize = 64 << 20;

/// A reader of text: a NUL byte (a binary file, `/dev/zero`) or a line
/// longer than [`MAX_LINE_BYTES`] is an error, before the CSV parser
/// buffers it.
struct TextOnly<R> {
    inner: R,
    offset: u64,
    line_bytes: usize,
}

impl<R: std::io::Read> std::io::Read for TextOnly<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for (i, &b) in buf[..n].iter().enumerate() {
            let at = self.offset + i as u64;
            match b {
                0 => {
                    let msg = format!("byte {at} is NUL: this is a binary file, not CSV text");
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, msg));
                }
                b'\n' => self.line_bytes = 0,
                _ => self.line_bytes += 1,
            }
            if self.line_bytes > MAX_LINE_BYTES {
                let msg =
                    format!("a line longer than {} MB ends past byte {at}: not a data table", MAX_LINE_BYTES >> 20);
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, msg));
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// [`read_csv`] on any reader, named `path` in errors.
pub fn parse_csv(path: &Path, input: impl std::io::Read) -> Result<Table> {
    let input = TextOnly { inner: input, offset: 0, line_bytes: 0 };
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(input);
    let (mut data, mut labels, mut width) = (Vec::new(), Vec::new(), None);
    for record in reader.records() {
        let record = record.map_err(|e| NnError::Csv {
            path: path.to_path_buf(),
            line: e.position().map_or(0, |p| p.line()),
            msg: e.to_string(),
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let err = |msg: String| NnError::Csv { path: path.to_path_buf(), line, msg };
        if record.len() < 2 {
            return Err(err(format!("{} field(s); need features and a label", record.len())));
        }
        match width {
            None => width = Some(record.len()),
            Some(w) if w != record.len() => {
                return Err(err(format!("{} fields, but the first row has {w}", record.len())));
            }
            _ => {}
        }
        // The table grows fallibly: too little memory is an error naming
        // the line, not an abort.
        let held = data.len();
        let full = || err(format!("out of memory: the table so far holds {held} numbers and cannot grow"));
        if data.len() + record.len() > data.capacity() && data.try_reserve(data.len().max(record.len())).is_err() {
            return Err(full());
        }
        if labels.len() == labels.capacity() && labels.try_reserve(labels.len().max(16)).is_err() {
            return Err(full());
        }
        for (i, field) in record.iter().take(record.len() - 1).enumerate() {
            let v: f32 = field
                .trim()
                .parse()
                .ok()
                .filter(|v: &f32| v.is_finite())
                .ok_or_else(|| err(format!("field {} is {field:?}, not a finite number", i + 1)))?;
            data.push(v);
        }
        labels.push(record[record.len() - 1].trim().to_string());
    }
    let cols = width.ok_or_else(|| NnError::Data(format!("{}: no rows", path.display())))? - 1;
    let features = Array2::from_shape_vec((labels.len(), cols), data).expect("every row has `cols` features");
    Ok(Table { features, labels })
}

/// Maps string labels to `0..n` in sorted order, like scikit-learn's
/// `LabelEncoder`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelEncoder {
    /// The classes, sorted; class `i` is encoded as `i`.
    pub classes: Vec<String>,
}

impl LabelEncoder {
    /// Learns the classes present in `labels`.
    pub fn fit(labels: &[String]) -> LabelEncoder {
        let mut classes = labels.to_vec();
        classes.sort();
        classes.dedup();
        LabelEncoder { classes }
    }

    /// The code of each label; an unseen label is an error naming it.
    pub fn transform(&self, labels: &[String]) -> Result<Vec<usize>> {
        labels
            .iter()
            .map(|l| {
                self.classes
                    .binary_search(l)
                    .map_err(|_| NnError::Data(format!("label {l:?} is not one of {:?}", self.classes)))
            })
            .collect()
    }
}

/// `0..n` in a seeded random order (Fisher-Yates on rhea's generator).
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let stream = rng::stream(seed, 0x5348_5546);
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng::bits(stream, i as u64) % (i as u64 + 1)) as usize;
        idx.swap(i, j);
    }
    idx
}

/// Seeded shuffle, then `ceil(n * test_fraction)` rows for testing (as
/// scikit-learn rounds) and the rest for training.
pub fn train_test_split(n: usize, test_fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(0.0..1.0).contains(&test_fraction) {
        return Err(NnError::Data(format!("test fraction {test_fraction} is not in [0, 1)")));
    }
    let idx = shuffled(n, seed);
    let n_test = (n as f64 * test_fraction).ceil() as usize;
    let (train, test) = idx.split_at(n - n_test);
    Ok((train.to_vec(), test.to_vec()))
}

/// Stratified k-fold: each fold's test part holds about `1/k` of every
/// class. Returns `(train, test)` index lists.
pub fn stratified_kfold(labels: &[usize], k: usize, seed: u64) -> Result<Vec<(Vec<usize>, Vec<usize>)>> {
    let n_classes = labels.iter().max().map_or(0, |m| m + 1);
    for c in 0..n_classes {
        let count = labels.iter().filter(|&&l| l == c).count();
        if count < k {
            return Err(NnError::Data(format!("class {c} has {count} examples, fewer than the {k} folds")));
        }
    }
    if k < 2 {
        return Err(NnError::Data(format!("k-fold needs k >= 2, got {k}")));
    }
    let mut fold_of = vec![0usize; labels.len()];
    for c in 0..n_classes {
        let members: Vec<usize> = shuffled(labels.len(), seed).into_iter().filter(|&i| labels[i] == c).collect();
        for (j, &i) in members.iter().enumerate() {
            fold_of[i] = j % k;
        }
    }
    Ok((0..k)
        .map(|f| {
            let (test, train): (Vec<usize>, Vec<usize>) = (0..labels.len()).partition(|&i| fold_of[i] == f);
            (train, test)
        })
        .collect())
}

/// Rows `idx` of `x`.
pub fn take_rows<T: Clone>(x: &Array2<T>, idx: &[usize]) -> Array2<T> {
    x.select(Axis(0), idx)
}

/// Per-column mean and standard deviation, fitted on training rows only.
#[derive(Clone, Debug)]
pub struct Standardizer {
    /// Column means.
    pub mean: Array1<f32>,
    /// Column standard deviations (1 where a column is constant).
    pub std: Array1<f32>,
}

impl Standardizer {
    /// Fits on `x`'s rows.
    pub fn fit(x: &Array2<f32>) -> Standardizer {
        let mean = x.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(x.ncols()));
        let std = x.std_axis(Axis(0), 0.0).mapv(|s| if s > 0.0 { s } else { 1.0 });
        Standardizer { mean, std }
    }

    /// `(x - mean) / std`.
    pub fn transform(&self, x: &Array2<f32>) -> Array2<f32> {
        (x - &self.mean) / &self.std
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn csv(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn reads_features_and_labels() {
        let f = csv("0.1,0.2,R\n0.3,0.4,M\n");
        let t = read_csv(f.path()).unwrap();
        assert_eq!(t.features, ndarray::array![[0.1f32, 0.2], [0.3, 0.4]]);
        assert_eq!(t.labels, vec!["R", "M"]);
    }

    #[test]
    fn binary_input_and_endless_lines_are_errors_not_memory() {
        let zeros = std::io::Read::take(std::io::repeat(0), 1 << 40);
        let e = parse_csv(Path::new("/dev/zero"), zeros).unwrap_err().to_string();
        assert!(e.contains("byte 0 is NUL: this is a binary file"), "{e}");
        let endless = std::io::Read::take(std::io::repeat(b'1'), 1 << 40);
        let e = parse_csv(Path::new("long.csv"), endless).unwrap_err().to_string();
        assert!(e.contains("a line longer than 64 MB"), "{e}");
    }

    #[test]
    fn malformed_rows_name_file_line_and_field() {
        let f = csv("0.1,0.2,R\n0.3,x,M\n");
        let e = read_csv(f.path()).unwrap_err().to_string();
        assert!(e.ends_with(":2: field 2 is \"x\", not a finite number"), "{e}");
        let f = csv("0.1,nan,R\n");
        assert!(read_csv(f.path()).unwrap_err().to_string().contains("field 2 is \"nan\""));
        let f = csv("0.1,0.2,R\n0.3,M\n");
        let e = read_csv(f.path()).unwrap_err().to_string();
        assert!(e.ends_with(":2: 2 fields, but the first row has 3"), "{e}");
        let e = read_csv(Path::new("/no/such/file.csv")).unwrap_err().to_string();
        assert!(e.starts_with("/no/such/file.csv: "), "{e}");
        let f = csv("");
        assert!(read_csv(f.path()).unwrap_err().to_string().contains("no rows"));
    }

    #[test]
    fn label_encoder_sorts_classes() {
        let labels: Vec<String> = ["R", "M", "R"].iter().map(|s| s.to_string()).collect();
        let enc = LabelEncoder::fit(&labels);
        assert_eq!(enc.classes, vec!["M", "R"]);
        assert_eq!(enc.transform(&labels).unwrap(), vec![1, 0, 1]);
        assert!(enc.transform(&["X".to_string()]).is_err());
    }

    #[test]
    fn splits_are_seeded_partitions() {
        let (train, test) = train_test_split(208, 0.4, 7).unwrap();
        assert_eq!((train.len(), test.len()), (124, 84));
        let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
        all.sort();
        assert_eq!(all, (0..208).collect::<Vec<_>>());
        assert_eq!(train_test_split(208, 0.4, 7).unwrap().0, train);
        assert_ne!(train_test_split(208, 0.4, 8).unwrap().0, train);
    }

    #[test]
    fn stratified_folds_balance_classes() {
        let labels: Vec<usize> = (0..30).map(|i| usize::from(i % 3 == 0)).collect();
        let folds = stratified_kfold(&labels, 5, 1).unwrap();
        for (train, test) in &folds {
            assert_eq!(train.len() + test.len(), 30);
            assert_eq!(test.iter().filter(|&&i| labels[i] == 1).count(), 2);
        }
        assert!(stratified_kfold(&labels, 11, 1).is_err());
    }

    #[test]
    fn standardizer_uses_training_statistics() {
        let x = ndarray::array![[1.0f32, 5.0], [3.0, 5.0]];
        let s = Standardizer::fit(&x);
        assert_eq!(s.transform(&x), ndarray::array![[-1.0f32, 0.0], [1.0, 0.0]]);
    }
}
