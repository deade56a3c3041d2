//! The process-wide tokio runtime that every client, call and registration runs on.

use once_cell::sync::OnceCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::runtime::{Handle, Runtime};

use crate::status::{Code, Status};

static RUNTIME: OnceCell<Runtime> = OnceCell::new();

/// The worker count asked for with [`set_worker_threads`] (0: none), and whether the runtime
/// has read it: one lock, so that a request either counts or is refused.
static REQUESTED_WORKERS: Mutex<(usize, bool)> = Mutex::new((0, false));

/// The runtime's worker count, fixed when it starts.
static WORKERS: OnceCell<usize> = OnceCell::new();

/// The most worker threads a process may ask for.
pub(crate) const MAX_WORKER_THREADS: usize = 256;

/// Worker threads: `GF_WORKER_THREADS` when set to a positive number, else the count asked for
/// with [`set_worker_threads`], else min(cores, 4). Marks the request as read.
fn worker_threads() -> usize {
    let requested = {
        let mut r = REQUESTED_WORKERS.lock().unwrap_or_else(|e| e.into_inner());
        r.1 = true;
        r.0
    };
    if let Some(n) = std::env::var("GF_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n.min(MAX_WORKER_THREADS);
    }
    if requested > 0 {
        return requested;
    }
    cores().min(4)
}

/// Asks for `n` worker threads, before the runtime starts (a binding whose callers run on
/// threads of their own, like Go's, needs fewer). `GF_WORKER_THREADS` still wins. Fails once the
/// runtime runs: its worker count is then fixed.
pub fn set_worker_threads(n: usize) -> Result<(), Status> {
    if n == 0 || n > MAX_WORKER_THREADS {
        return Err(Status::invalid_argument(format!(
            "worker_threads: must be 1 to {MAX_WORKER_THREADS}, got {n}"
        )));
    }
    let mut r = REQUESTED_WORKERS.lock().unwrap_or_else(|e| e.into_inner());
    if r.1 {
        drop(r);
        let running = WORKERS
            .get()
            .map(|w| format!(" with {w} worker threads"))
            .unwrap_or_default();
        return Err(Status::new(
            Code::FailedPrecondition,
            format!("worker_threads: the runtime already runs{running}; set the count before the first client or registration"),
        ));
    }
    r.0 = n;
    Ok(())
}

/// The runtime's worker count (starting the runtime if needed).
pub fn workers() -> usize {
    get();
    *WORKERS.get().expect("set when the runtime starts")
}

/// CPUs this process may run on (1 when unknown).
fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
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
        let workers = *WORKERS.get_or_init(worker_threads);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
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

/// Runs the future that `start` makes on the runtime (on a call loop, see
/// [`run_on_call_loop`], which calls `start` there) and blocks the calling (non-runtime) thread
/// until it ends. Everything the call does, HTTP/2 included, then happens on the runtime's
/// workers, where the connection's task and the call loop wake each other without crossing
/// threads; the caller is woken once, when the result is ready (see [`SpinPolicy`] for how a
/// lone caller waits). A panic in the future is re-raised here.
pub fn run_blocking<S, F>(start: S) -> F::Output
where
    S: FnOnce() -> F + Send + 'static,
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use futures_util::FutureExt;
    use std::panic::AssertUnwindSafe;
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
    run_on_call_loop(move || async move {
        let result = AssertUnwindSafe(start()).catch_unwind().await;
        *filler.0.value.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        drop(filler);
    });
    wait_for(&slot.done, 0);
    let result = slot.value.lock().unwrap_or_else(|e| e.into_inner()).take();
    match result {
        Some(Ok(value)) => value,
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        None => panic!("the grpc-failover runtime dropped the call unfinished"),
    }
}

/// Blocks the calling thread until `done` is set by a thread that then unparks it: it spins
/// first when that pays (see [`SpinPolicy`]), then parks. `own_queued` is how many of the queued
/// calls in flight this caller waits for (they do not count as other callers).
pub(crate) fn wait_for(done: &AtomicBool, own_queued: usize) {
    let wait = SPIN.begin(own_queued);
    wait.spin(done);
    while !done.load(Ordering::Acquire) {
        std::thread::park();
    }
}

