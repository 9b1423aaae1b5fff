//! What a handler knows about the call, and how it reaches the rest of the mesh.

use crate::cbor::Value;
use crate::convert::{FromValue, IntoValue};
use crate::envelope::{Envelope, Kind};
use crate::error::{Error, ErrorCode};
use crate::host;
use std::cell::RefCell;

/// Log levels; the values are log/slog's, as in `abi.LogLevel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// -4
    Debug = -4,
    /// 0
    Info = 0,
    /// 4
    Warn = 4,
    /// 8
    Error = 8,
}

thread_local! {
    /// Encoding buffer for outgoing frames, reused across calls.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
}

/// Encodes with the reused scratch buffer and passes the frame to `f`.
fn with_frame<T>(env: &Envelope<'_>, f: impl FnOnce(&[u8]) -> T) -> T {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            env.encode_into(&mut buf);
            let out = f(&buf);
            if buf.capacity() > 1 << 16 {
                *buf = Vec::with_capacity(256);
            }
            out
        }
        Err(_) => f(&env.encode()),
    })
}

/// Writes a log line through the host (stderr when not in WebAssembly).
pub fn log(level: Level, msg: &str) {
    host::log(level as i32, msg.as_bytes());
}

/// The call being handled: who asked, within which trace, tenant and
/// deadline; and the way to call, send, publish and log from inside it.
pub struct Context<'a> {
    env: &'a Envelope<'a>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(env: &'a Envelope<'a>) -> Context<'a> {
        Context { env }
    }

    /// The correlation id of the request.
    pub fn id(&self) -> &str {
        self.env.id
    }

    /// The trace id, carried through every nested call.
    pub fn trace_id(&self) -> &str {
        self.env.trace_id
    }

    /// The tenant the call runs in (stamped by the host).
    pub fn tenant(&self) -> &str {
        self.env.tenant
    }

    /// The service as addressed by the caller.
    pub fn service(&self) -> &str {
        self.env.service
    }

    /// The method being called (empty for events).
    pub fn method(&self) -> &str {
        self.env.method
    }

    /// The topic of the event being handled (empty for requests).
    pub fn topic(&self) -> &str {
        self.env.topic
    }

    /// Whether this is a request, a command or an event.
    pub fn kind(&self) -> Kind {
        self.env.kind
    }

    /// Nested call depth (stamped by the host).
    pub fn depth(&self) -> i64 {
        self.env.depth
    }

    /// The deadline in unix milliseconds, if one was set.
    pub fn deadline(&self) -> Option<i64> {
        if self.env.deadline > 0 {
            Some(self.env.deadline)
        } else {
            None
        }
    }

    /// Milliseconds left before the deadline (negative once it passed).
    pub fn remaining_ms(&self) -> Option<i64> {
        self.deadline().map(|d| d - now_ms())
    }

    /// The context map (caller claims, token), if the caller sent one.
    pub fn context(&self) -> Option<&Value> {
        self.env.context.as_ref()
    }

    /// The entries of the context map; empty when there is none.
    pub fn claims(&self) -> &[(String, Value)] {
        self.env.context.as_ref().and_then(Value::as_map).unwrap_or(&[])
    }

    /// One entry of the context map.
    pub fn claim(&self, key: &str) -> Option<&Value> {
        self.claims().iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn outgoing(&self, kind: Kind) -> Envelope<'a> {
        let mut e = Envelope::new(kind);
        e.trace_id = self.env.trace_id;
        e.deadline = self.env.deadline;
        e
    }

    /// Calls `service.method` with `params` (a map, usually a `record!`
    /// struct) and waits for its result. The host bounds the wait by this
    /// call's deadline.
    pub fn call(&self, service: &str, method: &str, params: impl IntoValue) -> Result<Value, Error> {
        let mut req = self.outgoing(Kind::Request);
        req.service = service;
        req.method = method;
        req.params = Some(params.into_value());
        let res = with_frame(&req, |frame| {
            host::with_call_reply(frame, |reply| match reply {
                None => Err(Error::new(ErrorCode::Internal, "the host returned no reply")),
                Some(b) => match Envelope::decode(b) {
                    Err(e) => Err(Error::internal(format!("malformed reply from {}: {}", service, e.message()))),
                    Ok(mut r) => match r.error.take() {
                        Some(e) => Err(e),
                        None => Ok(r.result.take().unwrap_or(Value::Null)),
                    },
                },
            })
        });
        res
    }

    /// [`call`](Self::call) and convert the result to `T`. A result of the
    /// wrong shape is an `internal` error (the callee broke its contract).
    pub fn call_as<T: FromValue>(&self, service: &str, method: &str, params: impl IntoValue) -> Result<T, Error> {
        let v = self.call(service, method, params)?;
        T::from_value(v).map_err(|e| Error::internal(format!("result of {}.{}: {}", service, method, e.message())))
    }

    /// Sends a command to `service.method`: fire and forget.
    pub fn send(&self, service: &str, method: &str, params: impl IntoValue) -> Result<(), Error> {
        let mut cmd = self.outgoing(Kind::Command);
        cmd.service = service;
        cmd.method = method;
        cmd.params = Some(params.into_value());
        send_frame(&cmd)
    }

    /// Publishes `event` on `topic` to every subscriber.
    pub fn publish(&self, topic: &str, event: impl IntoValue) -> Result<(), Error> {
        let mut ev = self.outgoing(Kind::Event);
        ev.topic = topic;
        ev.event = Some(event.into_value());
        send_frame(&ev)
    }

    /// Logs `msg` at `level`; the host tags it with tenant, service and trace.
    pub fn log(&self, level: Level, msg: &str) {
        log(level, msg)
    }

    /// Logs at debug level.
    pub fn debug(&self, msg: &str) {
        log(Level::Debug, msg)
    }

    /// Logs at info level.
    pub fn info(&self, msg: &str) {
        log(Level::Info, msg)
    }

    /// Logs at warn level.
    pub fn warn(&self, msg: &str) {
        log(Level::Warn, msg)
    }

    /// Logs at error level.
    pub fn error(&self, msg: &str) {
        log(Level::Error, msg)
    }
}

fn send_frame(env: &Envelope<'_>) -> Result<(), Error> {
    let status = with_frame(env, host::send);
    match ErrorCode::from_send_status(status) {
        None => Ok(()),
        Some(code) => Err(Error::new(code, format!("send failed: {}", code))),
    }
}

/// The wall clock in unix milliseconds (WASI's clock inside the host).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
