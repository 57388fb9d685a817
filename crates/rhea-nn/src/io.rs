//! Tensors on disk: reading and writing [safetensors] files.
//!
//! A safetensors file is an 8-byte little-endian header length, a JSON
//! header mapping each tensor name to its dtype, shape and byte range, and
//! the raw row-major little-endian data. rhea reads and writes the dtypes it
//! has: `F32`, `F64`, `I32`, `I64` and `BOOL`.
//!
//! Loading checks the header itself before handing the file to the
//! reference reader, so that a truncated file, a header whose sizes do not
//! add up or an unsupported dtype is an error naming the file and the tensor.
//!
//! [safetensors]: https://github.com/huggingface/safetensors

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};

use rhea_graph::{DType, Value};

pub use crate::atomic::{write_atomic, write_atomic_with};

/// The reference reader refuses headers larger than this; so do we, early.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The header key that holds free-form string metadata, not a tensor.
const METADATA_KEY: &str = "__metadata__";

/// What went wrong reading or writing a tensor file.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The file could not be read or written.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// The file could not be written; the previous file, if any, is unchanged.
    #[error("cannot write {}: {error} (the previous file, if any, is unchanged)", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// The file is not a well-formed safetensors file.
    #[error("{}: not a valid safetensors file: {msg}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// One tensor's header entry or data is inconsistent.
    #[error("{}: tensor {name:?}: {msg}", path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// What is wrong with it.
        msg: String,
    },
    /// A tensor has a dtype rhea has no counterpart for.
    #[error(
        "{}: tensor {name:?} has dtype {dtype}, which rhea does not support (it reads F32, F64, I32, I64 and BOOL; convert the tensor first)",
        path.display()
    )]
    UnsupportedDType {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The dtype as written in the header.
        dtype: String,
    },
    /// The file's tensors do not fit the graph's shared variables.
    #[error("{}: does not fit the graph's shared variables: {}", path.display(), problems.join("; "))]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Every problem found, one per tensor.
        problems: Vec<String>,
    },
    /// Two tensors share a name.
    #[error("{}: tensor name {name:?} appears twice", path.display())]
    DuplicateName {
        /// The file.
        path: PathBuf,
        /// The repeated name.
        name: String,
    },
}

/// The safetensors name of a dtype.
fn safetensors_dtype(dtype: DType) -> safetensors::Dtype {
    match dtype {
        DType::F32 => safetensors::Dtype::F32,
        DType::F64 => safetensors::Dtype::F64,
        DType::I32 => safetensors::Dtype::I32,
        DType::I64 => safetensors::Dtype::I64,
        DType::Bool => safetensors::Dtype::BOOL,
    }
}

/// rhea's dtype for a safetensors dtype name, if it has one.
fn rhea_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "F32" => DType::F32,
        "F64" => DType::F64,
        "I32" => DType::I32,
        "I64" => DType::I64,
        "BOOL" => DType::Bool,
        _ => return None,
    })
}

/// One header entry, as written by any safetensors writer.
#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// The header's top-level object with its keys in file order, so that a
/// repeated name is seen instead of silently keeping the last one.
struct Header(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Header, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Header;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object mapping tensor names to their dtype, shape and data_offsets")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    out.push(entry);
                }
                Ok(Header(out))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// A tensor's place in the file, checked against its dtype and shape.
