"""Dispatch, manifest introspection, errors and the context, through the
same envelope path the WebAssembly runtime uses (nuropb.testing.Harness)."""

import datetime as dt
import os
import sys
import tempfile
import time
import unittest

import nuropb
from nuropb import _runtime, _service as svcmod, cbor
from nuropb.testing import Harness


@nuropb.service("demo", version="2.1.0", calls=["greeter"], publishes=["demo.done"])
class Demo:
    """A demo service.

    It has a longer description too.
    """

    def __init__(self):
        self.counter = 0

    def add(self, a: int, b: int = 2) -> int:
        """Adds two numbers.

        Args:
            a: the first
            b (int): the second,
                defaulting to 2
        Returns:
            the sum
        """
        return a + b

    def scale(self, values: "list[float]", factor: float | None = None) -> list:
        return [v * (factor or 1.0) for v in values]

    def kw(self, **params):
        return params

    def greet(self, ctx, name: str) -> str:
        """Calls greeter."""
        return ctx.call("greeter", "hello", name=name)

    def tell(self, ctx: nuropb.Context, topic: str):
        ctx.publish(topic, {"n": 1})
        ctx.send("audit", "record", what=topic)
        nuropb.log("told", "warning")

    def info(self):
        c = nuropb.context()
        return {"trace": c.trace_id, "tenant": c.tenant, "deadline": c.deadline, "claims": c.claims,
                "kind": c.kind, "remaining": c.remaining() is not None}

    def boom(self):
        return {}["missing"]

    def coded(self, code: str):
        raise nuropb.Error(code, "it failed", {"why": "test"})

    def exit(self):
        raise SystemExit(3)

    def unencodable(self):
        return {"s": {1, 2}}

    def huge(self):
        return b"x" * (cbor.MAX_FRAME + 1)

    async def aio(self, x: int) -> int:
        return await _double(x)

    @nuropb.method(hidden=True, requires_auth=True)
    def secret(self):
        return "s"

    @nuropb.method(name="renamed")
    def _internal_name(self):
        return "r"

    def _private(self):
        return "p"

    @staticmethod
    def static(x: int = 1):
        return x

    @nuropb.on_event("orders.*", "billing.#")
    def on_order(self, topic, event):
        self.counter += 1
        if event == "fail":
            raise ValueError("bad event")

    @nuropb.on_event("orders.created")
    def _also(self, ctx, event):
        ctx.log(f"also {event}")


async def _double(x):
    return 2 * x


