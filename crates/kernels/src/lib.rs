//! What runs the model's hot loops: the kernel set chosen for this CPU, and the threads.
//!
//! * [`Kernels`]: one instruction set's ternary kernel, dense kernel and f32 ops, chosen together
//!   from one feature check per instruction set (x86: AVX-512 VNNI, then AVX2; aarch64: NEON
//!   with i8mm, with dotprod, or plain; else the portable reference). [`Kernels::from_env`] reads `BITNET_KERNEL=NAME` — the only place that reads it —
//!   to force a set, for benchmarks and bisecting; a model holds the set it was loaded with.
//! * [`ThreadPool`]: persistent workers that spin between jobs, so a parallel region costs well
//!   under a microsecond (rayon costs 6–28 µs here, and decoding runs hundreds per token).
//!
//! ```
//! let kernels = bitnet_kernels::Kernels::best();
//! let pool = bitnet_kernels::ThreadPool::new(2);
//! let hits = std::sync::atomic::AtomicUsize::new(0);
//! pool.run(&|_thread| { hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed); });
//! assert_eq!(hits.into_inner(), 2);
//! println!("{} on {} threads", kernels.name(), pool.threads());
//! ```

mod pool;

use std::sync::Arc;

pub use bitnet_quant::vecops::F32Ops;
pub use pool::ThreadPool;

use bitnet_quant::{DenseKernel, PackedTernary, QuantError, QuantizedActivations, ScalarDense, ScalarKernel};
use bitnet_quant::{TernaryFormat, TernaryKernel};
use bitnet_tl_lut::Lut;

/// A set's ternary kernel with bitnet_tl_lut's lookup loops of the same instruction set for
/// TL1/TL2 (which the set's own loops hand to the reference).
struct WithLut {
    base: Arc<dyn TernaryKernel>,
    lut: Lut,
}

impl TernaryKernel for WithLut {
    fn name(&self) -> &'static str {
        self.base.name()
    }

    fn supports(&self, format: TernaryFormat) -> bool {
        self.lut.supports(format) || self.base.supports(format)
    }

    fn quantize(&self, x: &[f32], cols: usize) -> Result<QuantizedActivations, QuantError> {
        self.base.quantize(x, cols)
    }

    fn gemm_rows(
        &self,
        w: &PackedTernary<'_>,
        x: &QuantizedActivations,
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> Result<(), QuantError> {
        if self.lut.supports(w.format) {
            self.lut.gemm_rows(w, x, rows, out)
        } else {
            self.base.gemm_rows(w, x, rows, out)
        }
    }
}

/// The wrapping sum of `buf` with the widest loads this CPU has: a read-bandwidth probe for
/// benchmarks (x86: AVX2 when present; elsewhere a plain loop the compiler vectorizes).
pub fn stream_sum(buf: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        bitnet_kernels_x86::sum_u64(buf)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        buf.iter().fold(0u64, |a, &b| a.wrapping_add(b))
    }
}

/// The environment variable that forces a kernel set by name.
pub const KERNEL_ENV: &str = "BITNET_KERNEL";

/// One instruction set's kernels: everything the forward pass runs on the CPU's vector units.
#[derive(Clone)]
pub struct Kernels {
    name: &'static str,
    ternary: Arc<dyn TernaryKernel>,
    dense: Arc<dyn DenseKernel>,
    f32: F32Ops,
    /// The lookup-table loops that run TL1/TL2 in place, if the set has them.
    lut: Option<Lut>,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Default for Kernels {
    fn default() -> Self {
        Kernels::best()
    }
}

impl Kernels {
    /// A set from its parts (a kernel crate's own set, or a mix for experiments). TL1/TL2 go to
    /// bitnet_tl_lut's loops of the same instruction set when `name` is one of the x86 or NEON
    /// sets and this CPU runs them.
    pub fn new(
        name: &'static str,
        ternary: Arc<dyn TernaryKernel>,
        dense: Arc<dyn DenseKernel>,
        f32: F32Ops,
    ) -> Kernels {
        let lut = Lut::for_set(name);
        let ternary = match lut {
            Some(lut) => Arc::new(WithLut { base: ternary, lut }) as Arc<dyn TernaryKernel>,
            None => ternary,
        };
        Kernels { name, ternary, dense, f32, lut }
    }

    /// A set taking its ternary kernel, dense kernel and f32 ops from three sets: for finding
    /// which part of a set makes results differ.
    pub fn mixed(name: &'static str, ternary: &Kernels, dense: &Kernels, f32: &Kernels) -> Kernels {
        // The ternary kernel comes with its set's lookup loops already routed in (`new` would
        // wrap it again when `name` names an instruction set).
        Kernels { name, ternary: ternary.ternary.clone(), dense: dense.dense.clone(), f32: f32.f32, lut: ternary.lut }
    }

    /// The portable reference kernels (`scalar`): every other set is tested against these.
    pub fn scalar() -> Kernels {
        Kernels::new("scalar", Arc::new(ScalarKernel), Arc::new(ScalarDense), bitnet_quant::vecops::SCALAR)
    }