struct Checked {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// Reads every tensor of a safetensors file, in the order of their data in
/// the file.
///
/// Any dtype other than `F32`, `F64`, `I32`, `I64` and `BOOL`, a truncated or
/// corrupt file, or a header whose sizes and offsets do not add up is an
/// error naming the file (and the tensor, where one is at fault).
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<Vec<(String, Value)>, IoError> {
    let path = path.as_ref();
    let bytes = read_file(path).map_err(|error| IoError::Io { path: path.into(), error })?;
    // The tensors are copies of the data: as much again.
    if rhea_graph::memory::can_allocate(bytes.len()).is_err() {
        let msg = format!("out of memory: its tensors need {}", rhea_graph::memory::format_bytes(bytes.len() as u128));
        return Err(IoError::Io {
            path: path.into(),
            error: std::io::Error::new(std::io::ErrorKind::OutOfMemory, msg),
        });
    }
    parse_safetensors(path, &bytes)
}

/// The bytes of a file, in memory reserved before reading: a file larger
/// than the memory there is, is an error naming its size, not an abort. A
/// stream whose size is not known (a pipe, `/dev/zero`) grows fallibly.
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let oom = |n: u128| {
        let msg = format!("out of memory: cannot hold its {}", rhea_graph::memory::format_bytes(n));
        std::io::Error::new(std::io::ErrorKind::OutOfMemory, msg)
    };
    let mut bytes = Vec::new();
    if usize::try_from(size).ok().and_then(|n| bytes.try_reserve_exact(n).ok()).is_none() {
        return Err(oom(size.into()));
    }
    if size > 0 {
        file.read_to_end(&mut bytes)?;
        return Ok(bytes);
    }
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => return Ok(bytes),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        bytes.try_reserve(n).map_err(|_| oom((bytes.len() + n) as u128))?;
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// [`load_safetensors`] on the bytes of a file, named `path` in errors.
pub fn parse_safetensors(path: &Path, bytes: &[u8]) -> Result<Vec<(String, Value)>, IoError> {
    let corrupt = |msg: String| IoError::Corrupt { path: path.into(), msg };

    let Some(len_bytes) = bytes.get(..8) else {
        return Err(corrupt(format!(
            "the file is {} bytes, too short for the 8-byte header length (truncated, or not a safetensors file)",
            bytes.len()
        )));
    };
    let header_len = u64::from_le_bytes(len_bytes.try_into().expect("a slice of 8 bytes"));
    let available = bytes.len() as u64 - 8;
    if header_len > MAX_HEADER_BYTES {
        return Err(corrupt(format!(
            "the header length field says {header_len} bytes, more than the {MAX_HEADER_BYTES} any writer produces (not a safetensors file?)"
        )));
    }
    if header_len > available {
        return Err(corrupt(format!(
            "the header length field says {header_len} bytes, but only {available} follow (the file is truncated)"
        )));
    }
    let header_end = 8 + header_len as usize;
    let text = std::str::from_utf8(&bytes[8..header_end])
        .map_err(|e| corrupt(format!("the header is not UTF-8 text: {e}")))?;
    let header: Header =
        serde_json::from_str(text).map_err(|e| corrupt(format!("the header is not valid JSON: {e}")))?;
    let data_len = bytes.len() - header_end;

    let tensors = check_entries(path, header, data_len)?;

    // The reference reader must agree with the checks above; if it finds
    // something they missed, its word is final.
    let file = safetensors::SafeTensors::deserialize(bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        let view = file.tensor(&t.name).map_err(|e| corrupt(e.to_string()))?;
        debug_assert_eq!(view.data().len(), t.end - t.start);
        let value = Value::from_le_bytes(t.dtype, &t.shape, view.data()).map_err(|msg| IoError::Tensor {
            path: path.into(),
            name: t.name.clone(),
            msg,
        })?;
        out.push((t.name, value));
    }
    Ok(out)
}

/// Checks every header entry: known dtype, sizes that fit, byte ranges that
/// match the shapes, lie inside the data and tile it without gaps.
fn check_entries(path: &Path, header: Header, data_len: usize) -> Result<Vec<Checked>, IoError> {
    let tensor_err = |name: &str, msg: String| IoError::Tensor { path: path.into(), name: name.into(), msg };
    let mut seen = HashSet::new();
    let mut tensors = Vec::with_capacity(header.0.len());
    for (name, raw) in header.0 {
        if !seen.insert(name.clone()) {
            return Err(IoError::DuplicateName { path: path.into(), name });
        }
        if name == METADATA_KEY {
            continue;
        }
        let entry: Entry = serde_json::from_value(raw).map_err(|e| {
            tensor_err(
                &name,
                format!("malformed header entry ({e}); expected {{\"dtype\", \"shape\", \"data_offsets\"}}"),
            )
        })?;
        let Some(dtype) = rhea_dtype(&entry.dtype) else {
            return Err(IoError::UnsupportedDType { path: path.into(), name, dtype: entry.dtype });
        };
        let overflow = || tensor_err(&name, format!("shape {:?} is too large to address", entry.shape));
        let shape: Vec<usize> =
            entry.shape.iter().map(|&d| usize::try_from(d)).collect::<Result<_, _>>().map_err(|_| overflow())?;
        let want = shape
            .iter()
            .try_fold(dtype.size_bytes(), |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= isize::MAX as usize)
            .ok_or_else(overflow)?;
        let (start, end) = entry.data_offsets;
        let Some(span) = end.checked_sub(start) else {
            return Err(tensor_err(&name, format!("data_offsets [{start}, {end}] end before they start")));
        };
        if span != want as u64 {
            return Err(tensor_err(
                &name,
                format!(
                    "the header says {} {:?}, which is {want} bytes, but its data_offsets [{start}, {end}] span {span}",
                    entry.dtype, entry.shape
                ),
            ));
        }
        if end > data_len as u64 {
            return Err(tensor_err(
                &name,
                format!(
                    "its data_offsets [{start}, {end}] reach past the end of the data, which is {data_len} bytes (the file is truncated)"
                ),
            ));
        }
        tensors.push(Checked { name, dtype, shape, start: start as usize, end: end as usize });
    }
    tensors.sort_by(|a, b| (a.start, a.end, &a.name).cmp(&(b.start, b.end, &b.name)));
    let mut covered = 0;
    for t in &tensors {
        if t.start != covered {
            let what = if t.start < covered {
                "overlaps the tensor before it"
            } else {
                "leaves a gap after the tensor before it"
            };
            return Err(tensor_err(
                &t.name,
                format!("its data_offsets [{}, {}] {what}, which ends at byte {covered}", t.start, t.end),
            ));
        }
        covered = t.end;
    }
    if covered != data_len {
        return Err(IoError::Corrupt {
            path: path.into(),
            msg: format!("the tensors cover {covered} bytes of data, but the file holds {data_len}"),
        });
    }
    Ok(tensors)
}

/// Writes named tensors to a safetensors file (replacing it if it exists),
/// atomically: a failed write leaves the previous file as it was.
///
/// Names must be distinct. Any reader of safetensors (numpy, PyTorch, this
/// crate) can read the result.
pub fn save_safetensors(path: impl AsRef<Path>, tensors: &[(&str, &Value)]) -> Result<(), IoError> {
    let path = path.as_ref();
    let mut seen = HashSet::new();
    let data: Vec<(&str, Vec<u8>)> = tensors.iter().map(|(name, value)| (*name, value.to_le_bytes())).collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, value), (_, bytes)) in tensors.iter().zip(&data) {
        if !seen.insert(*name) {
            return Err(IoError::DuplicateName { path: path.into(), name: name.to_string() });
        }
        let view =
            safetensors::tensor::TensorView::new(safetensors_dtype(value.dtype()), value.shape().to_vec(), bytes)
                .map_err(|e| IoError::Tensor { path: path.into(), name: name.to_string(), msg: e.to_string() })?;
        views.push((*name, view));
    }
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| IoError::Corrupt { path: path.into(), msg: format!("cannot encode: {e}") })?;
    write_atomic(path, &bytes).map_err(|error| IoError::Write { path: path.into(), error })
}

