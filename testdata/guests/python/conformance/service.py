"""The Python conformance guest: the same methods as the Go and Rust ones
(guest-sdk/go/internal/conformance), so host tests can drive all three.

Differences a host test must allow for, because Python is not Go:
  * ``panic`` cannot trap: a Python exception is always caught by the SDK.
    It raises SystemExit, the closest thing to an abort, and the reply is a
    ``handler`` error whose details name SystemExit. ``trap`` (not in the Go
    guest) forces a real trap: unbounded recursion through C (deeply nested
    repr) overflows the C stack, which poisons the instance.
  * ``alloc`` beyond the memory cap gives a ``resource_exhausted`` error
    (Python's MemoryError), not a trap.
  * ``echo`` decodes and re-encodes: values come back equal, not
    byte-identical (floats are re-encoded as float64, maps keep key order).
"""

import time

import nuropb

_seen = []
_hoard = []
_spins = 0


@nuropb.service("conformance", version="1.0.0")
class Conformance:
    """Exercises every part of ABI v1 for host tests."""

    def echo(self, **params):
        """Returns its params map as it came (decoded and re-encoded)."""
        return params

    def fail(self, message: str = ""):
        """Fails with a handler error carrying message.

        Args:
            message: the error text
        """
        raise RuntimeError(message)

    def fail_code(self, code: str, message: str = "", details: dict = None):
        """Fails with an error of the given code.

        Args:
            code: an abi error code, e.g. forbidden
            message: its message
            details: its details
        """
        raise nuropb.Error(code, message, details)

    def panic(self, message: str = ""):
        """Python cannot trap on demand: raises SystemExit (a handler error).

        Args:
            message: the text
        """
        raise SystemExit("conformance: " + message)

    def trap(self, depth: int = 100000):
        """Overflows the C stack with nested repr: a real trap.

        Args:
            depth: nesting depth of the list whose repr is taken
        """
        x = []
        for _ in range(depth):
            x = [x]
        import sys
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(10 ** 6)
        try:
            return len(repr(x))
        finally:
            sys.setrecursionlimit(old)

    def spin(self) -> int:
        """Loops forever; only the host's deadline ends it."""
        global _spins
        while True:
            _spins += 1

    def sleep_ms(self, ms: int) -> int:
        """Busy-waits ms milliseconds (no host call), returns the ms it took.

        Args:
            ms: milliseconds to busy-wait, 0 to 60000
        """
        global _spins
        if not 0 <= ms <= 60000:
            raise nuropb.BadRequest(f"ms must be 0 to 60000, got {ms}")
        start = time.monotonic()
        while (time.monotonic() - start) * 1000 < ms:
            _spins += 1
        return int((time.monotonic() - start) * 1000)

    def call(self, ctx, service: str, method: str, params: dict = None):
        """Calls service.method with params through the host and returns its result.

        Args:
            service: service to call
            method: its method
            params: a params map, passed on
        """
        return ctx.call(service, method, **(params or {}))

    def send(self, ctx, service: str, method: str, params: dict = None) -> bool:
        """Sends a command to service.method with params through the host.

        Args:
            service: service to send to
            method: its method
            params: a params map, passed on
        """
        ctx.send(service, method, **(params or {}))
        return True

    def publish(self, ctx, topic: str, event=None) -> bool:
        """Publishes event on topic through the host.

        Args:
            topic: a concrete topic
            event: the payload
        """
        ctx.publish(topic, event)
        return True

    def context(self, ctx) -> dict:
        """Returns the context map, trace id, tenant, deadline and method it received."""
        return {"context": ctx.claims, "trace_id": ctx.trace_id, "tenant": ctx.tenant,
                "deadline": ctx.deadline_ms, "method": ctx.method}

    def big(self, n: int) -> bytes:
        """Returns a byte string of n bytes.

        Args:
            n: size, at least 0
        """
        if n < 0:
            raise nuropb.BadRequest(f"n must be at least 0, got {n}")
        return (b"abcdefghijklmnopqrstuvwxyz" * (n // 26 + 1))[:n]

    def alloc(self, mib: int, keep: bool = False) -> int:
        """Allocates and touches mib MiB (kept if keep), returns the bytes allocated.

        Args:
            mib: MiB to allocate and touch
            keep: keep it referenced after the call
        """
        if mib < 0:
            raise nuropb.BadRequest(f"mib must be at least 0, got {mib}")
        b = bytearray(mib << 20)  # zeroed: every page is touched
        if keep:
            _hoard.append(b)
        return len(b)

    def log(self, ctx, lines: list, level: int = 0) -> int:
        """Logs each line at level through the host.

        Args:
            lines: each is one log call
            level: slog level: -4 debug, 0 info, 4 warn, 8 error
        """
        for line in lines:
            ctx.log(line, level)
        return len(lines)

    def events(self) -> list:
        """Returns the events conformance.# recorded, oldest first."""
        return list(_seen)

    @nuropb.method(hidden=True)
    def hidden(self) -> str:
        """A hidden method: callable only from inside the tenant."""
        return "hidden"

    @nuropb.method(requires_auth=True)
    def secure(self, ctx) -> dict:
        """A method that requires an authenticated caller."""
        return ctx.claims

    @nuropb.on_event("conformance.#")
    def _record(self, ctx, topic, event):
        if len(_seen) == 1000:
            del _seen[0]
        seen = {"topic": topic, "event": event}
        if ctx.trace_id:
            seen["trace_id"] = ctx.trace_id
        _seen.append(seen)
        if topic.startswith("conformance.fail"):
            raise RuntimeError("conformance: event handler failed on " + topic)
