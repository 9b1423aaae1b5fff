"""nuropb: write services for the nuropb mesh in Python.

A service is a class; its public methods are callable with keyword params::

    import nuropb

    @nuropb.service("greeter", version="1.0.0")
    class Greeter:
        '''Says hello.'''

        def hello(self, name: str) -> str:
            '''Greets someone.'''
            nuropb.context().log(f"greeting {name}")
            return f"hello {name}"

See README.md in guest-sdk/python for building and deploying. The pieces:
``service``/``method``/``on_event`` (declaring), ``context()`` and
``Context`` (trace id, claims, deadline; call, send, publish, log),
``Error`` and its subclasses (typed errors), ``cbor`` (the bounded codec),
``testing`` (run a service natively in unit tests).
"""

from . import cbor
from ._context import Context, context
from .errors import (CODES, BadRequest, Error, Forbidden, HandlerError, Internal, MethodNotFound, NotFound,
                     ResourceExhausted, Timeout, Unavailable)
from ._service import method, on_event, service

__version__ = "0.1.0"

__all__ = [
    "cbor", "Context", "context", "CODES", "Error", "BadRequest", "Forbidden", "HandlerError", "Internal",
    "MethodNotFound", "NotFound", "ResourceExhausted", "Timeout", "Unavailable", "method", "on_event",
    "service", "call", "send", "publish", "log",
]


def call(service, method, /, **params):
    """``context().call(...)``: call another service's method and return its result."""
    return context().call(service, method, **params)


def send(service, method, /, **params):
    """``context().send(...)``: a command to another service, no reply."""
    context().send(service, method, **params)


def publish(topic, event=None):
    """``context().publish(...)``: an event on ``topic``."""
    context().publish(topic, event)


def log(message, level="info"):
    """``context().log(...)``: a host log line."""
    context().log(message, level)
