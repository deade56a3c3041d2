//! gf_call_options: per-call options (deadline, metadata, wait-for-ready) for the `_ex` calls.

use std::ffi::c_char;

use bytes::Bytes;

use super::{bytes_arg, str_arg};
use crate::config::Compression;
use crate::metadata::validate_metadata;
use crate::{CallOptions, Status};

/// Options for one call. Opaque; build with `gf_call_options_new`, free with
/// `gf_call_options_free`. The library copies what it needs when a call starts, so one options
/// object may be reused for many calls and freed right after the call function returns. Not
/// thread-safe while being modified.
pub struct gf_call_options {
    opts: CallOptions,
}

pub(super) fn options_arg(options: *const gf_call_options) -> Option<CallOptions> {
    // SAFETY: NULL checked; the caller promises a live options object.
    (!options.is_null()).then(|| unsafe { (*options).opts.clone() })
}

fn timeout(ms: u32) -> Option<std::time::Duration> {
    (ms > 0).then(|| std::time::Duration::from_millis(ms as u64))
}

/// The options of a call started with only a `timeout_ms` (0 = none).
pub(super) fn timeout_options(ms: u32) -> CallOptions {
    CallOptions {
        timeout: timeout(ms),
        ..CallOptions::default()
    }
}

/// A new, empty set of call options (no timeout, no metadata, wait-for-ready from the service
/// config). Free with `gf_call_options_free`. NULL only after an internal failure.
#[no_mangle]
pub extern "C" fn gf_call_options_new() -> *mut gf_call_options {
    ffi_fn!(on_panic = std::ptr::null_mut(), {
        Box::into_raw(Box::new(gf_call_options {
            opts: CallOptions::default(),
        }))
    })
}

/// Frees call options. NULL is fine. Exactly once.
#[no_mangle]
pub extern "C" fn gf_call_options_free(options: *mut gf_call_options) {
    ffi_fn!({
        if !options.is_null() {
            // SAFETY: made by gf_call_options_new; freed exactly once.
            drop(unsafe { Box::from_raw(options) });
        }
    })
}

/// Sets the call's deadline in milliseconds across all attempts; 0 = none. NULL options: no-op.
#[no_mangle]
pub extern "C" fn gf_call_options_set_timeout_ms(options: *mut gf_call_options, timeout_ms: u32) {
    ffi_fn!({
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
    ffi_fn!({
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

/// Sets how this call's request is compressed: "gzip", "identity" (none), or NULL to go back
/// to the client's `compression` option. Responses in gzip are always accepted. Returns 0, or 3
/// INVALID_ARGUMENT for NULL options or another name (`error_out` as in `gf_connect`); the
/// options are unchanged then. Never blocks.
#[no_mangle]
pub extern "C" fn gf_call_options_set_compression(
    options: *mut gf_call_options,
    compression: *const c_char,
    error_out: *mut *mut c_char,
) -> i32 {
    ffi_fn!(error_out, {
        if options.is_null() {
            return Err(Status::invalid_argument("options: must not be NULL"));
        }
        let c = if compression.is_null() {
            None
        } else {
            let name = str_arg(compression, "compression")?;
            Some(
                Compression::from_name(name)
                    .map_err(|e| Status::invalid_argument(format!("compression: {e}")))?,
            )
        };
        // SAFETY: non-NULL live options.
        unsafe { (*options).opts.compression = c };
        Ok(())
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
    ffi_fn!(error_out, {
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
