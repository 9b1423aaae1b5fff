//! The service builder: methods and subscriptions by name, the manifest, and
//! dispatch of incoming envelopes.

use crate::cbor::{write_head, write_text, Limits, Value};
use crate::context::Context;
use crate::convert::{FromValue, IntoValue, ParamSpec, Params};
use crate::envelope::{Envelope, Kind};
use crate::error::Error;

type MethodFn = Box<dyn FnMut(&mut Context<'_>, Value) -> Result<Value, Error>>;
type EventFn = Box<dyn FnMut(&mut Context<'_>, Value) -> Result<(), Error>>;

struct MethodEntry {
    name: String,
    description: String,
    params: Vec<ParamSpec>,
    result: &'static str,
    hidden: bool,
    requires_auth: bool,
    handler: MethodFn,
}

struct Subscription {
    pattern: String,
    handler: EventFn,
}

/// A service: its name, version, methods and subscriptions. Build one in the
/// function you pass to [`export_service!`](crate::export_service); it is
/// built once per instance, on the first call.
///
/// ```
/// use nuropb::{Context, Error, Service};
/// nuropb::record! {
///     pub struct HelloParams {
///         /// Who to greet.
///         pub name: String,
///     }
/// }
/// fn build() -> Service {
///     let mut svc = Service::new("hello", "1.0.0");
///     svc.method("hello", "Says hello", |_ctx: &mut Context, p: HelloParams| -> Result<String, Error> {
///         Ok(format!("hello, {}", p.name))
///     });
///     svc
/// }
/// # assert!(build().validate().is_ok());
/// ```
pub struct Service {
    name: String,
    version: String,
    description: String,
    methods: Vec<MethodEntry>,
    subscriptions: Vec<Subscription>,
    calls: Vec<String>,
    publishes: Vec<String>,
}

/// Options of a just-registered method, for chaining.
pub struct MethodRef<'s> {
    entry: &'s mut MethodEntry,
}

impl<'s> MethodRef<'s> {
    /// Not callable from outside the service's tenant, and not listed.
    pub fn hidden(self) -> Self {
        self.entry.hidden = true;
        self
    }

    /// The host refuses callers without credentials.
    pub fn requires_auth(self) -> Self {
        self.entry.requires_auth = true;
        self
    }
}

impl Service {
    /// A service named `name` (lower case letters, digits, `_` and `-`,
    /// starting with a letter) at `version`.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Service {
        Service {
            name: name.into(),
            version: version.into(),
            description: String::new(),
            methods: Vec::new(),
            subscriptions: Vec::new(),
            calls: Vec::new(),
            publishes: Vec::new(),
        }
    }

    /// Sets the description shown in the manifest.
    pub fn description(&mut self, d: impl Into<String>) -> &mut Self {
        self.description = d.into();
        self
    }

    /// Declares that the service calls `service` (informational in ABI v1).
    pub fn requires_call(&mut self, service: impl Into<String>) -> &mut Self {
        self.calls.push(service.into());
        self
    }

    /// Declares that the service publishes on `topic` (informational in ABI v1).
    pub fn publishes(&mut self, topic: impl Into<String>) -> &mut Self {
        self.publishes.push(topic.into());
        self
    }

    /// Registers `handler` as method `name`. Params are converted to `P`
    /// (missing or mistyped fields become `bad_request` naming the field)
    /// and the result from `R`. Registering a name again replaces it.
    pub fn method<P, R, F>(&mut self, name: &str, description: &str, mut handler: F) -> MethodRef<'_>
    where
        P: Params,
        R: IntoValue,
        F: FnMut(&mut Context<'_>, P) -> Result<R, Error> + 'static,
    {
        let entry = MethodEntry {
            name: name.to_owned(),
            description: description.to_owned(),
            params: P::param_specs(),
            result: R::type_name(),
            hidden: false,
            requires_auth: false,
            handler: Box::new(move |ctx, v| {
                let p = P::from_value(v)?;
                handler(ctx, p).map(IntoValue::into_value)
            }),
        };
        let i = match self.methods.iter().position(|m| m.name == name) {
            Some(i) => {
                self.methods[i] = entry;
                i
            }
            None => {
                self.methods.push(entry);
                self.methods.len() - 1
            }
        };
        MethodRef { entry: &mut self.methods[i] }
    }

    /// Subscribes `handler` to events whose topic matches `pattern`
    /// (dot-separated words, `*` for one word, `#` for zero or more). The
    /// event is converted to `E`. Every matching subscription runs, in
    /// registration order.
    pub fn subscribe<E, F>(&mut self, pattern: &str, mut handler: F) -> &mut Self
    where
        E: FromValue,
        F: FnMut(&mut Context<'_>, E) -> Result<(), Error> + 'static,
    {
        self.subscriptions.push(Subscription {
            pattern: pattern.to_owned(),
            handler: Box::new(move |ctx, v| handler(ctx, E::from_value(v)?)),
        });
        self
    }

    /// Checks names as the host will (`abi.Manifest.Validate`), so a mistake
    /// shows up in a native test rather than at load.
    pub fn validate(&self) -> Result<(), Error> {
        if !valid_name(&self.name) {
            return Err(Error::bad_request(format!("service name {:?} is not valid (want [a-z][a-z0-9_-]*)", self.name)));
        }
        if self.version.is_empty() {
            return Err(Error::bad_request(format!("service {:?} has no version", self.name)));
        }
        if self.methods.is_empty() && self.subscriptions.is_empty() {
            return Err(Error::bad_request(format!("service {:?} has no methods and no subscriptions", self.name)));
        }
        for m in &self.methods {
            if !valid_method(&m.name) {
                return Err(Error::bad_request(format!("method name {:?} is not valid", m.name)));
            }
        }
        for s in &self.subscriptions {
            if !valid_pattern(&s.pattern) {
                return Err(Error::bad_request(format!("subscription {:?} is not a valid topic pattern", s.pattern)));
            }
        }
        Ok(())
    }

    /// The manifest (`abi.Manifest`), CBOR-encoded, for `nuropb_describe`.
    pub fn manifest(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let opt = |b: bool| b as u64;
        let requires = !self.calls.is_empty() || !self.publishes.is_empty();
        write_head(
            &mut out,
            5,
            4 + opt(!self.description.is_empty()) + opt(!self.subscriptions.is_empty()) + opt(requires),
        );
        write_text(&mut out, "abi");
        out.push(crate::ABI_VERSION as u8);
        write_text(&mut out, "service");
        write_text(&mut out, &self.name);
        write_text(&mut out, "version");
        write_text(&mut out, &self.version);
        if !self.description.is_empty() {
            write_text(&mut out, "description");
            write_text(&mut out, &self.description);
        }
        write_text(&mut out, "methods");
        write_head(&mut out, 5, self.methods.len() as u64);
        for m in &self.methods {
            write_text(&mut out, &m.name);
            let has_result = m.result != "any";
            write_head(
                &mut out,
                5,
                opt(!m.description.is_empty())
                    + opt(!m.params.is_empty())
                    + opt(has_result)
                    + opt(m.hidden)
                    + opt(m.requires_auth),
            );
            if !m.description.is_empty() {
                write_text(&mut out, "description");
                write_text(&mut out, &m.description);
            }
            if !m.params.is_empty() {
                write_text(&mut out, "params");
                write_head(&mut out, 4, m.params.len() as u64);
                for p in &m.params {
                    write_head(&mut out, 5, 2 + opt(p.required) + opt(!p.description.is_empty()));
                    write_text(&mut out, "name");
                    write_text(&mut out, p.name);
                    write_text(&mut out, "type");
                    write_text(&mut out, p.ty);
                    if p.required {
                        write_text(&mut out, "required");
                        out.push(0xf5);
                    }
                    if !p.description.is_empty() {
                        write_text(&mut out, "description");
                        write_text(&mut out, &p.description);
                    }
                }
            }
            if has_result {
                write_text(&mut out, "result");
                write_text(&mut out, m.result);
            }
            if m.hidden {
                write_text(&mut out, "hidden");
                out.push(0xf5);
            }
            if m.requires_auth {
                write_text(&mut out, "requires_auth");
                out.push(0xf5);
            }
        }
        if !self.subscriptions.is_empty() {
            write_text(&mut out, "subscriptions");
            write_head(&mut out, 4, self.subscriptions.len() as u64);
            for s in &self.subscriptions {
                write_text(&mut out, &s.pattern);
            }
        }
        if requires {
            write_text(&mut out, "requires");
            write_head(&mut out, 5, opt(!self.calls.is_empty()) + opt(!self.publishes.is_empty()));
            for (k, list) in [("calls", &self.calls), ("publishes", &self.publishes)] {
                if !list.is_empty() {
                    write_text(&mut out, k);
                    write_head(&mut out, 4, list.len() as u64);
                    for x in list.iter() {
                        write_text(&mut out, x);
                    }
                }
            }
        }
        out
    }

    /// Handles one envelope frame and writes the reply envelope into `out`
    /// (cleared first). This is what `nuropb_handle` runs; native tests can
    /// call it directly.
    pub fn handle(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let mut env = match Envelope::decode(input) {
            Ok(e) => e,
            Err(e) => {
                let mut r = Envelope::new(Kind::Response);
                r.error = Some(e);
                r.encode_into(out);
                return;
            }
        };
        let outcome = self.dispatch(&mut env);
        let mut reply = Envelope::new(Kind::Response);
        reply.id = env.id;
        reply.trace_id = env.trace_id;
        reply.service = env.service;
        reply.method = env.method;
        match outcome {
            Ok(v) => reply.result = Some(v),
            Err(e) => reply.error = Some(e),
        }
        reply.encode_into(out);
        let max = Limits::DEFAULT.max_frame;
        if out.len() > max {
            let n = out.len();
            out.clear();
            reply.result = None;
            reply.error = Some(Error::resource_exhausted(format!(
                "reply is {} bytes, over the {} byte limit",
                n, max
            )));
            reply.encode_into(out);
        }
    }

    fn dispatch(&mut self, env: &mut Envelope<'_>) -> Result<Value, Error> {
        match env.kind {
            Kind::Request | Kind::Command => {
                let params = env.params.take().unwrap_or(Value::Null);
                let name = env.method;
                let service = &self.name;
                let m = self.methods.iter_mut().find(|m| m.name == name).ok_or_else(|| {
                    Error::method_not_found(format!("service {:?} has no method {:?}", service, name))
                })?;
                (m.handler)(&mut Context::new(env), params)
            }
            Kind::Event => {
                let event = env.event.take().unwrap_or(Value::Null);
                let topic = env.topic;
                let matching: Vec<usize> = (0..self.subscriptions.len())
                    .filter(|&i| topic_matches(&self.subscriptions[i].pattern, topic))
                    .collect();
                if matching.is_empty() {
                    return Err(Error::bad_request(format!("service {:?} has no subscription for {:?}", self.name, topic)));
                }
                let mut ctx = Context::new(env);
                let last = matching.len() - 1;
                let mut event = Some(event);
                for (n, &i) in matching.iter().enumerate() {
                    let ev = if n == last { event.take().unwrap_or(Value::Null) } else { event.clone().unwrap_or(Value::Null) };
                    (self.subscriptions[i].handler)(&mut ctx, ev)?;
                }
                Ok(Value::Null)
            }
            Kind::Response => Err(Error::bad_request("a service does not accept response envelopes")),
        }
    }
}

/// Whether `topic` matches `pattern`: `*` is one word, `#` zero or more.
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    fn go(p: &[&str], t: &[&str]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((&"#", rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some((w, rest)) => match t.split_first() {
                Some((x, trest)) => (*w == "*" || w == x) && go(rest, trest),
                None => false,
            },
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let t: Vec<&str> = topic.split('.').collect();
    go(&p, &t)
}

fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

fn valid_method(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && b.len() <= 63 && b[0].is_ascii_alphabetic() && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn valid_word(w: &str) -> bool {
    !w.is_empty() && w.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

fn valid_pattern(s: &str) -> bool {
    s.len() <= 255 && s.split('.').all(|w| w == "*" || w == "#" || valid_word(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use std::cell::RefCell;
    use std::rc::Rc;

    crate::record! {
        struct Hello {
            /// Who.
            name: String,
        }
    }

    fn request(method: &str, params: Value) -> Vec<u8> {
        let mut e = Envelope::new(Kind::Request);
        e.id = "42";
        e.service = "demo";
        e.method = method;
        e.params = Some(params);
        e.encode()
    }

    fn reply(svc: &mut Service, input: &[u8]) -> (Option<Value>, Option<Error>) {
        let mut out = Vec::new();
        svc.handle(input, &mut out);
        let r = Envelope::decode(&out).unwrap();
        assert_eq!(r.kind, Kind::Response);
        (r.result, r.error)
    }

    fn demo() -> (Service, Rc<RefCell<Vec<String>>>) {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let mut svc = Service::new("demo", "1.0.0");
        svc.description("A demo");
        svc.method("hello", "Says hello", |ctx: &mut Context, p: Hello| -> Result<String, Error> {
            Ok(format!("hello, {} ({})", p.name, ctx.id()))
        });
        svc.method("boom", "Fails", |_ctx: &mut Context, _p: ()| -> Result<(), Error> { Err("it broke".into()) })
            .hidden();
        let s = seen.clone();
        svc.subscribe("orders.*", move |ctx: &mut Context, ev: Value| {
            s.borrow_mut().push(format!("{}={:?}", ctx.topic(), ev));
            Ok(())
        });
        (svc, seen)
    }

    #[test]
    fn dispatch() {
        let (mut svc, seen) = demo();
        svc.validate().unwrap();
        let (res, err) = reply(&mut svc, &request("hello", Value::map(vec![("name", Value::Text("Ann".into()))])));
        assert_eq!(err, None);
        assert_eq!(res, Some(Value::Text("hello, Ann (42)".into())));

        let (_, err) = reply(&mut svc, &request("hello", Value::map(vec![("name", Value::Int(1))])));
        let err = err.unwrap();
        assert_eq!(err.code(), &ErrorCode::BadRequest);
        assert!(err.message().contains("`name`"), "{}", err);
        let (_, err) = reply(&mut svc, &request("hello", Value::Null));
        assert!(err.unwrap().message().contains("`name`: is required"));

        let (_, err) = reply(&mut svc, &request("nope", Value::Null));
        assert_eq!(err.unwrap().code(), &ErrorCode::MethodNotFound);
        let (_, err) = reply(&mut svc, &request("boom", Value::Null));
        let err = err.unwrap();
        assert_eq!((err.code(), err.message().as_str()), (&ErrorCode::Handler, "it broke"));

        let (_, err) = reply(&mut svc, &[0xff]);
        assert_eq!(err.unwrap().code(), &ErrorCode::BadRequest);

        let mut ev = Envelope::new(Kind::Event);
        ev.topic = "orders.created";
        ev.event = Some(Value::Int(7));
        let (_, err) = reply(&mut svc, &ev.encode());
        assert_eq!(err, None);
        assert_eq!(seen.borrow().as_slice(), ["orders.created=Int(7)"]);
    }

    #[test]
    fn manifest() {
        let (mut svc, _) = demo();
        svc.requires_call("greeter");
        let m = crate::cbor::decode(&svc.manifest()).unwrap();
        assert_eq!(m.get("abi"), Some(&Value::Int(1)));
        assert_eq!(m.get("service").and_then(Value::as_str), Some("demo"));
        let hello = m.get("methods").and_then(|x| x.get("hello")).unwrap();
        assert_eq!(hello.get("result").and_then(Value::as_str), Some("string"));
        let p = &hello.get("params").and_then(Value::as_array).unwrap()[0];
        assert_eq!(p.get("required"), Some(&Value::Bool(true)));
        assert_eq!(p.get("description").and_then(Value::as_str), Some("Who."));
        let boom = m.get("methods").and_then(|x| x.get("boom")).unwrap();
        assert_eq!(boom.get("hidden"), Some(&Value::Bool(true)));
        assert_eq!(boom.get("params"), None);
        assert_eq!(m.get("subscriptions"), Some(&Value::Array(vec![Value::Text("orders.*".into())])));
        assert!(m.get("requires").and_then(|r| r.get("calls")).is_some());
    }

    #[test]
    fn topics() {
        for (p, t, want) in [
            ("a.b", "a.b", true),
            ("a.*", "a.b", true),
            ("a.*", "a.b.c", false),
            ("a.#", "a", true),
            ("a.#", "a.b.c", true),
            ("#", "x.y", true),
            ("#.c", "a.b.c", true),
            ("a.#.c", "a.c", true),
            ("a.#.c", "a.b", false),
            ("*", "a.b", false),
        ] {
            assert_eq!(topic_matches(p, t), want, "{} {}", p, t);
        }
        assert!(valid_pattern("conformance.#") && !valid_pattern("a..b") && !valid_pattern("a.b c"));
        assert!(valid_name("a-b_1") && !valid_name("Abc") && !valid_name("1a"));
    }
}
