//! The few threads that run sled calls.
//!
//! sled calls block (a page not in the cache is read from disk; a full log buffer waits
//! for the writer), so they must not run on the async executors. `spawn_blocking` would
//! do, but every actix worker has its own runtime with its own blocking pool of up to 512
//! threads, and under load those pools grew to hundreds of threads all contending for
//! sled's locks: most of the gateway's CPU went to futex handoffs and the scheduler
//! (docs/benchmarks.md). A fixed handful of threads sharing one job queue keeps the work
//! on as many threads as there are cores, plus a few to cover a thread waiting on disk.

use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// Handle to the store threads. Dropping it lets them finish the queued jobs and exit.
pub struct StoreThreads {
    jobs: mpsc::Sender<Job>,
}

impl StoreThreads {
    pub fn start(count: usize) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..count.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("hookrelay-store-{n}"))
                .spawn(move || loop {
                    // One thread waits in `recv`, the others on the lock; a job is run
                    // after the lock is released, so jobs run in parallel.
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    // sled panics on some kinds of damage: the caller sees its reply
                    // channel dropped, and the thread lives on for the next job.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                })?;
        }
        Ok(Self { jobs })
    }

    /// Queues `job`; false once the threads are gone.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) -> bool {
        self.jobs.send(Box::new(job)).is_ok()
    }
}

/// Requests of one kind waiting to be run together: the first request queued after
/// the list was emptied schedules one job, and that job takes every request that
/// arrived by the time it runs. Under load a job finds many; when idle, one.
pub struct Batch<T> {
    pending: Mutex<Vec<T>>,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Self {
            pending: Mutex::new(Vec::new()),
        }
    }
}

impl<T> Batch<T> {
    /// Queues `item`; true when the caller must schedule the job that takes the list.
    pub fn push(&self, item: T) -> bool {
        let mut pending = self.pending.lock().expect("batch poisoned");
        pending.push(item);
        pending.len() == 1
    }

    /// Everything queued so far.
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.pending.lock().expect("batch poisoned"))
    }
}

/// Answers of a batch job, sent only after the job let go of the store: a caller that
/// closes the store and opens its directory again must not find it still held by a
/// job that has already answered.
#[derive(Default)]
pub struct Replies(Vec<Box<dyn FnOnce() + Send>>);

impl Replies {
    pub fn add<T: Send + 'static>(&mut self, to: tokio::sync::oneshot::Sender<T>, value: T) {
        self.0.push(Box::new(move || {
            let _ = to.send(value);
        }));
    }

    pub fn send(self) {
        for reply in self.0 {
            reply();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_job_leaves_the_thread_running_and_queued_jobs_finish_after_drop() {
        let threads = StoreThreads::start(1).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        assert!(threads.submit(|| panic!("a damaged page")));
        for n in 0..3 {
            let done = done.clone();
            assert!(threads.submit(move || done.send(n).unwrap()));
        }
        drop(threads);
        let seen: Vec<i32> = (0..3).map(|_| finished.recv().unwrap()).collect();
        assert_eq!(seen, [0, 1, 2]);
    }

    #[test]
    fn only_the_first_request_of_an_empty_batch_schedules_a_job() {
        let batch = Batch::default();
        assert!(batch.push(1));
        assert!(!batch.push(2));
        assert_eq!(batch.take(), [1, 2]);
        assert!(batch.push(3), "after a take the next request schedules again");
    }
}
