"""The context of the call being handled.

A method reaches it with ``nuropb.context()`` or by declaring a parameter
named ``ctx``. It carries what the host stamped on the request (trace id,
tenant, deadline, the caller's claims) and is the way to reach the rest of the
mesh: ``ctx.call``, ``ctx.send``, ``ctx.publish``, ``ctx.log``. The host
stamps tenant, trace id and deadline on everything sent from here.
"""

import time as _time

from . import _host, cbor
from .errors import CODES, Error

__all__ = ["Context", "context"]


class Context:
    """What a handler knows about the message it is handling.

    Attributes:
        id: correlation id of the message ("" if none).
        trace_id: the trace every nested call carries.
        tenant: the tenant the service runs in (set by the host).
        service, method: what was called (method is "" for events).
        topic: the event's topic (events only).
        claims: the envelope's context map: the caller's claims as the host
            passed them (empty when anonymous). It travels with ctx.call and
            ctx.send, as in the Go SDK.
        token: claims["token"], if the host passed one.
        deadline_ms: unix milliseconds by which the reply must be sent, or 0.
        kind: "request", "command" or "event".
    """

    __slots__ = ("id", "trace_id", "tenant", "service", "method", "topic", "claims", "token",
                 "deadline_ms", "kind")

    def __init__(self, envelope=None):
        e = envelope or {}
        self.id = e.get("id") or ""
        self.trace_id = e.get("trace_id") or ""
        self.tenant = e.get("tenant") or ""
        self.service = e.get("service") or ""
        self.method = e.get("method") or ""
        self.topic = e.get("topic") or ""
        self.kind = e.get("kind") or ""
        c = e.get("context")
        self.claims = c if isinstance(c, dict) else {}
        self.token = self.claims.get("token")
        d = e.get("deadline")
        self.deadline_ms = d if isinstance(d, int) and not isinstance(d, bool) and d > 0 else 0

    def __repr__(self):
        return (f"Context(kind={self.kind!r}, service={self.service!r}, method={self.method!r}, "
                f"trace_id={self.trace_id!r}, tenant={self.tenant!r})")

    @property
    def deadline(self):
        """The deadline as an aware datetime (UTC), or None."""
        if not self.deadline_ms:
            return None
        import datetime as _dt
        return _dt.datetime.fromtimestamp(self.deadline_ms / 1000, _dt.timezone.utc)

    def remaining(self):
        """Seconds left before the deadline (may be negative), or None."""
        if not self.deadline_ms:
            return None
        return self.deadline_ms / 1000 - _time.time()

    def _stamp(self, env):
        if self.claims and env["kind"] != "event":
            env["context"] = self.claims
        if self.trace_id:
            env["trace_id"] = self.trace_id
        if self.deadline_ms:
            env["deadline"] = self.deadline_ms
        return env

    def call(self, service, method, /, **params):
        """Call ``service.method(**params)`` and return its result.

        Blocks until the reply or the deadline. An error reply is raised as
        ``nuropb.Error`` with the remote code, message and details.
        """
        env = self._stamp({"kind": "request", "service": service, "method": method, "params": params})
        reply = _host.call(cbor.dumps(env))
        try:
            r = cbor.loads(reply)
        except cbor.CBORError as e:
            raise Error("internal", f"call {service}.{method}: malformed reply: {e}") from None
        if not isinstance(r, dict):
            raise Error("internal", f"call {service}.{method}: reply is not an envelope")
        err = r.get("error")
        if err is not None:
            if not isinstance(err, dict):
                raise Error("internal", f"call {service}.{method}: malformed error {err!r}")
            code = err.get("code")
            raise Error(code if code in CODES else "internal", str(err.get("message") or ""),
                        err.get("details") if isinstance(err.get("details"), dict) else None)
        return r.get("result")

    def send(self, service, method, /, **params):
        """Send a command (fire and forget) to ``service.method(**params)``."""
        env = self._stamp({"kind": "command", "service": service, "method": method, "params": params})
        _check_send(_host.send(cbor.dumps(env)), f"send {service}.{method}")

    def publish(self, topic, event=None):
        """Publish ``event`` (any CBOR-encodable value) on ``topic``."""
        env = self._stamp({"kind": "event", "topic": topic, "event": event})
        _check_send(_host.send(cbor.dumps(env)), f"publish {topic}")

    def log(self, message, level="info"):
        """A host log line, tagged by the host with tenant, service and trace id."""
        _host.log(_host.level_of(level), str(message))

    def debug(self, message):
        self.log(message, "debug")

    def info(self, message):
        self.log(message, "info")

    def warning(self, message):
        self.log(message, "warn")

    def error(self, message):
        self.log(message, "error")


def _check_send(status, what):
    if status == 0:
        return
    code = CODES[status - 1] if 0 < status <= len(CODES) else "internal"
    raise Error(code, f"{what} failed: {code}")


_NONE = Context()
_current = _NONE


def context():
    """The context of the message being handled (an empty one outside a handler)."""
    return _current


def _set(ctx):
    global _current
    old, _current = _current, ctx
    return old
