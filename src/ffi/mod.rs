//! The C ABI: handles, buffers, errors and the panic boundary. No logic lives here: every
//! function converts and checks its arguments, calls the Rust API, and converts back.
//!
//! One file per exported type, holding the type, its constructor, destructor and accessors:
//! `client.rs` (gf_client, with the blocking calls gf_invoke and gf_invoke_ex, whose outcome goes
//! straight back to the caller), `call.rs` (gf_call: the callback calls gf_invoke_async[_ex],
//! which hand one back), `call_options.rs`, `result.rs`, `queue.rs` (gf_queue, with the calls
//! whose outcome goes to a queue: gf_invoke_queued[_ex]), `registration.rs` and `logging.rs`
//! (where log records go: gf_set_log_callback, gf_set_log_level). This file keeps
//! what they share: the panic boundary (`ffi_fn!`), the status codes, gf_bytes, strings, the
//! argument readers, and the library-wide functions (version, worker threads).

#![allow(non_camel_case_types)]
// The exported functions take raw pointers by design (that is the C ABI); each one checks them
// and the header documents what the caller must guarantee.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

/// The panic boundary: every exported function's body runs inside it, so that a panic never
/// unwinds into C. Wrapping the body (not the whole `extern "C" fn`, as hyper's `ffi_fn!` does)
/// leaves each function and its `///` docs a plain item that cbindgen reads without expanding
/// macros, as with rustls-ffi's `ffi_panic_boundary!`. Three forms:
///
/// - `ffi_fn!(error_out, { body })`: a function that returns a status code. The body returns
///   `Result<(), Status>`: Ok is GF_OK, an error its code; a panic is GF_INTERNAL with the
///   panic's message, and is logged. `*error_out` (when non-NULL) is always written: NULL on
///   GF_OK, else the message.
/// - `ffi_fn!(on_panic = default, { body })`: any other return type; a panic returns `default`
///   (the safe value the function's doc names) and is logged.
/// - `ffi_fn!({ body })`: a function that returns nothing; a panic is logged.
macro_rules! ffi_fn {
    (on_panic = $default:expr, $body:block) => {
        $crate::ffi::value_boundary(|| $body, || $default)
    };
    ($error_out:ident, $body:block) => {
        $crate::ffi::status_boundary($error_out, || $body)
    };
    ($body:block) => {
        $crate::ffi::value_boundary(|| $body, || ())
    };
}

mod call;
mod call_options;
mod client;
mod logging;
mod queue;
mod registration;
mod result;

// The exported functions and types as Rust paths too (the public ones; what the submodules
// share among themselves stays theirs). The fuzz targets call the C ABI through these, so
// the compiler checks their calls against the real signatures.
pub use self::{
    call::*, call_options::*, client::*, logging::*, queue::*, registration::*, result::*,
};

use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::async_call::panic_status;
use crate::{Code, Status};

/// The version of this C ABI. It changes when an existing function's signature or meaning
/// changes; adding functions does not change it.
pub const GF_ABI_VERSION: u32 = 1;

/// Status codes returned by the `gf_` functions (the gRPC codes).
pub const GF_OK: i32 = 0;
pub const GF_CANCELLED: i32 = 1;
pub const GF_UNKNOWN: i32 = 2;
pub const GF_INVALID_ARGUMENT: i32 = 3;
pub const GF_DEADLINE_EXCEEDED: i32 = 4;
pub const GF_NOT_FOUND: i32 = 5;
pub const GF_ALREADY_EXISTS: i32 = 6;
pub const GF_PERMISSION_DENIED: i32 = 7;
pub const GF_RESOURCE_EXHAUSTED: i32 = 8;
pub const GF_FAILED_PRECONDITION: i32 = 9;
pub const GF_ABORTED: i32 = 10;
pub const GF_OUT_OF_RANGE: i32 = 11;
pub const GF_UNIMPLEMENTED: i32 = 12;
pub const GF_INTERNAL: i32 = 13;
pub const GF_UNAVAILABLE: i32 = 14;
pub const GF_DATA_LOSS: i32 = 15;
pub const GF_UNAUTHENTICATED: i32 = 16;

/// A byte buffer owned by the library. Free it with `gf_bytes_free` exactly once.
#[repr(C)]
pub struct gf_bytes {
    /// The bytes; NULL when `len` is 0.
    pub data: *mut u8,
    pub len: usize,
}

impl gf_bytes {
    pub(crate) fn empty() -> gf_bytes {
        gf_bytes {
            data: std::ptr::null_mut(),
            len: 0,
        }
    }

    pub(crate) fn from_vec(v: Vec<u8>) -> gf_bytes {
        if v.is_empty() {
            return gf_bytes::empty();
        }
        let boxed = v.into_boxed_slice();
        let len = boxed.len();
        gf_bytes {
            data: Box::into_raw(boxed) as *mut u8,
            len,
        }
    }
}

/// The `ffi_fn!(error_out, { ... })` boundary; not called directly.
pub(crate) fn status_boundary(
    error_out: *mut *mut c_char,
    body: impl FnOnce() -> Result<(), Status>,
) -> i32 {
    crate::logging::init();
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let status = panic_status(panic);
        log::error!("{}", status.message);
        Err(status)
    });
    match outcome {
        Ok(()) => {
            write_error(error_out, None);
            GF_OK
        }
        Err(status) => {
            write_error(error_out, Some(&status.message));
            status.code as i32
        }
    }
}