/// Writes every shared variable of `graph` that has a value, by name;
/// returns how many were written.
pub fn save_shared(graph: &rhea_graph::Graph, path: impl AsRef<Path>) -> Result<usize, IoError> {
    let named: Vec<(&str, &Value)> =
        graph.shared().into_iter().filter_map(|id| Some((graph.leaf_name(id)?, graph.shared_value(id)?))).collect();
    save_safetensors(path, &named)?;
    Ok(named.len())
}

/// Sets shared variables of `graph` by name from a safetensors file. Every
/// tensor must name a shared variable and fit its dtype and shape; all
/// problems are reported together, and nothing is set unless everything
/// fits. Returns how many variables were set.
pub fn load_shared(graph: &mut rhea_graph::Graph, path: impl AsRef<Path>) -> Result<usize, IoError> {
    let path = path.as_ref();
    let tensors = load_safetensors(path)?;
    let mut problems = Vec::new();
    let mut fits = Vec::with_capacity(tensors.len());
    for (name, value) in tensors {
        match graph.find(&name).filter(|&id| matches!(graph.node(id).op, rhea_graph::Op::Shared { .. })) {
            None => problems.push(format!("{name:?} is not a shared variable of the graph")),
            Some(id) => match rhea_graph::check_value(&format!("{name:?}"), graph.ty(id), &value) {
                Ok(()) => fits.push((id, value)),
                Err(e) => problems.push(e.to_string()),
            },
        }
    }
    if !problems.is_empty() {
        return Err(IoError::Mismatch { path: path.into(), problems });
    }
    let n = fits.len();
    for (id, value) in fits {
        graph.set_shared_value(id, value).expect("checked against the variable's type above");
    }
    Ok(n)
}

#[cfg(test)]
mod shared_tests {
    use super::*;

