//! Reusable f32 buffers for the forward pass.
//!
//! A prompt's activations are megabytes per matrix (512 tokens × 6912 features × 4 bytes is
//! 14 MB for 2B-4T's FFN). Allocated afresh for every matmul, glibc handed that memory back to
//! the kernel and the next matmul faulted it in again: at 2B-4T, pp512 spent 14% of its time in
//! page faults and unmaps. Buffers taken from a [`BufferPool`] go back to it on drop, pages and
//! all.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// Free buffers; at most [`BufferPool::KEEP`] are kept.
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<f32>>>,
}

/// A buffer on loan from a [`BufferPool`]; derefs to `[f32]`.
pub(crate) struct Buf<'a> {
    data: Vec<f32>,
    pool: &'a BufferPool,
}

impl BufferPool {
    /// More free buffers than one forward pass holds at once (about a dozen, plus one per
    /// attention head in flight).
    const KEEP: usize = 64;

    /// Smaller buffers come from malloc's own free lists, which keep their pages (glibc returns
    /// only large blocks to the kernel): decoding one token uses the pool not at all.
    const MIN_LEN: usize = 32 << 10;

    fn take(&self, len: usize) -> Vec<f32> {
        if len < Self::MIN_LEN {
            return Vec::with_capacity(len);
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest that fits without wasting more than half of itself, so that memory stays
        // bounded by what one pass holds at once.
        let fits = (0..free.len())
            .filter(|&i| (len..=2 * len).contains(&free[i].capacity()))
            .min_by_key(|&i| free[i].capacity());
        fits.map(|i| free.swap_remove(i)).unwrap_or_else(|| Vec::with_capacity(len))
    }

    /// A buffer of `len` zeros.
    pub fn zeroed(&self, len: usize) -> Buf<'_> {
        let mut data = self.take(len);
        data.clear();
        data.resize(len, 0.0);
        Buf { data, pool: self }
    }

    /// A buffer of `len` floats for a caller that overwrites all of them (a matmul output):
    /// a reused buffer keeps its stale contents instead of being zeroed again. Debug builds
    /// fill it with NaN, so that a reader of stale values shows in the tests.
    pub fn overwritten(&self, len: usize) -> Buf<'_> {
        let mut data = self.take(len);
        if cfg!(debug_assertions) {
            data.clear();
            data.resize(len, f32::NAN);
        } else if data.len() >= len {
            data.truncate(len);
        } else {
            data.resize(len, 0.0);
        }
        Buf { data, pool: self }
    }
}

impl Buf<'_> {
    /// The contents as a plain vector (not returned to the pool).
    pub fn into_vec(mut self) -> Vec<f32> {
        std::mem::take(&mut self.data)
    }
}

impl Deref for Buf<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.data
    }
}

impl DerefMut for Buf<'_> {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
}

impl Drop for Buf<'_> {
    fn drop(&mut self) {
        if self.data.capacity() < BufferPool::MIN_LEN {
            return;
        }
        let mut free = self.pool.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < BufferPool::KEEP {
            free.push(std::mem::take(&mut self.data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BufferPool;

    #[test]
    fn buffers_come_back_zeroed() {
        let pool = BufferPool::default();
        let big = BufferPool::MIN_LEN * 2;
        let ptr = {
            let mut a = pool.zeroed(big);
            a.iter_mut().for_each(|v| *v = 7.0);
            a.as_ptr()
        };
        // The same allocation comes back, cleared, for a request of similar size...
        let b = pool.zeroed(big - 100);
        assert_eq!(b.as_ptr(), ptr);
        assert!(b.iter().all(|&v| v == 0.0) && b.len() == big - 100);
        drop(b);
        // ...but not for one it would waste most of.
        let c = pool.zeroed(big / 3);
        assert_ne!(c.as_ptr(), ptr);
        assert_eq!(pool.free.lock().unwrap().len(), 1);
        let mut c = pool.overwritten(3);
        c.copy_from_slice(&[1.0, 2.0, 3.0]);
        assert_eq!(c.into_vec(), vec![1.0, 2.0, 3.0]);
    }
}
