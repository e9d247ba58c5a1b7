//! Splitting matmuls across threads by output rows, and attention by heads, on the persistent
//! pool of bitnet-kernels (a region costs under a microsecond; see its docs).

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bitnet_kernels::ThreadPool;

/// Physical CPU cores (hyper-threads of one core counted once), from Linux's sysfs topology;
/// the logical CPU count elsewhere or when sysfs is unreadable.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cores = std::collections::HashSet::new();
    for cpu in 0..logical {
        let topo = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
        let read = |f: &str| std::fs::read_to_string(format!("{topo}/{f}")).ok().map(|s| s.trim().to_owned());
        match (read("physical_package_id"), read("core_id")) {
            (Some(p), Some(c)) => {
                cores.insert((p, c));
            }
            _ => return logical,
        }
    }
    cores.len().clamp(1, logical)
}

/// RAM plus swap in bytes (Linux's /proc/meminfo), or `None` where that cannot be read: the
/// bound a request for memory (a KV cache) is checked against before it is made.
pub fn memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()
    };
    Some((kib("MemTotal:")? + kib("SwapTotal:").unwrap_or(0)) * 1024)
}

/// Splits matmuls and attention heads over a persistent [`ThreadPool`].
#[derive(Debug, Clone)]
pub struct Pool {
    pool: Arc<ThreadPool>,
    /// Per-thread output pieces of many-token matmuls, kept between calls (fresh multi-MB
    /// buffers per matmul cost page faults and zeroing).
    parts: Arc<Vec<Mutex<Vec<f32>>>>,
}

/// The most threads a model runs on: far beyond any CPU this targets, well below what makes thread
/// creation fail or the per-thread buffers matter.
pub const MAX_THREADS: usize = 1024;

/// Fewest output rows worth giving a thread of their own.
const MIN_ROWS_PER_THREAD: usize = 16;

/// Fewest elements of an element-wise pass worth giving a thread of their own (a hand-off costs
/// under a microsecond, about what a norm of this many elements takes).
const MIN_ELEMENTS_PER_THREAD: usize = 4096;

