//! Image folders in Keras' `flow_from_directory` layout (one folder per
//! class, classes sorted by name) turned into NCHW batches the way
//! torchvision's ImageNet models expect them: the shorter side resized,
//! a center crop, RGB scaled to `[0, 1]`, normalized by the ImageNet mean
//! and standard deviation. Files decode in parallel, and the next batch
//! decodes on a background thread while the caller computes on this one.
//! A file that cannot be read or decoded is reported with its path and
//! skipped; nothing in a file can make the loader panic. A thread that
//! cannot be started decodes on the calling thread instead; a loader
//! thread that fails ends the iteration with an error, never silently.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use image::imageops::FilterType;
use ndarray::{Array3, Array4, Axis};
use rhea_graph::rng;

use crate::{NnError, Result};

/// The file extensions read as images (any case).
const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// The images of a folder, by class.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    /// The folder.
    pub root: PathBuf,
    /// Class names (the subfolders), sorted; a label is an index into it.
    pub classes: Vec<String>,
    /// Every image file and its label, sorted by class then file name.
    pub items: Vec<(PathBuf, usize)>,
}

fn io_error(path: &Path, error: std::io::Error) -> NnError {
    NnError::Io { path: path.to_path_buf(), error }
}

fn is_image(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| io_error(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| io_error(dir, e)))
        .collect::<Result<Vec<_>>>()?;
    entries.sort();
    Ok(entries)
}

impl ImageFolder {
    /// Lists `root`'s class folders and their image files (`.jpg`,
    /// `.jpeg`, `.png`; other files are ignored).
    pub fn open(root: &Path) -> Result<ImageFolder> {
        let mut classes = Vec::new();
        let mut items = Vec::new();
        for dir in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
            let label = classes.len();
            classes.push(dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            for file in sorted_entries(&dir)?.into_iter().filter(|p| p.is_file() && is_image(p)) {
                items.push((file, label));
            }
        }
        if classes.is_empty() {
            return Err(NnError::Data(format!(
                "{}: no class folders (expected one subfolder per class, as Keras' flow_from_directory)",
                root.display()
            )));
        }
        Ok(ImageFolder { root: root.to_path_buf(), classes, items })
    }

    /// Image files directly in `dir` (no classes), sorted: for prediction.
    pub fn files(dir: &Path) -> Result<Vec<PathBuf>> {
        Ok(sorted_entries(dir)?.into_iter().filter(|p| p.is_file() && is_image(p)).collect())
    }
}

/// How a file becomes a `[3, size, size]` tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Transform {
    /// The shorter side is resized to this (bilinear), keeping the aspect.
    pub resize: usize,
    /// Then a center crop of `crop x crop`.
    pub crop: usize,
    /// Per-channel mean and standard deviation (after scaling to `[0, 1]`).
    pub mean: [f32; 3],
    /// See `mean`.
    pub std: [f32; 3],
}

impl Transform {
    /// torchvision's ImageNet eval transform scaled to `crop`: shorter side
    /// to `crop * 256 / 224`, center crop, ImageNet normalization.
    pub fn imagenet(crop: usize) -> Transform {
        Transform { resize: (crop * 256).div_ceil(224), crop, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }
    }
}

/// Decodes `path` and applies `t` (mirrored left-right if `flip`).
pub fn load_image(path: &Path, t: &Transform, flip: bool) -> Result<Array3<f32>> {
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    decode_image(&bytes, path, t, flip)
}

