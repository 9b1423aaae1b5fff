"""Declaring a service, and dispatching messages to it.

A service is a class. Its public methods (names not starting with ``_``) are
the service's methods, called with keyword params; the class docstring is the
service's description, each method's docstring its description, and the
signature (with annotations) gives the manifest's params::

    import nuropb

    @nuropb.service("stats", version="1.0.0", calls=["greeter"])
    class Stats:
        '''Statistics over lists of numbers.'''

        def mean(self, values: list) -> float:
            '''The arithmetic mean.

            Args:
                values: the numbers.
            '''
            return sum(values) / len(values)

        @nuropb.method(hidden=True)
        def reset(self) -> None: ...

        @nuropb.on_event("orders.*", "billing.#")
        def _on_order(self, topic, event): ...

A class with NuroPb's ``_service_name`` (and optional ``_version``) class
attributes is also a service, without the decorator.
"""

from ._context import Context
from .errors import Error

__all__ = ["service", "method", "on_event", "ServiceSpec", "find_service"]

_registry = []


def service(name=None, version="0.0.0", description=None, calls=(), publishes=()):
    """Class decorator: declare the service's name, version and what it reaches.

    ``name`` defaults to the class name in lower case. ``description``
    defaults to the class docstring. ``calls`` (service names) and
    ``publishes`` (topics) are advertised in the manifest's ``requires``.
    """
    if isinstance(name, type):  # used bare: @nuropb.service
        return service()(name)

    def deco(cls):
        cls.__nuropb_service__ = {
            "name": name or cls.__name__.lower(), "version": version, "description": description,
            "calls": list(calls), "publishes": list(publishes),
        }
        _registry.append(cls)
        return cls

    return deco


def method(fn=None, *, hidden=False, requires_auth=False, name=None):
    """Method decorator: options for one method.

    ``hidden``: not listed, and callable only from the service's own tenant
    (the host enforces it). ``requires_auth``: the caller must carry claims;
    the host checks, and the SDK refuses a call without claims as well.
    ``name``: the method's name on the mesh, if not the Python name (this also
    makes a ``_private`` Python method public).
    """
    def deco(f):
        f.__nuropb_method__ = {"hidden": bool(hidden), "requires_auth": bool(requires_auth), "name": name}
        return f

    return deco(fn) if fn is not None else deco


def on_event(*patterns):
    """Method decorator: handle events whose topic matches any of ``patterns``.

    Patterns are dot-separated words where ``*`` matches one word and ``#``
    zero or more. The handler is called as ``handler(topic=..., event=...)``
    (plus ``ctx`` if it declares it); it is not an RPC method. Its patterns
    become the manifest's subscriptions.
    """
    if not patterns:
        raise TypeError("on_event needs at least one topic pattern")
    for p in patterns:
        if not _valid_pattern(p):
            raise ValueError(f"on_event: {p!r} is not a valid topic pattern")

    def deco(f):
        f.__nuropb_events__ = tuple(getattr(f, "__nuropb_events__", ())) + patterns
        return f

    return deco


# --- validation (the host's rules, kept in step with abi/manifest.go) -------

_LOWER = set("abcdefghijklmnopqrstuvwxyz")
_NAME_CHARS = _LOWER | set("0123456789_-")
_WORD_CHARS = _NAME_CHARS | set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_METH_CHARS = _WORD_CHARS - {"-"}


def _valid_name(s):
    return isinstance(s, str) and 0 < len(s) <= 63 and s[0] in _LOWER and set(s) <= _NAME_CHARS


def _valid_method_name(s):
    return (isinstance(s, str) and 0 < len(s) <= 63 and s[0].isascii() and s[0].isalpha()
            and set(s) <= _METH_CHARS)


def _valid_pattern(s):
    return (isinstance(s, str) and 0 < len(s) <= 255
            and all(w in ("*", "#") or (w and set(w) <= _WORD_CHARS) for w in s.split(".")))


def topic_matches(pattern, topic):
    """Whether ``topic`` matches ``pattern`` (``*`` one word, ``#`` zero or more)."""
    return _match(pattern.split("."), topic.split("."))


