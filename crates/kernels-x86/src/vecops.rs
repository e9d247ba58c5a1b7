//! f32 vector operations of the forward pass (attention dot products, value accumulation) on
//! the widest vector unit, as plain function pointers chosen once.

pub use bitnet_quant::vecops::F32Ops;

/// The widest f32 kernels this CPU runs, if any x86 vector path applies.
pub fn best() -> Option<F32Ops> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return Some(crate::avx512::ops());
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
            return Some(crate::avx2::ops());
        }
    }
    None
}

/// Every f32 kernel set this CPU runs (for tests).
pub fn available() -> Vec<F32Ops> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            out.push(crate::avx512::ops());
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
            out.push(crate::avx2::ops());
        }
    }
    out
}

/// The f32 kernels of one instruction set, from its vector width and intrinsics (the invoking
/// module provides `load_f32(&[f32]) -> vector` and `load_f16(&[u8]) -> vector`): the F32 and
/// F16 row dot products of the dense kernels, `axpy`, attention `scores` and `weighted_sum`,
/// and `ops()` handing them out as an [`F32Ops`].
macro_rules! f32_kernels {
    ($feat:literal, $label:literal, $w:literal, $vec:ty, $zero:ident, $set1:ident, $fma:ident, $add:ident, $store:ident,
     $reduce:ident) => {
        /// Σ w·x over `n` elements, `w(i)` loading a vector of weights at element `i` as f32:
        /// four accumulators over four vectors, then one vector at a time; the tail (< one
        /// vector) is left to the caller.
        #[target_feature(enable = $feat)]
        fn dot_lanes(n: usize, x: &[f32], w: impl Fn(usize) -> $vec) -> (f32, usize) {
            let mut acc = [$zero(); 4];
            let mut i = 0;
            while i + 4 * $w <= n {
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = $fma(w(i + $w * k), load_f32(&x[i + $w * k..]), *a);
                }
                i += 4 * $w;
            }
            while i + $w <= n {
                acc[0] = $fma(w(i), load_f32(&x[i..]), acc[0]);
                i += $w;
            }
            ($reduce($add($add(acc[0], acc[1]), $add(acc[2], acc[3]))), i)
        }

        #[target_feature(enable = $feat)]
        fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
            let n = w.len().min(x.len());
            let (s, i) = dot_lanes(n, x, |i| load_f32(&w[i..]));
            s + crate::dense::tail_f32(&w[i..n], &x[i..n])
        }

        #[target_feature(enable = $feat)]
        fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
            let n = x.len().min(w.len() / 2);
            let (s, i) = dot_lanes(n, x, |i| load_f16(&w[2 * i..]));
            s + crate::dense::tail_f16(&w[2 * i..2 * n], &x[i..n])
        }

        /// y += a·x.
        #[target_feature(enable = $feat)]
        fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
            let n = y.len().min(x.len());
            let va = $set1(a);
            let mut i = 0;
            while i + $w <= n {
                let v = $fma(va, load_f32(&x[i..]), load_f32(&y[i..]));
                let dst = &mut y[i..i + $w];
                // SAFETY: `dst` holds a vector's worth of writable floats; the store is unaligned.
                unsafe { $store(dst.as_mut_ptr(), v) };
                i += $w;
            }
            for (y, x) in y[i..n].iter_mut().zip(&x[i..n]) {
                *y += a * x;
            }
        }

        /// Attention scores: one query against keys `stride` apart (see bitnet_quant::vecops);
        /// `key(p, e)` loads a vector of key `p` from its element `e`, and `tail(p, j0)` is the
        /// scalar dot product of elements `j0..` (heads that are not whole vectors, e.g. 120
        /// wide: they had gone to the reference whole, a quarter of a 3.8B-shape prompt), or
        /// longer than 8 vectors (128 wide on AVX2). Every key is a vector load and an FMA per
        /// vector (the query's loads hit L1) into two independent sums, and one horizontal add.
        /// `false` when the head is shorter than one vector.
        #[target_feature(enable = $feat)]
        fn scores_by(
            q: &[f32],
            out: &mut [f32],
            key: impl Fn(usize, usize) -> $vec,
            tail: impl Fn(usize, usize) -> f32,
        ) -> bool {
            let hd = q.len();
            let vecs = hd / $w;
            if vecs == 0 {
                return false;
            }
            let whole = vecs * $w;
            let qv = |i: usize| load_f32(&q[i * $w..]);
            for (p, o) in out.iter_mut().enumerate() {
                let (mut a0, mut a1) = ($zero(), $zero());
                let mut i = 0;
                while i + 2 <= vecs {
                    a0 = $fma(qv(i), key(p, i * $w), a0);
                    a1 = $fma(qv(i + 1), key(p, (i + 1) * $w), a1);
                    i += 2;
                }
                if i < vecs {
                    a0 = $fma(qv(i), key(p, i * $w), a0);
                }
                let s = $reduce($add(a0, a1));
                *o = if whole < hd { s + tail(p, whole) } else { s };
            }
            true
        }

        #[target_feature(enable = $feat)]
        fn scores(q: &[f32], k: &[f32], stride: usize, out: &mut [f32]) {
            let hd = q.len();
            let key = |p: usize, e: usize| load_f32(&k[p * stride + e..p * stride + hd]);
            let tail = |p: usize, j0: usize| bitnet_quant::vecops::dot(&q[j0..], &k[p * stride + j0..p * stride + hd]);
            if !scores_by(q, out, key, tail) {
                bitnet_quant::vecops::scores(q, k, stride, out)
            }
        }

        /// [`scores`] over f16 keys (little-endian bytes).
        #[target_feature(enable = $feat)]
        fn scores_f16(q: &[f32], k: &[u8], stride: usize, out: &mut [f32]) {
            let hd = q.len();
            let key = |p: usize, e: usize| load_f16(&k[2 * (p * stride + e)..2 * (p * stride + hd)]);
            let tail = |p: usize, j0: usize| {
                crate::dense::tail_f16(&k[2 * (p * stride + j0)..2 * (p * stride + hd)], &q[j0..])
            };
            if !scores_by(q, out, key, tail) {
                bitnet_quant::vecops::scores_f16(q, k, stride, out)
            }
        }

        /// `out += Σ_p w[p]·v_p` over `B` vectors of columns held in registers while every
        /// position streams past (8 vectors cover a 128-wide head in one pass); `val(p, e)` loads a
        /// vector of value `p` from element `e` of the block.
        #[target_feature(enable = $feat)]
        fn weighted_block<const B: usize>(w: &[f32], out: &mut [f32], val: impl Fn(usize, usize) -> $vec) {
            let mut acc = [$zero(); B];
            for (p, &wp) in w.iter().enumerate() {
                let b = $set1(wp);
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = $fma(b, val(p, i * $w), *a);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                let dst = &mut out[i * $w..(i + 1) * $w];
                let sum = $add(*a, load_f32(dst));
                // SAFETY: `dst` holds a vector's worth of writable floats; the store is unaligned.
                unsafe { $store(dst.as_mut_ptr(), sum) };
            }
        }

        /// Attention output: `out += Σ_p w[p]·v[p·stride..]`; columns past the last whole vector
        /// go to `tail(j0)`.
        #[target_feature(enable = $feat)]
        fn weighted_sum_by(
            w: &[f32],
            out: &mut [f32],
            val: impl Fn(usize, usize) -> $vec,
            tail: impl FnOnce(usize, &mut [f32]),
        ) {
            let hd = out.len();
            let mut j0 = 0;
            while j0 + 8 * $w <= hd {
                weighted_block::<8>(w, &mut out[j0..], |p, e| val(p, j0 + e));
                j0 += 8 * $w;
            }
            while j0 + $w <= hd {
                weighted_block::<1>(w, &mut out[j0..], |p, e| val(p, j0 + e));
                j0 += $w;
            }
            if j0 < hd {
                tail(j0, &mut out[j0..]);
            }
        }

        #[target_feature(enable = $feat)]
        fn weighted_sum(w: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
            let hd = out.len();
            weighted_sum_by(
                w,
                out,
                |p, e| load_f32(&v[p * stride + e..p * stride + hd]),
                |j0, rest| {
                    for (p, &wp) in w.iter().enumerate() {
                        axpy(rest, wp, &v[p * stride + j0..p * stride + hd]);
                    }
                },
            )
        }

        /// [`weighted_sum`] over f16 values (little-endian bytes).
        #[target_feature(enable = $feat)]
        fn weighted_sum_f16(w: &[f32], v: &[u8], stride: usize, out: &mut [f32]) {
            let hd = out.len();
            weighted_sum_by(
                w,
                out,
                |p, e| load_f16(&v[2 * (p * stride + e)..2 * (p * stride + hd)]),
                |j0, rest| bitnet_quant::vecops::weighted_sum_f16(w, &v[2 * j0..], stride, rest),
            )
        }

        pub(crate) fn ops() -> crate::vecops::F32Ops {
            fn dot(a: &[f32], b: &[f32]) -> f32 {
                // SAFETY: reachable only through the F32Ops that `vecops::best`/`available`
                // build after detecting the instruction set.
                unsafe { dot_f32(a, b) }
            }
            fn axpy_(y: &mut [f32], a: f32, x: &[f32]) {
                // SAFETY: as for `dot`.
                unsafe { axpy(y, a, x) }
            }
            fn scores_(q: &[f32], k: &[f32], stride: usize, out: &mut [f32]) {
                // SAFETY: as for `dot`.
                unsafe { scores(q, k, stride, out) }
            }
            fn weighted_sum_(w: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
                // SAFETY: as for `dot`.
                unsafe { weighted_sum(w, v, stride, out) }
            }
            fn scores_f16_(q: &[f32], k: &[u8], stride: usize, out: &mut [f32]) {
                // SAFETY: as for `dot`.
                unsafe { scores_f16(q, k, stride, out) }
            }
            fn weighted_sum_f16_(w: &[f32], v: &[u8], stride: usize, out: &mut [f32]) {
                // SAFETY: as for `dot`.
                unsafe { weighted_sum_f16(w, v, stride, out) }
            }
            crate::vecops::F32Ops {
                name: $label,
                dot,
                axpy: axpy_,
                scores: scores_,
                weighted_sum: weighted_sum_,
                scores_f16: scores_f16_,
                weighted_sum_f16: weighted_sum_f16_,
            }
        }
    };
}
pub(crate) use f32_kernels;
