//! Splitting matmuls across threads by output rows.
//!
//! This uses scoped threads per call, which costs tens of microseconds per matmul: fine for the
//! reference path, and replaced by a persistent spinning pool with the fast kernels.

use std::ops::Range;

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

/// How many threads work on each matmul.
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    threads: usize,
}

impl Pool {
    /// A pool of `threads` (at least 1).
    pub fn new(threads: usize) -> Pool {
        Pool { threads: threads.max(1) }
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads
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
        // Below this many rows per thread the spawn costs more than the work.
        let threads = self.threads.min(rows / 64).max(1);
        if threads == 1 {
            return f(0..rows, out);
        }
        let chunk = rows.div_ceil(threads);
        let ranges: Vec<Range<usize>> = (0..threads).map(|t| t * chunk..((t + 1) * chunk).min(rows)).collect();
        let parts: Vec<Result<Vec<f32>, E>> = std::thread::scope(|s| {
            let handles: Vec<_> = ranges
                .iter()
                .map(|r| {
                    let (r, f) = (r.clone(), &f);
                    s.spawn(move || {
                        let mut part = vec![0f32; n * r.len()];
                        f(r, &mut part).map(|_| part)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("matmul worker panicked")).collect()
        });
        for (range, part) in ranges.iter().zip(parts) {
            let part = part?;
            for j in 0..n {
                out[j * rows + range.start..j * rows + range.end]
                    .copy_from_slice(&part[j * range.len()..(j + 1) * range.len()]);
            }
        }
        Ok(())
    }

    /// Runs `f(0..jobs)` spread over the threads and returns the results in order.
    pub fn map<T: Send>(&self, jobs: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
        let threads = self.threads.min(jobs).max(1);
        if threads == 1 {
            return (0..jobs).map(f).collect();
        }
        let per = jobs.div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let f = &f;
                    s.spawn(move || (t * per..((t + 1) * per).min(jobs)).map(f).collect::<Vec<T>>())
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("worker panicked")).collect()
        })
    }
}
