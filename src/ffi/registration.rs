//! gf_registration: gf_register and gf_deregister.

use std::ffi::c_char;

use serde_json::Value;

use super::{check_blocking_allowed, opt_str_arg, str_arg};
use crate::config::Options;
use crate::resolver::registrar::Registration;
use crate::runtime;
use crate::Status;

/// A registration of one instance in etcd, kept alive in the background. Opaque.
pub struct gf_registration {
    registration: Registration,
}

/// Registers `addr` under `prefix` in etcd with a lease of `ttl_s` seconds, in the record
/// format of etcd's Go `naming/endpoints` (`{"Op":0,"Addr":...,"Metadata":...}`), and keeps the
/// lease alive in the background; if the lease is lost, a new one is granted and the record
/// written again.
///
/// - `options_json`: its "etcd" part is used (endpoints, username, password, dial_timeout_ms,
///   tls); NULL = defaults (127.0.0.1:2379, plaintext).
/// - `prefix`: e.g. "service/user" (the key is "<prefix>/<addr>"). Required.
/// - `addr`: "host:port". Required.
/// - `metadata_json`: the record's Metadata as JSON, e.g. {"weight": 10}; NULL = null.
/// - `ttl_s`: the lease TTL in seconds, at least 1.
/// - `registration_out`: required; on 0 receives a handle that the caller ends with
///   `gf_deregister` exactly once. Untouched on failure.
/// - `error_out`: as in `gf_connect`.
///
/// Returns 0 once the record is in etcd, 3 INVALID_ARGUMENT for bad arguments, 14 UNAVAILABLE
/// when etcd cannot be reached within its dial timeout. Blocks until then. Thread-safe; not on
/// a library thread.
#[no_mangle]
pub extern "C" fn gf_register(
    options_json: *const c_char,
    prefix: *const c_char,
    addr: *const c_char,
    metadata_json: *const c_char,
    ttl_s: u32,
    registration_out: *mut *mut gf_registration,
    error_out: *mut *mut c_char,
) -> i32 {
    ffi_fn!(error_out, {
        let options = Options::from_json(opt_str_arg(options_json, "options_json")?)?;
        let prefix = str_arg(prefix, "prefix")?;
        let addr = str_arg(addr, "addr")?;
        let metadata: Value = match opt_str_arg(metadata_json, "metadata_json")? {
            None => Value::Null,
            Some(text) => serde_json::from_str(text).map_err(|e| {
                Status::invalid_argument(format!("metadata_json: not valid JSON: {e}"))
            })?,
        };
        if registration_out.is_null() {
            return Err(Status::invalid_argument(
                "registration_out: must not be NULL",
            ));
        }
        check_blocking_allowed("gf_register")?;
        let registration = runtime::handle().block_on(Registration::register(
            &options.etcd,
            prefix,
            addr,
            metadata,
            ttl_s,
        ))?;
        let handle = Box::into_raw(Box::new(gf_registration { registration }));
        // SAFETY: checked for NULL above.
        unsafe { *registration_out = handle };
        Ok(())
    })
}

/// Ends a registration: stops the keepalives, deletes the key and revokes the lease, then frees
/// the handle (always, whatever the result: do not use it afterwards). NULL is fine (returns 0).
/// Returns 0, or 14 UNAVAILABLE when etcd could not be told (the lease then expires by itself
/// within its TTL). Blocks up to about 5 seconds. Thread-safe; not on a library thread.
#[no_mangle]
pub extern "C" fn gf_deregister(
    registration: *mut gf_registration,
    error_out: *mut *mut c_char,
) -> i32 {
    ffi_fn!(error_out, {
        if registration.is_null() {
            return Ok(());
        }
        // SAFETY: non-NULL; from gf_register, freed exactly once here.
        let handle = unsafe { Box::from_raw(registration) };
        if let Err(status) = check_blocking_allowed("gf_deregister") {
            let _enter = runtime::handle().enter();
            drop(handle);
            return Err(status);
        }
        runtime::handle().block_on(handle.registration.deregister())
    })
}
