//! The envelope: every message on the mesh and across the ABI (`abi.Envelope`).

use crate::cbor::{self, write_head, write_int, write_text, Decoder, Limits, Value};
use crate::error::{Error, ErrorCode};

/// What an [`Envelope`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Expects exactly one response.
    Request,
    /// Fire-and-forget to one service.
    Command,
    /// To every subscriber of a topic.
    Event,
    /// The answer to a request.
    Response,
}

impl Kind {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Command => "command",
            Kind::Event => "event",
            Kind::Response => "response",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "request" => Kind::Request,
            "command" => Kind::Command,
            "event" => Kind::Event,
            "response" => Kind::Response,
            _ => return None,
        })
    }
}

/// An envelope, encoded as a CBOR map with the short text keys of
/// `abi.Envelope`. Text fields borrow from the decoded frame; empty text and
/// zero numbers are left out when encoding (Go's `omitempty`).
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<'a> {
    /// `kind`.
    pub kind: Kind,
    /// `id`: the correlation id.
    pub id: &'a str,
    /// `trace_id`: carried through every nested call.
    pub trace_id: &'a str,
    /// `service`: "service" or "tenant/service".
    pub service: &'a str,
    /// `method`.
    pub method: &'a str,
    /// `params`: a map of keyword params.
    pub params: Option<Value>,
    /// `context`: caller claims, token.
    pub context: Option<Value>,
    /// `topic`.
    pub topic: &'a str,
    /// `event`.
    pub event: Option<Value>,
    /// `deadline`: unix milliseconds; 0 means the host's default.
    pub deadline: i64,
    /// `tenant`: set by the host only.
    pub tenant: &'a str,
    /// `depth`: nested call depth, set by the host only.
    pub depth: i64,
    /// `result`.
    pub result: Option<Value>,
    /// `error`: `{code, message, details}`.
    pub error: Option<Error>,
    /// `served_by`: the module version that answered.
    pub served_by: &'a str,
}

const KEYS: [&str; 15] = [
    "kind", "id", "trace_id", "service", "method", "params", "context", "topic", "event", "deadline", "tenant",
    "depth", "result", "error", "served_by",
];

impl<'a> Envelope<'a> {
    /// An envelope of `kind` with every other field empty.
    pub fn new(kind: Kind) -> Envelope<'a> {
        Envelope {
            kind,
            id: "",
            trace_id: "",
            service: "",
            method: "",
            params: None,
            context: None,
            topic: "",
            event: None,
            deadline: 0,
            tenant: "",
            depth: 0,
            result: None,
            error: None,
            served_by: "",
        }
    }

    /// Decodes and validates an envelope under the default limits, as
    /// `abi.Codec.DecodeEnvelope` does.
    pub fn decode(b: &'a [u8]) -> Result<Envelope<'a>, Error> {
        Self::decode_with(b, Limits::DEFAULT)
    }

    /// Decodes and validates an envelope under `limits`.
    pub fn decode_with(b: &'a [u8], limits: Limits) -> Result<Envelope<'a>, Error> {
        let mut d = Decoder::new(b, limits)?;
        let (n, depth) = d.map_head(0).map_err(|e| Error::bad_request(format!("envelope: {}", e.message())))?;
        let mut env = Envelope::new(Kind::Response);
        let mut kind: Option<&str> = None;
        let mut seen = 0u32;
        let mut unknown: Vec<&str> = Vec::new();
        for _ in 0..n {
            let key = d.text().map_err(|e| Error::bad_request(format!("envelope key: {}", e.message())))?;
            let idx = KEYS.iter().position(|k| *k == key);
            let dup = match idx {
                Some(i) => {
                    let dup = seen & (1 << i) != 0;
                    seen |= 1 << i;
                    dup
                }
                None => {
                    let dup = unknown.contains(&key);
                    unknown.push(key);
                    dup
                }
            };
            if dup {
                return Err(Error::bad_request(format!("malformed CBOR: duplicate map key {:?}", key)));
            }
            let field = |e: Error| Error::bad_request(format!("envelope field `{}`: {}", key, e.message()));
            match key {
                "kind" => kind = Some(d.text().map_err(field)?),
                "id" => env.id = d.text().map_err(field)?,
                "trace_id" => env.trace_id = d.text().map_err(field)?,
                "service" => env.service = d.text().map_err(field)?,
                "method" => env.method = d.text().map_err(field)?,
                "topic" => env.topic = d.text().map_err(field)?,
                "tenant" => env.tenant = d.text().map_err(field)?,
                "served_by" => env.served_by = d.text().map_err(field)?,
                "params" => env.params = Some(d.value(depth)?),
                "event" => env.event = Some(d.value(depth)?),
                "result" => env.result = Some(d.value(depth)?),
                "context" => {
                    let v = d.value(depth)?;
                    match v {
                        Value::Map(_) | Value::Null => env.context = Some(v),
                        other => return Err(field(crate::convert::type_error("map", &other))),
                    }
                }
                "deadline" | "depth" => {
                    let i = match d.value(depth)? {
                        Value::Int(i) => i,
                        other => return Err(field(crate::convert::type_error("int", &other))),
                    };
                    if key == "deadline" {
                        env.deadline = i
                    } else {
                        env.depth = i
                    }
                }
                "error" => match d.value(depth)? {
                    Value::Null => {}
                    Value::Map(m) => env.error = Some(error_from_pairs(m)),
                    other => return Err(field(crate::convert::type_error("map", &other))),
                },
                _ => {
                    d.value(depth)?;
                }
            }
        }
        d.finish()?;
        let kind = kind.unwrap_or("");
        env.kind = Kind::parse(kind)
            .ok_or_else(|| Error::bad_request(format!("unknown envelope kind {:?}", kind)))?;
        match env.kind {
            Kind::Request | Kind::Command if env.service.is_empty() || env.method.is_empty() => {
                return Err(Error::bad_request(format!("{} envelope needs service and method", kind)))
            }
            Kind::Event if env.topic.is_empty() => return Err(Error::bad_request("event envelope needs a topic")),
            _ => {}
        }
        Ok(env)
    }

    /// Appends the CBOR encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let texts = [
            ("id", self.id),
            ("trace_id", self.trace_id),
            ("service", self.service),
            ("method", self.method),
            ("topic", self.topic),
            ("tenant", self.tenant),
            ("served_by", self.served_by),
        ];
        let values = [("params", &self.params), ("context", &self.context), ("event", &self.event), ("result", &self.result)];
        let n = 1
            + texts.iter().filter(|(_, v)| !v.is_empty()).count()
            + values.iter().filter(|(_, v)| v.is_some()).count()
            + (self.deadline != 0) as usize
            + (self.depth != 0) as usize
            + self.error.is_some() as usize;
        write_head(out, 5, n as u64);
        write_text(out, "kind");
        write_text(out, self.kind.as_str());
        for (k, v) in texts.iter() {
            if !v.is_empty() {
                write_text(out, k);
                write_text(out, v);
            }
        }
        for (k, v) in values.iter() {
            if let Some(v) = v {
                write_text(out, k);
                cbor::encode_into(v, out);
            }
        }
        if self.deadline != 0 {
            write_text(out, "deadline");
            write_int(out, self.deadline);
        }
        if self.depth != 0 {
            write_text(out, "depth");
            write_int(out, self.depth);
        }
        if let Some(e) = &self.error {
            write_text(out, "error");
            encode_error(e, out);
        }
    }

    /// Encodes into a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out);
        out
    }
}

