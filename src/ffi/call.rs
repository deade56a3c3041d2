//! Async calls, per-call options and call results: gf_invoke_async, gf_call_*, gf_call_options_*,
//! gf_invoke_ex, gf_invoke_async_ex, gf_result_*.

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::client::{client_arg, gf_client, timeout, timeout_options};
use super::{bytes_arg, check_blocking_allowed, guard, guard_void, str_arg};
use crate::client::{split_method, Client};
use crate::client::{CallOptions, CallResult, ResponseMetadata};
use crate::metadata::validate_metadata;
use crate::runtime;
use crate::status::Status;

/// An async call in flight. Opaque. Lets the caller cancel the call; free it with
/// `gf_call_free` exactly once (before or after the callback ran: both are fine).
pub struct gf_call {
    cancel: CancellationToken,
}

/// Options for one call. Opaque; build with `gf_call_options_new`, free with
/// `gf_call_options_free`. The library copies what it needs when a call starts, so one options
/// object may be reused for many calls and freed right after the call function returns. Not
/// thread-safe while being modified.
pub struct gf_call_options {
    opts: CallOptions,
}

/// The outcome of a call: status, response bytes, response headers and trailers. Opaque.
/// Free with `gf_result_free` exactly once. Read-only, so any thread may read it.
pub struct gf_result {
    result: CallResult,
    message: CString,
    headers: Vec<(CString, Bytes)>,
    trailers: Vec<(CString, Bytes)>,
}

fn c_pairs(pairs: &[(String, Bytes)]) -> Vec<(CString, Bytes)> {
    pairs
        .iter()
        .filter_map(|(k, v)| CString::new(k.as_str()).ok().map(|k| (k, v.clone())))
        .collect()
}

impl gf_result {
    pub(super) fn new(result: CallResult) -> gf_result {
        let message =
            CString::new(result.status.message.replace('\0', "\\0")).expect("NULs replaced");
        let headers = c_pairs(&result.headers);
        let trailers = c_pairs(&result.trailers);
        gf_result {
            result,
            message,
            headers,
            trailers,
        }
    }
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

/// A call's checked arguments, copied out of the caller's memory.
pub(super) struct Prepared {
    pub(super) client: Client,
    pub(super) method: String,
    pub(super) request: Bytes,
    pub(super) opts: CallOptions,
}

pub(super) fn prepare(
    client: *mut gf_client,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    options: Option<CallOptions>,
) -> Result<Prepared, Status> {
    let client = client_arg(client)?.clone();
    let method = str_arg(method, "method")?;
    split_method(method)?;
    let request = Bytes::copy_from_slice(bytes_arg(request, request_len, "request")?);
    Ok(Prepared {
        client,
        method: method.to_string(),
        request,
        opts: options.unwrap_or_default(),
    })
}

pub(super) fn options_arg(options: *const gf_call_options) -> Option<CallOptions> {
    // SAFETY: NULL checked; the caller promises a live options object.
    (!options.is_null()).then(|| unsafe { (*options).opts.clone() })
}

/// An async call's completion, run exactly once: with the call's result, or with INTERNAL when
/// the call is dropped before it ends.
struct OnceDone<F: FnOnce(CallResult)>(Option<F>);

impl<F: FnOnce(CallResult)> OnceDone<F> {
    fn call(&mut self, result: CallResult) {
        if let Some(done) = self.0.take() {
            if let Err(panic) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| done(result)))
            {
                log::error!("{}", super::panic_status(panic).message);
            }
        }
    }
}

impl<F: FnOnce(CallResult)> Drop for OnceDone<F> {
    fn drop(&mut self) {
        if self.0.is_some() && !std::thread::panicking() {
            self.call(CallResult::error(Status::internal(
                "internal error in grpc-failover: the call was dropped before it ended",
            )));
        }
    }
}

/// Where an async call runs.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Place {
    /// A task of its own: for callbacks that may block (a Python callback waiting for the GIL),
    /// which then hold up no other call.
    Task,
    /// A call loop (`runtime::run_on_call_loop`), with `done` run there: only when `done` never
    /// blocks.
    Loop,
}