class ServiceTest(unittest.TestCase):
    def setUp(self):
        self.h = Harness(Demo, calls={("greeter", "hello"): lambda name: f"hello {name}"})

    def test_manifest(self):
        m = self.h.manifest()
        self.assertEqual((m["abi"], m["service"], m["version"]), (1, "demo", "2.1.0"))
        self.assertEqual(m["description"], "A demo service.\n\nIt has a longer description too.")
        self.assertEqual(m["subscriptions"], ["orders.*", "billing.#", "orders.created"])
        self.assertEqual(m["requires"], {"calls": ["greeter"], "publishes": ["demo.done"]})
        add = m["methods"]["add"]
        self.assertEqual(add["description"], "Adds two numbers.")
        self.assertEqual(add["params"], [
            {"name": "a", "type": "int", "required": True, "description": "the first"},
            {"name": "b", "type": "int", "description": "the second, defaulting to 2"},
        ])
        self.assertEqual(add["result"], "int")
        self.assertEqual(m["methods"]["scale"]["params"], [
            {"name": "values", "type": "list", "required": True}, {"name": "factor", "type": "float"}])
        self.assertEqual(m["methods"]["greet"]["params"], [{"name": "name", "type": "string", "required": True}])
        self.assertEqual(m["methods"]["secret"], {"hidden": True, "requires_auth": True})
        public = set(m["methods"])
        self.assertIn("renamed", public)
        self.assertIn("static", public)
        for hidden in ("_private", "_internal_name", "on_order", "_also", "__init__"):
            self.assertNotIn(hidden, public)

    def test_calls(self):
        self.assertEqual(self.h.call("add", a=1), 3)
        self.assertEqual(self.h.call("add", a=1, b=5), 6)
        self.assertEqual(self.h.call("add", a=2**70, b=1), 2**70 + 1)
        self.assertEqual(self.h.call("scale", values=[1, 2.5], factor=2), [2.0, 5.0])
        self.assertEqual(self.h.call("scale", values=[1], factor=None), [1.0])
        self.assertEqual(self.h.call("kw", x=1, y=[b"b"]), {"x": 1, "y": [b"b"]})
        self.assertEqual(self.h.call("renamed"), "r")
        self.assertEqual(self.h.call("static", x=4), 4)
        self.assertEqual(self.h.call("aio", x=21), 42)
        self.assertEqual(self.h.call("greet", name="ada"), "hello ada")

    def assertCode(self, want, contains, method, /, **params):
        with self.assertRaises(nuropb.Error) as cm:
            self.h.call(method, **params)
        self.assertEqual(cm.exception.code, want, str(cm.exception))
        self.assertIn(contains, cm.exception.message)
        return cm.exception

    def test_argument_errors(self):
        self.assertCode("bad_request", "missing required parameter 'a'", "add")
        self.assertCode("bad_request", "unexpected parameter 'c'", "add", a=1, c=2)
        self.assertCode("bad_request", "'a' must be int, not string", "add", a="1")
        self.assertCode("bad_request", "'a' must be int, not bool", "add", a=True)
        self.assertCode("bad_request", "'a' must be int, not null", "add", a=None)
        self.assertCode("bad_request", "'values' must be list, not map", "scale", values={})
        self.assertCode("bad_request", "reserved for the context", "greet", name="x", ctx=1)

    def test_not_found(self):
        self.assertCode("method_not_found", "no method 'nope'", "nope")
        self.assertCode("method_not_found", "no method '_private'", "_private")
        self.assertCode("method_not_found", "no method 'on_order'", "on_order")

    def test_errors(self):
        e = self.assertCode("handler", "'missing'", "boom")
        self.assertEqual(e.details, {"exception": "KeyError"})
        self.assertIn("Traceback", self.h.logs[-1][1])
        self.assertIn("boom", self.h.logs[-1][1])
        self.assertNotIn("nuropb/_runtime.py", self.h.logs[-1][1])
        e = self.assertCode("forbidden", "it failed", "coded", code="forbidden")
        self.assertEqual(e.details, {"why": "test"})
        self.assertCode("handler", "3", "exit")
        self.assertCode("internal", "cannot encode a value of type set", "unencodable")
        self.assertCode("resource_exhausted", "byte limit", "huge")
        self.assertCode("forbidden", "requires an authenticated caller", "secret")
        self.assertEqual(self.h.call("secret", context={"sub": "u1"}), "s")

    def test_context(self):
        deadline = int(time.time() * 1000) + 5000
        r = self.h.handle({"kind": "request", "id": "9", "trace_id": "t9", "tenant": "acme", "service": "demo",
                           "method": "info", "deadline": deadline, "context": {"sub": "u"}})
        self.assertEqual((r["id"], r["trace_id"]), ("9", "t9"))
        res = r["result"]
        self.assertEqual((res["trace"], res["tenant"], res["claims"], res["kind"]), ("t9", "acme", {"sub": "u"}, "request"))
        self.assertEqual(res["deadline"], dt.datetime.fromtimestamp(deadline / 1000, dt.timezone.utc))
        self.assertTrue(res["remaining"])
        self.assertEqual(nuropb.context().trace_id, "")  # reset after the call

    def test_send_publish_log(self):
        self.h.handle({"kind": "request", "trace_id": "t1", "service": "demo", "method": "tell",
                       "params": {"topic": "demo.done"}, "context": {"sub": "u"}, "deadline": 99})
        ev, cmd = self.h.sent
        self.assertEqual(ev, {"kind": "event", "topic": "demo.done", "event": {"n": 1}, "trace_id": "t1", "deadline": 99})
        self.assertEqual(cmd["kind"], "command")
        self.assertEqual((cmd["service"], cmd["method"], cmd["params"]), ("audit", "record", {"what": "demo.done"}))
        self.assertEqual(cmd["context"], {"sub": "u"})
        self.assertEqual(self.h.logs[-1], (4, "told"))

    def test_remote_error_keeps_code(self):
        def refuse(name):
            raise nuropb.NotFound("no such person", {"name": name})

        h = Harness(Demo, calls={("greeter", "hello"): refuse})
        with self.assertRaises(nuropb.Error) as cm:
            h.call("greet", name="x")
        self.assertEqual((cm.exception.code, cm.exception.message, cm.exception.details),
                         ("not_found", "no such person", {"name": "x"}))

    def test_events(self):
        inst = self.h.spec.instance
        self.h.publish("orders.created", "x")
        self.assertEqual(inst.counter, 1)
        self.assertEqual(self.h.logs[-1], (0, "also x"))
        self.h.publish("billing.a.b", None)
        self.h.publish("billing", None)
        self.h.publish("shipping.created", None)
        self.h.publish("orders.a.b", None)
        self.assertEqual(inst.counter, 3)
        with self.assertRaises(nuropb.Error) as cm:
            self.h.publish("orders.x", "fail")
        self.assertEqual(cm.exception.code, "handler")

    def test_topic_patterns(self):
        m = svcmod.topic_matches
        self.assertTrue(m("a.*", "a.b"))
        self.assertFalse(m("a.*", "a"))
        self.assertFalse(m("a.*", "a.b.c"))
        self.assertTrue(m("a.#", "a"))
        self.assertTrue(m("#", "x.y"))
        self.assertTrue(m("a.#.z", "a.z"))
        self.assertTrue(m("a.#.z", "a.b.c.z"))
        self.assertFalse(m("a.#.z", "a.b.c"))
        with self.assertRaises(ValueError):
            nuropb.on_event("a..b")

    def test_bad_envelopes(self):
        for raw, code in [(b"\xff", "bad_request"), (cbor.dumps([1]), "bad_request"),
                          (cbor.dumps({"kind": "response"}), "bad_request"),
                          (cbor.dumps({"kind": "request", "method": "add", "params": [1]}), "bad_request"),
                          (cbor.dumps({"kind": "request", "method": "add", "params": {1: 2}}), "bad_request"),
                          (b"\x00" * (cbor.MAX_FRAME + 1), "resource_exhausted")]:
            with self.subTest(raw=raw[:8]):
                old = _runtime.use(self.h.spec)
                try:
                    r = cbor.loads(_runtime.handle(raw))
                finally:
                    _runtime.use(old)
                self.assertEqual(r["kind"], "response")
                self.assertEqual(r["error"]["code"], code)

    def test_declaration_errors(self):
        class NoMethods:
            _service_name = "empty"

        class BadName:
            _service_name = "Bad Name"

            def m(self):
                pass

        for cls, msg in [(NoMethods, "no public methods"), (BadName, "not valid")]:
            with self.subTest(cls=cls.__name__):
                with self.assertRaises(ValueError) as cm:
                    svcmod.ServiceSpec(cls)
                self.assertIn(msg, str(cm.exception))

    def test_nuropb_style_class(self):
        class Legacy:
            _service_name = "legacy"
            _version = "0.1.8"

            def ping(self, **kwargs):
                return "pong"

        h = Harness(Legacy)
        self.assertEqual(h.manifest()["service"], "legacy")
        self.assertEqual(h.call("ping"), "pong")


class BootTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        sys.path.insert(0, self.dir)
        self.addCleanup(sys.path.remove, self.dir)
        self.addCleanup(svcmod._reset_registry)
        self.old = _runtime.use(None)
        self.addCleanup(_runtime.use, self.old)

    def write(self, name, src):
        with open(os.path.join(self.dir, name + ".py"), "w") as f:
            f.write(src)
        sys.modules.pop(name, None)

    def test_boot_ok(self):
        self.write("bootok", "import nuropb\n@nuropb.service('bootok', version='1')\nclass S:\n    def m(self): return 1\n")
        ok, manifest = _runtime.boot("bootok")
        self.assertTrue(ok, manifest)
        self.assertEqual(cbor.loads(manifest)["service"], "bootok")
        r = cbor.loads(_runtime.handle(cbor.dumps({"kind": "request", "service": "bootok", "method": "m"})))
        self.assertEqual(r["result"], 1)

    def test_boot_failure_gives_traceback(self):
        self.write("bootbad", "import nuropb\nimport numpy_is_not_here\n")
        ok, text = _runtime.boot("bootbad")
        self.assertFalse(ok)
        self.assertIn("failed to start", text)
        self.assertIn("Traceback", text)
        self.assertIn("ModuleNotFoundError: No module named 'numpy_is_not_here'", text)
        self.assertIn("bootbad.py", text)

    def test_boot_without_service(self):
        self.write("bootnone", "x = 1\n")
        ok, text = _runtime.boot("bootnone")
        self.assertFalse(ok)
        self.assertIn("declares no service", text)


if __name__ == "__main__":
    unittest.main()
