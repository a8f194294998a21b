//! A helper thread that spins between jobs, so that the small matrix-vector products of a
//! single-sequence decode can use a second core.
//!
//! Waking one of rayon's sleeping workers costs tens of microseconds (a futex wake-up and a
//! context switch), about what one of a 135M model's per-layer products takes on one core, so
//! [`crate::qmatrix`] used to run those on the calling thread and left the second core idle.
//! llama.cpp's answer is a pool whose threads busy-wait between operations; this is the same
//! idea, at its smallest: one helper thread that, after each job, spins for a short while
//! ([`SPIN_DEFAULT_US`] microseconds, `LACONIC_SPIN_US` to change it) before it parks, so the
//! next product of the same token finds it awake. A hand-off is then two cache-line transfers.
//!
//! [`run_pair`] runs two closures, one on the calling thread and one on the helper, and returns
//! when both are done. It falls back to running both on the caller when the pair is busy (another
//! thread holds it), when the caller is one of rayon's workers (those are already running side
//! by side: the two half batches of `generate --samples`, GRPO's rollouts), when rayon was told
//! to use one thread, or when `LACONIC_NO_SPIN=1`.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long, in microseconds, the helper spins after a job before it parks.
pub const SPIN_DEFAULT_US: u64 = 200;

/// A job the helper runs once: a pointer to the caller's closure, valid until the caller has
/// seen `done` reach the job's sequence number ([`run_pair`] waits for that, even when its
/// own half panics).
#[derive(Clone, Copy)]
struct JobPtr(*mut (dyn FnMut() + Send + 'static));

// SAFETY: the closure behind the pointer is `Send`, and the caller keeps it alive (and does not
// touch it) until the helper reports it done.
unsafe impl Send for JobPtr {}

struct Shared {
    /// Jobs posted so far; the helper runs job `n` when `posted` moves to `n`.
    posted: AtomicU64,
    /// Jobs finished so far.
    done: AtomicU64,
    /// Whether job `done` panicked on the helper.
    panicked: AtomicBool,
    job: Mutex<Option<JobPtr>>,
    /// Set while the helper waits on `wake` (under `sleep`).
    sleeping: AtomicBool,
    sleep: Mutex<()>,
    wake: Condvar,
    spin: Duration,
}

struct Pair {
    shared: Arc<Shared>,
    /// Held by the one caller using the pair.
    busy: AtomicBool,
}

fn pair() -> Option<&'static Pair> {
    static PAIR: OnceLock<Option<Pair>> = OnceLock::new();
    PAIR.get_or_init(|| {
        if std::env::var("LACONIC_NO_SPIN").is_ok_and(|v| v == "1") {
            return None;
        }
        let spin_us = std::env::var("LACONIC_SPIN_US")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(SPIN_DEFAULT_US);
        let shared = Arc::new(Shared {
            posted: AtomicU64::new(0),
            done: AtomicU64::new(0),
            panicked: AtomicBool::new(false),
            job: Mutex::new(None),
            sleeping: AtomicBool::new(false),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            spin: Duration::from_micros(spin_us),
        });
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("laconic-spin".into())
            .spawn(move || helper(&worker))
            .ok()?;
        Some(Pair {
            shared,
            busy: AtomicBool::new(false),
        })
    })
    .as_ref()
}

fn helper(s: &Shared) {
    let mut seen = 0u64;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        while s.posted.load(Ordering::Acquire) == seen {
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(256) || start.elapsed() < s.spin {
                std::hint::spin_loop();
                continue;
            }
            // Idle for longer than the spin: sleep until the next job.
            let mut guard = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.sleeping.store(true, Ordering::SeqCst);
            while s.posted.load(Ordering::SeqCst) == seen {
                guard = s.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            s.sleeping.store(false, Ordering::SeqCst);
        }
        seen = s.posted.load(Ordering::Acquire);
        let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(JobPtr(f)) = job {
            // SAFETY: the poster keeps the closure alive and untouched until `done` says so.
            let ok = catch_unwind(AssertUnwindSafe(|| unsafe { (*f)() })).is_ok();
            s.panicked.store(!ok, Ordering::Relaxed);
        }
        s.done.store(seen, Ordering::Release);
    }
}

/// The helper, when the calling thread may use it now (see the module documentation).
fn usable() -> Option<&'static Pair> {
    if rayon::current_thread_index().is_some() || rayon::current_num_threads() < 2 {
        return None;
    }
    pair()
}