/// Encodes `{code, message, details?}`.
pub(crate) fn encode_error(e: &Error, out: &mut Vec<u8>) {
    let details = e.details();
    write_head(out, 5, if details.is_empty() { 2 } else { 3 });
    write_text(out, "code");
    write_text(out, e.code().as_str());
    write_text(out, "message");
    write_text(out, &e.message());
    if !details.is_empty() {
        write_text(out, "details");
        cbor::encode_into(&Value::Map(details), out);
    }
}

fn error_from_pairs(m: Vec<(String, Value)>) -> Error {
    let mut code = ErrorCode::Internal;
    let mut message = String::new();
    let mut details = Vec::new();
    for (k, v) in m {
        match (k.as_str(), v) {
            ("code", Value::Text(c)) => code = ErrorCode::parse(&c),
            ("message", Value::Text(s)) => message = s,
            ("details", Value::Map(d)) => details = d,
            _ => {}
        }
    }
    let mut e = Error::new(code, message);
    for (k, v) in details {
        e = e.with_detail(k, v);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut e = Envelope::new(Kind::Request);
        e.id = "1";
        e.trace_id = "t";
        e.service = "svc";
        e.method = "m";
        e.params = Some(Value::map(vec![("a", Value::Int(1))]));
        e.context = Some(Value::map(vec![("sub", Value::Text("u".into()))]));
        e.deadline = 1_700_000_000_000;
        e.tenant = "acme";
        e.depth = 2;
        let b = e.encode();
        assert_eq!(Envelope::decode(&b).unwrap(), e);

        let mut r = Envelope::new(Kind::Response);
        r.error = Some(Error::bad_request("no").with_detail("x", 1i64));
        let rb = r.encode();
        let back = Envelope::decode(&rb).unwrap();
        assert_eq!(back.error.as_ref().unwrap().code(), &ErrorCode::BadRequest);
        assert_eq!(back.error.unwrap().message(), "no");
    }

    #[test]
    fn validates() {
        let mut e = Envelope::new(Kind::Request);
        e.service = "svc";
        assert!(Envelope::decode(&e.encode()).unwrap_err().message().contains("needs service and method"));
        let ev = Envelope::new(Kind::Event);
        assert!(Envelope::decode(&ev.encode()).is_err());
        // Unknown kind; duplicate key; unknown keys are skipped.
        let v = Value::map(vec![("kind", Value::Text("nope".into()))]);
        assert!(Envelope::decode(&v.to_cbor()).unwrap_err().message().contains("unknown envelope kind"));
        let mut b = Vec::new();
        write_head(&mut b, 5, 2);
        write_text(&mut b, "kind");
        write_text(&mut b, "response");
        write_text(&mut b, "kind");
        write_text(&mut b, "response");
        assert!(Envelope::decode(&b).unwrap_err().message().contains("duplicate"));
        let v = Value::map(vec![("kind", Value::Text("response".into())), ("extra", Value::Array(vec![]))]);
        assert!(Envelope::decode(&v.to_cbor()).is_ok());
        let v = Value::map(vec![("kind", Value::Text("response".into())), ("deadline", Value::Text("x".into()))]);
        assert!(Envelope::decode(&v.to_cbor()).unwrap_err().message().contains("deadline"));
    }
}
