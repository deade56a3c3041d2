//! grpc-failover: a gRPC client core with etcd discovery, weighted load balancing, retries and
//! hedging, used from C, C++, Python and Go through one C ABI (see `include/grpc_failover.h`).
//!
//! The flow of one call: the resolver (etcd watch or a static list) feeds instance sets to the
//! balancer, which keeps one HTTP/2 connection per instance and publishes an immutable picker;
//! the retry engine runs attempts, each picked through the picker, as the service config says.

pub mod balancer;
pub mod call;
pub mod client;
pub mod config;
pub mod ffi;
mod logging;
pub mod resolver;
pub mod retry;
pub mod runtime;
pub mod status;
pub mod target;

pub use call::{CallOptions, CallResult, Metadata};
pub use client::Client;
pub use config::{Options, ServiceConfig};
pub use resolver::registrar::Registration;
pub use resolver::Endpoint;
pub use status::{Code, Status};

/// The library version, as `gf_version()` reports it.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
