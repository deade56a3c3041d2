use super::*;

extern "C" fn status_that_panics(error_out: *mut *mut c_char) -> i32 {
    ffi_fn!(error_out, { panic!("a status body broke") })
}

extern "C" fn status_that_fails(error_out: *mut *mut c_char) -> i32 {
    ffi_fn!(error_out, {
        Err(Status::invalid_argument("x: must not be NULL"))
    })
}

extern "C" fn status_that_succeeds(error_out: *mut *mut c_char) -> i32 {
    ffi_fn!(error_out, { Ok(()) })
}

extern "C" fn value_that_panics() -> *const c_char {
    ffi_fn!(on_panic = std::ptr::null(), {
        panic!("a value body broke")
    })
}

extern "C" fn nothing_that_panics() {
    ffi_fn!({ panic!("a void body broke") })
}

/// Reads and frees a message the library handed out.
fn take_message(message: *mut c_char) -> String {
    assert!(!message.is_null());
    // SAFETY: a string from to_c_string, freed once here.
    let text = unsafe { CStr::from_ptr(message) }
        .to_str()
        .unwrap()
        .to_string();
    gf_string_free(message);
    text
}

#[test]
fn a_panic_in_a_status_function_is_internal_with_the_message() {
    let mut error = std::ptr::null_mut();
    assert_eq!(status_that_panics(&mut error), GF_INTERNAL);
    let message = take_message(error);
    assert!(message.contains("a status body broke"), "{message}");
    assert_eq!(status_that_panics(std::ptr::null_mut()), GF_INTERNAL);
}

#[test]
fn a_status_function_reports_its_error_and_clears_error_out_on_success() {
    let mut error = std::ptr::null_mut();
    assert_eq!(status_that_fails(&mut error), GF_INVALID_ARGUMENT);
    assert_eq!(take_message(error), "x: must not be NULL");
    let stale = to_c_string("stale");
    error = stale;
    assert_eq!(status_that_succeeds(&mut error), GF_OK);
    assert!(error.is_null());
    gf_string_free(stale);
}

#[test]
fn a_panic_in_a_value_function_returns_its_default() {
    assert!(value_that_panics().is_null());
    nothing_that_panics();
}

#[test]
fn the_status_constants_are_the_grpc_codes() {
    let pairs = [
        (GF_OK, Code::Ok),
        (GF_CANCELLED, Code::Cancelled),
        (GF_UNKNOWN, Code::Unknown),
        (GF_INVALID_ARGUMENT, Code::InvalidArgument),
        (GF_DEADLINE_EXCEEDED, Code::DeadlineExceeded),
        (GF_NOT_FOUND, Code::NotFound),
        (GF_ALREADY_EXISTS, Code::AlreadyExists),
        (GF_PERMISSION_DENIED, Code::PermissionDenied),
        (GF_RESOURCE_EXHAUSTED, Code::ResourceExhausted),
        (GF_FAILED_PRECONDITION, Code::FailedPrecondition),
        (GF_ABORTED, Code::Aborted),
        (GF_OUT_OF_RANGE, Code::OutOfRange),
        (GF_UNIMPLEMENTED, Code::Unimplemented),
        (GF_INTERNAL, Code::Internal),
        (GF_UNAVAILABLE, Code::Unavailable),
        (GF_DATA_LOSS, Code::DataLoss),
        (GF_UNAUTHENTICATED, Code::Unauthenticated),
    ];
    for (constant, code) in pairs {
        assert_eq!(constant, code as i32, "{code:?}");
    }
}

// The argument readers, buffers and strings, and the objects that need no runtime: what `make
// test-miri` runs under Miri (scripts/miri.sh), to check the unsafe code's pointer use.

#[test]
fn str_arg_reads_utf8_and_names_null_and_bad_utf8() {
    assert_eq!(str_arg(c"svc/Get".as_ptr(), "method").unwrap(), "svc/Get");
    let null = str_arg(std::ptr::null(), "method").unwrap_err();
    assert_eq!(
        (null.code, null.message.as_str()),
        (Code::InvalidArgument, "method: must not be NULL")
    );
    let bad = str_arg(c"\xff\xfe".as_ptr(), "target").unwrap_err();
    assert!(
        bad.message.starts_with("target: not valid UTF-8"),
        "{bad:?}"
    );
    assert_eq!(opt_str_arg(std::ptr::null(), "x").unwrap(), None);
    assert_eq!(opt_str_arg(c"".as_ptr(), "x").unwrap(), Some(""));
}

#[test]
fn bytes_arg_allows_null_only_with_length_zero() {
    let data = [1u8, 2, 3];
    assert_eq!(bytes_arg(data.as_ptr(), 3, "request").unwrap(), &data);
    assert_eq!(
        bytes_arg(std::ptr::null(), 0, "request").unwrap(),
        &[] as &[u8]
    );
    let err = bytes_arg(std::ptr::null(), 5, "request").unwrap_err();
    assert_eq!(err.message, "request: NULL with a length of 5");
}

#[test]
fn gf_bytes_round_trip_and_double_free_is_a_no_op() {
    let mut b = gf_bytes::from_vec(vec![7; 100]);
    assert_eq!(b.len, 100);
    // SAFETY: data/len describe the live buffer just made.
    assert!(unsafe { std::slice::from_raw_parts(b.data, b.len) }
        .iter()
        .all(|&x| x == 7));
    gf_bytes_free(&mut b);
    assert!(b.data.is_null() && b.len == 0);
    gf_bytes_free(&mut b);
    gf_bytes_free(std::ptr::null_mut());
    let mut empty = gf_bytes::from_vec(Vec::new());
    assert!(empty.data.is_null());
    gf_bytes_free(&mut empty);
}

