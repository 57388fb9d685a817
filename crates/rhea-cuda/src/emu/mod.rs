//! A PTX emulator for the subset of PTX rhea writes: the test oracle that
//! checks what generated kernels *compute*, on machines without a GPU.
//! `ptxas` only proves the text assembles; here every entry runs, thread
//! by thread with warps in lock-step, on host memory, and its results are
//! compared with the kernel IR's reference evaluator
//! (`tests/optimizer/emulated.rs` does this for every kernel the test
//! suite generates).
//!
//! What it models: 1-d grids and blocks, 32-lane warps whose lanes diverge
//! and reconverge, `bar.sync`, `shfl.sync.down`, global and shared memory,
//! and the arithmetic of every instruction the lowering emits with IEEE
//! semantics (`.rn` is exact rounding, as on the GPU). What it does not:
//! timing, caches, memory-ordering between blocks (blocks run one after
//! another, in reverse order), and anything rhea does not emit, which is
//! an error naming the instruction rather than a guess.
//!
//! ```
//! use rhea_cuda::emu::{Memory, Module};
//! let ptx = ".version 7.8\n.target sm_80\n.address_size 64\n\n\
//!     .visible .entry double(\n\t.param .u64 double_p0\n)\n{\n\
//!     \t.reg .b64 %rd<4>;\n\t.reg .b32 %r<2>;\n\t.reg .f32 %f<3>;\n\
//!     \tld.param.u64 %rd1, [double_p0];\n\tmov.u32 %r1, %tid.x;\n\
//!     \tmul.wide.u32 %rd2, %r1, 4;\n\tadd.s64 %rd3, %rd1, %rd2;\n\
//!     \tld.global.f32 %f1, [%rd3];\n\tadd.rn.f32 %f2, %f1, %f1;\n\
//!     \tst.global.f32 [%rd3], %f2;\n\tret;\n}\n";
//! let module = Module::parse(ptx).unwrap();
//! let mut mem = Memory::default();
//! let x = mem.alloc(8 * 4);
//! mem.write(x, &[1.5f32; 8].map(f32::to_le_bytes).concat()).unwrap();
//! module.launch("double", 1, 8, &[x], &mut mem).unwrap();
//! assert_eq!(&mem.read(x, 4).unwrap()[..], &3.0f32.to_le_bytes());
//! ```

mod device;
mod parse;
mod run;

pub(crate) use device::EmulatedDriver;

use std::collections::HashMap;

/// Global memory: allocations at distinct, 256-byte-aligned addresses with
/// gaps between them, so an access past one's end hits nothing.
#[derive(Default)]
pub struct Memory {
    /// (base address, bytes), by base.
    buffers: Vec<(u64, Vec<u8>)>,
    /// Where the next allocation goes: addresses are never reused, so a
    /// use after free finds nothing.
    next: u64,
}

/// Where the first allocation starts; lower addresses are never valid.
const FIRST: u64 = 1 << 20;
const ALIGN: u64 = 256;

impl Memory {
    /// A new allocation of `bytes`, filled with `0xFF` (NaN as floats, -1
    /// as integers: what a kernel fails to write shows). Returns its address.
    pub fn alloc(&mut self, bytes: usize) -> u64 {
        let base = self.next.max(FIRST);
        self.next = (base + bytes as u64 + ALIGN).div_ceil(ALIGN) * ALIGN;
        self.buffers.push((base, vec![0xFF; bytes]));
        base
    }

    /// Frees the allocation at `at`; its size (0 if there is none).
    pub fn free(&mut self, at: u64) -> usize {
        match self.buffers.binary_search_by_key(&at, |(b, _)| *b) {
            Ok(i) => self.buffers.remove(i).1.len(),
            Err(_) => 0,
        }
    }

