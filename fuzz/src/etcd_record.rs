//! etcd records as the resolver reads them: the key (first line of the input) and the value
//! (the rest), in the layout of etcd's Go `naming/endpoints`, plus the prefix's key range.
//!
//! Invariants: decoding never panics; an accepted record has a dialable address and a weight
//! in [0, MAX_WEIGHT] equal to `weight_of` its metadata; what the registrar writes for it
//! decodes to the same address and weight and re-encodes byte for byte; every error names the
//! key; `range_end(prefix)` is above every key that starts with the prefix.

use grpc_failover::fuzzing::{
    decode_record, encode_record, range_end, validate_addr, weight_of, MAX_WEIGHT,
};

pub fn run(data: &[u8]) {
    let (key, value) = crate::split_line(data);
    let key_text = String::from_utf8_lossy(key);
    match decode_record(&key_text, value) {
        Ok(endpoint) => {
            assert!(validate_addr(&endpoint.addr).is_ok(), "{endpoint:?}");
            assert!(
                (0.0..=MAX_WEIGHT).contains(&endpoint.weight),
                "{endpoint:?}"
            );
            assert_eq!(endpoint.weight, weight_of(&endpoint.metadata));
            let record = encode_record(&endpoint.addr, &endpoint.metadata);
            let again = decode_record(&key_text, record.as_bytes())
                .unwrap_or_else(|e| panic!("{record}: {e}"));
            assert_eq!(again.addr, endpoint.addr, "{record}");
            assert_eq!(again.weight, endpoint.weight, "{record}");
            assert_eq!(encode_record(&again.addr, &again.metadata), record);
        }
        Err(message) => {
            assert!(
                message.starts_with(&format!("etcd key {key_text:?}: ")),
                "{message}"
            );
        }
    }
    let _ = weight_of(&serde_json::from_slice(value).unwrap_or_default());

    // The watch covers `<prefix>/`: the end of its range is above the prefix and above any key
    // under it, unless the prefix is all 0xff bytes (then the range is open, `[0]`).
    let prefix = [key, b"/"].concat();
    let end = range_end(&prefix);
    if end != [0] {
        assert!(end.as_slice() > prefix.as_slice());
        let under = [prefix.as_slice(), value].concat();
        assert!(end.as_slice() > under.as_slice(), "{prefix:?} {end:?}");
    }
}
