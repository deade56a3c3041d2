//! proto3 JSON durations: `"0.01s"`, `"1.5s"`, `"30s"`.

use std::time::Duration;

/// Parses a proto3 JSON duration (decimal seconds with an `s` suffix, at most 9 fractional
/// digits, non-negative). Returns None for anything else.
pub fn parse(text: &str) -> Option<Duration> {
    let digits = text.strip_suffix('s')?;
    let (whole, frac) = match digits.split_once('.') {
        Some((w, f)) => (w, f),
        None => (digits, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.len() > 9
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (digits.contains('.') && frac.is_empty())
    {
        return None;
    }
    let secs: u64 = whole.parse().ok()?;
    if secs > 315_576_000_000 {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proto3_durations() {
        assert_eq!(parse("0.01s"), Some(Duration::from_millis(10)));
        assert_eq!(parse("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("0.000000001s"), Some(Duration::from_nanos(1)));
        for bad in [
            "",
            "s",
            "1",
            "1ms",
            "-1s",
            "1.s",
            ".5s",
            "1.0000000001s",
            "abc",
            "1e3s",
            " 1s",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