    /// The allocation holding `[at, at + len)` and the offset in it.
    fn find(&self, at: u64, len: usize) -> Result<(usize, usize), String> {
        let i = self.buffers.partition_point(|(b, _)| *b <= at);
        if let Some(i) = i.checked_sub(1) {
            let (b, d) = &self.buffers[i];
            let off = (at - b) as usize;
            if off + len <= d.len() {
                return Ok((i, off));
            }
        }
        Err(format!("a {len}-byte access at {at:#x} lies outside every allocation"))
    }

    /// Checks that `at` is aligned to `len`, as a kernel's access must be.
    pub(crate) fn check_alignment(&self, at: u64, len: usize) -> Result<(), String> {
        if !at.is_multiple_of(len as u64) {
            return Err(format!("a {len}-byte access at {at:#x} is misaligned"));
        }
        Ok(())
    }

    /// The `len` bytes at `at`.
    pub fn read(&self, at: u64, len: usize) -> Result<&[u8], String> {
        let (i, off) = self.find(at, len)?;
        Ok(&self.buffers[i].1[off..off + len])
    }

    /// Writes `bytes` at `at`.
    pub fn write(&mut self, at: u64, bytes: &[u8]) -> Result<(), String> {
        let (i, off) = self.find(at, bytes.len())?;
        self.buffers[i].1[off..off + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }
}

/// A parsed PTX module.
pub struct Module {
    pub(crate) entries: HashMap<String, parse::Entry>,
}

impl Module {
    /// Parses `ptx`; an instruction the emulator does not know is an error
    /// naming its line.
    pub fn parse(ptx: &str) -> Result<Module, String> {
        Ok(Module { entries: parse::parse_module(ptx)? })
    }

