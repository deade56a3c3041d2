//! Target strings as `gf_connect` parses them, and instance addresses (`validate_addr`).
//!
//! Invariants: parsing never panics; an error is INVALID_ARGUMENT naming the target; an
//! accepted target lists only valid, trimmed addresses (static) or a non-empty prefix without a
//! trailing slash (etcd), and its canonical spelling parses to the same target.

use grpc_failover::fuzzing::{validate_addr, Target};
use grpc_failover::Code;

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Target::parse(&text) {
        Ok(Target::Static { addrs }) => {
            assert!(!addrs.is_empty());
            for addr in &addrs {
                assert!(validate_addr(addr).is_ok(), "{addr:?}");
                assert_eq!(addr.trim(), addr);
                assert!(!addr.contains(','), "{addr:?}");
            }
            let canonical = format!("static:///{}", addrs.join(","));
            assert_eq!(
                Target::parse(&canonical),
                Ok(Target::Static { addrs }),
                "{canonical}"
            );
        }
        Ok(Target::Etcd { prefix }) => {
            assert!(!prefix.is_empty() && !prefix.ends_with('/'), "{prefix:?}");
            let canonical = format!("etcd:///{prefix}");
            assert_eq!(Target::parse(&canonical), Ok(Target::Etcd { prefix }));
        }
        Err(status) => {
            assert_eq!(status.code, Code::InvalidArgument);
            assert!(status.message.starts_with("target "), "{status:?}");
        }
    }
    if validate_addr(&text).is_ok() && text.trim() == text && !text.contains(',') {
        let static_target = format!("static:///{text}");
        assert_eq!(
            Target::parse(&static_target),
            Ok(Target::Static {
                addrs: vec![text.to_string()]
            })
        );
    }
}
