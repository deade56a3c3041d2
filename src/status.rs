//! gRPC status codes and the error type of every fallible call in the crate.

use std::fmt;

pub use tonic::Code;

/// A gRPC status: a code and a human-readable message.
///
/// Every error the library reports, local or from a server, is one of these, so callers in any
/// language branch on the same 17 codes that grpc-go and grpcio use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub message: String,
}

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Status {
            code,
            message: message.into(),
        }
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(Code::Cancelled, message)
    }
    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Self::new(Code::DeadlineExceeded, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }
    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        Self::new(Code::ResourceExhausted, message)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            code_name(self.code),
            self.code as i32,
            self.message
        )
    }
}

impl std::error::Error for Status {}

/// The canonical upper-case name of a code, as in the gRPC spec and grpc-go's `codes` package.
pub fn code_name(code: Code) -> &'static str {
    CODE_NAMES[code as usize]
}

const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Parses a status code given as a name in any case (`"unavailable"`) or as its number.
pub fn parse_code(value: &serde_json::Value) -> Option<Code> {
    match value {
        serde_json::Value::Number(n) => {
            let n = n.as_i64()?;
            (0..=16).contains(&n).then(|| Code::from_i32(n as i32))
        }
        serde_json::Value::String(s) => CODE_NAMES
            .iter()
            .position(|name| name.eq_ignore_ascii_case(s))
            .map(|i| Code::from_i32(i as i32)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_parse_by_name_in_any_case_and_by_number() {
        assert_eq!(parse_code(&"unavailable".into()), Some(Code::Unavailable));
        assert_eq!(parse_code(&"UNAVAILABLE".into()), Some(Code::Unavailable));
        assert_eq!(parse_code(&14.into()), Some(Code::Unavailable));
        assert_eq!(parse_code(&0.into()), Some(Code::Ok));
        assert_eq!(parse_code(&17.into()), None);
        assert_eq!(parse_code(&(-1).into()), None);
        assert_eq!(parse_code(&"NOPE".into()), None);
        assert_eq!(parse_code(&serde_json::Value::Null), None);
        for i in 0..17 {
            assert!(code_name(Code::from_i32(i)).len() > 1);
        }
    }
}