def _match(p, t):
    if not p:
        return not t
    if p[0] == "#":
        return any(_match(p[1:], t[i:]) for i in range(len(t) + 1))
    if not t:
        return False
    return (p[0] == "*" or p[0] == t[0]) and _match(p[1:], t[1:])


# --- introspection ----------------------------------------------------------

_TYPE_NAMES = {
    int: "int", float: "float", str: "string", bool: "bool", bytes: "bytes", bytearray: "bytes",
    list: "list", tuple: "list", dict: "map",
}
_STR_TYPE_NAMES = {
    "int": "int", "float": "float", "str": "string", "bool": "bool", "bytes": "bytes",
    "list": "list", "List": "list", "tuple": "list", "Tuple": "list", "Sequence": "list",
    "dict": "map", "Dict": "map", "Mapping": "map", "Any": "any",
}
_CHECKS = {"int": (int,), "float": (int, float), "string": (str,), "bool": (bool,), "bytes": (bytes,),
           "list": (list,), "map": (dict,)}


def _type_name(ann):
    """Manifest type name of an annotation, and whether None is allowed."""
    if ann is None or ann is type(None):
        return "any", True
    if isinstance(ann, str):
        s = ann.replace(" ", "")
        optional = False
        if s.startswith("Optional[") and s.endswith("]"):
            s, optional = s[9:-1], True
        parts = [x for x in s.split("|") if x != "None"]
        optional = optional or len(parts) < len(s.split("|"))
        if len(parts) != 1:
            return "any", optional
        base = parts[0].split("[", 1)[0].rsplit(".", 1)[-1]
        return _STR_TYPE_NAMES.get(base, "any"), optional
    if ann in _TYPE_NAMES:
        return _TYPE_NAMES[ann], False
    args = getattr(ann, "__args__", None)
    origin = getattr(ann, "__origin__", None)
    if args and (origin is None or getattr(origin, "_name", None) == "Union"
                 or repr(origin) == "typing.Union"):
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        if len(rest) == 1:
            return _type_name(rest[0])[0], optional
        return "any", optional
    if origin in _TYPE_NAMES:
        return _TYPE_NAMES[origin], False
    import collections.abc as abc
    if origin in (abc.Sequence, abc.MutableSequence):
        return "list", False
    if origin in (abc.Mapping, abc.MutableMapping):
        return "map", False
    return "any", False


def _doc_parts(doc):
    """(description, {param: description}) from a docstring with an optional
    Google-style ``Args:`` (or ``Parameters:``) section."""
    if not doc:
        return "", {}
    lines = doc.expandtabs().splitlines()
    indent = min((len(x) - len(x.lstrip()) for x in lines[1:] if x.strip()), default=0)
    lines = [lines[0].strip()] + [x[indent:].rstrip() for x in lines[1:]]
    desc, params, cur, in_args, params_indent = [], {}, None, False, 0
    for line in lines:
        s = line.strip()
        if s in ("Args:", "Arguments:", "Parameters:", "Params:"):
            in_args, cur = True, None
            continue
        if in_args:
            if not s:
                cur = None
                continue
            if not line.startswith((" ", "\t")) and s.endswith(":"):
                in_args = False  # another section (Returns:, Raises:): the description ended
                desc.append("\x00")
                continue
            if ":" in s and (cur is None or len(line) - len(line.lstrip()) <= params_indent):
                name, text = s.split(":", 1)
                name = name.split("(", 1)[0].strip().lstrip("*")
                if name.isidentifier():
                    params_indent = len(line) - len(line.lstrip())
                    cur = name
                    params[name] = text.strip()
                    continue
            if cur:
                params[cur] = (params[cur] + " " + s).strip()
            continue
        if s in ("Returns:", "Raises:", "Yields:", "Examples:", "Example:"):
            in_args = False
            desc.append("\x00")
            continue
        desc.append(line)
    text = "\n".join(desc).split("\x00", 1)[0].strip()
    return text, params


class _Param:
    __slots__ = ("name", "type", "required", "optional")

    def __init__(self, name, type_, required, optional):
        self.name = name
        self.type = type_
        self.required = required
        self.optional = optional


