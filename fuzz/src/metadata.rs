//! Request metadata: `validate_metadata`, `header_list_size`, the conversion to and from
//! tonic's map, and `gf_call_options_add_metadata` (the path every binding takes).
//!
//! The input is one entry per line, `key=value` (the value is raw bytes up to the newline).
//! Invariants: nothing panics; the C function accepts exactly what `validate_metadata` accepts
//! (after C's NUL termination and the UTF-8 check) and otherwise returns 3 with a message naming
//! the key; accepted entries survive the trip through tonic's map unchanged (as a multiset:
//! the map groups values by key); the header list size is the sum of the entries' sizes.

use std::ffi::{CStr, CString};
use std::ptr;

use bytes::Bytes;
use grpc_failover::ffi::{
    gf_call_options_add_metadata, gf_call_options_free, gf_call_options_new, gf_string_free,
};
use grpc_failover::fuzzing::{append_to, header_list_size, to_pairs, validate_metadata};
use grpc_failover::{Code, Metadata};
use tonic::metadata::MetadataMap;

pub fn run(data: &[u8]) {
    let options = gf_call_options_new();
    assert!(!options.is_null());
    let mut accepted: Metadata = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let (key, value) = match line.iter().position(|&b| b == b'=') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &[][..]),
        };
        // What a C caller's string is: the bytes up to the first NUL.
        let key = &key[..key.iter().position(|&b| b == 0).unwrap_or(key.len())];
        let expected = std::str::from_utf8(key)
            .ok()
            .filter(|k| validate_metadata(k, value).is_ok());
        let c_key = CString::new(key).expect("no NUL left");
        let mut error: *mut std::os::raw::c_char = ptr::null_mut();
        // The value pointer may be NULL only with a length of 0: exercise that too.
        let value_ptr = if value.is_empty() {
            ptr::null()
        } else {
            value.as_ptr()
        };
        let rc = gf_call_options_add_metadata(
            options,
            c_key.as_ptr(),
            value_ptr,
            value.len(),
            &mut error,
        );
        match expected {
            Some(k) => {
                assert_eq!(rc, 0, "{key:?}={value:?}");
                assert!(error.is_null());
                accepted.push((k.to_string(), Bytes::copy_from_slice(value)));
            }
            None => {
                assert_eq!(rc, Code::InvalidArgument as i32, "{key:?}={value:?}");
                assert!(!error.is_null());
                // SAFETY: the library's NUL-terminated message, freed once below.
                let message = unsafe { CStr::from_ptr(error) }.to_str().expect("UTF-8");
                assert!(message.starts_with("key") || message.starts_with("metadata key"));
                gf_string_free(error);
            }
        }
    }
    gf_call_options_free(options);

    let total = header_list_size(&accepted);
    let sum = accepted
        .iter()
        .map(|e| header_list_size(&vec![e.clone()]))
        .fold(0u64, u64::saturating_add);
    assert_eq!(total, sum);

    let mut map = MetadataMap::new();
    append_to(&mut map, &accepted);
    let mut back = to_pairs(&map);
    // gRPC's own headers are not handed back as metadata.
    let mut sent: Metadata = accepted
        .into_iter()
        .filter(|(k, _)| k != "content-type")
        .collect();
    back.sort();
    sent.sort();
    assert_eq!(back, sent);
}
