"""Run a service natively (plain python3) in unit tests, through the same
envelope path the WebAssembly runtime uses::

    from nuropb.testing import Harness
    from stats import Stats

    h = Harness(Stats, calls={("greeter", "hello"): lambda name: f"hello {name}"})
    assert h.call("summarize", values=[1, 2, 3])["mean"] == 2
    h.publish("orders.created", {"id": 1})
    print(h.logs, h.sent)

``call`` raises ``nuropb.Error`` for an error reply, like ``ctx.call`` does.
"""

from . import _host, _runtime, cbor
from .errors import Error
from ._service import ServiceSpec

__all__ = ["Harness"]


class Harness:
    """A service instance behind a fake host.

    Args:
        cls: the service class.
        calls: {(service, method): function(**params) -> result} answering the
            service's own ctx.call(...); a function may raise nuropb.Error.
    Attributes:
        logs: [(level, message)] from the log import.
        sent: [envelope dict] from ctx.send / ctx.publish.
    """

    def __init__(self, cls, calls=None):
        self.spec = ServiceSpec(cls)
        self.calls = dict(calls or {})
        self.logs = []
        self.sent = []

    def manifest(self):
        """The manifest as decoded from its CBOR."""
        return cbor.loads(cbor.dumps(self.spec.manifest()))

    def handle(self, envelope):
        """One envelope dict in, the reply envelope dict out."""
        old_spec = _runtime.use(self.spec)
        old_host = _install(self)
        try:
            return cbor.loads(_runtime.handle(cbor.dumps(envelope)))
        finally:
            _runtime.use(old_spec)
            _host.install(old_host)

    def call(self, method, /, context=None, trace_id="test-trace", deadline=0, **params):
        """Call ``method(**params)``; return the result or raise nuropb.Error."""
        env = {"kind": "request", "id": "1", "trace_id": trace_id, "service": self.spec.name,
               "method": method, "params": params}
        if context is not None:
            env["context"] = context
        if deadline:
            env["deadline"] = deadline
        r = self.handle(env)
        if "error" in r:
            e = r["error"]
            raise Error(e["code"], e.get("message", ""), e.get("details"))
        return r.get("result")

    def publish(self, topic, event=None):
        """Deliver an event; raise nuropb.Error if a handler failed."""
        r = self.handle({"kind": "event", "topic": topic, "event": event})
        if "error" in r:
            e = r["error"]
            raise Error(e["code"], e.get("message", ""), e.get("details"))

    # --- the fake host's imports ---

    def log(self, level, message):
        self.logs.append((level, message))

    def call_import(self, data):
        env = cbor.loads(data)
        fn = self.calls.get((env.get("service"), env.get("method")))
        reply = {"kind": "response"}
        if fn is None:
            reply["error"] = {"code": "not_found", "message": f"no fake for {env.get('service')}.{env.get('method')}"}
        else:
            try:
                reply["result"] = fn(**(env.get("params") or {}))
            except Error as e:
                reply["error"] = e.to_map()
        return cbor.dumps(reply)

    def send(self, data):
        self.sent.append(cbor.loads(data))
        return 0


# The host protocol names the call import "call"; Harness.call is the test API.
class _HostView:
    def __init__(self, h):
        self.h = h

    def log(self, level, message):
        self.h.log(level, message)

    def call(self, data):
        return self.h.call_import(data)

    def send(self, data):
        return self.h.send(data)


def _install(h):
    return _host.install(_HostView(h))