class _Handler:
    """One callable: an RPC method or an event handler, with its bound params."""

    __slots__ = ("name", "fn", "params", "names", "wants_ctx", "var_kw", "hidden", "requires_auth",
                 "description", "param_docs", "result", "is_async")

    def __init__(self, name, fn, where):
        self.name = name
        self.fn = fn
        f = fn
        while hasattr(f, "__wrapped__"):
            f = f.__wrapped__
        f = getattr(f, "__func__", f)
        code = getattr(f, "__code__", None)
        if code is None:
            raise TypeError(f"{where}: {name} is not a Python function")
        if code.co_posonlyargcount > 1:
            raise TypeError(f"{where}: {name} has positional-only parameters; methods are called with keywords")
        self.is_async = bool(code.co_flags & 0x80)  # CO_COROUTINE
        nargs = code.co_argcount + code.co_kwonlyargcount
        names = list(code.co_varnames[:nargs])
        if names and names[0] in ("self", "cls") and code.co_argcount > 0:
            names = names[1:]
            npos = code.co_argcount - 1
        else:
            npos = code.co_argcount
        self.var_kw = bool(code.co_flags & 0x08)  # CO_VARKEYWORDS
        defaults = f.__defaults__ or ()
        kwdefaults = f.__kwdefaults__ or {}
        first_default = npos - len(defaults)
        ann = getattr(f, "__annotations__", {}) or {}
        self.wants_ctx = False
        self.params = []
        for i, n in enumerate(names):
            a = ann.get(n)
            if n == "ctx" or a is Context or (isinstance(a, str) and a.rsplit(".", 1)[-1] == "Context"):
                self.wants_ctx = n
                continue
            has_default = (i >= first_default) if i < npos else (n in kwdefaults)
            t, optional = _type_name(a) if a is not None else ("any", False)
            self.params.append(_Param(n, t, not has_default, optional))
        self.names = {p.name: p for p in self.params}
        self.description, self.param_docs = _doc_parts(getattr(fn, "__doc__", None))
        r = ann.get("return")
        self.result = _type_name(r)[0] if r is not None and r is not type(None) and r != "None" else ""
        opts = getattr(fn, "__nuropb_method__", {}) or {}
        self.hidden = opts.get("hidden", False)
        self.requires_auth = opts.get("requires_auth", False)

    def manifest(self):
        m = {}
        if self.description:
            m["description"] = self.description
        if self.params:
            ps = []
            for p in self.params:
                d = {"name": p.name, "type": p.type}
                if p.required:
                    d["required"] = True
                if self.param_docs.get(p.name):
                    d["description"] = self.param_docs[p.name]
                ps.append(d)
            m["params"] = ps
        if self.result:
            m["result"] = self.result
        if self.hidden:
            m["hidden"] = True
        if self.requires_auth:
            m["requires_auth"] = True
        return m

    def bind(self, params, ctx):
        """Check params against the signature; return the kwargs to call with.
        Raises Error(bad_request) naming the problem."""
        names = self.names
        for k in params:
            if k not in names and not self.var_kw:
                if k == self.wants_ctx:
                    raise Error("bad_request", f"{self.name}: parameter {k!r} is reserved for the context")
                raise Error("bad_request", f"{self.name}: unexpected parameter {k!r}"
                            + (f" (parameters: {', '.join(names)})" if names else " (it takes none)"))
        for p in self.params:
            if p.name not in params:
                if p.required:
                    raise Error("bad_request", f"{self.name}: missing required parameter {p.name!r}")
                continue
            ok = _CHECKS.get(p.type)
            if ok is not None:
                v = params[p.name]
                if v is None:
                    if not p.optional:
                        raise Error("bad_request", f"{self.name}: parameter {p.name!r} must be {p.type}, not null")
                elif not isinstance(v, ok) or (p.type in ("int", "float") and isinstance(v, bool)):
                    raise Error("bad_request", f"{self.name}: parameter {p.name!r} must be {p.type}, "
                                f"not {_cbor_type(v)}")
        if self.wants_ctx:
            params = dict(params)
            params[self.wants_ctx] = ctx
        return params

    def invoke(self, kwargs):
        r = self.fn(**kwargs)
        if self.is_async:
            r = _run_coroutine(r, self.name)
        return r


def _cbor_type(v):
    if isinstance(v, bool):
        return "bool"
    for t, n in _TYPE_NAMES.items():
        if isinstance(v, t):
            return n
    return type(v).__name__


