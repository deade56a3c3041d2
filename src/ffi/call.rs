//! gf_call: the async calls whose outcome goes to a C callback (gf_invoke_async[_ex]), and the
//! handle they hand back to cancel them (gf_call_cancel, gf_call_free). Running the call and
//! reporting exactly once is the core's (`async_call`); this file converts the outcome for C.

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::call_options::{gf_call_options, options_arg, timeout_options};
use super::client::{gf_client, prepare};
use super::result::gf_result;
use crate::async_call::{spawn, Place, Prepared};
use crate::client::ResponseMetadata;
use crate::{CallResult, Code, Status};

/// An async call in flight. Opaque. Lets the caller cancel the call; free it with
/// `gf_call_free` exactly once (before or after the callback ran: both are fine).
pub struct gf_call {
    cancel: CancellationToken,
}

/// Starts `p` at `place`, with a handle in `*call_out` (when non-NULL) that cancels it. Shared
/// with the queued calls.
pub(super) fn start(
    p: Prepared,
    call_out: *mut *mut gf_call,
    metadata: ResponseMetadata,
    place: Place,
    done: impl FnOnce(CallResult) + Send + 'static,
) {
    let cancel = CancellationToken::new();
    if !call_out.is_null() {
        let handle = Arc::into_raw(Arc::new(gf_call {
            cancel: cancel.clone(),
        })) as *mut gf_call;
        // SAFETY: checked for NULL.
        unsafe { *call_out = handle };
    }
    spawn(p, cancel, metadata, place, done);
}

/// Completion callback of `gf_invoke_async`. Runs exactly once per accepted call, on a library
/// thread. `response` (with `response_len`) and `message` are valid only during the callback;
/// `message` is "" on success. The callback must not block for long; it may start new async
/// calls, and may call `gf_call_free` and `gf_call_cancel`, but not blocking `gf_` calls
/// (`gf_invoke` returns 9 FAILED_PRECONDITION there).
///
/// By default each async call runs as a task of its own, so a callback that blocks a while
/// (waiting for a lock, or for Python's GIL) holds up only its own thread. A client created
/// with `"nonblocking_callbacks": true` in its options promises that its callbacks never block
/// (they only hand the outcome over, e.g. push it to a queue): its calls then share the
/// library's call loops, where calls started together are sent together, and the callback runs
/// there. Cheaper per call, but a callback that blocks then delays every call on its loop.
pub type gf_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        code: i32,
        response: *const u8,
        response_len: usize,
        message: *const c_char,
    ),
>;

/// Completion callback of `gf_invoke_async_ex`. Runs exactly once per accepted call, on a
/// library thread, and receives ownership of `result`: free it with `gf_result_free` (during
/// the callback or later, from any thread). Otherwise as `gf_callback` (blocking rules and
/// `nonblocking_callbacks`).
pub type gf_result_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, result: *mut gf_result)>;

/// The caller's user_data, carried to the callback on a library thread.
struct UserData(*mut c_void);
// SAFETY: the header documents that user_data is handed to the callback on a library thread;
// the library never dereferences it.
unsafe impl Send for UserData {}

/// Starts a unary call and returns at once; `callback` gets the outcome.
///
/// - `client`, `method`, `request`/`request_len`, `timeout_ms`: as in `gf_invoke`. The request
///   bytes are copied before this function returns.
/// - `callback`: required. Runs exactly once, on a library thread, for every call this function
///   accepted (returned 0), with `user_data` passed through untouched. Never runs when this
///   function returns an error.
/// - `call_out`: may be NULL; otherwise receives a handle to cancel the call, freed with
///   `gf_call_free` (freeing does not cancel).
/// - `error_out`: as in `gf_connect`.
///
/// Returns 0 when the call started, else 3 INVALID_ARGUMENT or 9 FAILED_PRECONDITION (closed
/// client), and then `call_out` is untouched. Never blocks. Thread-safe; may be called from
/// inside a callback.
#[no_mangle]
pub extern "C" fn gf_invoke_async(
    client: *mut gf_client,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    timeout_ms: u32,
    callback: gf_callback,
    user_data: *mut c_void,
    call_out: *mut *mut gf_call,
    error_out: *mut *mut c_char,
) -> i32 {
    ffi_fn!(error_out, {
        let p = prepare(
            client,
            method,
            request,
            request_len,
            Some(timeout_options(timeout_ms)),
        )?;
        let callback =
            callback.ok_or_else(|| Status::invalid_argument("callback: must not be NULL"))?;
        let user_data = UserData(user_data);
        let place = Place::for_callbacks(&p.client);
        start(p, call_out, ResponseMetadata::Drop, place, move |r| {
            let user_data = user_data;
            let message =
                CString::new(r.status.message.replace('\0', "\\0")).expect("NULs replaced");
            let response: &[u8] = if r.status.code == Code::Ok {
                &r.response
            } else {
                &[]
            };
            // SAFETY: the caller gave this callback for exactly this purpose.
            unsafe {
                callback(
                    user_data.0,
                    r.status.code as i32,
                    response.as_ptr(),
                    response.len(),
                    message.as_ptr(),
                )
            };
        });
        Ok(())
    })
}

/// Cancels an async call: its callback then runs with 1 CANCELLED, unless it already ran or is
/// running. Cancelling twice, or after completion, is fine. NULL is fine. Never blocks; any
/// thread, including inside a callback.
#[no_mangle]
pub extern "C" fn gf_call_cancel(call: *mut gf_call) {
    ffi_fn!({
        if !call.is_null() {
            // SAFETY: non-NULL; a live handle from gf_invoke_async.
            unsafe { (*call).cancel.cancel() };
        }
    })
}

/// Frees a call handle. Does not cancel the call: its callback still runs. NULL is fine.
/// Exactly once per handle. Never blocks; any thread.
#[no_mangle]
pub extern "C" fn gf_call_free(call: *mut gf_call) {
    ffi_fn!({
        if !call.is_null() {
            // SAFETY: made by Arc::into_raw in start; freed exactly once.
            drop(unsafe { Arc::from_raw(call as *const gf_call) });
        }
    })
}

/// Like `gf_invoke_async`, with call options and a full result handed to the callback (which
/// owns it). `options` may be NULL and is copied before return. Same rules as
/// `gf_invoke_async` for the callback, `call_out`, `error_out` and threading.
#[no_mangle]
pub extern "C" fn gf_invoke_async_ex(
    client: *mut gf_client,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    options: *const gf_call_options,
    callback: gf_result_callback,
    user_data: *mut c_void,
    call_out: *mut *mut gf_call,
    error_out: *mut *mut c_char,
) -> i32 {
    ffi_fn!(error_out, {
        let p = prepare(client, method, request, request_len, options_arg(options))?;
        let callback =
            callback.ok_or_else(|| Status::invalid_argument("callback: must not be NULL"))?;
        let user_data = UserData(user_data);
        let place = Place::for_callbacks(&p.client);
        start(p, call_out, ResponseMetadata::Keep, place, move |r| {
            let user_data = user_data;
            let result = Box::into_raw(Box::new(gf_result::new(r)));
            // SAFETY: the caller gave this callback for exactly this purpose; it owns `result`.
            unsafe { callback(user_data.0, result) };
        });
        Ok(())
    })
}
