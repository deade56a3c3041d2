//! The process-wide tokio runtime that every client, call and registration runs on.

use once_cell::sync::OnceCell;
use tokio::runtime::{Handle, Runtime};

static RUNTIME: OnceCell<Runtime> = OnceCell::new();

/// Worker threads: `GF_WORKER_THREADS` when set to a positive number, else min(cores, 4).
fn worker_threads() -> usize {
    if let Some(n) = std::env::var("GF_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4)
}

fn block_sigpipe() {
    // SAFETY: plain libc calls on a local, zero-initialised signal set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// The shared runtime, created on first use.
pub fn get() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads())
            .thread_name("grpc-failover")
            // Writes to a socket the peer closed must not kill the host program with SIGPIPE:
            // C programs keep its default action. Block it on every library thread.
            .on_thread_start(block_sigpipe)
            .enable_all()
            .build()
            .expect("cannot start the grpc-failover runtime");
        rt
    })
}

pub fn handle() -> &'static Handle {
    get().handle()
}

/// True on a thread that is driving a tokio runtime (a library thread or a caller's own
/// runtime), where blocking on a future would deadlock or panic.
pub fn on_runtime_thread() -> bool {
    Handle::try_current().is_ok()
}

/// Runs `future` as a task on the runtime and blocks the calling (non-runtime) thread until it
/// ends. Everything the call does, HTTP/2 included, then happens on the runtime's workers,
/// where the connection's task and the call's task wake each other without crossing threads;
/// the caller is woken once, when the result is ready. A panic in the future is re-raised here.
pub fn run_blocking<F>(future: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use futures_util::FutureExt;
    use std::panic::AssertUnwindSafe;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    struct Slot<T> {
        value: Mutex<Option<std::thread::Result<T>>>,
        done: AtomicBool,
        waiter: std::thread::Thread,
    }
    let slot = Arc::new(Slot {
        value: Mutex::new(None),
        done: AtomicBool::new(false),
        waiter: std::thread::current(),
    });
    /// Wakes the caller when the task ends, also when it is dropped unfinished (the caller
    /// then finds no result instead of parking forever).
    struct Filler<T>(Arc<Slot<T>>);
    impl<T> Drop for Filler<T> {
        fn drop(&mut self) {
            self.0.done.store(true, Ordering::Release);
            self.0.waiter.unpark();
        }
    }
    let filler = Filler(slot.clone());
    handle().spawn(async move {
        let result = AssertUnwindSafe(future).catch_unwind().await;
        *filler.0.value.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        drop(filler);
    });
    while !slot.done.load(Ordering::Acquire) {
        std::thread::park();
    }
    let result = slot.value.lock().unwrap_or_else(|e| e.into_inner()).take();
    match result {
        Some(Ok(value)) => value,
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        None => panic!("the grpc-failover runtime dropped the call unfinished"),
    }
}
