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

/// The shared runtime, created on first use.
pub fn get() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads())
            .thread_name("grpc-failover")
            .enable_all()
            .build()
            .expect("cannot start the grpc-failover runtime")
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

/// Callers currently blocked in [`run_blocking`].
static BLOCKED_CALLERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How long a lone blocked caller spins before it sleeps: a loopback call is answered in
/// tens of microseconds, and a futex sleep plus wake costs about as much.
const SPIN: std::time::Duration = std::time::Duration::from_micros(200);

/// Runs `fut` on the runtime and blocks the calling (non-runtime) thread until it finishes.
/// The call's whole life (picker, attempts, the HTTP/2 exchange) then stays on the runtime's
/// threads, and the caller is woken once, with the result. While there are spare cores
/// (fewer blocked callers than cores), the caller spins briefly first, which saves a thread
/// wake-up on short calls.
pub fn run_blocking<F>(fut: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use std::sync::atomic::Ordering;
    use tokio::sync::oneshot::error::TryRecvError;

    let (tx, mut rx) = tokio::sync::oneshot::channel();
    handle().spawn(async move {
        let _ = tx.send(fut.await);
    });
    let blocked = BLOCKED_CALLERS.fetch_add(1, Ordering::Relaxed) + 1;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if blocked < cores {
        let start = std::time::Instant::now();
        loop {
            match rx.try_recv() {
                Ok(v) => {
                    BLOCKED_CALLERS.fetch_sub(1, Ordering::Relaxed);
                    return v;
                }
                Err(TryRecvError::Closed) => break,
                Err(TryRecvError::Empty) if start.elapsed() > SPIN => break,
                Err(TryRecvError::Empty) => std::hint::spin_loop(),
            }
        }
    }
    let out = rx.blocking_recv();
    BLOCKED_CALLERS.fetch_sub(1, Ordering::Relaxed);
    out.expect("the runtime dropped a call")
}
