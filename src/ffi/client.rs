//! gf_client: gf_connect, gf_client_shutdown, gf_close, gf_client_stats, gf_client_metrics, and
//! the blocking calls (gf_invoke, gf_invoke_ex), whose outcome goes straight back to the calling
//! thread. The async calls live with what tracks them: call.rs (a callback and a gf_call) and
//! queue.rs (a gf_queue).

use std::ffi::c_char;

use bytes::Bytes;

use super::call_options::{gf_call_options, options_arg, timeout_options};
use super::result::gf_result;
use super::{bytes_arg, check_blocking_allowed, gf_bytes, opt_str_arg, str_arg, to_c_string};
use crate::async_call::Prepared;
use crate::client::split_method;
use crate::config::Options;
use crate::runtime;
use crate::{CallOptions, Client, Code, Status};

/// A client for one target. Opaque. Thread-safe: any number of threads may call on it at once.
pub struct gf_client {
    pub(crate) client: Client,
}

/// Borrows the client behind a handle, checking for NULL.
pub(crate) fn client_arg<'a>(client: *const gf_client) -> Result<&'a Client, Status> {
    if client.is_null() {
        return Err(Status::invalid_argument("client: must not be NULL"));
    }
    // SAFETY: non-NULL; the caller promises a live handle from gf_connect.
    let c = unsafe { &(*client).client };
    if c.is_closed() {
        return Err(Status::new(
            Code::FailedPrecondition,
            "client: already closed",
        ));
    }
    Ok(c)
}

/// Reads and checks the arguments every call function takes, copying them out of the caller's
/// memory.
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

/// Creates a client for `target` and starts resolving it in the background.
///
/// - `target`: `etcd:///<prefix>` or `static:///host:port,host:port`. Required, UTF-8.
/// - `options_json`: options as JSON (service_config, etcd, tls, connect_timeout_ms, ...); NULL
///   or "" for defaults. The PEM files of "tls" and "etcd"."tls" are read here, once: a new
///   client picks up rotated certificates, this one keeps what it read.
/// - `client_out`: required; on success receives a new client that the caller frees with
///   `gf_close` exactly once. Left untouched on failure.
/// - `error_out`: may be NULL; otherwise always written: NULL on success, on failure a message
///   naming the bad argument, which the caller frees with `gf_string_free`.
///
/// Returns 0, or 3 INVALID_ARGUMENT for a NULL/non-UTF-8 argument, an unknown scheme or
/// malformed/invalid options (including an invalid service config, and a TLS file that is
/// missing, unreadable or not valid PEM: the message names the field and the path).
/// Reads only those local files; does not block on the network: an unreachable etcd surfaces in the calls' errors.
/// Any thread.
#[no_mangle]
pub extern "C" fn gf_connect(
    target: *const c_char,
    options_json: *const c_char,
    client_out: *mut *mut gf_client,
    error_out: *mut *mut c_char,
) -> i32 {
    ffi_fn!(error_out, {
        let target = str_arg(target, "target")?;
        let options = Options::from_json(opt_str_arg(options_json, "options_json")?)?;
        if client_out.is_null() {
            return Err(Status::invalid_argument("client_out: must not be NULL"));
        }
        let client = Client::connect(target, options)?;
        let handle = Box::into_raw(Box::new(gf_client { client }));
        // SAFETY: client_out checked for NULL above.
        unsafe { *client_out = handle };
        Ok(())
    })
}