impl Place {
    /// Where the calls of a client with callbacks run.
    fn for_callbacks(client: &Client) -> Place {
        if client.nonblocking_callbacks() {
            Place::Loop
        } else {
            Place::Task
        }
    }
}

/// Starts the call on the runtime; `done` runs once with the result (with the response
/// metadata of a successful call only when `metadata` says Keep).
pub(super) fn spawn(
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
    let call = move || async move {
        use futures_util::FutureExt;
        // Exactly one outcome per accepted call: a panic inside the call becomes INTERNAL, and a
        // call dropped unfinished (its loop or task torn down) still reports one.
        let mut done = OnceDone(Some(done));
        let result = std::panic::AssertUnwindSafe(p.client.invoke_with(
            &p.method,
            p.request,
            &p.opts,
            Some(&cancel),
            metadata,
        ))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| CallResult::error(super::panic_status(panic)));
        done.call(result);
    };
    if place == Place::Loop {
        runtime::run_on_call_loop(call);
    } else {
        runtime::handle().spawn(call());
    }
}

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
    guard(error_out, || {
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
        spawn(p, call_out, ResponseMetadata::Drop, place, move |r| {
            let user_data = user_data;
            let message =
                CString::new(r.status.message.replace('\0', "\\0")).expect("NULs replaced");
            let response: &[u8] = if r.status.code == tonic::Code::Ok {
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
    guard_void(|| {
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
    guard_void(|| {
        if !call.is_null() {
            // SAFETY: made by Arc::into_raw in spawn; freed exactly once.
            drop(unsafe { Arc::from_raw(call as *const gf_call) });
        }
    })
}

/// A new, empty set of call options (no timeout, no metadata, wait-for-ready from the service
/// config). Never NULL. Free with `gf_call_options_free`.
#[no_mangle]
pub extern "C" fn gf_call_options_new() -> *mut gf_call_options {
    Box::into_raw(Box::new(gf_call_options {
        opts: CallOptions::default(),
    }))
}

/// Frees call options. NULL is fine. Exactly once.
#[no_mangle]
pub extern "C" fn gf_call_options_free(options: *mut gf_call_options) {
    guard_void(|| {
        if !options.is_null() {
            // SAFETY: made by gf_call_options_new; freed exactly once.
            drop(unsafe { Box::from_raw(options) });
        }
    })
}

/// Sets the call's deadline in milliseconds across all attempts; 0 = none. NULL options: no-op.
#[no_mangle]
pub extern "C" fn gf_call_options_set_timeout_ms(options: *mut gf_call_options, timeout_ms: u32) {
    guard_void(|| {
        if !options.is_null() {
            // SAFETY: non-NULL live options.
            unsafe { (*options).opts.timeout = timeout(timeout_ms) };
        }
    })
}

/// Overrides the method config's waitForReady: 1 waits for a ready instance up to the
/// deadline, 0 fails fast, -1 goes back to the service config's choice. NULL options: no-op.
#[no_mangle]
pub extern "C" fn gf_call_options_set_wait_for_ready(
    options: *mut gf_call_options,
    wait_for_ready: i32,
) {
    guard_void(|| {
        if !options.is_null() {
            // SAFETY: non-NULL live options.
            unsafe {
                (*options).opts.wait_for_ready = match wait_for_ready {
                    0 => Some(false),
                    w if w > 0 => Some(true),
                    _ => None,
                }
            };
        }
    })
}

/// Adds one request metadata entry. `key` is lower-case ASCII (a-z 0-9 - _ .), not starting
/// with "grpc-" and not an HTTP/1 connection header (connection, keep-alive, proxy-connection,
/// transfer-encoding, upgrade, te); keys ending in "-bin" take any bytes, other values must be
/// printable ASCII.
/// `value` may be NULL when `value_len` is 0. Both are copied. Returns 0 or 3 INVALID_ARGUMENT
/// (`error_out` as in `gf_connect`).
#[no_mangle]
pub extern "C" fn gf_call_options_add_metadata(
    options: *mut gf_call_options,
    key: *const c_char,
    value: *const u8,
    value_len: usize,
    error_out: *mut *mut c_char,
) -> i32 {
    guard(error_out, || {
        if options.is_null() {
            return Err(Status::invalid_argument("options: must not be NULL"));
        }
        let key = str_arg(key, "key")?;
        let value = bytes_arg(value, value_len, "value")?;
        validate_metadata(key, value)?;
        // SAFETY: non-NULL live options.
        unsafe {
            (*options)
                .opts
                .metadata
                .push((key.to_string(), Bytes::copy_from_slice(value)))
        };
        Ok(())
    })
}

/// Like `gf_invoke`, with call options and a full result.
///
/// - `options`: may be NULL (defaults). Copied at the start; may be freed after return.
/// - `result_out`: required; receives a result for every call that started, whatever its
///   code (read the status, response, headers and trailers from it; free with
///   `gf_result_free`). Set to NULL when the arguments were rejected.
///
/// Returns the call's status code (the same as `gf_result_code`), or 3/9 for rejected
/// arguments as in `gf_invoke`, with the message in `*error_out` when non-NULL. Blocks until
/// the call ends, waiting as `gf_invoke` does. Thread-safe; not on a library thread.
#[no_mangle]
pub extern "C" fn gf_invoke_ex(
    client: *mut gf_client,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    options: *const gf_call_options,
    result_out: *mut *mut gf_result,
    error_out: *mut *mut c_char,
) -> i32 {
    if !result_out.is_null() {
        // SAFETY: non-NULL writable pointer.
        unsafe { *result_out = std::ptr::null_mut() };
    }
    guard(error_out, || {
        let p = prepare(client, method, request, request_len, options_arg(options))?;
        if result_out.is_null() {
            return Err(Status::invalid_argument("result_out: must not be NULL"));
        }
        check_blocking_allowed("gf_invoke_ex")?;
        let result = runtime::run_blocking(move || async move {
            p.client.invoke_full(&p.method, p.request, &p.opts).await
        });
        let status = result.status.clone();
        // SAFETY: checked for NULL.
        unsafe { *result_out = Box::into_raw(Box::new(gf_result::new(result))) };
        if status.code == tonic::Code::Ok {
            Ok(())
        } else {
            Err(status)
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
    guard(error_out, || {
        let p = prepare(client, method, request, request_len, options_arg(options))?;
        let callback =
            callback.ok_or_else(|| Status::invalid_argument("callback: must not be NULL"))?;
        let user_data = UserData(user_data);
        let place = Place::for_callbacks(&p.client);
        spawn(p, call_out, ResponseMetadata::Keep, place, move |r| {
            let user_data = user_data;
            let result = Box::into_raw(Box::new(gf_result::new(r)));
            // SAFETY: the caller gave this callback for exactly this purpose; it owns `result`.
            unsafe { callback(user_data.0, result) };
        });
        Ok(())
    })
}

fn result_arg<'a>(result: *const gf_result) -> Option<&'a gf_result> {
    // SAFETY: NULL checked; the caller promises a live result.
    (!result.is_null()).then(|| unsafe { &*result })
}

/// The result's gRPC status code; 3 INVALID_ARGUMENT for a NULL result.
#[no_mangle]
pub extern "C" fn gf_result_code(result: *const gf_result) -> i32 {
    result_arg(result)
        .map(|r| r.result.status.code as i32)
        .unwrap_or(3)
}

/// The status message ("" on success). Valid until `gf_result_free`; do not free it. "" for a
/// NULL result.
#[no_mangle]
pub extern "C" fn gf_result_message(result: *const gf_result) -> *const c_char {
    result_arg(result)
        .map(|r| r.message.as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// The response bytes (empty unless the code is 0). Returns a pointer valid until
/// `gf_result_free` (NULL when empty) and writes the length to `*len_out` (which may be NULL).
#[no_mangle]
pub extern "C" fn gf_result_response(result: *const gf_result, len_out: *mut usize) -> *const u8 {
    let bytes: &[u8] = result_arg(result)
        .map(|r| r.result.response.as_ref())
        .unwrap_or(&[]);
    if !len_out.is_null() {
        // SAFETY: non-NULL writable pointer.
        unsafe { *len_out = bytes.len() };
    }
    if bytes.is_empty() {
        std::ptr::null()
    } else {
        bytes.as_ptr()
    }
}

fn entry(
    list: &[(CString, Bytes)],
    index: usize,
    key_out: *mut *const c_char,
    value_out: *mut *const u8,
    value_len_out: *mut usize,
) -> i32 {
    let Some((key, value)) = list.get(index) else {
        return 11;
    };
    // SAFETY (all three): each pointer is checked for NULL and is writable by contract.
    if !key_out.is_null() {
        unsafe { *key_out = key.as_ptr() };
    }
    if !value_out.is_null() {
        unsafe {
            *value_out = if value.is_empty() {
                std::ptr::null()
            } else {
                value.as_ptr()
            }
        };
    }
    if !value_len_out.is_null() {
        unsafe { *value_len_out = value.len() };
    }
    0
}

/// The number of response headers (0 for a NULL result).
#[no_mangle]
pub extern "C" fn gf_result_header_count(result: *const gf_result) -> usize {
    result_arg(result).map(|r| r.headers.len()).unwrap_or(0)
}

/// Reads response header `index` (0-based, in arrival order; a key may repeat). Writes the
/// NUL-terminated key, the value and its length to the out-pointers that are non-NULL; the
/// pointers stay valid until `gf_result_free`. Values of "-bin" keys are the decoded bytes.
/// Returns 0, 11 OUT_OF_RANGE for a bad index, 3 INVALID_ARGUMENT for a NULL result.
#[no_mangle]
pub extern "C" fn gf_result_header(
    result: *const gf_result,
    index: usize,
    key_out: *mut *const c_char,
    value_out: *mut *const u8,
    value_len_out: *mut usize,
) -> i32 {
    match result_arg(result) {
        Some(r) => entry(&r.headers, index, key_out, value_out, value_len_out),
        None => 3,
    }
}

/// The number of response trailers (0 for a NULL result).
#[no_mangle]
pub extern "C" fn gf_result_trailer_count(result: *const gf_result) -> usize {
    result_arg(result).map(|r| r.trailers.len()).unwrap_or(0)
}

/// Reads response trailer `index`, exactly as `gf_result_header` reads headers. grpc-status
/// and grpc-message are not listed (they are the code and message).
#[no_mangle]
pub extern "C" fn gf_result_trailer(
    result: *const gf_result,
    index: usize,
    key_out: *mut *const c_char,
    value_out: *mut *const u8,
    value_len_out: *mut usize,
) -> i32 {
    match result_arg(result) {
        Some(r) => entry(&r.trailers, index, key_out, value_out, value_len_out),
        None => 3,
    }
}

/// Frees a result. NULL is fine. Exactly once. Any thread.
#[no_mangle]
pub extern "C" fn gf_result_free(result: *mut gf_result) {
    guard_void(|| {
        if !result.is_null() {
            // SAFETY: made by Box::into_raw in this module; freed exactly once.
            drop(unsafe { Box::from_raw(result) });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn an_async_call_reports_exactly_once_also_when_dropped_unfinished() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = |seen: &Arc<Mutex<Vec<tonic::Code>>>| {
            let seen = seen.clone();
            move |r: CallResult| seen.lock().unwrap().push(r.status.code)
        };
        let mut done = OnceDone(Some(record(&seen)));
        done.call(CallResult::error(Status::cancelled("x")));
        done.call(CallResult::error(Status::cancelled("again")));
        drop(done);
        drop(OnceDone(Some(record(&seen))));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![tonic::Code::Cancelled, tonic::Code::Internal]
        );
    }
}
