"""Typed errors: what a handler raises becomes the ``error`` of its reply.

* ``nuropb.Error(code, message, details=None)`` travels with its own code;
  the subclasses below fix the code for the common cases.
* Any other exception becomes code ``handler`` with its message, and the
  exception's class name in ``details["exception"]`` (so a caller can tell a
  ``KeyError`` from a ``ZeroDivisionError``); its traceback goes to the host log.
* Arguments that do not fit the method's signature are ``bad_request``.
* A ``MemoryError`` is ``resource_exhausted``.

An error returned by another service through ``ctx.call`` is raised as
``nuropb.Error`` with the remote code, message and details.
"""

__all__ = [
    "CODES", "Error", "BadRequest", "NotFound", "MethodNotFound", "Forbidden", "Timeout",
    "Unavailable", "ResourceExhausted", "Internal", "HandlerError",
]

#: Error codes of ABI v1, in the order the send import numbers them (0 = ok).
CODES = (
    "not_found", "method_not_found", "bad_request", "timeout", "trapped", "resource_exhausted",
    "forbidden", "unavailable", "internal", "handler",
)


class Error(Exception):
    """A failure with an explicit nuropb error code.

    ``raise nuropb.Error("not_found", "no customer 42")`` answers the caller
    with ``{"code": "not_found", "message": "no customer 42"}``. ``details``,
    if given, must be a dict of CBOR-encodable values.
    """

    def __init__(self, code, message="", details=None):
        if code not in CODES:
            raise ValueError(f"unknown nuropb error code {code!r} (want one of {', '.join(CODES)})")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def __str__(self):
        return f"{self.code}: {self.message}" if self.message else self.code

    def __repr__(self):
        return f"nuropb.Error({self.code!r}, {self.message!r})"

    def to_map(self):
        m = {"code": self.code, "message": self.message}
        if self.details:
            m["details"] = self.details
        return m


def _fixed(code, doc):
    class _E(Error):
        __doc__ = doc

        def __init__(self, message="", details=None):
            super().__init__(code, message, details)

    return _E


BadRequest = _fixed("bad_request", "The caller's request is invalid (code bad_request).")
NotFound = _fixed("not_found", "Something the request names does not exist (code not_found).")
MethodNotFound = _fixed("method_not_found", "No such method (code method_not_found).")
Forbidden = _fixed("forbidden", "The caller may not do this (code forbidden).")
Timeout = _fixed("timeout", "A deadline passed (code timeout).")
Unavailable = _fixed("unavailable", "Something needed cannot be reached now (code unavailable).")
ResourceExhausted = _fixed("resource_exhausted", "A limit was hit (code resource_exhausted).")
Internal = _fixed("internal", "A fault in the service itself (code internal).")
HandlerError = _fixed("handler", "The service's own failure, with its message (code handler).")
for _name in ("BadRequest", "NotFound", "MethodNotFound", "Forbidden", "Timeout", "Unavailable",
              "ResourceExhausted", "Internal", "HandlerError"):
    globals()[_name].__name__ = globals()[_name].__qualname__ = _name
del _name
