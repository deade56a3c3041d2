//! The library's logger for the `log` facade, installed once, only if the host program has no
//! logger of its own. Records go to one of two sinks:
//!
//! - stderr (the default), at the level `GF_LOG` names (error, warn, info, debug, trace, off;
//!   default warn);
//! - a host callback ([`set_callback`], `gf_set_log_callback`): how the Python binding feeds
//!   `logging` and the Go binding `log/slog`.
//!
//! A callback never runs on the thread that logged. Library threads format the record and hand
//! it to a bounded queue without waiting (when the queue is full the record is dropped and
//! counted); one thread of its own, `gf-log`, takes records off the queue and calls the
//! callback with no library lock held. So a callback that blocks (on the GIL, on a full pipe)
//! holds up only later log records, never a call, a connection or the runtime, and a callback
//! that calls back into the library cannot deadlock it.

use std::ffi::{c_char, c_void, CString};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Condvar, Mutex};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::{Code, Status};

/// The host's log function: `level` is 1 (error) to 5 (trace), `target` the Rust module that
/// logged (e.g. `grpc_failover::balancer::subchannel`, or `rustls::...` for the TLS stack's
/// records), `message` the text. Both strings are
/// NUL-terminated UTF-8, valid only during the call.
pub type LogFn = unsafe extern "C" fn(
    user_data: *mut c_void,
    level: i32,
    target: *const c_char,
    message: *const c_char,
);

/// Records waiting for the callback; past this many, new ones are dropped (and counted).
const QUEUE_CAPACITY: usize = 4096;

struct Entry {
    level: Level,
    target: String,
    message: String,
}

#[derive(Clone, Copy)]
struct Sink {
    func: LogFn,
    user_data: usize,
    /// Bumped by every [`set_callback`]; tells a setter whether the callback running now is one
    /// it replaced.
    generation: u64,
}

#[derive(Default)]
struct SinkState {
    sink: Option<Sink>,
    generation: u64,
    /// The generation of the callback the `gf-log` thread is running now.
    running: Option<u64>,
}

struct Shared {
    state: Mutex<SinkState>,
    idle: Condvar,
    /// Whether a callback is set: the logging threads' only check before formatting.
    to_callback: AtomicBool,
    queue: SyncSender<Entry>,
    dropped: AtomicU64,
    thread: std::thread::ThreadId,
}

/// The callback's state and the log thread's queue: made with the first callback, leaked (so
/// `&'static`), and forgotten in the child of a fork, which has no log thread (and may have
/// copied the state's lock held): the child's first callback makes new ones.
static SHARED: AtomicPtr<Shared> = AtomicPtr::new(std::ptr::null_mut());

fn current() -> Option<&'static Shared> {
    // SAFETY: a non-null pointer came from Box::into_raw in `shared` and is never freed.
    unsafe { SHARED.load(Ordering::Acquire).as_ref() }
}

extern "C" fn forget_in_child() {
    SHARED.store(std::ptr::null_mut(), Ordering::Release);
}

/// Set when this logger is the one the `log` facade uses (it is not when a Rust host installed
/// its own first).
static INSTALLED: AtomicBool = AtomicBool::new(false);

struct Logger;

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if let Some(shared) = current().filter(|s| s.to_callback.load(Ordering::Acquire)) {
            let entry = Entry {
                level: record.level(),
                target: record.target().to_string(),
                message: record.args().to_string(),
            };
            match shared.queue.try_send(entry) {
                Ok(()) => return,
                Err(TrySendError::Full(_)) => {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // The gf-log thread is gone (it never exits; only if spawning it failed).
                Err(TrySendError::Disconnected(e)) => {
                    to_stderr(e.level, &e.message);
                    return;
                }
            }
        }
        to_stderr(record.level(), &record.args().to_string());
    }

    fn flush(&self) {}
}

fn to_stderr(level: Level, message: &str) {
    eprintln!("grpc-failover {level}: {message}");
}

static LOGGER: Logger = Logger;

/// Installs the logger (once), at the level `GF_LOG` gives.
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let level = match std::env::var("GF_LOG")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "off" => LevelFilter::Off,
            "error" => LevelFilter::Error,
            "info" => LevelFilter::Info,
            "debug" => LevelFilter::Debug,
            "trace" => LevelFilter::Trace,
            _ => LevelFilter::Warn,
        };
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(level);
            INSTALLED.store(true, Ordering::Release);
        }
    });
}

