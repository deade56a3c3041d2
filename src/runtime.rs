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
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads())
            .thread_name("grpc-failover")
            // Writes to a socket the peer closed must not kill the host program with SIGPIPE:
            // C programs keep its default action. Block it on every library thread.
            .on_thread_start(block_sigpipe)
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