    #[test]
    fn shared_values_save_and_load_by_name_all_or_nothing() {
        let g = rhea_graph::Builder::new();
        g.shared("w", ndarray::array![[1.0f32, 2.0]]).unwrap();
        g.shared("b", ndarray::array![0.5f64]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("params.safetensors");
        assert_eq!(save_shared(&g.graph(), &path).unwrap(), 2);
        let other = rhea_graph::Builder::new();
        other.shared("w", ndarray::array![[0.0f32, 0.0]]).unwrap();
        other.shared("b", ndarray::array![0.0f64]).unwrap();
        assert_eq!(load_shared(&mut other.graph_mut(), &path).unwrap(), 2);
        assert_eq!(
            other.find("w").map(|w| other.graph().shared_value(w.id()).cloned()),
            Some(Some(Value::from(ndarray::array![[1.0f32, 2.0]])))
        );
        // A file with one bad tensor and one unknown name changes nothing and names both.
        let bad = dir.path().join("bad.safetensors");
        let w3 = Value::from(ndarray::array![1.0f32, 2.0, 3.0]);
        let b = Value::from(ndarray::array![9.0f64]);
        let q = Value::from(1.0f32);
        save_safetensors(&bad, &[("w", &w3), ("b", &b), ("q", &q)]).unwrap();
        let e = load_shared(&mut other.graph_mut(), &bad).unwrap_err().to_string();
        assert!(
            e.contains("\"w\": expected f32[1,2], got f32[3]") && e.contains("\"q\" is not a shared variable"),
            "{e}"
        );
        let b_now = other.graph().shared_value(other.find("b").unwrap().id()).cloned();
        assert_eq!(b_now, Some(Value::from(ndarray::array![0.5f64])));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn load_bytes(bytes: &[u8]) -> Result<Vec<(String, Value)>, IoError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        std::fs::write(&path, bytes).unwrap();
        load_safetensors(&path)
    }

    #[test]
    fn every_dtype_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("all.safetensors");
        let values = [
            ("a", Value::from(array![[1.5f32, -2.0], [f32::NAN, f32::INFINITY]])),
            ("b", Value::from(array![1e-300f64, -0.0])),
            ("c", Value::from(array![i32::MIN, 7, i32::MAX])),
            ("d", Value::from(array![i64::MIN, i64::MAX])),
            ("e", Value::from(array![true, false, true])),
            ("f", Value::from(3.25f32)),
            ("g", Value::F32(ndarray::ArrayD::zeros(ndarray::IxDyn(&[0, 4])))),
        ];
        let refs: Vec<(&str, &Value)> = values.iter().map(|(n, v)| (*n, v)).collect();
        save_safetensors(&path, &refs).unwrap();
        let mut back = load_safetensors(&path).unwrap();
        back.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(back.len(), values.len());
        for ((n1, v1), (n2, v2)) in back.iter().zip(&values) {
            assert_eq!(n1, n2);
            assert!(v1.bit_eq(v2), "{n1}: {v1:?} vs {v2:?}");
        }
    }

    #[test]
    fn a_hand_written_file_loads() {
        let header = r#"{"__metadata__":{"k":"v"},"x":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}"#;
        let data: Vec<u8> = [3i32, -4].iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = load_bytes(&raw_file(header, &data)).unwrap();
        assert_eq!(t, vec![("x".to_string(), Value::from(array![3i32, -4]))]);
    }

    #[test]
    fn bad_files_are_errors_naming_the_problem() {
        let err = |bytes: &[u8]| load_bytes(bytes).unwrap_err().to_string();
        let ok_header = r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let full = raw_file(ok_header, &[0; 8]);
        assert!(err(&full[..5]).contains("too short"));
        assert!(err(&full[..20]).contains("truncated"), "{}", err(&full[..20]));
        assert!(err(&full[..full.len() - 3]).contains("tensor \"x\""), "{}", err(&full[..full.len() - 3]));
        assert!(err(&raw_file(ok_header, &[0; 12])).contains("cover 8 bytes"));
        let f16 = r#"{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#;
        assert!(err(&raw_file(f16, &[0; 4])).contains("tensor \"h\" has dtype F16"));
        let liar = r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        let e = err(&raw_file(liar, &[0; 8]));
        assert!(e.contains("tensor \"x\"") && e.contains("12 bytes"), "{e}");
        let dup = r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        assert!(err(&raw_file(dup, &[0; 8])).contains("appears twice"));
        let gap = r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        assert!(err(&raw_file(gap, &[0; 8])).contains("gap"));
        let huge = r#"{"x":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#;
        assert!(err(&raw_file(huge, &[0; 8])).contains("too large"));
        assert!(err(&raw_file("not json", &[])).contains("not valid JSON"));
        let bad_bool = r#"{"b":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]}}"#;
        assert!(err(&raw_file(bad_bool, &[7])).contains("tensor \"b\""));
        let mut len_lies = full.clone();
        len_lies[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(err(&len_lies).contains("header length"));
        let missing = load_safetensors("/nonexistent/x.safetensors").unwrap_err().to_string();
        assert!(missing.starts_with("/nonexistent/x.safetensors: "), "{missing}");
    }

    #[test]
    fn saving_twice_the_same_name_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let v = Value::from(1.0f32);
        let e = save_safetensors(dir.path().join("d.safetensors"), &[("a", &v), ("a", &v)]).unwrap_err();
        assert!(e.to_string().contains("\"a\" appears twice"));
    }
}