/// The `ffi_fn!(on_panic = ..., { ... })` and `ffi_fn!({ ... })` boundary; not called
/// directly.
pub(crate) fn value_boundary<T>(body: impl FnOnce() -> T, default: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        crate::logging::init();
        log::error!("{}", panic_status(panic).message);
        default()
    })
}

pub(crate) fn write_error(error_out: *mut *mut c_char, message: Option<&str>) {
    if error_out.is_null() {
        return;
    }
    let value = match message {
        Some(m) => to_c_string(m),
        None => std::ptr::null_mut(),
    };
    // SAFETY: error_out was checked for NULL; the caller promises it points to a char*.
    unsafe { *error_out = value };
}

pub(crate) fn to_c_string(s: &str) -> *mut c_char {
    CString::new(s.replace('\0', "\\0"))
        .expect("NULs replaced")
        .into_raw()
}

/// Reads a required NUL-terminated UTF-8 argument.
pub(crate) fn str_arg<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, Status> {
    if ptr.is_null() {
        return Err(Status::invalid_argument(format!(
            "{name}: must not be NULL"
        )));
    }
    // SAFETY: non-NULL; the caller promises a NUL-terminated string that outlives the call.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|e| Status::invalid_argument(format!("{name}: not valid UTF-8 ({e})")))
}

/// Reads an optional NUL-terminated UTF-8 argument (NULL is None).
pub(crate) fn opt_str_arg<'a>(ptr: *const c_char, name: &str) -> Result<Option<&'a str>, Status> {
    if ptr.is_null() {
        Ok(None)
    } else {
        str_arg(ptr, name).map(Some)
    }
}

/// Reads a (pointer, length) byte argument; NULL is allowed only with length 0.
pub(crate) fn bytes_arg<'a>(ptr: *const u8, len: usize, name: &str) -> Result<&'a [u8], Status> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Status::invalid_argument(format!(
            "{name}: NULL with a length of {len}"
        )));
    }
    // SAFETY: non-NULL; the caller promises `len` readable bytes for the duration of the call.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Sync entry points block the caller's thread; on a library thread (inside a callback) that
/// would deadlock the runtime, so they refuse.
pub(crate) fn check_blocking_allowed(function: &str) -> Result<(), Status> {
    if crate::runtime::on_runtime_thread() {
        return Err(Status::new(
            Code::FailedPrecondition,
            format!("{function} blocks and cannot be called on a library thread (inside a callback); use the async variant"),
        ));
    }
    Ok(())
}

/// Frees a buffer returned by the library and sets it to {NULL, 0}. NULL, and a buffer that is
/// already {NULL, 0}, are fine. Never blocks; any thread.
#[no_mangle]
pub extern "C" fn gf_bytes_free(bytes: *mut gf_bytes) {
    ffi_fn!({
        if bytes.is_null() {
            return;
        }
        // SAFETY: non-NULL; the caller passes a gf_bytes the library filled in.
        let b = unsafe { &mut *bytes };
        if !b.data.is_null() {
            // SAFETY: data/len came from Box<[u8]>::into_raw in gf_bytes::from_vec.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(b.data, b.len)) });
        }
        b.data = std::ptr::null_mut();
        b.len = 0;
    })
}

/// Frees a string returned by the library (error messages, stats JSON). NULL is fine. Free
/// each string exactly once. Never blocks; any thread.
#[no_mangle]
pub extern "C" fn gf_string_free(s: *mut c_char) {
    ffi_fn!({
        if !s.is_null() {
            // SAFETY: the library made this string with CString::into_raw.
            drop(unsafe { CString::from_raw(s) });
        }
    })
}

/// The library version, e.g. "0.1.0". A static string: never free it. Never NULL ("" after an
/// internal failure). Any thread.
#[no_mangle]
pub extern "C" fn gf_version() -> *const c_char {
    ffi_fn!(on_panic = c"".as_ptr(), {
        crate::VERSION.as_ptr() as *const c_char
    })
}

/// The C ABI version this library implements (GF_ABI_VERSION of its header; 0 after an internal
/// failure). Any thread.
#[no_mangle]
pub extern "C" fn gf_abi_version() -> u32 {
    ffi_fn!(on_panic = 0, { GF_ABI_VERSION })
}

/// Sets how many worker threads the library's runtime starts with (default: min(cores, 4)).
/// The runtime is process-wide and starts with the first client or registration; call this
/// before that. The environment variable `GF_WORKER_THREADS`, when set, still wins, so that an
/// operator can override what a program chose.
///
/// Fewer workers can be faster when the program's own threads already keep the cores busy:
/// the Go binding asks for half the CPUs (README, "Threads and memory"). Callbacks that block
/// (a Python callback waiting for the GIL) want the default: a blocked worker holds up the calls
/// queued behind it.
///
/// - `worker_threads`: 1 to 256.
/// - `error_out`: as in `gf_connect`.
///
/// Returns 0 when the count will be used, 3 INVALID_ARGUMENT for 0 or more than 256, 9
/// FAILED_PRECONDITION once the runtime runs (its count is then fixed). Never blocks;
/// thread-safe.
#[no_mangle]
pub extern "C" fn gf_set_worker_threads(worker_threads: u32, error_out: *mut *mut c_char) -> i32 {
    ffi_fn!(error_out, {
        crate::runtime::set_worker_threads(usize::try_from(worker_threads).unwrap_or(usize::MAX))
    })
}

#[cfg(test)]
mod tests;
