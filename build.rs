//! Generates include/grpc_failover.h from the `extern "C"` functions with cbindgen. The header
//! is committed; `make check-header` fails when the committed one differs from this output.
//! When cbindgen cannot generate it, the build fails: a warning would leave the old header in
//! place, and a stale header would then pass `make check-header`.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    // The shared library's SONAME carries the major version (libgrpc_failover.so.0), so that an
    // installed program keeps loading a compatible library across minor releases, and two
    // majors can be installed side by side. `make build` puts the libgrpc_failover.so.0 link
    // next to the .so, which programs linked against it look for at run time.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("set by cargo");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libgrpc_failover.so.{major}");
    }
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    // Only src/ffi/ (mod.rs and the modules it declares) is the C ABI: parsing the whole crate
    // would put every `pub const` of the core into the header too.
    let header = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src").join("ffi").join("mod.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen could not generate include/grpc_failover.h: {e}"));
    let mut bytes = Vec::new();
    header.write(&mut bytes);
    let path = dir.join("include").join("grpc_failover.h");
    if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("create include/");
        std::fs::write(&path, &bytes).expect("write include/grpc_failover.h");
    }
}