def _run_coroutine(coro, name):
    # No event loop in a nuropb guest: host calls block. A coroutine that
    # awaits only other coroutines runs to completion here.
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise Error("internal", f"{name}: async handlers may await only coroutines, not I/O futures")


class ServiceSpec:
    """A service class instantiated and introspected: its manifest and handlers."""

    def __init__(self, cls, instance=None):
        where = f"service class {cls.__module__}.{cls.__qualname__}"
        opts = getattr(cls, "__nuropb_service__", None)
        if opts is None:
            opts = {"name": getattr(cls, "_service_name", None), "version": getattr(cls, "_version", "0.0.0"),
                    "description": None, "calls": [], "publishes": []}
        self.name = opts["name"]
        if not _valid_name(self.name):
            raise ValueError(f"{where}: service name {self.name!r} is not valid "
                             "(lower case letters, digits, '_' and '-', starting with a letter, at most 63)")
        self.version = str(opts["version"] or "")
        if not self.version:
            raise ValueError(f"{where}: the version must not be empty")
        self.description = opts["description"] or _doc_parts(cls.__doc__)[0]
        self.calls = opts["calls"]
        self.publishes = opts["publishes"]
        self.instance = instance if instance is not None else cls()
        self.methods = {}
        self.events = []  # (pattern, handler)
        seen = set()
        for klass in cls.__mro__:
            if klass is object:
                continue
            for attr, raw in vars(klass).items():
                if attr in seen:
                    continue
                seen.add(attr)
                if isinstance(raw, (staticmethod, classmethod)):
                    raw = raw.__func__
                if not callable(raw) or isinstance(raw, type):
                    continue
                events = getattr(raw, "__nuropb_events__", None)
                opts_m = getattr(raw, "__nuropb_method__", None)
                bound = getattr(self.instance, attr)
                if events:
                    h = _Handler(attr, bound, where)
                    for p in events:
                        self.events.append((p, h))
                    continue
                mname = (opts_m or {}).get("name") or attr
                if attr.startswith("_") and not (opts_m and opts_m.get("name")):
                    continue
                if not _valid_method_name(mname):
                    raise ValueError(f"{where}: method name {mname!r} is not valid (letters, digits, '_')")
                if mname in self.methods:
                    raise ValueError(f"{where}: two methods named {mname!r}")
                self.methods[mname] = _Handler(mname, bound, where)
        if not self.methods and not self.events:
            raise ValueError(f"{where}: no public methods and no event handlers")

    def manifest(self):
        subs = []
        for p, _ in self.events:
            if p not in subs:
                subs.append(p)
        m = {
            "abi": 1, "service": self.name, "version": self.version,
            "methods": {n: h.manifest() for n, h in sorted(self.methods.items())},
        }
        if self.description:
            m["description"] = self.description
        if subs:
            m["subscriptions"] = subs
        req = {}
        if self.calls:
            req["calls"] = list(self.calls)
        if self.publishes:
            req["publishes"] = list(self.publishes)
        if req:
            m["requires"] = req
        return m

    def event_handlers(self, topic):
        out = []
        for p, h in self.events:
            if h not in out and topic_matches(p, topic):
                out.append(h)
        return out


def find_service(module):
    """The service class a module declares: the one decorated with
    @nuropb.service, else one class with a ``_service_name`` attribute."""
    name = module.__name__
    mine = [c for c in _registry if c.__module__ == name or c.__module__.startswith(name + ".")]
    if len(mine) > 1:
        raise ValueError(f"module {name} declares {len(mine)} services "
                         f"({', '.join(c.__qualname__ for c in mine)}); one module is one service")
    if mine:
        return mine[0]
    if _registry:
        return _registry[-1]
    found = [v for v in vars(module).values()
             if isinstance(v, type) and v.__module__ == name and isinstance(getattr(v, "_service_name", None), str)]
    if len(found) == 1:
        return found[0]
    raise ValueError(f"module {name} declares no service: decorate a class with @nuropb.service(...) "
                     "or give it a _service_name attribute")


def _reset_registry():
    """Forget declared services (for tests that import several)."""
    _registry.clear()