/// Counts an async call whose outcome goes to a completion queue as a waiting caller while it is
/// in flight: its waiter (a goroutine, an event loop) needs the cores as a blocked caller would.
pub(crate) fn queued_call() -> QueuedCall {
    SPIN.queued.fetch_add(1, Ordering::AcqRel);
    QueuedCall(())
}

/// A queued call in flight; stops counting when dropped.
pub(crate) struct QueuedCall(());

impl Drop for QueuedCall {
    fn drop(&mut self) {
        SPIN.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A call running on a call loop: it reports its own result.
type Job = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A call on its way to a call loop: the loop calls it to make the call's future. The caller's
/// thread allocates only this closure (the call's arguments); the future, about 2.4 KB, is
/// allocated and freed on the loop's thread, which keeps the allocator's fast path (an object
/// freed by another thread must be collected by its owner's allocator first).
type Starter = Box<dyn FnOnce() -> Job + Send>;

/// Runs a call on one of the call loops: one task per worker thread that polls many calls,
/// instead of one task per call.
///
/// Spawning from a thread outside the runtime costs an allocation, the runtime's task list
/// lock and its injection queue lock, and often a wake-up of a parked worker. A loop that is
/// already awake takes a new call through a channel without any of that, and one poll of a loop
/// finishes every call whose response came in together. With 32 threads calling on this
/// 2-core machine, the client spent about 24 µs of CPU per call this way against about 27 µs
/// with a task per call; one loop (instead of one per worker) was slower. A caller thread keeps
/// its loop (chosen round-robin per thread) for its lifetime; the calls on one loop run on one
/// worker at a time, so an unusually slow step of one call (copying a large message, say)
/// delays the others on that loop a little.
///
/// Only calls that never block run here: blocking calls (which wake a parked caller) and the
/// async calls of clients created with `nonblocking_callbacks` (the Go binding's, whose
/// callbacks only queue the result). Any other async call's callback runs user code that may
/// block (a Python callback waits for the GIL) and would hold up every call on its loop: those
/// get a task each. Calls submitted together also leave together: the loop starts them in one
/// poll, and their connection writes them in one `writev` (0.12 per call, against 0.66 with a
/// task per call, for the Go binding's 32 concurrent callers).
pub(crate) fn run_on_call_loop<S, F>(start: S)
where
    S: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    static LOOPS: OnceCell<Vec<tokio::sync::mpsc::UnboundedSender<Starter>>> = OnceCell::new();
    let loops = LOOPS.get_or_init(|| {
        (0..workers())
            .map(|_| {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Starter>();
                handle().spawn(
                    crate::balancer::picker::LOOP_POSITIONS
                        .scope(crate::balancer::picker::new_positions(), call_loop(rx)),
                );
                tx
            })
            .collect()
    });
    thread_local! {
        static LOOP: usize = {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            NEXT.fetch_add(1, Ordering::Relaxed)
        };
    }
    let index = LOOP.with(|i| *i) % loops.len();
    let starter: Starter = Box::new(move || Box::pin(start()));
    if let Err(unsent) = loops[index].send(starter) {
        // Not expected: a loop never ends (it survives panics, and its sender is static). If it
        // did, a task of the call's own still runs it.
        handle().spawn((unsent.0)());
    }
}

async fn call_loop(mut jobs: tokio::sync::mpsc::UnboundedReceiver<Starter>) {
    use futures_util::StreamExt;
    use std::task::Poll;
    let mut running = futures_util::stream::FuturesUnordered::new();
    let mut keeper = WheelKeeper::default();
    std::future::poll_fn(|cx| {
        loop {
            match jobs.poll_recv(cx) {
                Poll::Ready(Some(start)) => {
                    // Building a call's future runs none of its code; should it panic anyway,
                    // the starter's captures report to the caller as they are dropped.
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(start)) {
                        Ok(job) => running.push(job),
                        Err(_) => log::error!("a call panicked while it started"),
                    }
                }
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => break,
            }
        }
        keeper.keep(cx, !running.is_empty());
        // Polls the calls that were woken; Pending when none is left to poll now (or when
        // FuturesUnordered yields, having arranged to be polled again). A job catches its own
        // panics; should one escape anyway, FuturesUnordered drops that job (whose drop reports
        // an error to its caller: run_blocking's Filler, an async call's OnceDone) and the loop
        // goes on with the others. Completion queues learn of the calls that ended in this pass
        // once, after it.
        loop {
            let polled = crate::queue::batched(|| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {}
                }))
            });
            match polled {
                Ok(()) => return Poll::Pending,
                Err(_) => log::error!("a blocking call panicked on its call loop"),
            }
        }
    })
    .await
}