/// Calls a unary method with raw request bytes and waits for the answer.
///
/// - `client`: from `gf_connect`. Required.
/// - `method`: "/package.Service/Method". Required, UTF-8.
/// - `request`, `request_len`: the request message bytes, copied before the call; `request`
///   may be NULL when `request_len` is 0.
/// - `timeout_ms`: the deadline across all attempts (retries included); 0 = none (a method
///   config `timeout` still applies; the smaller one wins).
/// - `response_out`: required; always written: the response on 0, {NULL, 0} otherwise. Free it
///   with `gf_bytes_free`.
/// - `error_out`: may be NULL; otherwise always written: NULL on 0, else the status message,
///   freed by the caller with `gf_string_free`.
///
/// Returns the call's gRPC status: the server's code, 4 DEADLINE_EXCEEDED when the deadline
/// passes, 14 UNAVAILABLE when no instance can take the call, 1 CANCELLED when `gf_close` or
/// `gf_client_shutdown` runs meanwhile, 3 INVALID_ARGUMENT for bad arguments, 9 FAILED_PRECONDITION when called on a
/// library thread (inside a callback: use `gf_invoke_async` there) or on a closed client.
/// Blocks the calling thread until the call ends. While no other thread waits in the library
/// (blocked, or with a queued call in flight), the caller spins briefly before it sleeps when recent calls were fast (at most
/// `GF_SYNC_SPIN_US` microseconds, default 250; `GF_SYNC_SPIN_US=0` turns this off): it keeps
/// one core busy meanwhile and gets its result sooner. Thread-safe.
#[no_mangle]
pub extern "C" fn gf_invoke(
    client: *mut gf_client,
    method: *const c_char,
    request: *const u8,
    request_len: usize,
    timeout_ms: u32,
    response_out: *mut gf_bytes,
    error_out: *mut *mut c_char,
) -> i32 {
    ffi_fn!(error_out, {
        if !response_out.is_null() {
            // SAFETY: non-NULL; the caller promises a writable gf_bytes.
            unsafe { *response_out = gf_bytes::empty() };
        }
        let p = prepare(
            client,
            method,
            request,
            request_len,
            Some(timeout_options(timeout_ms)),
        )?;
        if response_out.is_null() {
            return Err(Status::invalid_argument("response_out: must not be NULL"));
        }
        check_blocking_allowed("gf_invoke")?;
        let reply = runtime::run_blocking(move || async move {
            p.client.invoke(&p.method, p.request, &p.opts).await
        })?;
        // SAFETY: checked for NULL above.
        unsafe { *response_out = gf_bytes::from_vec(reply.to_vec()) };
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
    ffi_fn!(error_out, {
        if !result_out.is_null() {
            // SAFETY: non-NULL writable pointer.
            unsafe { *result_out = std::ptr::null_mut() };
        }
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
        if status.code == Code::Ok {
            Ok(())
        } else {
            Err(status)
        }
    })
}

/// Shuts a client down without freeing it: stops resolving, closes its connections, and
/// completes every call still in flight (sync or async) with 1 CANCELLED. Every later call on
/// the handle fails at once with 9 FAILED_PRECONDITION ("client: already closed"); so does
/// `gf_client_stats`. The handle stays valid until `gf_close`, which the caller still calls
/// exactly once, when no other thread can use the handle any more.
///
/// This is the function to use when other threads may be calling on the client at the same
/// moment (a binding's `close()`, a signal-driven shutdown): it is safe against any number of
/// concurrent calls, and calling it again, or from several threads at once, does nothing more.
/// NULL is fine. Does not wait for anything. Any thread, including inside a callback.
#[no_mangle]
pub extern "C" fn gf_client_shutdown(client: *mut gf_client) {
    ffi_fn!({
        if client.is_null() {
            return;
        }
        // SAFETY: non-NULL; the caller promises a handle from gf_connect not yet passed to
        // gf_close. Only shared access: closing is internally synchronised and idempotent.
        let handle = unsafe { &*client };
        let _enter = runtime::handle().enter();
        handle.client.close();
    })
}

/// Closes a client: stops resolving, closes its connections, and completes every call still in
/// flight (sync or async) with 1 CANCELLED. Frees the handle: do not use it afterwards, and do
/// not start new calls on it from other threads while it closes (when that cannot be ruled
/// out, call `gf_client_shutdown` first, and `gf_close` once those threads are done with the
/// handle). NULL is fine. Does not wait for anything. Any thread, including inside a
/// callback.
#[no_mangle]
pub extern "C" fn gf_close(client: *mut gf_client) {
    ffi_fn!({
        if client.is_null() {
            return;
        }
        // SAFETY: non-NULL; the handle came from gf_connect and is freed exactly once here.
        let handle = unsafe { Box::from_raw(client) };
        let _enter = runtime::handle().enter();
        handle.client.close();
    })
}

/// Writes a JSON snapshot of the client's counters and instances to `*json_out`: target,
/// calls, calls_failed, attempts, retries, transparent_retries, hedges, hedges_won (calls won
/// by a hedge other than the first attempt), throttled_retries,
/// retry_tokens, worker_threads (the library runtime's, process-wide), policy, subset_size
/// (null: no subsetting), resolved, resolver_error; `connections` (attempts_succeeded, attempts_failed, disconnections, open);
/// for weighted_round_robin `wrr` (rr_fallback, endpoint_weight_not_yet_usable: see
/// `gf_client_metrics`); for an etcd target `etcd` (puts, deletes: watch events; resyncs:
/// re-listings after a compaction; watch_restarts); and per instance: address, weight,
/// metadata, state, healthy, ejected, ejected_until_ms, ejections, unejections,
/// health_changes, calls, failures, in_flight, last_error, keepalive_time_ms (null: off;
/// doubled after a GOAWAY "too_many_pings" from that instance).
///
/// `json_out` is required; on 0 it receives a string the caller frees with `gf_string_free`;
/// untouched otherwise. `error_out` as in `gf_connect`. Never blocks. Thread-safe.
#[no_mangle]
pub extern "C" fn gf_client_stats(
    client: *mut gf_client,
    json_out: *mut *mut c_char,
    error_out: *mut *mut c_char,
) -> i32 {
    ffi_fn!(error_out, {
        let c = client_arg(client)?;
        write_string_out(json_out, "json_out", || c.stats().to_string())
    })
}

/// Writes the client's metrics, in the Prometheus text exposition format (version 0.0.4), to
/// `*text_out`, for a scrape endpoint of the host's:
///
/// - the gRFC A66 client metrics as the OpenTelemetry Prometheus exporter names them:
///   `grpc_client_attempt_started_total`, `grpc_client_attempt_duration_seconds`,
///   `grpc_client_attempt_sent_total_compressed_message_size_bytes`,
///   `grpc_client_attempt_rcvd_total_compressed_message_size_bytes` and
///   `grpc_client_call_duration_seconds` (histograms with A66's bucket bounds), labelled
///   `grpc_method`, `grpc_target` and `grpc_status`. `grpc_method` is the method's name only for
///   the methods listed in options_json's `metrics.methods`, `other` for the rest (A66), so the
///   number of series stays bounded. Absent when `metrics.enabled` is false.
/// - the library's own, `grpc_failover_`: calls, calls_failed, attempts, retries,
///   transparent_retries, hedges, hedges_won and throttled_retries (`_total` counters, label
///   `grpc_target`), retries_by_reason_total (label `reason`: the status code retried), and per
///   instance (label `instance`, its address) picks, failures, in-flight attempts, ejections,
///   unejections, whether it is ejected, health changes, whether it is healthy, and its
///   connection state; for an etcd target, `grpc_failover_etcd_events_total` (label `type`:
///   put, delete), `grpc_failover_etcd_resyncs_total` and
///   `grpc_failover_etcd_watch_restarts_total`.
/// - the gRFC A94 subchannel metrics: `grpc_subchannel_connection_attempts_succeeded_total`,
///   `grpc_subchannel_connection_attempts_failed_total`, `grpc_subchannel_disconnections_total`
///   and `grpc_subchannel_open_connections`; under pick_first also A78's
///   `grpc_lb_pick_first_*` names for the same counts.
/// - under weighted_round_robin, the gRFC A78 metrics, counted at each scheduler (picker)
///   update: `grpc_lb_wrr_rr_fallback_total` (updates where no instance had a positive weight
///   in its etcd metadata, so the schedule was plain round robin),
///   `grpc_lb_wrr_endpoint_weight_not_yet_usable_total` (instances without a weight in their
///   metadata, which take weight 1), `grpc_lb_wrr_endpoint_weight_stale_total` (always 0:
///   registry weights do not expire) and the `grpc_lb_wrr_endpoint_weights` histogram.
///
/// `text_out` is required; on 0 it receives a string the caller frees with `gf_string_free`;
/// untouched otherwise. `error_out` as in `gf_connect`. Returns 0, 3 INVALID_ARGUMENT for a NULL
/// argument, or 9 FAILED_PRECONDITION after `gf_client_shutdown`. Never blocks (it reads
/// counters; the calls keep recording meanwhile). Thread-safe.
#[no_mangle]
pub extern "C" fn gf_client_metrics(
    client: *mut gf_client,
    text_out: *mut *mut c_char,
    error_out: *mut *mut c_char,
) -> i32 {
    ffi_fn!(error_out, {
        let c = client_arg(client)?;
        write_string_out(text_out, "text_out", || c.metrics_text())
    })
}

/// Writes the string `make` returns to the required out-parameter `out` (named `name` in the
/// error), for the caller to free with gf_string_free.
fn write_string_out(
    out: *mut *mut c_char,
    name: &str,
    make: impl FnOnce() -> String,
) -> Result<(), Status> {
    if out.is_null() {
        return Err(Status::invalid_argument(format!(
            "{name}: must not be NULL"
        )));
    }
    let text = make();
    // SAFETY: checked for NULL above.
    unsafe { *out = to_c_string(&text) };
    Ok(())
}
