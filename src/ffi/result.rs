//! gf_result: the outcome of a call (status, response, headers, trailers), read through
//! accessors that never copy.

use std::ffi::{c_char, CString};

use bytes::Bytes;

use super::{GF_INTERNAL, GF_INVALID_ARGUMENT, GF_OK, GF_OUT_OF_RANGE};
use crate::CallResult;

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

fn result_arg<'a>(result: *const gf_result) -> Option<&'a gf_result> {
    // SAFETY: NULL checked; the caller promises a live result.
    (!result.is_null()).then(|| unsafe { &*result })
}

/// The result's gRPC status code; 3 INVALID_ARGUMENT for a NULL result, 13 INTERNAL after an
/// internal failure.
#[no_mangle]
pub extern "C" fn gf_result_code(result: *const gf_result) -> i32 {
    ffi_fn!(on_panic = GF_INTERNAL, {
        result_arg(result)
            .map(|r| r.result.status.code as i32)
            .unwrap_or(GF_INVALID_ARGUMENT)
    })
}

/// The status message ("" on success). Valid until `gf_result_free`; do not free it. "" for a
/// NULL result and after an internal failure.
#[no_mangle]
pub extern "C" fn gf_result_message(result: *const gf_result) -> *const c_char {
    ffi_fn!(on_panic = c"".as_ptr(), {
        result_arg(result)
            .map(|r| r.message.as_ptr())
            .unwrap_or(c"".as_ptr())
    })
}

/// The response bytes (empty unless the code is 0). Returns a pointer valid until
/// `gf_result_free` (NULL when empty) and writes the length to `*len_out` (which may be NULL).
/// After an internal failure: NULL, and `*len_out` is untouched.
#[no_mangle]
pub extern "C" fn gf_result_response(result: *const gf_result, len_out: *mut usize) -> *const u8 {
    ffi_fn!(on_panic = std::ptr::null(), {
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
    })
}

fn entry(
    list: &[(CString, Bytes)],
    index: usize,
    key_out: *mut *const c_char,
    value_out: *mut *const u8,
    value_len_out: *mut usize,
) -> i32 {
    let Some((key, value)) = list.get(index) else {
        return GF_OUT_OF_RANGE;
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
    GF_OK
}

/// The number of response headers (0 for a NULL result and after an internal failure).
#[no_mangle]
pub extern "C" fn gf_result_header_count(result: *const gf_result) -> usize {
    ffi_fn!(on_panic = 0, {
        result_arg(result).map(|r| r.headers.len()).unwrap_or(0)
    })
}

/// Reads response header `index` (0-based, in arrival order; a key may repeat). Writes the
/// NUL-terminated key, the value and its length to the out-pointers that are non-NULL; the
/// pointers stay valid until `gf_result_free`. Values of "-bin" keys are the decoded bytes.
/// Returns 0, 11 OUT_OF_RANGE for a bad index, 3 INVALID_ARGUMENT for a NULL result, 13
/// INTERNAL after an internal failure.
#[no_mangle]
pub extern "C" fn gf_result_header(
    result: *const gf_result,
    index: usize,
    key_out: *mut *const c_char,
    value_out: *mut *const u8,
    value_len_out: *mut usize,
) -> i32 {
    ffi_fn!(on_panic = GF_INTERNAL, {
        match result_arg(result) {
            Some(r) => entry(&r.headers, index, key_out, value_out, value_len_out),
            None => GF_INVALID_ARGUMENT,
        }
    })
}

/// The number of response trailers (0 for a NULL result and after an internal failure).
#[no_mangle]
pub extern "C" fn gf_result_trailer_count(result: *const gf_result) -> usize {
    ffi_fn!(on_panic = 0, {
        result_arg(result).map(|r| r.trailers.len()).unwrap_or(0)
    })
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
    ffi_fn!(on_panic = GF_INTERNAL, {
        match result_arg(result) {
            Some(r) => entry(&r.trailers, index, key_out, value_out, value_len_out),
            None => GF_INVALID_ARGUMENT,
        }
    })
}

/// Frees a result. NULL is fine. Exactly once. Any thread.
#[no_mangle]
pub extern "C" fn gf_result_free(result: *mut gf_result) {
    ffi_fn!({
        if !result.is_null() {
            // SAFETY: made by Box::into_raw in this module; freed exactly once.
            drop(unsafe { Box::from_raw(result) });
        }
    })
}
