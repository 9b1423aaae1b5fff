"""The bridge to the host imports (log, call, send).

Inside the runtime these are the ``_nuropb_host`` builtin module of the C
entry point. Under a native python3 (unit tests, nuropb.testing) there is no
host: ``install`` lets a test put a fake in its place.
"""

try:
    import _nuropb_host as _impl
except ImportError:  # native python3: no host unless a test installs one
    _impl = None

LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR = -4, 0, 4, 8

_LEVELS = {"debug": LOG_DEBUG, "info": LOG_INFO, "warn": LOG_WARN, "warning": LOG_WARN, "error": LOG_ERROR}


def level_of(level):
    """Map a level name ("debug", "info", "warning", "error") or int to the ABI's int."""
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[level.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown log level {level!r}") from None


def install(impl):
    """Replace the host (an object with log(level, msg), call(bytes) -> bytes,
    send(bytes) -> int); returns the previous one. For tests."""
    global _impl
    old, _impl = _impl, impl
    return old


def in_runtime():
    """True inside the WebAssembly runtime."""
    import sys
    return "_nuropb_host" in sys.builtin_module_names


def log(level, message):
    if _impl is None:
        import sys
        print(f"[{level}] {message}", file=sys.stderr)
        return
    _impl.log(level, message)


def call(envelope):
    if _impl is None:
        raise RuntimeError("nuropb: no host to call (install one with nuropb.testing)")
    return _impl.call(envelope)


def send(envelope):
    if _impl is None:
        raise RuntimeError("nuropb: no host to send to (install one with nuropb.testing)")
    return _impl.send(envelope)
