//! Client-side health checking (gRFC A17): while a subchannel's connection is up, a
//! `grpc.health.v1.Health/Watch` stream tells whether the instance is SERVING. Only SERVING
//! instances are picked; UNIMPLEMENTED means the server has no health service: it counts as
//! healthy and checking stops. A broken stream counts as unhealthy and is reopened with backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::subchannel::Subchannel;
use crate::backoff::Backoff;
use crate::transport::{server_stream, Sender};

const SERVING: u64 = 1;

/// Watches the health of `sc` over the connection `sender` until the stream is given up on or
/// the task is dropped (the connection closed). `on_change` rebuilds the picker.
pub async fn watch(
    sc: Arc<Subchannel>,
    sender: Sender,
    service: String,
    on_change: Arc<dyn Fn() + Send + Sync>,
) {
    static LOGGED_UNIMPLEMENTED: AtomicBool = AtomicBool::new(false);
    let mut backoff = Backoff::new(Duration::from_secs(1), 1.6, 0.2, Duration::from_secs(120));
    let set = |healthy: bool| {
        if sc.set_healthy(healthy) {
            on_change();
        }
    };
    loop {
        let opened = server_stream(
            sender.clone(),
            sc.origin.clone(),
            "/grpc.health.v1.Health/Watch",
            request(&service),
        )
        .await;
        let mut stream = match opened {
            Ok(s) => s,
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                if !LOGGED_UNIMPLEMENTED.swap(true, Ordering::Relaxed) {
                    log::warn!("health check: {} has no grpc.health.v1.Health service; treating it as healthy", sc.addr);
                }
                set(true);
                return;
            }
            Err(status) => {
                sc.set_last_error(format!("health check: {}", status.message()));
                set(false);
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(msg)) => {
                    backoff.reset();
                    let status = serving_status(&msg);
                    if status != SERVING {
                        sc.set_last_error(format!(
                            "health check: {} reports status {status} (not SERVING)",
                            sc.addr
                        ));
                    }
                    set(status == SERVING);
                }
                Ok(None) => break,
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    set(true);
                    return;
                }
                Err(status) => {
                    sc.set_last_error(format!("health check: {}", status.message()));
                    break;
                }
            }
        }
        set(false);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// HealthCheckRequest { string service = 1 } in protobuf wire format.
fn request(service: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(service.len() + 6);
    if !service.is_empty() {
        b.put_u8(0x0a);
        put_varint(&mut b, service.len() as u64);
        b.put_slice(service.as_bytes());
    }
    b.freeze()
}

fn put_varint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

/// Reads field 1 (status, varint) of HealthCheckResponse; 0 (UNKNOWN) when absent.
fn serving_status(msg: &[u8]) -> u64 {
    let mut i = 0;
    let mut status = 0;
    while i < msg.len() {
        let Some((key, n)) = varint(&msg[i..]) else {
            return 0;
        };
        i += n;
        match key & 7 {
            0 => {
                let Some((v, n)) = varint(&msg[i..]) else {
                    return 0;
                };
                i += n;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let Some((len, n)) = varint(&msg[i..]) else {
                    return 0;
                };
                i += n + len as usize;
            }
            1 => i += 8,
            5 => i += 4,
            _ => return 0,
        }
    }
    status
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        assert_eq!(&request("")[..], b"");
        assert_eq!(&request("svc")[..], b"\x0a\x03svc");
        assert_eq!(serving_status(b"\x08\x01"), 1);
        assert_eq!(serving_status(b"\x08\x02"), 2);
        assert_eq!(serving_status(b""), 0);
        assert_eq!(serving_status(b"\x12\x01x\x08\x01"), 1);
    }
}
