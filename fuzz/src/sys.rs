//! The C ABI as a C program sees it: the `gf_*` symbols the library exports, declared from
//! include/grpc_failover.h (the fuzz targets call the real exported functions, not Rust paths).
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_void};

macro_rules! opaque {
    ($($name:ident),*) => {$(
        #[repr(C)]
        pub struct $name {
            _private: [u8; 0],
        }
    )*};
}
opaque!(gf_client, gf_call, gf_call_options, gf_queue, gf_result);

#[repr(C)]
pub struct gf_bytes {
    pub data: *mut u8,
    pub len: usize,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct gf_completion {
    pub tag: u64,
    pub result: *mut gf_result,
}

pub type gf_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        code: i32,
        response: *const u8,
        response_len: usize,
        message: *const c_char,
    ),
>;
pub type gf_result_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, result: *mut gf_result)>;

extern "C" {
    pub fn gf_bytes_free(bytes: *mut gf_bytes);
    pub fn gf_string_free(s: *mut c_char);
    pub fn gf_connect(
        target: *const c_char,
        options_json: *const c_char,
        client_out: *mut *mut gf_client,
        error_out: *mut *mut c_char,
    ) -> i32;
    pub fn gf_invoke(
        client: *mut gf_client,
        method: *const c_char,
        request: *const u8,
        request_len: usize,
        timeout_ms: u32,
        response_out: *mut gf_bytes,
        error_out: *mut *mut c_char,
    ) -> i32;
    pub fn gf_invoke_ex(
        client: *mut gf_client,
        method: *const c_char,
        request: *const u8,
        request_len: usize,
        options: *const gf_call_options,
        result_out: *mut *mut gf_result,
        error_out: *mut *mut c_char,
    ) -> i32;
    pub fn gf_invoke_async(
        client: *mut gf_client,
        method: *const c_char,
        request: *const u8,
        request_len: usize,
        timeout_ms: u32,
        callback: gf_callback,
        user_data: *mut c_void,
        call_out: *mut *mut gf_call,
        error_out: *mut *mut c_char,
    ) -> i32;
    pub fn gf_invoke_async_ex(
        client: *mut gf_client,
        method: *const c_char,
        request: *const u8,
        request_len: usize,
        options: *const gf_call_options,
        callback: gf_result_callback,
        user_data: *mut c_void,
        call_out: *mut *mut gf_call,
        error_out: *mut *mut c_char,
    ) -> i32;
    pub fn gf_invoke_queued(
        client: *mut gf_client,
        method: *const c_char,
        request: *const u8,
        request_len: usize,
        timeout_ms: u32,
        queue: *mut gf_queue,
        tag: u64,
        call_out: *mut *mut gf_call,
        error_out: *mut *mut c_char,
    ) -> i32;
    pub fn gf_call_cancel(call: *mut gf_call);
    pub fn gf_call_free(call: *mut gf_call);
    pub fn gf_call_options_new() -> *mut gf_call_options;
    pub fn gf_call_options_free(options: *mut gf_call_options);
    pub fn gf_call_options_set_timeout_ms(options: *mut gf_call_options, timeout_ms: u32);
    pub fn gf_call_options_set_wait_for_ready(options: *mut gf_call_options, wait: i32);
    pub fn gf_call_options_add_metadata(
        options: *mut gf_call_options,
        key: *const c_char,
        value: *const u8,
        value_len: usize,
        error_out: *mut *mut c_char,
    ) -> i32;
    pub fn gf_client_shutdown(client: *mut gf_client);
    pub fn gf_close(client: *mut gf_client);
    pub fn gf_client_stats(
        client: *mut gf_client,
        json_out: *mut *mut c_char,
        error_out: *mut *mut c_char,
    ) -> i32;
    pub fn gf_queue_new(queue_out: *mut *mut gf_queue, error_out: *mut *mut c_char) -> i32;
    pub fn gf_queue_poll(queue: *mut gf_queue, out: *mut gf_completion, max: usize) -> usize;
    pub fn gf_queue_wait(
        queue: *mut gf_queue,
        out: *mut gf_completion,
        max: usize,
        taken_out: *mut usize,
        error_out: *mut *mut c_char,
    ) -> i32;
    pub fn gf_queue_free(queue: *mut gf_queue);
    pub fn gf_result_code(result: *const gf_result) -> i32;
    pub fn gf_result_message(result: *const gf_result) -> *const c_char;
    pub fn gf_result_response(result: *const gf_result, len_out: *mut usize) -> *const u8;
    pub fn gf_result_free(result: *mut gf_result);
}
