//! Call metadata: ordered (key, value) pairs, checked the way gRPC checks them, and their
//! conversion to and from tonic's `MetadataMap`.

use bytes::Bytes;
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};

use crate::status::Status;

/// Metadata as ordered (key, value) pairs. Keys ending in `-bin` carry raw bytes; all other
/// values are printable ASCII.
pub type Metadata = Vec<(String, Bytes)>;

pub fn validate_metadata(key: &str, value: &[u8]) -> Result<(), Status> {
    let bad = |why: &str| Status::invalid_argument(format!("metadata key {key:?}: {why}"));
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'))
    {
        return Err(bad("keys are non-empty and use only a-z 0-9 - _ ."));
    }
    if key.starts_with("grpc-") {
        return Err(bad("grpc- keys are reserved"));
    }
    if matches!(
        key,
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "te"
    ) {
        return Err(bad("connection-specific headers are not allowed in HTTP/2"));
    }
    if !key.ends_with("-bin") && !value.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(bad(
            "a value must be printable ASCII unless the key ends in -bin",
        ));
    }
    Ok(())
}

/// The size of `metadata` as HTTP/2 counts a header list (RFC 9113 6.5.2: name + value + 32
/// per entry), with binary values as they go on the wire (unpadded base64).
pub fn header_list_size(metadata: &Metadata) -> u64 {
    metadata
        .iter()
        .map(|(key, value)| {
            let value_len = if key.ends_with("-bin") {
                (value.len() * 4).div_ceil(3)
            } else {
                value.len()
            };
            (key.len() + value_len + 32) as u64
        })
        .fold(0, u64::saturating_add)
}

/// Appends checked metadata (see [`validate_metadata`]) to a request's map.
pub fn append_to(md: &mut MetadataMap, metadata: &Metadata) {
    for (key, value) in metadata {
        if key.ends_with("-bin") {
            if let Ok(k) = MetadataKey::from_bytes(key.as_bytes()) {
                md.append_bin(k, MetadataValue::from_bytes(value));
            }
        } else if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_ref()),
        ) {
            md.append(k, v);
        }
    }
}

/// A response's headers or trailers as pairs, without the ones gRPC itself uses.
pub fn to_pairs(md: &MetadataMap) -> Metadata {
    let mut out = Vec::new();
    for kv in md.iter() {
        match kv {
            KeyAndValueRef::Ascii(k, v) => {
                let key = k.as_str();
                if matches!(key, "grpc-status" | "grpc-message" | "content-type") {
                    continue;
                }
                out.push((key.to_string(), Bytes::copy_from_slice(v.as_bytes())));
            }
            KeyAndValueRef::Binary(k, v) => {
                if let Ok(bytes) = v.to_bytes() {
                    out.push((k.as_str().to_string(), bytes));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_list_size_counts_as_http2_does() {
        let md: Metadata = vec![
            ("a".into(), Bytes::from_static(b"xyz")),
            ("k-bin".into(), Bytes::from_static(&[0, 1, 2, 3])),
        ];
        // 1 + 3 + 32, then 5 + base64(4 bytes) = 6 characters + 32.
        assert_eq!(header_list_size(&md), 36 + 43);
        assert_eq!(header_list_size(&Vec::new()), 0);
    }
}
