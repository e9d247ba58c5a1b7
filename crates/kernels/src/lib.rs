//! What runs the model's hot loops: the kernel chosen for this CPU, and the threads.
//!
//! * [`ternary_kernel`] picks the fastest [`TernaryKernel`] the CPU supports (AVX-512 VNNI, then
//!   AVX2, else the scalar reference); `BITNET_KERNEL=scalar|avx2|avx512-vnni` forces one, for
//!   benchmarks and bisecting.
//! * [`ThreadPool`]: persistent workers that spin between jobs, so a parallel region costs well
//!   under a microsecond (rayon costs 6–28 µs here, and decoding runs hundreds per token).
//!
//! ```
//! let kernel = bitnet_kernels::ternary_kernel().unwrap();
//! let pool = bitnet_kernels::ThreadPool::new(2);
//! let hits = std::sync::atomic::AtomicUsize::new(0);
//! pool.run(&|_thread| { hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed); });
//! assert_eq!(hits.into_inner(), 2);
//! println!("{} on {} threads", kernel.name(), pool.threads());
//! ```

mod pool;

pub use pool::ThreadPool;

use bitnet_quant::{DenseKernel, ScalarDense, ScalarKernel, TernaryKernel};

/// Every ternary kernel this CPU can run, fastest first (the scalar reference last).
pub fn available_ternary_kernels() -> Vec<Box<dyn TernaryKernel>> {
    let mut out: Vec<Box<dyn TernaryKernel>> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(k) = bitnet_kernels_x86::Avx512Kernel::detect() {
            out.push(Box::new(k));
        }
        if let Some(k) = bitnet_kernels_x86::Avx2Kernel::detect() {
            out.push(Box::new(k));
        }
    }
    out.push(Box::new(ScalarKernel));
    out
}

/// The environment variable that forces a kernel by name.
pub const KERNEL_ENV: &str = "BITNET_KERNEL";

/// The fastest ternary kernel for this CPU, or the one `BITNET_KERNEL` names (an error if this
/// CPU cannot run it or the name is unknown).
pub fn ternary_kernel() -> Result<Box<dyn TernaryKernel>, String> {
    let mut all = available_ternary_kernels();
    match std::env::var(KERNEL_ENV) {
        Ok(want) if !want.is_empty() => {
            let names: Vec<_> = all.iter().map(|k| k.name()).collect();
            match all.iter().position(|k| k.name() == want) {
                Some(i) => Ok(all.swap_remove(i)),
                None => {
                    Err(format!("{KERNEL_ENV}={want}: not available on this CPU (available: {})", names.join(", ")))
                }
            }
        }
        _ => Ok(all.swap_remove(0)),
    }
}

/// Every dense kernel this CPU can run, fastest first (the scalar reference last).
pub fn available_dense_kernels() -> Vec<Box<dyn DenseKernel>> {
    let mut out: Vec<Box<dyn DenseKernel>> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(k) = bitnet_kernels_x86::Avx512Dense::detect() {
            out.push(Box::new(k));
        }
        if let Some(k) = bitnet_kernels_x86::Avx2Dense::detect() {
            out.push(Box::new(k));
        }
    }
    out.push(Box::new(ScalarDense));
    out
}

/// The fastest dense kernel for this CPU (the scalar one when `BITNET_KERNEL=scalar`).
pub fn dense_kernel() -> Box<dyn DenseKernel> {
    let mut all = available_dense_kernels();
    if std::env::var(KERNEL_ENV).is_ok_and(|v| v == "scalar") {
        return all.pop().expect("the scalar kernel is always there");
    }
    all.swap_remove(0)
}

/// The f32 vector kernels (attention dot products, value accumulation) for this CPU; the
/// portable ones when `BITNET_KERNEL=scalar`. Chosen once.
pub fn f32_ops() -> &'static bitnet_quant::vecops::F32Ops {
    static OPS: std::sync::OnceLock<bitnet_quant::vecops::F32Ops> = std::sync::OnceLock::new();
    OPS.get_or_init(|| {
        if std::env::var(KERNEL_ENV).is_ok_and(|v| v == "scalar") {
            return bitnet_quant::vecops::SCALAR;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(ops) = bitnet_kernels_x86::vecops::best() {
            return ops;
        }
        bitnet_quant::vecops::SCALAR
    })
}
