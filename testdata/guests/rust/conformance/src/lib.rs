//! `conformance`: a guest that exercises every part of ABI v1 on demand, for
//! the host's tests. Each method does one thing, including misbehaving.

use nuropb::{Bytes, Context, Error, ErrorCode, Level, Service, Value};
use std::cell::RefCell;
use std::rc::Rc;

/// Events kept for `events`; older ones are dropped beyond this.
const MAX_EVENTS: usize = 1000;

nuropb::record! {
    /// Params of `fail`.
    pub struct FailParams {
        /// The handler error's message.
        pub message: String,
    }
}

nuropb::record! {
    /// Params of `fail_code`.
    pub struct FailCodeParams {
        /// An ABI v1 error code, e.g. `forbidden` (unknown codes read as `internal`).
        pub code: String,
        /// The message (default: the code).
        pub message: Option<String>,
    }
}

nuropb::record! {
    /// Params of `panic`.
    pub struct PanicParams {
        /// The panic message.
        pub message: Option<String>,
    }
}

nuropb::record! {
    /// Params of `call` and `send`.
    pub struct CallParams {
        /// The service to reach.
        pub service: String,
        /// Its method.
        pub method: String,
        /// The params to pass (default: none).
        pub params: Option<Value>,
    }
}

nuropb::record! {
    /// Params of `publish`.
    pub struct PublishParams {
        /// The topic.
        pub topic: String,
        /// The event (any value).
        pub event: Option<Value>,
    }
}

nuropb::record! {
    /// Params of `big`.
    pub struct BigParams {
        /// Size of the byte string returned.
        pub n: u32,
    }
}

nuropb::record! {
    /// Params of `alloc`.
    pub struct AllocParams {
        /// MiB to allocate and touch.
        pub mib: u32,
        /// Keep the memory for the life of the instance (default false).
        pub keep: Option<bool>,
    }
}

nuropb::record! {
    /// Params of `log`.
    pub struct LogParams {
        /// The lines to log.
        pub lines: Vec<String>,
        /// Level: -4 debug, 0 info, 4 warn, 8 error (default 0).
        pub level: Option<i32>,
    }
}

nuropb::record! {
    /// Params of `recurse`.
    pub struct RecurseParams {
        /// Calls left: each level calls conformance.recurse with depth-1.
        pub depth: u32,
    }
}

nuropb::record! {
    /// One event received on `conformance.#`.
    #[derive(Clone)]
    pub struct Received {
        /// Its topic.
        pub topic: String,
        /// Its payload.
        pub event: Value,
        /// Its trace id.
        pub trace_id: String,
    }
}

thread_local! {
    static KEPT: RefCell<Vec<Vec<u8>>> = RefCell::new(Vec::new());
}

fn alloc(_ctx: &mut Context, p: AllocParams) -> Result<u64, Error> {
    let n = p.mib as usize * (1 << 20);
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Error::resource_exhausted(format!("could not allocate {} MiB", p.mib)))?;
    v.resize(n, 1);
    let total = v.iter().step_by(4096).map(|&b| b as u64).sum::<u64>();
    if p.keep.unwrap_or(false) {
        KEPT.with(|k| k.borrow_mut().push(v));
    }
    Ok(total)
}

fn level(l: i32) -> Result<Level, Error> {
    Ok(match l {
        -4 => Level::Debug,
        0 => Level::Info,
        4 => Level::Warn,
        8 => Level::Error,
        _ => return Err(Error::bad_request(format!("param `level`: want -4, 0, 4 or 8, got {}", l))),
    })
}

/// Builds the service; `export_service!` runs it once per instance.
pub fn build() -> Service {
    let events: Rc<RefCell<Vec<Received>>> = Rc::new(RefCell::new(Vec::new()));
    let mut svc = Service::new("conformance", "1.0.0");
    svc.description("Exercises ABI v1 for host tests; some methods misbehave on purpose")
        .publishes("conformance.#");

    svc.method("echo", "Returns params unchanged", |_ctx: &mut Context, p: Value| -> Result<Value, Error> { Ok(p) });
    svc.method("fail", "Fails with a handler error", |_ctx: &mut Context, p: FailParams| -> Result<(), Error> {
        Err(Error::handler(p.message))
    });
    svc.method("fail_code", "Fails with the given code", |_ctx: &mut Context, p: FailCodeParams| -> Result<(), Error> {
        let msg = p.message.unwrap_or_else(|| p.code.clone());
        Err(Error::new(ErrorCode::parse(&p.code), msg))
    });
    svc.method("panic", "Panics: the instance traps", |_ctx: &mut Context, p: PanicParams| -> Result<(), Error> {
        panic!("{}", p.message.unwrap_or_else(|| "conformance panic".into()))
    });
    svc.method("spin", "Loops forever", |_ctx: &mut Context, _p: ()| -> Result<(), Error> {
        loop {
            std::hint::spin_loop();
        }
    });
    svc.method("call", "Calls service.method with params and returns its result", |ctx: &mut Context, p: CallParams| {
        ctx.call(&p.service, &p.method, p.params.unwrap_or(Value::Null))
    });
    svc.method("send", "Sends a command to service.method", |ctx: &mut Context, p: CallParams| {
        ctx.send(&p.service, &p.method, p.params.unwrap_or(Value::Null))
    });
    svc.method("publish", "Publishes event on topic", |ctx: &mut Context, p: PublishParams| {
        ctx.publish(&p.topic, p.event.unwrap_or(Value::Null))
    });
    svc.method("context", "Returns what the call's context held", |ctx: &mut Context, _p: ()| -> Result<Value, Error> {
        Ok(Value::map(vec![
            ("id", ctx.id().into()),
            ("trace_id", ctx.trace_id().into()),
            ("tenant", ctx.tenant().into()),
            ("service", ctx.service().into()),
            ("method", ctx.method().into()),
            ("deadline", ctx.deadline().map(Value::Int).unwrap_or(Value::Null)),
            ("depth", Value::Int(ctx.depth())),
            ("context", ctx.context().cloned().unwrap_or(Value::Null)),
        ]))
    });
    svc.method("big", "Returns n bytes", |_ctx: &mut Context, p: BigParams| -> Result<Bytes, Error> {
        Ok(Bytes(vec![b'x'; p.n as usize]))
    });
    svc.method("alloc", "Allocates and touches mib MiB", alloc);
    svc.method("log", "Logs each line at level", |ctx: &mut Context, p: LogParams| -> Result<usize, Error> {
        let l = level(p.level.unwrap_or(0))?;
        for line in &p.lines {
            ctx.log(l, line);
        }
        Ok(p.lines.len())
    });
    svc.method("recurse", "Calls itself depth times; returns the depth reached", |ctx: &mut Context, p: RecurseParams| -> Result<i64, Error> {
        if p.depth == 0 {
            return Ok(ctx.depth());
        }
        let next = Value::map(vec![("depth", Value::Int(p.depth as i64 - 1))]);
        ctx.call_as::<i64>("conformance", "recurse", next)
    });

    let seen = events.clone();
    svc.method("events", "Returns the events received on conformance.#", move |_ctx: &mut Context, _p: ()| {
        Ok::<_, Error>(seen.borrow().clone())
    });
    svc.subscribe("conformance.#", move |ctx: &mut Context, event: Value| {
        let mut ev = events.borrow_mut();
        if ev.len() >= MAX_EVENTS {
            ev.remove(0);
        }
        ev.push(Received { topic: ctx.topic().into(), event, trace_id: ctx.trace_id().into() });
        Ok(())
    });
    svc
}

nuropb::export_service!(build);