/// Keeps a timer of its call loop's in the runtime's timer wheel while the loop is busy, and for
/// a while after.
///
/// Every call with a deadline registers a timer. Tokio wakes its I/O driver (a write to an
/// eventfd, then a return from `epoll_wait` for nothing) whenever a new timer is due before the
/// driver's next planned wake-up, even when the driver is not parked (tokio issue #5207); with
/// an empty wheel, any timer is. The wheel empties each time a loop's calls have all ended while
/// their callers prepare the next ones, which with the Go binding's 32 callers happened about
/// every 7th call. A timer that is always due within `PERIOD` keeps later deadlines from waking
/// the driver: write syscalls went from 0.45 to 0.17 per call, context switches from 0.67 to
/// 0.53. It lapses after a `PERIOD` in which the loop had no call in flight, so an idle library
/// wakes no thread (a call in flight, even a stalled one, keeps it: 4 wake-ups a second).
#[derive(Default)]
struct WheelKeeper {
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Calls ran since the timer was last armed.
    busy: bool,
}

impl WheelKeeper {
    const PERIOD: std::time::Duration = std::time::Duration::from_millis(250);

    fn keep(&mut self, cx: &mut std::task::Context<'_>, busy: bool) {
        use std::future::Future;
        self.busy |= busy;
        loop {
            let Some(timer) = self.timer.as_mut() else {
                if !self.busy {
                    return;
                }
                self.busy = false;
                self.timer = Some(Box::pin(tokio::time::sleep(Self::PERIOD)));
                continue;
            };
            if timer.as_mut().poll(cx).is_pending() {
                return;
            }
            if !self.busy {
                self.timer = None;
                return;
            }
            self.busy = false;
            timer
                .as_mut()
                .reset(tokio::time::Instant::now() + Self::PERIOD);
        }
    }
}

static SPIN: once_cell::sync::Lazy<SpinPolicy> = once_cell::sync::Lazy::new(|| {
    let limit_us = std::env::var("GF_SYNC_SPIN_US")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_SPIN_LIMIT_US);
    SpinPolicy::new(if cores() < 2 { 0 } else { limit_us })
});

const DEFAULT_SPIN_LIMIT_US: u64 = 250;

/// How a blocked caller waits: a caller that is the only one blocked spins for a short,
/// adaptive while before it parks.
///
/// Waking a parked thread costs a futex call and, worse, the time the kernel (on a virtual
/// machine, the hypervisor) takes to bring an idle CPU back: on the 2-core machine `make bench`
/// runs on, a lone caller's 64-byte call took about 110 µs when it parked and about 75 µs when
/// it spun. Spinning only pays when the result comes soon and a core is free, so a caller
/// spins when
///   - the machine has at least 2 cores,
///   - no other caller is blocked in the library and no async call of another caller's waits
///     for a completion queue (with more, spinners would take the cores the runtime's workers
///     need, and busy workers answer quickly anyway), and
///   - recent calls ended quickly: it spins for twice their mean duration (an exponentially
///     weighted mean), and not at all when that mean is above the limit, `GF_SYNC_SPIN_US`
///     (default 250 µs; 0 turns spinning off).
///
/// It stops as soon as a second caller blocks or queues a call. Blocking calls (`gf_invoke`) and
/// waits on a completion queue (`gf_queue_wait`, the Go binding's lone caller) follow this one
/// policy. The cost: a lone caller of fast calls keeps one
/// core busy while it waits, for at most the limit per call.
pub(crate) struct SpinPolicy {
    /// Callers blocked right now.
    blocked: AtomicUsize,
    /// Calls in flight whose outcome goes to a completion queue.
    queued: AtomicUsize,
    /// Exponentially weighted mean duration of recent blocking waits, in nanoseconds (0: none yet).
    mean_ns: AtomicU64,
    limit_ns: u64,
}

/// Why [`SpinWait::spin`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SpinEnd {
    /// The result arrived.
    Done,
    /// Spinning is off, or recent calls were too slow for it to pay.
    NotWorthIt,
    /// Another caller is blocked too, or has a queued call in flight.
    Crowded,
    /// The budget ran out first.
    OutOfBudget,
}

