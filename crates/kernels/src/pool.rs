//! A persistent thread pool for short parallel regions.
//!
//! `run(f)` publishes `f` to the workers by bumping an epoch counter, runs `f(0)` on the calling
//! thread, and spins until every worker has run `f(i)`. Workers spin on the epoch for a while
//! after each job (the next matmul is microseconds away during decoding), then sleep on a
//! condition variable, so an idle pool costs no CPU.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a worker spins for the next job before it sleeps.
const SPIN: Duration = Duration::from_micros(300);

type Job = dyn Fn(usize) + Sync;

/// A job pointer whose lifetime `run` guarantees by waiting for every worker.
#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the pointee is `Sync` and `run` keeps it alive until every worker is done with it.
unsafe impl Send for JobPtr {}

struct Shared {
    job: Mutex<Option<JobPtr>>,
    epoch: AtomicU64,
    /// Workers that have not finished the current job.
    pending: AtomicUsize,
    /// Workers asleep (or about to be) on `wake`.
    sleeping: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
    panicked: AtomicBool,
    stop: AtomicBool,
}

/// `threads − 1` persistent workers plus the calling thread.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// One `run` at a time (the job slot is shared).
    running: Mutex<()>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool").field("threads", &self.threads()).finish()
    }
}

impl ThreadPool {
    /// A pool that runs jobs on `threads` threads (at least 1, the caller included).
    ///
    /// # Panics
    /// If a worker thread cannot be started; [`ThreadPool::try_new`] returns that as an error.
    pub fn new(threads: usize) -> ThreadPool {
        ThreadPool::try_new(threads).expect("spawning a worker thread")
    }

    /// [`ThreadPool::new`], or the error of the first worker thread that could not be started
    /// (the workers already started are stopped again).
    pub fn try_new(threads: usize) -> std::io::Result<ThreadPool> {
        let shared = Arc::new(Shared {
            job: Mutex::new(None),
            epoch: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        // Built up in the pool itself so that its Drop stops the workers started before a failure.
        let mut pool = ThreadPool { shared, workers: Vec::new(), running: Mutex::new(()) };
        for i in 1..threads.max(1) {
            let shared = Arc::clone(&pool.shared);
            let w = std::thread::Builder::new().name(format!("bitnet-worker-{i}")).spawn(move || worker(&shared, i))?;
            pool.workers.push(w);
        }
        Ok(pool)
    }

    /// Threads that run each job (workers + the caller).
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(i)` for every thread index `i` in `0..threads()` in parallel, `f(0)` on the
    /// calling thread, and returns when all are done. A panic in any of them is re-raised here.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            return f(0);
        }
        let _one = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: only the lifetime is erased. Workers call the job only between the epoch bump
        // below and their `pending` decrement, and this function does not return (or unwind)
        // before `pending` is back to zero, so `f` outlives every use.
        let ptr: *const Job = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const Job>(f) };
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(JobPtr(ptr));
        s.pending.store(self.workers.len(), SeqCst);
        s.epoch.fetch_add(1, SeqCst);
        if s.sleeping.load(SeqCst) > 0 {
            let _g = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        let mut spins = 0u32;
        while s.pending.load(Acquire) != 0 {
            spins += 1;
            if spins < 1 << 14 { std::hint::spin_loop() } else { std::thread::yield_now() }
        }
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if s.panicked.swap(false, SeqCst) {
            panic!("a thread-pool worker panicked");
        }
    }
}

fn worker(s: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        let mut since = Instant::now();
        let mut spins = 0u32;
        loop {
            let e = s.epoch.load(SeqCst);
            if e != seen {
                seen = e;
                break;
            }
            spins += 1;
            if !spins.is_multiple_of(256) {
                std::hint::spin_loop();
                continue;
            }
            if since.elapsed() < SPIN {
                continue;
            }
            let g = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleeping.fetch_add(1, SeqCst);
            // Re-check under the lock: `run` bumps the epoch before it looks at `sleeping`.
            if s.epoch.load(SeqCst) == seen {
                drop(s.wake.wait(g).unwrap_or_else(|e| e.into_inner()));
            }
            s.sleeping.fetch_sub(1, SeqCst);
            since = Instant::now();
        }
        if s.stop.load(SeqCst) {
            return;
        }
        let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(JobPtr(f)) = job {
            // SAFETY: `run` keeps the job alive until `pending` reaches zero (see there).
            let r = catch_unwind(AssertUnwindSafe(|| unsafe { (*f)(index) }));
            if r.is_err() {
                s.panicked.store(true, SeqCst);
            }
        }
        s.pending.fetch_sub(1, Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.stop.store(true, SeqCst);
        s.epoch.fetch_add(1, SeqCst);
        {
            let _g = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
