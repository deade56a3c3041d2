//! The target grammar: `etcd:///<prefix>` and `static:///host:port,host:port`.

use crate::status::Status;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Instances are the keys under `<prefix>/` in etcd.
    Etcd { prefix: String },
    /// A fixed list of `host:port` addresses.
    Static { addrs: Vec<String> },
}

impl Target {
    pub fn parse(target: &str) -> Result<Target, Status> {
        let bad = |why: &str| Status::invalid_argument(format!("target {target:?}: {why}"));
        let (scheme, rest) = target
            .split_once(":///")
            .ok_or_else(|| bad("expected etcd:///<prefix> or static:///host:port,..."))?;
        match scheme {
            "etcd" => {
                let prefix = rest.trim_end_matches('/');
                if prefix.is_empty() {
                    return Err(bad("the etcd prefix is empty"));
                }
                Ok(Target::Etcd {
                    prefix: prefix.to_string(),
                })
            }
            "static" => {
                let addrs: Vec<String> = rest
                    .split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect();
                if addrs.is_empty() {
                    return Err(bad("no addresses"));
                }
                for addr in &addrs {
                    validate_addr(addr).map_err(|why| bad(&why))?;
                }
                Ok(Target::Static { addrs })
            }
            other => Err(bad(&format!(
                "unknown scheme {other:?} (supported: etcd, static)"
            ))),
        }
    }
}

/// Checks that an address is `host:port` with a numeric port.
pub fn validate_addr(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("address {addr:?} is not host:port"))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("address {addr:?} is not host:port"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes() {
        assert_eq!(
            Target::parse("etcd:///service/user").unwrap(),
            Target::Etcd {
                prefix: "service/user".into()
            }
        );
        assert_eq!(
            Target::parse("etcd:///service/user/").unwrap(),
            Target::Etcd {
                prefix: "service/user".into()
            }
        );
        assert_eq!(
            Target::parse("static:///127.0.0.1:1,localhost:2").unwrap(),
            Target::Static {
                addrs: vec!["127.0.0.1:1".into(), "localhost:2".into()]
            }
        );
    }

    #[test]
    fn rejects_bad_targets() {
        for t in [
            "",
            "dns:///x:1",
            "static:///",
            "static:///nohost",
            "static:///h:notaport",
            "etcd:///",
            "x",
        ] {
            let err = Target::parse(t).unwrap_err();
            assert_eq!(err.code, tonic::Code::InvalidArgument, "{t}");
            assert!(err.message.contains("target"), "{t}: {}", err.message);
        }
    }
}
