//! torch's CPU summation order for a full f32 reduction, so that an absmean scale can equal
//! transformers' bit for bit.
//!
//! transformers computes `mean(|W|)` with torch, whose CPU `sum` (aten `SumKernel.cpp`,
//! `cascade_sum`) neither adds left to right nor rounds once: it splits the input among its
//! threads (chunks of `ceil(n / t)` elements once `n` reaches the 32 768-element grain), sums each
//! chunk in 8-lane vectors (its AVX2 kernel: torch registers no AVX-512 one for `sum`, and its
//! generic vector is 8 floats wide too) with four interleaved accumulators and a four-level
//! cascade, folds the lanes, and adds the per-thread results in thread order. The result therefore
//! depends on torch's thread count, which this module takes as a parameter. Verified against torch
//! 2.15 for 5 to 300 001 elements on 1 and 2 threads, and against transformers' `WeightQuant`
//! scales on 1, 2 and 3 threads (fixtures/reference/quant.json).
//!
//! One more caveat: transformers wraps `WeightQuant.forward` in `torch.compile`, and the inductor
//! kernel it gets reduces in its own order, which depends on the traced graph, static or dynamic
//! shapes, the ISA and torch's version. In the fixture's environment its scales equal eager
//! torch's in every case, but a standalone compiled `abs().mean()` was an ulp away in 6 of 12
//! shapes tried; so "transformers' scale" is defined per environment, and this module reproduces
//! the eager one.

/// torch's `at::internal::GRAIN_SIZE`: reductions smaller than this run on one thread.
const GRAIN: usize = 32_768;
/// Floats per `Vectorized<float>` in torch's AVX2 (and generic) kernels.
const LANES: usize = 8;

/// What the cascade adds: one f32 or a vector of lanes.
trait Acc: Copy {
    const ZERO: Self;
    fn add(self, other: Self) -> Self;
}

impl Acc for f32 {
    const ZERO: f32 = 0.0;
    fn add(self, other: f32) -> f32 {
        self + other
    }
}

impl Acc for [f32; LANES] {
    const ZERO: [f32; LANES] = [0.0; LANES];
    fn add(self, other: Self) -> Self {
        std::array::from_fn(|i| self[i] + other[i])
    }
}

/// ⌈log₂ x⌉ as torch's `CeilLog2` (1 for x ≤ 2).
fn ceil_log2(x: usize) -> usize {
    if x <= 2 { 1 } else { (usize::BITS - (x - 1).leading_zeros()) as usize }
}

/// torch's `multi_row_sum` with `NROWS` interleaved rows: `load(i, k)` is element `k` of step `i`.
/// Partial sums move up four levels every `2^level_power` steps so that only similar magnitudes
/// are added.
fn multi_row_sum<T: Acc, const NROWS: usize>(size: usize, load: impl Fn(usize, usize) -> T) -> [T; NROWS] {
    const LEVELS: usize = 4;
    let level_power = (ceil_log2(size) / LEVELS).max(4);
    let level_step = 1usize << level_power;
    let level_mask = level_step - 1;
    let mut acc = [[T::ZERO; NROWS]; LEVELS];
    let mut i = 0;
    while i + level_step <= size {
        for _ in 0..level_step {
            for (k, a) in acc[0].iter_mut().enumerate() {
                *a = a.add(load(i, k));
            }
            i += 1;
        }
        for j in 1..LEVELS {
            let (lower, upper) = acc.split_at_mut(j);
            for (hi, lo) in upper[0].iter_mut().zip(lower[j - 1].iter_mut()) {
                *hi = hi.add(*lo);
                *lo = T::ZERO;
            }
            if i & (level_mask << (j * level_power)) != 0 {
                break;
            }
        }
    }
    for i in i..size {
        for (k, a) in acc[0].iter_mut().enumerate() {
            *a = a.add(load(i, k));
        }
    }
    let [mut first, rest @ ..] = acc;
    for level in rest {
        for (a, b) in first.iter_mut().zip(level) {
            *a = a.add(b);
        }
    }
    first
}

/// torch's `row_sum`: four interleaved accumulators, the leftover elements into the first, then
/// the four folded in order.
fn row_sum<T: Acc>(size: usize, load: impl Fn(usize) -> T) -> T {
    const ILP: usize = 4;
    let steps = size / ILP;
    let mut parts = multi_row_sum::<T, ILP>(steps, |i, k| load(i * ILP + k));
    for i in steps * ILP..size {
        parts[0] = parts[0].add(load(i));
    }
    parts[1..].iter().fold(parts[0], |a, &p| a.add(p))
}

/// One thread's share: whole 8-float vectors through [`row_sum`], then the scalar tail, then the
/// lanes in order (`vectorized_inner_sum`); fewer than 8 values are summed as scalars.
fn chunk_sum(x: &[f32]) -> f32 {
    if x.len() < LANES {
        return row_sum(x.len(), |i| x[i]);
    }
    let vectors = x.len() / LANES;
    let lanes = row_sum(vectors, |i| -> [f32; LANES] { std::array::from_fn(|l| x[i * LANES + l]) });
    let tail = x[vectors * LANES..].iter().fold(0.0f32, |a, &v| a + v);
    lanes.iter().fold(tail, |a, &v| a + v)
}

/// `torch.sum` of a contiguous f32 tensor on the CPU with `threads` threads, bit for bit.
pub fn torch_sum(x: &[f32], threads: usize) -> f32 {
    let n = x.len();
    if n < GRAIN || threads <= 1 {
        return 0.0 + chunk_sum(x);
    }
    let parts = threads.min(n.div_ceil(GRAIN));
    let size = n.div_ceil(parts);
    // Each thread adds its sum into a zeroed buffer; the buffers are then added in thread order.
    x.chunks(size).map(|c| 0.0 + chunk_sum(c)).reduce(|a, b| a + b).unwrap_or(0.0)
}

/// `torch.mean` of a contiguous f32 tensor on the CPU: [`torch_sum`] divided by the count in f32.
pub fn torch_mean(x: &[f32], threads: usize) -> f32 {
    torch_sum(x, threads) / x.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_sums_are_exact_and_orders_differ_only_in_rounding() {
        assert_eq!(torch_sum(&[], 2), 0.0);
        assert_eq!(torch_sum(&[1.0, 2.0, 3.0], 1), 6.0);
        let x: Vec<f32> = (0..100_000).map(|i| (i % 7) as f32).collect();
        let exact: f64 = x.iter().map(|&v| f64::from(v)).sum();
        for threads in [1, 2, 3, 8] {
            assert_eq!(f64::from(torch_sum(&x, threads)), exact, "integers sum exactly, {threads} threads");
        }
        assert_eq!(ceil_log2(1), 1);
        assert_eq!(ceil_log2(17), 5);
    }
}
