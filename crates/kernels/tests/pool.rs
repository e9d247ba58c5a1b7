use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bitnet_kernels::ThreadPool;

#[test]
fn every_thread_runs_each_job_once() {
    for threads in [1, 2, 3, 5] {
        let pool = ThreadPool::new(threads);
        assert_eq!(pool.threads(), threads);
        for round in 0..2000 {
            let seen = Mutex::new(vec![0usize; threads]);
            pool.run(&|i| seen.lock().unwrap()[i] += 1);
            assert_eq!(*seen.lock().unwrap(), vec![1; threads], "round {round}");
        }
    }
}

#[test]
fn borrows_locals_and_wakes_after_sleeping() {
    let pool = ThreadPool::new(3);
    let data: Vec<usize> = (0..1000).collect();
    let total = AtomicUsize::new(0);
    pool.run(&|i| {
        let part: usize = data.iter().skip(i).step_by(3).sum();
        total.fetch_add(part, Relaxed);
    });
    assert_eq!(total.load(Relaxed), 499_500);
    std::thread::sleep(Duration::from_millis(20)); // workers go to sleep
    let hits = AtomicUsize::new(0);
    pool.run(&|_| {
        hits.fetch_add(1, Relaxed);
    });
    assert_eq!(hits.load(Relaxed), 3);
}

#[test]
fn worker_panic_reaches_the_caller_and_the_pool_survives() {
    let pool = ThreadPool::new(2);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.run(&|i| assert_ne!(i, 1, "boom"))));
    assert!(r.is_err());
    let hits = AtomicUsize::new(0);
    pool.run(&|_| {
        hits.fetch_add(1, Relaxed);
    });
    assert_eq!(hits.load(Relaxed), 2);
}
