//! The cases, by family: files (graph, tensor, CSV, image folders), flags,
//! and faults (closed pipes, memory, file writes and signals, threads, the
//! NaN guard).

mod faults;
mod files;
mod flags;

use crate::fixtures::Fixtures;
use crate::runner::{Case, Prog};

const SONAR: Prog = Prog::Example("sonar_mlp");
const VGG: Prog = Prog::Example("vgg16_dogscats");
const QUICK: Prog = Prog::Example("quickstart");

/// Every case.
pub fn all(fx: &Fixtures) -> Vec<Case> {
    let mut cases = Vec::new();
    files::graph_files(fx, &mut cases);
    files::tensor_files(fx, &mut cases);
    files::csv_files(fx, &mut cases);
    files::image_folders(fx, &mut cases);
    flags::flags(fx, &mut cases);
    faults::closed_pipes(fx, &mut cases);
    faults::memory(fx, &mut cases);
    faults::writes(fx, &mut cases);
    faults::nan_guard(fx, &mut cases);
    faults::threads(&mut cases);
    cases
}