/// One caller's wait; records its duration in the policy's mean when dropped.
pub(crate) struct SpinWait<'a> {
    policy: &'a SpinPolicy,
    started: std::time::Instant,
    /// The queued calls this caller waits for itself.
    own_queued: usize,
}

impl SpinPolicy {
    pub(crate) fn new(limit_us: u64) -> SpinPolicy {
        SpinPolicy {
            blocked: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            mean_ns: AtomicU64::new(0),
            limit_ns: limit_us.saturating_mul(1000),
        }
    }

    /// Starts a caller's wait; `own_queued` as in [`wait_for`].
    pub(crate) fn begin(&self, own_queued: usize) -> SpinWait<'_> {
        self.blocked.fetch_add(1, Ordering::AcqRel);
        SpinWait {
            policy: self,
            started: std::time::Instant::now(),
            own_queued,
        }
    }

    /// Whether callers other than this one wait: blocked, or with a queued call in flight.
    fn crowded(&self, own_queued: usize) -> bool {
        let others = self.blocked.load(Ordering::Relaxed) - 1;
        others + self.queued.load(Ordering::Relaxed) > own_queued
    }

    fn record(&self, took_ns: u64) {
        // mean += (took - mean) / 8. Updates that race may lose a sample: the mean is a hint.
        let mean = self.mean_ns.load(Ordering::Relaxed);
        let next = if mean == 0 {
            took_ns.max(1)
        } else {
            mean - mean / 8 + took_ns / 8
        };
        self.mean_ns.store(next, Ordering::Relaxed);
    }
}

impl SpinWait<'_> {
    /// Spins until `done` is set or spinning stops paying (see [`SpinPolicy`]); the caller
    /// parks afterwards unless it returned [`SpinEnd::Done`].
    pub(crate) fn spin(&self, done: &AtomicBool) -> SpinEnd {
        let policy = self.policy;
        let mean = policy.mean_ns.load(Ordering::Relaxed);
        if policy.limit_ns == 0 || mean > policy.limit_ns {
            return SpinEnd::NotWorthIt;
        }
        let budget = std::time::Duration::from_nanos(
            mean.saturating_mul(2)
                .clamp(MIN_SPIN_NS.min(policy.limit_ns), policy.limit_ns),
        );
        loop {
            for _ in 0..64 {
                if done.load(Ordering::Acquire) {
                    return SpinEnd::Done;
                }
                std::hint::spin_loop();
            }
            if policy.crowded(self.own_queued) {
                return SpinEnd::Crowded;
            }
            if self.started.elapsed() > budget {
                return SpinEnd::OutOfBudget;
            }
        }
    }
}

/// The shortest spin, also the first caller's (no mean yet).
const MIN_SPIN_NS: u64 = 20_000;