impl Pool {
    /// A pool of `threads` (at least 1, at most [`MAX_THREADS`]), or why it cannot be had.
    pub fn try_new(threads: usize) -> crate::Result<Pool> {
        if threads > MAX_THREADS {
            return Err(crate::ModelError::Invalid(format!("{threads} threads: at most {MAX_THREADS} are supported")));
        }
        let pool = ThreadPool::try_new(threads)
            .map_err(|e| crate::ModelError::Invalid(format!("cannot start {threads} threads: {e}")))?;
        let parts = (0..pool.threads()).map(|_| Mutex::new(Vec::new())).collect();
        Ok(Pool { pool: Arc::new(pool), parts: Arc::new(parts) })
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Computes an `n × rows` output (row-major) in row chunks: `f(range, part)` fills
    /// `part[j·len + i]` for output row `range.start + i` of input `j`.
    pub fn rows<E: Send>(
        &self,
        rows: usize,
        n: usize,
        out: &mut [f32],
        f: impl Fn(Range<usize>, &mut [f32]) -> Result<(), E> + Sync,
    ) -> Result<(), E> {
        let threads = self.threads().min(rows / MIN_ROWS_PER_THREAD).max(1);
        if threads == 1 {
            return f(0..rows, out);
        }
        if n == 1 {
            // One token: each thread's rows are a contiguous piece of the output.
            return self.rows_many(&[rows], &mut [out], |_, range, part| f(range, part));
        }
        // Multiples of 8 rows keep the kernels' row tiles whole.
        let chunk = rows.div_ceil(threads).next_multiple_of(8);
        let ranges: Vec<Range<usize>> =
            (0..threads).map(|t| (t * chunk).min(rows)..((t + 1) * chunk).min(rows)).collect();
        let errors: Mutex<Option<E>> = Mutex::new(None);
        let fail = |e| *errors.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        // Several tokens: each thread computes its rows for every token into its own buffer,
        // then copies them into its columns of `out` (split here, per token and thread), in
        // the parallel region: copied afterwards on one thread, a 125M-shape prompt's outputs
        // were a tenth of its time at two threads.
        let mut pieces: Vec<Vec<&mut [f32]>> = (0..threads).map(|_| Vec::with_capacity(n)).collect();
        for token in out.chunks_exact_mut(rows) {
            let mut rest = token;
            for (piece, r) in pieces.iter_mut().zip(&ranges) {
                let (head, tail) = rest.split_at_mut(r.len());
                piece.push(head);
                rest = tail;
            }
        }
        let pieces: Vec<Mutex<Vec<&mut [f32]>>> = pieces.into_iter().map(Mutex::new).collect();
        let parts = &self.parts;
        self.pool.run(&|t| {
            if t < threads {
                let mut part = parts[t].lock().unwrap_or_else(|p| p.into_inner());
                let len = ranges[t].len();
                // Only ever grown: shrinking and growing back zeroed the difference on
                // every call that followed a smaller matrix (4% of a two-thread prompt).
                if part.len() < n * len {
                    part.resize(n * len, 0.0);
                }
                let part = &mut part[..n * len];
                if let Err(e) = f(ranges[t].clone(), part) {
                    fail(e);
                    return;
                }
                let mut dst = pieces[t].lock().unwrap_or_else(|p| p.into_inner());
                for (d, src) in dst.iter_mut().zip(part.chunks_exact(len.max(1))) {
                    d.copy_from_slice(src);
                }
            }
        });
        match errors.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// One token against several matrices in one parallel region: matrix `i` has `rows[i]`
    /// output rows into `outs[i]`, and `f(i, range, part)` fills `part`, the rows `range` of
    /// matrix `i`. The matrices' rows, taken one after another, are split into one contiguous
    /// range per thread (multiples of 8, as [`Pool::rows`] splits one matrix), so a thread reads
    /// one stream across the pieces it owns where the matrices lie one after another in memory,
    /// and small matrices (2B-4T's 640-row K and V) are not a region of their own each. A matrix
    /// whose rows are not a multiple of 8 would break the row tiles at its neighbour's start: then
    /// each matrix has a region of its own. (One matrix this way is [`Pool::rows`]' one token.)
    pub fn rows_many<E: Send>(
        &self,
        rows: &[usize],
        outs: &mut [&mut [f32]],
        f: impl Fn(usize, Range<usize>, &mut [f32]) -> Result<(), E> + Sync,
    ) -> Result<(), E> {
        let total: usize = rows.iter().sum();
        let threads = self.threads().min(total / MIN_ROWS_PER_THREAD).max(1);
        let whole = outs.len() == rows.len() && outs.iter().zip(rows).all(|(o, &r)| o.len() >= r);
        if threads == 1 || !whole {
            for (i, (&r, out)) in rows.iter().zip(outs.iter_mut()).enumerate() {
                f(i, 0..r, out)?;
            }
            return Ok(());
        }
        if rows[..rows.len() - 1].iter().all(|r| r % 8 == 0) {
            return self.region(threads, rows, outs, &f);
        }
        // A matrix after one of odd rows would start mid-tile: one region each.
        for (i, (&r, out)) in rows.iter().zip(outs.iter_mut()).enumerate() {
            match self.threads().min(r / MIN_ROWS_PER_THREAD).max(1) {
                1 => f(i, 0..r, out)?,
                t => self.region(t, &[r], std::slice::from_mut(out), &|_, range, part| f(i, range, part))?,
            }
        }
        Ok(())
    }

    /// [`Pool::rows_many`]'s parallel region on `threads` (more than one) threads, the matrices
    /// before the last whole multiples of 8 rows and each output at least its rows long.
    fn region<E: Send>(
        &self,
        threads: usize,
        rows: &[usize],
        outs: &mut [&mut [f32]],
        f: &(impl Fn(usize, Range<usize>, &mut [f32]) -> Result<(), E> + Sync),
    ) -> Result<(), E> {
        let total: usize = rows.iter().sum();
        let chunk = total.div_ceil(threads).next_multiple_of(8);
        // Each thread's pieces: (matrix, its rows, that part of its output).
        type Piece<'a> = (usize, Range<usize>, &'a mut [f32]);
        let mut pieces: Vec<Vec<Piece<'_>>> = (0..threads).map(|_| Vec::new()).collect();
        let mut start = 0;
        for (i, (&r, out)) in rows.iter().zip(outs.iter_mut()).enumerate() {
            let mut rest: &mut [f32] = &mut out[..r];
            let mut at = 0;
            while at < r {
                let t = (start + at) / chunk;
                let end = ((t + 1) * chunk - start).min(r);
                let (head, tail) = rest.split_at_mut(end - at);
                pieces[t].push((i, at..end, head));
                rest = tail;
                at = end;
            }
            start += r;
        }
        let pieces: Vec<Mutex<Vec<Piece<'_>>>> = pieces.into_iter().map(Mutex::new).collect();
        let errors: Mutex<Option<E>> = Mutex::new(None);
        self.pool.run(&|t| {
            if t < threads {
                let mut mine = pieces[t].lock().unwrap_or_else(|p| p.into_inner());
                for (i, range, part) in mine.iter_mut() {
                    if let Err(e) = f(*i, range.clone(), part) {
                        *errors.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        return;
                    }
                }
            }
        });
        match errors.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Computes an `n × width` output (row-major, one row a token) in pieces of whole tokens, one
    /// per thread: `f(tokens, part)` fills `part`, the rows of `tokens`. For prompts: each
    /// thread's output is one piece of `out` (split by output rows, every thread's part of every
    /// token went through a buffer and a copy) and its tokens' work is its own.
    pub fn tokens<E: Send>(
        &self,
        n: usize,
        out: &mut [f32],
        f: impl Fn(Range<usize>, &mut [f32]) -> Result<(), E> + Sync,
    ) -> Result<(), E> {
        let parts = self.threads().min(n).max(1);
        if parts == 1 {
            return f(0..n, out);
        }
        let width = out.len() / n;
        let errors: Mutex<Option<E>> = Mutex::new(None);
        self.in_pieces(n, parts, out, |first, piece| {
            if let Err(e) = f(first..first + piece.len() / width, piece) {
                *errors.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
        });
        match errors.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs `f(first, x_rows, y_rows)` over the `rows` rows of `x` (written) and `y` (read, rows
    /// as wide as `y.len() / rows`; may be empty), in one contiguous piece of rows per thread when
    /// each gets enough elements to be worth a hand-off, else in one call: a prompt's norms,
    /// activations and residuals, which on one thread were a sixth of a 125M-shape prompt at two.
    pub fn each_rows(&self, rows: usize, x: &mut [f32], y: &[f32], f: impl Fn(usize, &mut [f32], &[f32]) + Sync) {
        let parts = self.threads().min(rows).min(x.len() / MIN_ELEMENTS_PER_THREAD).max(1);
        if parts == 1 || rows == 0 {
            return f(0, x, y);
        }
        let (xw, yw) = (x.len() / rows, y.len() / rows);
        self.in_pieces(rows, parts, x, |first, piece| {
            let n = piece.len() / xw;
            f(first, piece, &y[first * yw..(first + n) * yw]);
        });
    }

    /// Runs `f(first, piece)` on `parts` threads, each with one contiguous piece of the `rows`
    /// whole rows of `x` (`first`: the piece's first row).
    fn in_pieces(&self, rows: usize, parts: usize, x: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
        let chunk = rows.div_ceil(parts);
        let pieces: Vec<Mutex<&mut [f32]>> = x.chunks_mut(chunk * (x.len() / rows)).map(Mutex::new).collect();
        self.pool.run(&|t| {
            if let Some(piece) = pieces.get(t) {
                f(t * chunk, &mut piece.lock().unwrap_or_else(|p| p.into_inner()));
            }
        });
    }

    /// Runs `f(0..jobs)` spread over the threads (each takes the next job as it finishes one)
    /// and returns the results in order.
    pub fn map<T: Send>(&self, jobs: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
        if self.threads() == 1 || jobs <= 1 {
            return (0..jobs).map(f).collect();
        }
        let next = AtomicUsize::new(0);
        let slots: Vec<Mutex<Option<T>>> = (0..jobs).map(|_| Mutex::new(None)).collect();
        self.pool.run(&|_| {
            loop {
                let j = next.fetch_add(1, Relaxed);
                if j >= jobs {
                    break;
                }
                let v = f(j);
                *slots[j].lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
            }
        });
        slots.into_iter().map(|s| s.into_inner().unwrap_or_else(|p| p.into_inner()).expect("every job ran")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Pool;

    /// Every row of every matrix is computed once, into its own place, whatever the split.
    #[test]
    fn rows_many_covers_each_row_once() {
        for threads in [1, 2, 3] {
            let pool = Pool::try_new(threads).unwrap();
            for rows in [&[640, 2560, 640][..], &[8, 16, 24], &[12, 16], &[2560, 2560], &[16]] {
                let mut outs: Vec<Vec<f32>> = rows.iter().map(|&r| vec![f32::NAN; r]).collect();
                let mut parts: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut o[..]).collect();
                pool.rows_many(rows, &mut parts, |i, range, part| -> Result<(), ()> {
                    assert_eq!(part.len(), range.len());
                    for (j, p) in part.iter_mut().enumerate() {
                        assert!(p.is_nan(), "row {} of matrix {i} written twice", range.start + j);
                        *p = (i * 100_000 + range.start + j) as f32;
                    }
                    Ok(())
                })
                .unwrap();
                for (i, out) in outs.iter().enumerate() {
                    for (j, &v) in out.iter().enumerate() {
                        assert_eq!(v, (i * 100_000 + j) as f32, "{threads} threads, rows {rows:?}: matrix {i} row {j}");
                    }
                }
            }
        }
    }

    /// An error of any piece is the call's.
    #[test]
    fn rows_many_passes_errors_on() {
        let pool = Pool::try_new(2).unwrap();
        let mut outs = [vec![0f32; 64], vec![0f32; 64]];
        let mut parts: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut o[..]).collect();
        let r = pool.rows_many(
            &[64, 64],
            &mut parts,
            |i, range, _| if i == 1 && range.start == 0 { Err("bad") } else { Ok(()) },
        );
        assert_eq!(r, Err("bad"));
    }
}