/// The level filter for a C level number (0 off, 1 error .. 5 trace); None when out of range.
pub fn level_filter(level: i32) -> Option<LevelFilter> {
    Some(match level {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        5 => LevelFilter::Trace,
        _ => return None,
    })
}

/// Sets the most detailed level the library logs. False when the library's logger is not the
/// one in use (a Rust host installed its own: its level is the host's to set).
pub fn set_level(level: LevelFilter) -> bool {
    init();
    if !INSTALLED.load(Ordering::Acquire) {
        return false;
    }
    log::set_max_level(level);
    true
}

fn shared() -> std::io::Result<&'static Shared> {
    if let Some(s) = current() {
        return Ok(s);
    }
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only stores an atomic, as a child handler may.
        unsafe { libc::pthread_atfork(None, None, Some(forget_in_child)) };
    });
    let (queue, records) = sync_channel(QUEUE_CAPACITY);
    let thread = std::thread::Builder::new()
        .name("gf-log".to_string())
        .spawn(move || deliver(records))?;
    let made = Box::into_raw(Box::new(Shared {
        state: Mutex::new(SinkState::default()),
        idle: Condvar::new(),
        to_callback: AtomicBool::new(false),
        queue,
        dropped: AtomicU64::new(0),
        thread: thread.thread().id(),
    }));
    match SHARED.compare_exchange(
        std::ptr::null_mut(),
        made,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => {}
        Err(_) => {
            // Another thread made them first. Dropping ours drops its queue's sender: its
            // thread, which received nothing, ends.
            // SAFETY: `made` came from Box::into_raw above and was never shared.
            drop(unsafe { Box::from_raw(made) });
        }
    }
    Ok(current().expect("set above or by another thread"))
}

/// Routes the library's records at `level` and above to `func` (None: back to stderr). Returns
/// once no call of a callback set before runs any more, so the caller may then free what the
/// old `user_data` points to; called from inside a callback (on the `gf-log` thread) it cannot
/// wait for itself and returns at once.
pub fn set_callback(
    level: LevelFilter,
    func: Option<LogFn>,
    user_data: *mut c_void,
) -> Result<(), Status> {
    init();
    if !INSTALLED.load(Ordering::Acquire) {
        return Err(Status::new(
            Code::FailedPrecondition,
            "the program installed its own Rust logger: records go to it",
        ));
    }
    let shared = shared().map_err(|e| {
        Status::new(
            Code::Internal,
            format!("cannot start the gf-log thread: {e}"),
        )
    })?;
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    state.generation += 1;
    let generation = state.generation;
    state.sink = func.map(|func| Sink {
        func,
        user_data: user_data as usize,
        generation,
    });
    shared.to_callback.store(func.is_some(), Ordering::Release);
    log::set_max_level(level);
    if std::thread::current().id() == shared.thread {
        return Ok(());
    }
    while state.running.is_some_and(|g| g < generation) {
        state = shared.idle.wait(state).unwrap_or_else(|e| e.into_inner());
    }
    Ok(())
}

/// The `gf-log` thread: hands each queued record to the callback set when it is taken off the
/// queue (to stderr when none is set any more).
fn deliver(records: Receiver<Entry>) {
    while let Ok(entry) = records.recv() {
        let Some(shared) = current() else {
            // Only in a fork's child, which has no log thread: never here.
            to_stderr(entry.level, &entry.message);
            continue;
        };
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            emit(
                shared,
                &Entry {
                    level: Level::Warn,
                    target: module_path!().to_string(),
                    message: format!(
                        "{dropped} log records dropped: the log callback did not keep up"
                    ),
                },
            );
        }
        emit(shared, &entry);
    }
}

fn emit(shared: &Shared, entry: &Entry) {
    // Queued before the level was lowered (or logging turned off): the level now in force
    // decides, for either sink.
    if entry.level > log::max_level() {
        return;
    }
    let sink = {
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let sink = state.sink;
        state.running = sink.map(|s| s.generation);
        sink
    };
    match sink {
        Some(sink) => {
            let target = c_string(&entry.target);
            let message = c_string(&entry.message);
            // SAFETY: the host gave this function and user_data to gf_set_log_callback and keeps
            // them valid until a later gf_set_log_callback returns, which waits for this call.
            unsafe {
                (sink.func)(
                    sink.user_data as *mut c_void,
                    entry.level as i32,
                    target.as_ptr(),
                    message.as_ptr(),
                )
            };
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.running = None;
            shared.idle.notify_all();
        }
        // Queued for a callback since replaced by stderr.
        None => to_stderr(entry.level, &entry.message),
    }
}

fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).expect("NULs replaced")
}
