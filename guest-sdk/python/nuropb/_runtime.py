"""The entry points the C runtime calls: boot() once per instance, then
handle() per message. Not for services to use.

boot() imports the module named in /app/nuropb.entry (written by the
packer) and returns (True, manifest CBOR) or (False, traceback text); it never
raises. handle() takes an envelope (CBOR bytes) and always returns a reply
envelope (CBOR bytes): every exception of a handler becomes an error reply.
"""

import sys

from . import _host, cbor
from . import _context
from ._context import Context
from .errors import Error
from ._service import ServiceSpec, find_service

ENTRY_FILE = "/app/nuropb.entry"

_spec = None


def _read_entry():
    try:
        with open(ENTRY_FILE, encoding="utf-8") as f:
            entry = f.read().strip()
    except OSError as e:
        raise RuntimeError(f"no service to run: cannot read {ENTRY_FILE} ({e}); was the module built with "
                           "`nuropb-host build`?") from None
    if not all(part.isidentifier() for part in entry.split(".")):
        raise RuntimeError(f"{ENTRY_FILE} names {entry!r}, which is not a Python module name")
    return entry


def boot(entry=None):
    """Import the service; return (True, manifest_cbor) or (False, error_text)."""
    global _spec
    try:
        if entry is None:
            entry = _read_entry()
        __import__(entry)
        spec = ServiceSpec(find_service(sys.modules[entry]))
        manifest = cbor.dumps(spec.manifest())
    except BaseException as e:  # noqa: B902 - the host must get every failure as text
        return False, f"nuropb: service module {entry!r} failed to start:\n" + _format(e)
    _spec = spec
    return True, manifest


def _format(e):
    """The traceback of e without the SDK's own frames at the top."""
    import traceback
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None and \
            str(tb.tb_frame.f_globals.get("__name__", "")).startswith("nuropb."):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb))


def use(spec):
    """Serve ``spec`` (a ServiceSpec) from handle(); returns the previous one. For tests."""
    global _spec
    old, _spec = _spec, spec
    return old


def handle(data):
    """One envelope in (CBOR bytes), one reply envelope out (CBOR bytes)."""
    reply = {"kind": "response"}
    try:
        env = cbor.loads(data)
    except cbor.CBORError as e:
        reply["error"] = {"code": e.code, "message": f"envelope: {e}"}
        return cbor.dumps(reply)
    if not isinstance(env, dict):
        reply["error"] = {"code": "bad_request", "message": "envelope is not a CBOR map"}
        return cbor.dumps(reply)
    for k in ("id", "trace_id", "service", "method"):
        v = env.get(k)
        if isinstance(v, str) and v:
            reply[k] = v
    ctx = Context(env)
    where = f"{ctx.service or '?'}.{ctx.method or ctx.topic or '?'}"
    old = _context._set(ctx)
    try:
        kind = env.get("kind")
        if kind == "request" or kind == "command":
            reply["result"] = _call_method(env, ctx)
        elif kind == "event":
            _deliver_event(env, ctx)
        else:
            raise Error("bad_request", f"cannot handle an envelope of kind {kind!r}")
        try:
            return cbor.dumps(reply)
        except cbor.CBORError as e:
            reply.pop("result", None)
            reply["error"] = {"code": e.code, "message": f"{where}: result: {e}"}
    except Error as e:
        reply["error"] = e.to_map()
    except MemoryError:
        reply["error"] = {"code": "resource_exhausted", "message": f"{where}: out of memory"}
    except BaseException as e:  # noqa: B902 - a handler must never take the instance down
        name = type(e).__name__
        _host.log(_host.LOG_ERROR, f"{where} raised {name}:\n" + _format(e))
        reply["error"] = {"code": "handler", "message": str(e) or name, "details": {"exception": name}}
    finally:
        _context._set(old)
    try:
        return cbor.dumps(reply)
    except cbor.CBORError as e:
        err = reply["error"]
        reply["error"] = {"code": err.get("code", "internal") if isinstance(err, dict) else "internal",
                          "message": f"{where}: error details cannot be encoded: {e}"}
        return cbor.dumps(reply)


def _call_method(env, ctx):
    spec = _spec
    if spec is None:
        raise Error("internal", "no service loaded")
    method = env.get("method")
    if not isinstance(method, str):
        raise Error("bad_request", "envelope has no method")
    h = spec.methods.get(method)
    if h is None:
        raise Error("method_not_found", f"service {spec.name!r} has no method {method!r}")
    params = env.get("params")
    if params is None:
        params = {}
    elif not isinstance(params, dict):
        raise Error("bad_request", f"{method}: params must be a map of keyword arguments")
    elif not all(type(k) is str for k in params):
        raise Error("bad_request", f"{method}: param names must be text")
    if h.requires_auth and not ctx.claims:
        raise Error("forbidden", f"{method} requires an authenticated caller")
    return h.invoke(h.bind(params, ctx))


def _deliver_event(env, ctx):
    spec = _spec
    if spec is None:
        raise Error("internal", "no service loaded")
    topic = env.get("topic")
    if not isinstance(topic, str) or not topic:
        raise Error("bad_request", "event envelope has no topic")
    event = env.get("event")
    for h in spec.event_handlers(topic):
        kwargs = {}
        if h.var_kw or "topic" in h.names:
            kwargs["topic"] = topic
        if h.var_kw or "event" in h.names:
            kwargs["event"] = event
        h.invoke(h.bind(kwargs, ctx))