    /// Every set this CPU runs, fastest first, the scalar reference last.
    pub fn available() -> Vec<Kernels> {
        let mut out = Vec::new();
        // Each kernel crate's set whose `detect()` finds its CPU features, in the order given.
        #[allow(unused_macros)]
        macro_rules! sets {
            ($($set:ty),*) => {
                $(
                    if let Some(k) = <$set>::detect() {
                        out.push(Kernels::new(<$set>::NAME, Arc::new(k), Arc::new(k), k.f32_ops()));
                    }
                )*
            };
        }
        // `avx-vnni-evex`, the AVX-VNNI loops in EVEX encoding: on AVX-512 CPUs slower than
        // `avx512-vnni` (256-bit prompt loops) but listed, so that every test over the sets runs them.
        #[cfg(target_arch = "x86_64")]
        sets!(
            bitnet_kernels_x86::Avx512,
            bitnet_kernels_x86::AvxVnni,
            bitnet_kernels_x86::AvxVnniEvex,
            bitnet_kernels_x86::Avx2
        );
        #[cfg(target_arch = "aarch64")]
        sets!(bitnet_kernels_arm::I8mm, bitnet_kernels_arm::Dotprod, bitnet_kernels_arm::Neon);
        out.push(Kernels::scalar());
        out
    }

    /// Names of every set this crate knows, whether or not this CPU runs it.
    pub const KNOWN: &'static [&'static str] =
        &["avx512-vnni", "avx-vnni", "avx-vnni-evex", "avx2", "neon-i8mm", "neon-dotprod", "neon", "scalar"];

    /// The fastest set this CPU runs.
    pub fn best() -> Kernels {
        Kernels::available().swap_remove(0)
    }

    /// The set called `name`, or an error listing what this CPU offers.
    pub fn named(name: &str) -> Result<Kernels, String> {
        let mut all = Kernels::available();
        match all.iter().position(|k| k.name == name) {
            Some(i) => Ok(all.swap_remove(i)),
            None => {
                let names: Vec<_> = all.iter().map(|k| k.name).collect();
                let what = if Kernels::KNOWN.contains(&name) { "not available on this CPU" } else { "unknown" };
                Err(format!("kernel set {name:?} is {what} (this CPU offers: {})", names.join(", ")))
            }
        }
    }

    /// The set `BITNET_KERNEL` names, or the fastest when it is unset or empty.
    pub fn from_env() -> Result<Kernels, String> {
        match std::env::var(KERNEL_ENV) {
            Ok(want) if !want.is_empty() => Kernels::named(&want).map_err(|e| format!("{KERNEL_ENV}: {e}")),
            _ => Ok(Kernels::best()),
        }
    }

    /// The set's name ("avx512-vnni", "avx-vnni", "avx-vnni-evex", "avx2", "neon-i8mm", "neon-dotprod", "neon", "scalar").
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The lookup-table loops that run TL1/TL2 tensors in place ("lut-avx512", ...), if this
    /// set has them; without, a model repacks TL tensors to I2_S at load.
    pub fn lut(&self) -> Option<&'static str> {
        self.lut.map(|l| l.name())
    }

    /// Whether TQ1_0 matrices run faster repacked to TL2 (at load) on this set's lookup loops
    /// than on its own TQ1_0 kernels. The table walk takes fewer instructions per weight than
    /// decoding base-3 digits for one token, and the TL2 panel GEMMs match the TQ1_0 GEMMs
    /// where both use the same integer dot product: every x86 set (2B-4T tg on Zen 3 1.4–1.6×,
    /// docs/kernels.md) and `neon-dotprod` (llvm-mca cycles per 128 weights, one token: TL2 walk
    /// 20.8 / 16.0 / 8.8 against TQ1_0's `sdot` loop 40.5 / 37.0 / 15.3 on A76 / N1 / M1).
    /// Not `neon` (no panel: a prompt would walk the tables once per token, more cycles than the
    /// TQ1_0 `smlal` GEMM) nor `neon-i8mm` (its `smmla` TQ1_0 GEMM does twice the products per
    /// cycle of the `sdot` panel; for one token the walk, 8.1 / 13.8 cycles on V1 / N2, now
    /// beats TQ1_0's loop, which it tied at 11.1 / 19.7 before the base-31 tables: a trade of
    /// prompt speed for generation speed that wants a measurement on such a CPU).
    pub fn runs_tq1_0_as_tl2(&self) -> bool {
        self.lut.is_some() && !matches!(self.name, "neon" | "neon-i8mm")
    }

    /// Whether this set's own loops (not the reference it falls back to) read I2_S in the
    /// four-row order (`I2sLayout::X86Rows4`), which a model then moves its I2_S matrices to at
    /// load: the AVX-512 set. The scalar set reads every order at the same speed.
    pub fn reads_i2s_rows4(&self) -> bool {
        self.ternary.name() != "scalar" && self.ternary.supports(TernaryFormat::I2s(bitnet_quant::I2sLayout::X86Rows4))
    }

    /// Ternary weights × int8 activations.
    pub fn ternary(&self) -> &dyn TernaryKernel {
        self.ternary.as_ref()
    }

    /// Float and block-quantized weights (heads, embeddings) × f32 activations.
    pub fn dense(&self) -> &dyn DenseKernel {
        self.dense.as_ref()
    }

    /// f32 vector operations (attention, norms).
    pub fn f32(&self) -> &F32Ops {
        &self.f32
    }
}
