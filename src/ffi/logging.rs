//! Where the library's log records go: stderr by default (`GF_LOG` sets the level), or a
//! function of the host's (`gf_set_log_callback`); the level on its own (`gf_set_log_level`).

use std::ffi::{c_char, c_void};

use crate::Status;

/// Log levels of `gf_set_log_callback`, `gf_set_log_level` and `gf_log_callback` (the
/// numbering of Rust's `log` crate: a level includes every level below it).
pub const GF_LOG_OFF: i32 = 0;
pub const GF_LOG_ERROR: i32 = 1;
pub const GF_LOG_WARN: i32 = 2;
pub const GF_LOG_INFO: i32 = 3;
pub const GF_LOG_DEBUG: i32 = 4;
pub const GF_LOG_TRACE: i32 = 5;

/// Receives one log record: `level` is GF_LOG_ERROR to GF_LOG_TRACE; `target` the part of
/// the library that logged (a Rust module path such as "grpc_failover::balancer::subchannel",
/// or "rustls::..." for records of the TLS stack inside it);
/// `message` the text, without a trailing newline. Both strings are NUL-terminated UTF-8, owned
/// by the library and valid only during the call.
///
/// It runs on the library's log thread ("gf-log"), one record at a time, in the order they were
/// logged, never on the thread that logged and never while a library lock is held. It may block
/// (take a lock, wait for Python's GIL, write to a slow pipe): that holds up only later records,
/// which wait in a queue of 4,096; past that, records are dropped and a WARN record says how
/// many. It may call any `gf_` function, including `gf_set_log_callback`. The log thread is
/// not joined at exit: a callback that uses state the program tears down (globals, C++ static
/// objects) should be replaced (`gf_set_log_callback` with NULL) before `main` returns.
pub type gf_log_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        level: i32,
        target: *const c_char,
        message: *const c_char,
    ),
>;

fn level_arg(level: i32) -> Result<log::LevelFilter, Status> {
    crate::logging::level_filter(level).ok_or_else(|| {
        Status::invalid_argument(format!(
            "level: {level} is not a log level (GF_LOG_OFF 0 to GF_LOG_TRACE 5)"
        ))
    })
}

/// Routes the library's log records to `callback` (process-wide: one callback for every
/// client), with records at `level` and more severe ones delivered; `level` GF_LOG_OFF turns
/// them off. A NULL `callback` routes records back to stderr, at `level`. Replaces any
/// callback set before. This overrides the level `GF_LOG` gave; without a call to it, records
/// go to stderr at the `GF_LOG` level (default GF_LOG_WARN).
///
/// - `level`: GF_LOG_OFF (0) to GF_LOG_TRACE (5).
/// - `callback`: see `gf_log_callback`; NULL for stderr.
/// - `user_data`: passed to each call of `callback`; the library never dereferences it. It must
///   stay valid until a later `gf_set_log_callback` returns.
/// - `error_out`: as in `gf_connect`.
///
/// Returns 0; 3 INVALID_ARGUMENT for a level out of range (nothing changes); 9
/// FAILED_PRECONDITION when a Rust program linking the library statically installed its own
/// `log` logger first (records then go to it); 13 INTERNAL when the log thread cannot be
/// started. Records already queued are delivered to the new callback (or stderr) if the new
/// level lets them through. Blocks until
/// no call of a callback set before is running, so that once it returns the old callback is not
/// called again and its `user_data` may be freed; called from inside a callback it returns at
/// once (the running call is the caller's own). Thread-safe.
#[no_mangle]
pub extern "C" fn gf_set_log_callback(
    level: i32,
    callback: gf_log_callback,
    user_data: *mut c_void,
    error_out: *mut *mut c_char,
) -> i32 {
    ffi_fn!(error_out, {
        let level = level_arg(level)?;
        crate::logging::set_callback(level, callback, user_data)
    })
}

/// Sets the most detailed level the library logs, to whichever sink is in use (stderr or the
/// callback); GF_LOG_OFF turns logging off. For a binding that follows its host logger's level
/// (Python's `logging`) without replacing the callback.
///
/// - `level`: GF_LOG_OFF (0) to GF_LOG_TRACE (5).
/// - `error_out`: as in `gf_connect`.
///
/// Returns 0, 3 INVALID_ARGUMENT for a level out of range, or 9 FAILED_PRECONDITION as in
/// `gf_set_log_callback`. Never blocks; thread-safe.
#[no_mangle]
pub extern "C" fn gf_set_log_level(level: i32, error_out: *mut *mut c_char) -> i32 {
    ffi_fn!(error_out, {
        let level = level_arg(level)?;
        if crate::logging::set_level(level) {
            Ok(())
        } else {
            Err(Status::new(
                crate::Code::FailedPrecondition,
                "the program installed its own Rust logger: its level is the program's to set",
            ))
        }
    })
}