#[test]
fn messages_with_nul_survive_and_strings_free_once() {
    let mut error = std::ptr::null_mut();
    write_error(&mut error, Some("a\0b"));
    assert_eq!(take_message(error), "a\\0b");
    write_error(std::ptr::null_mut(), Some("nowhere"));
    gf_string_free(std::ptr::null_mut());
    // SAFETY: a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(gf_version()) };
    assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    assert_eq!(gf_abi_version(), GF_ABI_VERSION);
}

#[test]
fn call_options_take_valid_metadata_and_refuse_the_rest() {
    use super::call_options::*;
    let options = gf_call_options_new();
    assert!(!options.is_null());
    gf_call_options_set_timeout_ms(options, 250);
    gf_call_options_set_wait_for_ready(options, 1);
    let mut error = std::ptr::null_mut();
    let value = b"\x00\xffraw";
    let rc = gf_call_options_add_metadata(
        options,
        c"x-raw-bin".as_ptr(),
        value.as_ptr(),
        value.len(),
        &mut error,
    );
    assert_eq!(rc, GF_OK);
    assert!(error.is_null());
    let rc = gf_call_options_add_metadata(
        options,
        c"x-empty".as_ptr(),
        std::ptr::null(),
        0,
        &mut error,
    );
    assert_eq!(rc, GF_OK);
    for (key, value, len) in [
        (c"Upper".as_ptr(), b"v".as_ptr(), 1),
        (std::ptr::null(), b"v".as_ptr(), 1),
        (c"\xff".as_ptr(), b"v".as_ptr(), 1),
        (c"x-null".as_ptr(), std::ptr::null(), 3),
        (c"x-text".as_ptr(), b"\x01".as_ptr(), 1),
    ] {
        assert_eq!(
            gf_call_options_add_metadata(options, key, value, len, &mut error),
            GF_INVALID_ARGUMENT
        );
        take_message(error);
    }
    assert_eq!(
        gf_call_options_add_metadata(
            std::ptr::null_mut(),
            c"k".as_ptr(),
            std::ptr::null(),
            0,
            std::ptr::null_mut()
        ),
        GF_INVALID_ARGUMENT
    );
    let opts = options_arg(options).expect("live options");
    assert_eq!(opts.timeout, Some(std::time::Duration::from_millis(250)));
    assert_eq!(opts.wait_for_ready, Some(true));
    assert_eq!(opts.metadata.len(), 2);
    assert_eq!(opts.metadata[0].0, "x-raw-bin");
    assert_eq!(&opts.metadata[0].1[..], value);
    gf_call_options_free(options);
    gf_call_options_free(std::ptr::null_mut());
    gf_call_options_set_timeout_ms(std::ptr::null_mut(), 1);
    assert!(options_arg(std::ptr::null()).is_none());
}

#[test]
fn result_accessors_hand_out_pointers_into_the_result() {
    use super::result::*;
    use bytes::Bytes;
    let call = crate::CallResult {
        status: Status::new(Code::NotFound, "no\0such"),
        response: Bytes::from_static(b"body"),
        headers: vec![("x-a".into(), Bytes::from_static(b"1"))],
        trailers: vec![
            ("x-b-bin".into(), Bytes::from_static(b"\x00\x01")),
            ("x-empty".into(), Bytes::new()),
        ],
    };
    let result = Box::into_raw(Box::new(gf_result::new(call)));
    assert_eq!(gf_result_code(result), GF_NOT_FOUND);
    // SAFETY: valid until gf_result_free below.
    let message = unsafe { CStr::from_ptr(gf_result_message(result)) };
    assert_eq!(message.to_str().unwrap(), "no\\0such");
    let mut len = 0;
    let body = gf_result_response(result, &mut len);
    // SAFETY: body/len point into the live result.
    assert_eq!(unsafe { std::slice::from_raw_parts(body, len) }, b"body");
    assert_eq!(gf_result_header_count(result), 1);
    assert_eq!(gf_result_trailer_count(result), 2);
    let (mut key, mut value, mut value_len) = (std::ptr::null(), std::ptr::null(), 0);
    assert_eq!(
        gf_result_trailer(result, 0, &mut key, &mut value, &mut value_len),
        GF_OK
    );
    // SAFETY: key/value point into the live result.
    assert_eq!(unsafe { CStr::from_ptr(key) }.to_str().unwrap(), "x-b-bin");
    assert_eq!(
        unsafe { std::slice::from_raw_parts(value, value_len) },
        b"\x00\x01"
    );
    assert_eq!(
        gf_result_trailer(result, 1, &mut key, &mut value, &mut value_len),
        GF_OK
    );
    assert!(value.is_null() && value_len == 0);
    assert_eq!(
        gf_result_trailer(result, 2, &mut key, &mut value, &mut value_len),
        GF_OUT_OF_RANGE
    );
    assert_eq!(
        gf_result_header(
            result,
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut()
        ),
        GF_OK
    );
    gf_result_free(result);

    let null = std::ptr::null();
    assert_eq!(gf_result_code(null), GF_INVALID_ARGUMENT);
    // SAFETY: a static "" for NULL.
    assert_eq!(
        unsafe { CStr::from_ptr(gf_result_message(null)) }.to_bytes(),
        b""
    );
    assert!(gf_result_response(null, std::ptr::null_mut()).is_null());
    assert_eq!(gf_result_header_count(null), 0);
    assert_eq!(
        gf_result_header(
            null,
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut()
        ),
        GF_INVALID_ARGUMENT
    );
    gf_result_free(std::ptr::null_mut());
}