    /// Runs entry `name` over `grid` blocks of `block` threads, its `.u64`
    /// parameters `params` (addresses from [`Memory::alloc`]).
    pub fn launch(&self, name: &str, grid: u32, block: u32, params: &[u64], mem: &mut Memory) -> Result<(), String> {
        let entry = self.entries.get(name).ok_or_else(|| format!("the module has no entry {name}"))?;
        run::launch(entry, grid, block, params, mem).map_err(|e| format!("{name}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(body: &str, shared: &str) -> Module {
        let ptx = format!(
            ".version 7.8\n.target sm_80\n.address_size 64\n\n.visible .entry k(\n\t.param .u64 k_p0\n)\n{{\n{shared}\n{body}}}\n"
        );
        Module::parse(&ptx).unwrap_or_else(|e| panic!("{e}\n{ptx}"))
    }

    /// out[tid] = the sum over the warp of tid, by shuffles, for 64 threads.
    #[test]
    fn shuffles_and_barriers_combine_a_block() {
        let m = module(
            "\tld.param.u64 %rd1, [k_p0];\n\tmov.u32 %r1, %tid.x;\n\tmov.u32 %r2, %r1;\n\
             \tshfl.sync.down.b32 %r3, %r2, 16, 31, -1;\n\tadd.u32 %r2, %r2, %r3;\n\
             \tshfl.sync.down.b32 %r3, %r2, 8, 31, -1;\n\tadd.u32 %r2, %r2, %r3;\n\
             \tshfl.sync.down.b32 %r3, %r2, 4, 31, -1;\n\tadd.u32 %r2, %r2, %r3;\n\
             \tshfl.sync.down.b32 %r3, %r2, 2, 31, -1;\n\tadd.u32 %r2, %r2, %r3;\n\
             \tshfl.sync.down.b32 %r3, %r2, 1, 31, -1;\n\tadd.u32 %r2, %r2, %r3;\n\
             \tshr.u32 %r4, %r1, 5;\n\tand.b32 %r5, %r1, 31;\n\tsetp.ne.u32 %p1, %r5, 0;\n\
             \tmul.wide.u32 %rd2, %r4, 4;\n\tmov.u64 %rd3, k_smem;\n\tadd.s64 %rd4, %rd3, %rd2;\n\
             \t@%p1 bra $SKIP;\n\tst.shared.u32 [%rd4], %r2;\n$SKIP:\n\tbar.sync 0;\n\
             \tld.shared.u32 %r6, [%rd3];\n\tld.shared.u32 %r7, [%rd3+4];\n\tadd.u32 %r8, %r6, %r7;\n\
             \tmul.wide.u32 %rd5, %r1, 4;\n\tadd.s64 %rd6, %rd1, %rd5;\n\tst.global.u32 [%rd6], %r8;\n\tret;\n",
            "\t.shared .align 8 .b8 k_smem[8];",
        );
        let mut mem = Memory::default();
        let out = mem.alloc(64 * 4);
        m.launch("k", 1, 64, &[out], &mut mem).unwrap();
        let total: u32 = (0..64).sum();
        for t in 0..64 {
            assert_eq!(mem.read(out + 4 * t, 4).unwrap(), &total.to_le_bytes(), "thread {t}");
        }
    }

    #[test]
    fn the_emulator_refuses_what_a_gpu_would_get_silently_wrong() {
        let mut mem = Memory::default();
        let out = mem.alloc(16);
        let run = |body: &str, mem: &mut Memory| module(body, "").launch("k", 1, 32, &[out], mem).unwrap_err();
        // A register read before anything wrote it.
        let e = run("\tld.param.u64 %rd1, [k_p0];\n\tst.global.f32 [%rd1], %f1;\n\tret;\n", &mut mem);
        assert!(e.contains("reads %f1 before"), "{e}");
        // Past the end of the allocation.
        let e = run(
            "\tld.param.u64 %rd1, [k_p0];\n\tmov.f32 %f1, 0f00000000;\n\tst.global.f32 [%rd1+16], %f1;\n\tret;\n",
            &mut mem,
        );
        assert!(e.contains("outside every allocation"), "{e}");
        // Misaligned.
        let e = run(
            "\tld.param.u64 %rd1, [k_p0];\n\tmov.f32 %f1, 0f00000000;\n\tst.global.f32 [%rd1+2], %f1;\n\tret;\n",
            &mut mem,
        );
        assert!(e.contains("misaligned"), "{e}");
        // A shuffle in a branch taken by some lanes only.
        let e = run(
            "\tmov.u32 %r1, %tid.x;\n\tsetp.lt.u32 %p1, %r1, 4;\n\t@%p1 bra $END;\n\
             \tshfl.sync.down.b32 %r2, %r1, 1, 31, -1;\n$END:\n\tret;\n",
            &mut mem,
        );
        assert!(e.contains("reached by 28 of the warp's 32 lanes"), "{e}");
        // Warp 1 reads what warp 0 wrote with no barrier between: a race.
        let racy = module(
            "\tmov.u32 %r1, %tid.x;\n\tmov.u64 %rd1, k_smem;\n\tsetp.ne.u32 %p1, %r1, 0;\n\
             \t@%p1 bra $READ;\n\tst.shared.u32 [%rd1], %r1;\n$READ:\n\tld.shared.u32 %r2, [%rd1];\n\tret;\n",
            "\t.shared .align 8 .b8 k_smem[8];",
        );
        let e = racy.launch("k", 1, 64, &[out], &mut mem).unwrap_err();
        assert!(e.contains("a race: shared byte 0 was"), "{e}");
        // An endless loop would be reported, not hang: a loop that ends is fine.
        let ok = module(
            "\tmov.u32 %r1, 0;\n$TOP:\n\tadd.u32 %r1, %r1, 1;\n\tsetp.lt.u32 %p1, %r1, 1000;\n\t@%p1 bra $TOP;\n\tret;\n",
            "",
        );
        ok.launch("k", 2, 32, &[out], &mut mem).unwrap();
        // Something rhea never writes is refused by name.
        let ptx = ".visible .entry k(\n)\n{\n\ttex.1d.v4.f32.s32 {%f1, %f2, %f3, %f4}, [t, {%r1}];\n}\n";
        assert!(Module::parse(ptx).err().unwrap().contains("`tex.1d.v4.f32.s32` is not emulated"));
    }
}
