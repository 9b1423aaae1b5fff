//! Errors with the nuropb error codes (`abi.ErrorCode`).

use crate::cbor::Value;
use std::fmt;

/// Classifies a failure so callers can act on it without parsing messages.
/// Mirrors `abi.ErrorCode`; a code this SDK does not know reads as
/// [`ErrorCode::Internal`], as ABI v1 prescribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `not_found`: no such service.
    NotFound,
    /// `method_not_found`: the service has no such (public) method.
    MethodNotFound,
    /// `bad_request`: decode or validation failure.
    BadRequest,
    /// `timeout`: the deadline passed.
    Timeout,
    /// `trapped`: the guest faulted; its instance was discarded.
    Trapped,
    /// `resource_exhausted`: a limit was hit.
    ResourceExhausted,
    /// `forbidden`: not allowed for this caller or tenant.
    Forbidden,
    /// `unavailable`: the broker or the service cannot be reached now.
    Unavailable,
    /// `internal`: a fault in the host or a malformed reply.
    Internal,
    /// `handler`: the service's own error, with its message.
    Handler,
}

/// The codes in the order of the `send` import's status numbers
/// (`abi.SendStatus`): status `i` means `SEND_CODES[i - 1]`.
const SEND_CODES: [ErrorCode; 10] = [
    ErrorCode::NotFound,
    ErrorCode::MethodNotFound,
    ErrorCode::BadRequest,
    ErrorCode::Timeout,
    ErrorCode::Trapped,
    ErrorCode::ResourceExhausted,
    ErrorCode::Forbidden,
    ErrorCode::Unavailable,
    ErrorCode::Internal,
    ErrorCode::Handler,
];

impl ErrorCode {
    /// The wire name, e.g. `"bad_request"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotFound => "method_not_found",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Trapped => "trapped",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Handler => "handler",
        }
    }

    /// Parses a wire name; unknown names become `Internal`.
    pub fn parse(s: &str) -> ErrorCode {
        SEND_CODES.iter().copied().find(|c| c.as_str() == s).unwrap_or(ErrorCode::Internal)
    }

    /// Turns the `send` import's status into a code; `None` for 0 (success).
    pub fn from_send_status(status: i32) -> Option<ErrorCode> {
        match status {
            0 => None,
            s if s > 0 && (s as usize) <= SEND_CODES.len() => Some(SEND_CODES[s as usize - 1]),
            _ => Some(ErrorCode::Internal),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed failure: what handlers return and what `Context::call` reports.
///
/// Conversion errors carry the path of the offending field
/// (`items[2].qty`); it is prefixed to the message and put in
/// `details.field`, so a caller sees which param was wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct Error(Box<Inner>);

/// Boxed so that `Result<T, Error>` stays as small as `T` on the hot path.
#[derive(Debug, Clone, PartialEq)]
struct Inner {
    code: ErrorCode,
    reason: String,
    path: String,
    details: Vec<(String, Value)>,
}

impl Error {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error(Box::new(Inner { code, reason: message.into(), path: String::new(), details: Vec::new() }))
    }

    /// The service's own failure (`handler`).
    pub fn handler(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::Handler, message)
    }

    /// Invalid input (`bad_request`).
    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::BadRequest, message)
    }

    /// Not allowed (`forbidden`).
    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::Forbidden, message)
    }

    /// No such method (`method_not_found`).
    pub fn method_not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::MethodNotFound, message)
    }

    /// A limit was hit (`resource_exhausted`).
    pub fn resource_exhausted(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::ResourceExhausted, message)
    }

    /// A fault that is not the caller's (`internal`).
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::Internal, message)
    }

    /// Adds a detail, sent in the error's `details` map.
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<Value>) -> Error {
        self.0.details.push((key.into(), value.into()));
        self
    }

    /// The code.
    pub fn code(&self) -> &ErrorCode {
        &self.0.code
    }

    /// The message, prefixed with the field path when there is one.
    pub fn message(&self) -> String {
        if self.0.path.is_empty() {
            self.0.reason.clone()
        } else {
            format!("param `{}`: {}", self.0.path, self.0.reason)
        }
    }

    /// The path of the field a conversion failed on, or `""`.
    pub fn field(&self) -> &str {
        &self.0.path
    }

    /// The details, plus `field` when a field path is known.
    pub fn details(&self) -> Vec<(String, Value)> {
        let mut d = self.0.details.clone();
        if !self.0.path.is_empty() && !d.iter().any(|(k, _)| k == "field") {
            d.push(("field".into(), Value::Text(self.0.path.clone())));
        }
        d
    }

    /// Prefixes the field path with the struct field `name`.
    pub fn at_field(mut self, name: &str) -> Error {
        let p = &mut self.0.path;
        *p = if p.is_empty() {
            name.to_owned()
        } else if p.starts_with('[') {
            format!("{}{}", name, p)
        } else {
            format!("{}.{}", name, p)
        };
        self
    }

    /// Prefixes the field path with the list index `i`.
    pub fn at_index(mut self, i: usize) -> Error {
        let p = &mut self.0.path;
        *p = if p.is_empty() || p.starts_with('[') {
            format!("[{}]{}", i, p)
        } else {
            format!("[{}].{}", i, p)
        };
        self
    }

    /// Prefixes the field path with the map key `k`.
    pub fn at_key(self, k: &str) -> Error {
        self.at_field(k)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.message();
        if m.is_empty() {
            f.write_str(self.0.code.as_str())
        } else {
            write!(f, "{}: {}", self.0.code, m)
        }
    }
}

impl std::error::Error for Error {}

impl From<&str> for Error {
    /// A `handler` error with this message.
    fn from(s: &str) -> Error {
        Error::handler(s)
    }
}

impl From<String> for Error {
    /// A `handler` error with this message.
    fn from(s: String) -> Error {
        Error::handler(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for (i, c) in SEND_CODES.iter().enumerate() {
            assert_eq!(ErrorCode::parse(c.as_str()), *c);
            assert_eq!(ErrorCode::from_send_status(i as i32 + 1), Some(*c));
        }
        assert_eq!(ErrorCode::parse("bogus"), ErrorCode::Internal);
        assert_eq!(ErrorCode::from_send_status(0), None);
        assert_eq!(ErrorCode::from_send_status(99), Some(ErrorCode::Internal));
    }

    #[test]
    fn paths() {
        let e = Error::bad_request("expected int, got string").at_field("qty").at_index(2).at_field("items");
        assert_eq!(e.field(), "items[2].qty");
        assert_eq!(e.message(), "param `items[2].qty`: expected int, got string");
        assert_eq!(e.details(), vec![("field".to_string(), Value::Text("items[2].qty".into()))]);
    }
}
