//! The process-wide tokio runtime that every client, call and registration runs on.

use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use once_cell::sync::OnceCell;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::{Handle, Runtime};

static RUNTIME: OnceCell<Runtime> = OnceCell::new();
static INTAKE: OnceCell<Option<Intake>> = OnceCell::new();

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
    let filler = slot.clone();
    spawn(async move {
        let result = AssertUnwindSafe(future).catch_unwind().await;
        *filler.value.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        filler.done.store(true, Ordering::Release);
        filler.waiter.unpark();
    });
    while !slot.done.load(Ordering::Acquire) {
        std::thread::park();
    }
    let result = slot
        .value
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .expect("run_blocking: a finished task leaves its result");
    match result {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How threads outside the runtime (the C ABI's callers) hand it work.
///
/// `Handle::spawn` from such a thread wakes a parked worker through the scheduler, and that
/// worker, once it finds the task, wakes a second one to look for more: at low load every call
/// woke both workers. Here jobs wait in a queue and one eventfd, watched by the I/O driver, wakes
/// only the worker parked on the driver; an intake task there spawns them. The eventfd is written
/// only when the intake is not already due to run, so under load most hand-offs make no system
/// call at all.
struct Intake {
    queue: std::sync::Arc<JobQueue>,
    eventfd: OwnedFd,
}

struct JobQueue {
    jobs: Mutex<Vec<Job>>,
    /// True from the first job after a drain until the intake drains again.
    signalled: AtomicBool,
}

impl Intake {
    fn start(rt: &Runtime) -> std::io::Result<Intake> {
        // SAFETY: plain libc call; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let watched = {
            let _enter = rt.enter();
            // SAFETY: an OwnedFd (a clone of the eventfd) stays open, and is the same
            // descriptor, for as long as the AsyncFd that owns it.
            unsafe { AsyncFd::register_with_interest(eventfd.try_clone()?, Interest::READABLE) }
                .map_err(std::io::Error::from)?
        };
        let queue = std::sync::Arc::new(JobQueue {
            jobs: Mutex::new(Vec::new()),
            signalled: AtomicBool::new(false),
        });
        let drained = queue.clone();
        rt.spawn(async move {
            loop {
                let Ok(mut ready) = watched.readable().await else {
                    return;
                };
                let mut count = 0u64;
                // SAFETY: reads 8 bytes into a local u64; EAGAIN (already drained) is fine.
                unsafe {
                    libc::read(
                        watched.as_raw_fd(),
                        (&mut count as *mut u64).cast(),
                        std::mem::size_of::<u64>(),
                    )
                };
                ready.clear_ready();
                // Cleared before the queue is taken: a job pushed after the take signals again.
                drained.signalled.store(false, Ordering::SeqCst);
                let jobs =
                    std::mem::take(&mut *drained.jobs.lock().unwrap_or_else(|e| e.into_inner()));
                for job in jobs {
                    tokio::spawn(job);
                }
            }
        });
        Ok(Intake { queue, eventfd })
    }

    fn push(&self, job: Job) {
        self.queue
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(job);
        if !self.queue.signalled.swap(true, Ordering::SeqCst) {
            let one = 1u64;
            // SAFETY: writes 8 bytes from a local u64 to our eventfd. It cannot fail short of
            // the counter overflowing, which one write per drain never approaches.
            unsafe {
                libc::write(
                    self.eventfd.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }
}

/// Runs `future` as a task on the runtime, from any thread. Inside the runtime this is
/// `tokio::spawn`; from a thread outside it the task goes through the intake (see [`Intake`]).
pub fn spawn<F>(future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    if on_runtime_thread() {
        handle().spawn(future);
        return;
    }
    let intake = INTAKE.get_or_init(|| {
        Intake::start(get())
            .map_err(|e| log::warn!("no eventfd for the runtime intake ({e}); spawning directly"))
            .ok()
    });
    match intake {
        Some(intake) => intake.push(Box::pin(future)),
        None => {
            handle().spawn(future);
        }
    }
}