/// Whether [`run_pair`] would hand work to the helper from this thread (unless another thread
/// holds it).
pub fn available() -> bool {
    usable().is_some()
}

/// Runs `a` on the calling thread and `b` on the spinning helper, returning when both have
/// finished; runs both here, one after the other, when the helper is not available (see the
/// module documentation). A panic in either is re-raised here, after both are done.
pub fn run_pair<A: FnOnce(), B: FnOnce() + Send>(a: A, b: B) {
    let Some(p) = usable().filter(|p| {
        p.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }) else {
        a();
        b();
        return;
    };
    let s = &*p.shared;
    let mut b = Some(b);
    let mut job = move || {
        if let Some(b) = b.take() {
            b();
        }
    };
    let ptr: *mut (dyn FnMut() + Send + '_) = &mut job;
    // SAFETY: only the lifetime is erased; `Waiter` below keeps `job` alive until the helper
    // has finished with it, also when `a` panics.
    let ptr: *mut (dyn FnMut() + Send + 'static) = unsafe { std::mem::transmute(ptr) };
    *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(JobPtr(ptr));
    let n = s.posted.fetch_add(1, Ordering::SeqCst) + 1;
    if s.sleeping.load(Ordering::SeqCst) {
        let _guard = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
        s.wake.notify_one();
    }

    /// Waits for the helper's job `n` and frees the pair, also while unwinding.
    struct Waiter<'a> {
        pair: &'a Pair,
        n: u64,
        helper_panicked: &'a Cell<bool>,
    }
    impl Drop for Waiter<'_> {
        fn drop(&mut self) {
            let s = &*self.pair.shared;
            let mut spins = 0u32;
            while s.done.load(Ordering::Acquire) < self.n {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(1024) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            self.helper_panicked.set(s.panicked.load(Ordering::Relaxed));
            *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.pair.busy.store(false, Ordering::Release);
        }
    }
    let helper_panicked = Cell::new(false);
    let wait = Waiter {
        pair: p,
        n,
        helper_panicked: &helper_panicked,
    };
    a();
    drop(wait);
    drop(job);
    if helper_panicked.get() {
        panic!("laconic-spin: the helper's half of a product panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn both_halves_run_once_and_see_the_callers_data() {
        let mut left = vec![0u32; 1000];
        let mut right = vec![0u32; 1000];
        let calls = AtomicUsize::new(0);
        for round in 1..=200u32 {
            run_pair(
                || {
                    left.iter_mut().for_each(|v| *v += round);
                    calls.fetch_add(1, Ordering::Relaxed);
                },
                || {
                    right.iter_mut().for_each(|v| *v += 2 * round);
                    calls.fetch_add(1, Ordering::Relaxed);
                },
            );
        }
        let total: u32 = (1..=200).sum();
        assert!(left.iter().all(|&v| v == total));
        assert!(right.iter().all(|&v| v == 2 * total));
        assert_eq!(calls.load(Ordering::Relaxed), 400);
    }

    #[test]
    fn callers_on_several_threads_each_get_their_own_results() {
        // Only one caller holds the helper at a time; the others run both halves themselves.
        let results: Vec<u64> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4u64)
                .map(|t| {
                    scope.spawn(move || {
                        let mut sum = 0u64;
                        for i in 0..500u64 {
                            let (mut a, mut b) = (0u64, 0u64);
                            run_pair(|| a = t * 1000 + i, || b = i);
                            sum += a + b;
                        }
                        sum
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (t, sum) in results.iter().enumerate() {
            let want: u64 = (0..500u64).map(|i| t as u64 * 1000 + 2 * i).sum();
            assert_eq!(*sum, want, "thread {t}");
        }
    }

    #[test]
    fn a_panic_on_the_helper_reaches_the_caller_and_the_pair_still_works() {
        let r = catch_unwind(|| run_pair(|| {}, || panic!("boom")));
        assert!(r.is_err());
        let mut x = 0;
        run_pair(|| {}, || x = 7);
        assert_eq!(x, 7);
    }
}