/// Decodes the bytes of an image file (named `path` in errors) and applies
/// `t`. The `image` crate's default limits refuse a header that asks for
/// more than 512 MB, so a lying file is an error, not an allocation.
pub fn decode_image(bytes: &[u8], path: &Path, t: &Transform, flip: bool) -> Result<Array3<f32>> {
    let bad = |msg: String| NnError::Data(format!("{}: {msg}", path.display()));
    if t.crop == 0 || t.resize < t.crop {
        return Err(bad(format!("cannot crop {} from a shorter side of {}", t.crop, t.resize)));
    }
    let img = image::load_from_memory(bytes).map_err(|e| bad(format!("not a readable image: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(bad("the image is empty".into()));
    }
    let scale = t.resize as f64 / w.min(h) as f64;
    let (nw, nh) =
        (((w as f64 * scale).round() as usize).max(t.crop), ((h as f64 * scale).round() as usize).max(t.crop));
    let rgb = img.resize_exact(nw as u32, nh as u32, FilterType::Triangle).to_rgb8();
    let (x0, y0) = ((nw - t.crop) / 2, (nh - t.crop) / 2);
    let mut out = Array3::<f32>::zeros((3, t.crop, t.crop));
    for y in 0..t.crop {
        for x in 0..t.crop {
            let sx = if flip { x0 + t.crop - 1 - x } else { x0 + x };
            let p = rgb.get_pixel(sx as u32, (y0 + y) as u32);
            for c in 0..3 {
                out[[c, y, x]] = (p[c] as f32 / 255.0 - t.mean[c]) / t.std[c];
            }
        }
    }
    Ok(out)
}

/// One batch: images `[n, 3, crop, crop]`, their labels and paths, and the
/// files of the batch that could not be loaded (with why).
#[derive(Debug)]
pub struct Batch {
    /// The images that loaded.
    pub images: Array4<f32>,
    /// Their labels.
    pub labels: Vec<usize>,
    /// Their files.
    pub paths: Vec<PathBuf>,
    /// Files skipped, with the error.
    pub skipped: Vec<(PathBuf, String)>,
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a panic".into(),
    }
}

/// Loads `items` (file, label) into one batch, decoding in parallel. With
/// `flip_seed`, each image is mirrored with probability 1/2, decided by the
/// seed and the image's position `first + i` in its epoch.
pub fn load_batch(items: &[(PathBuf, usize)], t: &Transform, flip_seed: Option<(u64, u64)>, first: usize) -> Batch {
    let decode = |i: usize| {
        let path = &items[i].0;
        let flip = flip_seed
            .is_some_and(|(seed, epoch)| rng::uniform01(rng::stream(seed, epoch as i64), (first + i) as u64) < 0.5);
        // A decoder bug is one bad file, not the end of training.
        std::panic::catch_unwind(AssertUnwindSafe(|| load_image(path, t, flip).map_err(|e| e.to_string())))
            .unwrap_or_else(|p| Err(format!("the image decoder failed on it: {}", panic_message(p.as_ref()))))
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len()).max(1);
    let per = items.len().div_ceil(threads).max(1);
    let mut loaded: Vec<std::result::Result<Array3<f32>, String>> = Vec::with_capacity(items.len());
    std::thread::scope(|scope| {
        let chunks: Vec<std::ops::Range<usize>> =
            (0..items.len()).step_by(per).map(|s| s..(s + per).min(items.len())).collect();
        // Chunks after the first go to helper threads; one that cannot be
        // started is decoded here instead.
        let helpers: Vec<_> = chunks[1.min(chunks.len())..]
            .iter()
            .map(|r| {
                let (range, decode) = (r.clone(), &decode);
                std::thread::Builder::new()
                    .name("rhea-image-decode".into())
                    .spawn_scoped(scope, move || range.map(decode).collect::<Vec<_>>())
                    .map_err(|_| r.clone())
            })
            .collect();
        if let Some(r) = chunks.first() {
            loaded.extend(r.clone().map(decode));
        }
        for helper in helpers {
            match helper {
                Ok(handle) => match handle.join() {
                    Ok(part) => loaded.extend(part),
                    Err(p) => unreachable!("decoding catches panics: {}", panic_message(p.as_ref())),
                },
                Err(r) => loaded.extend(r.map(decode)),
            }
        }
    });
    let mut images = Vec::new();
    let (mut labels, mut paths, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for ((path, label), result) in items.iter().zip(loaded) {
        match result {
            Ok(img) => {
                images.push(img);
                labels.push(*label);
                paths.push(path.clone());
            }
            Err(e) => skipped.push((path.clone(), e)),
        }
    }
    let views: Vec<_> = images.iter().map(|a| a.view()).collect();
    let images = if views.is_empty() {
        Array4::zeros((0, 3, t.crop, t.crop))
    } else {
        ndarray::stack(Axis(0), &views).expect("every image has the transform's shape")
    };
    Batch { images, labels, paths, skipped }
}

/// What an epoch decodes: its items in order, batch by batch.
struct Epoch {
    items: Vec<(PathBuf, usize)>,
    t: Transform,
    flip_seed: Option<(u64, u64)>,
    batch_size: usize,
}

impl Epoch {
    fn len(&self) -> usize {
        self.items.len().div_ceil(self.batch_size)
    }

    fn batch(&self, b: usize) -> Batch {
        let start = b * self.batch_size;
        let chunk = &self.items[start..(start + self.batch_size).min(self.items.len())];
        load_batch(chunk, &self.t, self.flip_seed, start)
    }
}

/// Batches of an epoch, decoded one ahead on a background thread. Each
/// item is a batch, or the error that ended the epoch (the loader thread
/// failed); after an error the iteration ends.
pub struct Batches {
    receiver: mpsc::Receiver<Batch>,
    worker: Option<std::thread::JoinHandle<()>>,
    /// Without a loader thread (none could be started): the epoch, decoded
    /// here batch by batch, and the next batch's index.
    inline: Option<(Arc<Epoch>, usize)>,
}

impl Batches {
    /// The epoch's batches of `items` in order (shuffled first with
    /// `shuffle_seed`, mirrored at random with `flip_seed`), `batch_size`
    /// images each (the last may be smaller). A `batch_size` of 0 is an error.
    pub fn new(
        items: &[(PathBuf, usize)],
        t: &Transform,
        batch_size: usize,
        shuffle_seed: Option<u64>,
        flip_seed: Option<(u64, u64)>,
    ) -> Result<Batches> {
        if batch_size == 0 {
            return Err(NnError::Invalid("the batch size must be at least 1".into()));
        }
        let mut items = items.to_vec();
        if let Some(seed) = shuffle_seed {
            let order = crate::data::shuffled(items.len(), seed);
            items = order.into_iter().map(|i| items[i].clone()).collect();
        }
        let epoch = Arc::new(Epoch { items, t: t.clone(), flip_seed, batch_size });
        // One batch decoded ahead of the one being used.
        let (sender, receiver) = mpsc::sync_channel(1);
        let work = Arc::clone(&epoch);
        let spawned = std::thread::Builder::new().name("rhea-image-loader".into()).spawn(move || {
            for b in 0..work.len() {
                if sender.send(work.batch(b)).is_err() {
                    return;
                }
            }
        });
        Ok(match spawned {
            Ok(worker) => Batches { receiver, worker: Some(worker), inline: None },
            Err(_) => Batches { receiver, worker: None, inline: Some((epoch, 0)) },
        })
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        if let Some((epoch, next)) = &mut self.inline {
            let b = *next;
            *next += 1;
            return (b < epoch.len()).then(|| Ok(epoch.batch(b)));
        }
        match self.receiver.recv() {
            Ok(batch) => Some(Ok(batch)),
            // The loader hung up: finished, or it failed.
            Err(_) => match self.worker.take()?.join() {
                Ok(()) => None,
                Err(p) => {
                    Some(Err(NnError::Run(format!("the image loader thread failed: {}", panic_message(p.as_ref())))))
                }
            },
        }
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        // Hang up, so that a worker waiting to send gives up, then wait for it.
        drop(std::mem::replace(&mut self.receiver, mpsc::sync_channel(0).1));
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
        img.save(path).unwrap();
    }

    #[test]
    fn folders_classes_transforms_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        for class in ["dogs", "cats"] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
        }
        // A 40x20 image: left half red, right half blue.
        write_png(&dir.path().join("cats/a.png"), 40, 20, |x, _| if x < 20 { [255, 0, 0] } else { [0, 0, 255] });
        write_png(&dir.path().join("dogs/b.PNG"), 8, 8, |_, _| [0, 255, 0]);
        std::fs::write(dir.path().join("dogs/broken.jpg"), b"\xff\xd8 not really a jpeg").unwrap();
        std::fs::write(dir.path().join("dogs/notes.txt"), b"ignored").unwrap();
        let folder = ImageFolder::open(dir.path()).unwrap();
        assert_eq!(folder.classes, ["cats", "dogs"]);
        let names: Vec<_> =
            folder.items.iter().map(|(p, l)| (p.file_name().unwrap().to_string_lossy().into_owned(), *l)).collect();
        assert_eq!(names, [("a.png".into(), 0), ("b.PNG".into(), 1), ("broken.jpg".into(), 1)]);

        let t = Transform { resize: 10, crop: 10, mean: [0.0; 3], std: [1.0; 3] };
        // The shorter side (20) becomes 10, so 20x10, center crop 10x10: x 5..15.
        let img = load_image(&folder.items[0].0, &t, false).unwrap();
        assert_eq!(img.shape(), [3, 10, 10]);
        assert!(img[[0, 5, 0]] > 0.9 && img[[2, 5, 0]] < 0.1, "left column is red");
        assert!(img[[2, 5, 9]] > 0.9 && img[[0, 5, 9]] < 0.1, "right column is blue");
        let flipped = load_image(&folder.items[0].0, &t, true).unwrap();
        assert!(flipped[[2, 5, 0]] > 0.9, "mirrored");
        let norm = load_image(&folder.items[1].0, &Transform::imagenet(8), false).unwrap();
        assert!((norm[[1, 3, 3]] - (1.0 - 0.456) / 0.224).abs() < 1e-4);

        let batches: Vec<Batch> =
            Batches::new(&folder.items, &t, 2, Some(3), None).unwrap().map(Result::unwrap).collect();
        let loaded: usize = batches.iter().map(|b| b.images.shape()[0]).sum();
        let skipped: Vec<_> = batches.iter().flat_map(|b| b.skipped.iter()).collect();
        assert_eq!((loaded, skipped.len()), (2, 1));
        assert!(skipped[0].0.ends_with("broken.jpg") && skipped[0].1.contains("not a readable image"), "{skipped:?}");
        assert!(ImageFolder::open(&dir.path().join("cats")).is_err(), "a folder without class folders");
        assert!(ImageFolder::open(&dir.path().join("missing")).unwrap_err().to_string().contains("missing"));
    }

    #[test]
    fn a_failing_loader_thread_is_an_error_and_no_thread_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cats")).unwrap();
        write_png(&dir.path().join("cats/a.png"), 8, 8, |_, _| [1, 2, 3]);
        write_png(&dir.path().join("cats/b.png"), 8, 8, |_, _| [1, 2, 3]);
        let folder = ImageFolder::open(dir.path()).unwrap();
        let t = Transform::imagenet(8);
        let worker = std::thread::spawn(|| panic!("injected failure"));
        let mut batches = Batches { receiver: mpsc::sync_channel(0).1, worker: Some(worker), inline: None };
        let e = batches.next().unwrap().unwrap_err().to_string();
        assert_eq!(e, "the image loader thread failed: injected failure");
        assert!(batches.next().is_none(), "the iteration ends after the error");
        // Decoding on this thread gives the same batches as the loader thread.
        let epoch = Epoch { items: folder.items.clone(), t: t.clone(), flip_seed: None, batch_size: 1 };
        let inline: Vec<Batch> =
            Batches { receiver: mpsc::sync_channel(0).1, worker: None, inline: Some((Arc::new(epoch), 0)) }
                .map(Result::unwrap)
                .collect();
        let threaded: Vec<Batch> =
            Batches::new(&folder.items, &t, 1, None, None).unwrap().map(Result::unwrap).collect();
        assert_eq!(inline.len(), 2);
        for (a, b) in inline.iter().zip(&threaded) {
            assert_eq!((&a.images, &a.paths), (&b.images, &b.paths));
        }
        assert!(Batches::new(&folder.items, &t, 0, None, None).is_err(), "batch size 0");
    }
}