impl Drop for SpinWait<'_> {
    fn drop(&mut self) {
        self.policy.blocked.fetch_sub(1, Ordering::AcqRel);
        let took = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.policy.record(took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_wheel_keeper_stays_armed_while_busy_and_lapses_when_idle() {
        // A paused clock: the sleeps below advance it exactly, however busy the machine is.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            async fn armed(keeper: &mut WheelKeeper, busy: bool) -> bool {
                std::future::poll_fn(move |cx| {
                    keeper.keep(cx, busy);
                    std::task::Poll::Ready(keeper.timer.is_some())
                })
                .await
            }
            let k = &mut WheelKeeper::default();
            assert!(!armed(k, false).await, "idle from the start: no timer");
            assert!(armed(k, true).await, "busy: armed");
            // Busy again within the period: still armed a period later.
            tokio::time::sleep(WheelKeeper::PERIOD / 2).await;
            assert!(armed(k, true).await);
            tokio::time::sleep(WheelKeeper::PERIOD).await;
            assert!(
                armed(k, false).await,
                "re-armed: calls ran during the last period"
            );
            // A whole period without calls: it lapses.
            tokio::time::sleep(WheelKeeper::PERIOD * 2).await;
            assert!(!armed(k, false).await);
        });
    }

    #[test]
    fn worker_threads_are_asked_for_before_the_runtime_starts() {
        assert_eq!(
            set_worker_threads(0).unwrap_err().code,
            Code::InvalidArgument
        );
        assert_eq!(
            set_worker_threads(MAX_WORKER_THREADS + 1).unwrap_err().code,
            Code::InvalidArgument
        );
        get();
        let err = set_worker_threads(2).unwrap_err();
        assert_eq!(err.code, Code::FailedPrecondition);
        assert!(err.message.contains("already runs"), "{}", err.message);
        assert!(workers() >= 1);
    }

    #[test]
    fn a_lone_caller_spins_until_its_result_arrives() {
        // A budget of 10 s: `done`, set after 20 ms, ends the spin long before.
        let policy = Arc::new(SpinPolicy::new(10_000_000));
        policy.record(5_000_000_000);
        let done = Arc::new(AtomicBool::new(false));
        let setter = {
            let done = done.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                done.store(true, Ordering::Release);
            })
        };
        assert_eq!(policy.begin(0).spin(&done), SpinEnd::Done);
        setter.join().unwrap();
    }

    #[test]
    fn a_second_blocked_caller_stops_the_spin() {
        let policy = SpinPolicy::new(10_000_000);
        policy.record(5_000_000_000);
        let done = AtomicBool::new(false);
        let first = policy.begin(0);
        let _second = policy.begin(0);
        assert_eq!(first.spin(&done), SpinEnd::Crowded);
    }

    #[test]
    fn another_callers_queued_call_stops_the_spin_and_the_callers_own_does_not() {
        let policy = SpinPolicy::new(10_000);
        policy.record(5_000);
        let done = AtomicBool::new(false);
        policy.queued.fetch_add(1, Ordering::AcqRel);
        // Waiting for its own queued call, a lone caller spins until its budget runs out.
        assert_eq!(policy.begin(1).spin(&done), SpinEnd::OutOfBudget);
        assert_eq!(policy.begin(0).spin(&done), SpinEnd::Crowded);
        policy.queued.fetch_add(1, Ordering::AcqRel);
        assert_eq!(policy.begin(1).spin(&done), SpinEnd::Crowded);
    }

    #[test]
    fn no_spin_when_off_or_when_calls_are_slower_than_the_limit() {
        let done = AtomicBool::new(false);
        assert_eq!(SpinPolicy::new(0).begin(0).spin(&done), SpinEnd::NotWorthIt);
        let policy = SpinPolicy::new(250);
        policy.record(300_000);
        assert_eq!(policy.begin(0).spin(&done), SpinEnd::NotWorthIt);
    }

    #[test]
    fn the_budget_ends_a_spin_whose_result_never_comes() {
        let policy = SpinPolicy::new(250);
        policy.record(10_000);
        assert_eq!(
            policy.begin(0).spin(&AtomicBool::new(false)),
            SpinEnd::OutOfBudget
        );
    }

    #[test]
    fn the_mean_follows_recent_waits() {
        let policy = SpinPolicy::new(250);
        policy.record(80_000);
        assert_eq!(policy.mean_ns.load(Ordering::Relaxed), 80_000);
        policy.record(160_000);
        assert_eq!(policy.mean_ns.load(Ordering::Relaxed), 90_000);
        for _ in 0..100 {
            policy.record(1_000_000);
        }
        let done = AtomicBool::new(true);
        assert_eq!(policy.begin(0).spin(&done), SpinEnd::NotWorthIt);
        assert_eq!(policy.blocked.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn blocking_calls_from_many_threads_get_their_own_results() {
        let threads: Vec<_> = (0..16u64)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..200u64 {
                        let got = run_blocking(move || async move {
                            if i % 3 == 0 {
                                tokio::time::sleep(std::time::Duration::from_micros(50)).await;
                            } else {
                                tokio::task::yield_now().await;
                            }
                            t * 1000 + i
                        });
                        assert_eq!(got, t * 1000 + i);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn a_panic_in_a_blocking_call_reaches_its_caller_and_the_loops_go_on() {
        let caught = std::panic::catch_unwind(|| {
            run_blocking(|| async {
                tokio::task::yield_now().await;
                panic!("boom in a call");
            })
        });
        let message = caught.expect_err("the panic reaches the caller");
        assert_eq!(message.downcast_ref::<&str>(), Some(&"boom in a call"));
        // The same thread (so the same call loop) and another thread still get results.
        assert_eq!(run_blocking(|| async { 7 }), 7);
        assert_eq!(
            std::thread::spawn(|| run_blocking(|| async { 8 }))
                .join()
                .unwrap(),
            8
        );
    }
}
