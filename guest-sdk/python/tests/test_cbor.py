"""CBOR codec: round trips, RFC 8949 vectors, and the host's limits."""

import datetime as dt
import decimal
import unittest
from dataclasses import dataclass

from nuropb import cbor
from nuropb.cbor import MAX_DEPTH, MAX_ELEMENTS, MAX_FRAME, DecodeError, EncodeError, Simple, Tag


class RoundTrip(unittest.TestCase):
    def test_values(self):
        values = [
            None, True, False, 0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1,
            -1, -24, -25, -256, -257, -(2**64), 2**64, -(2**64) - 1, 10**40, -(10**40),
            0.0, -0.0, 1.5, 3.141592653589793, 1e300, float("inf"), float("-inf"),
            "", "a", "ü水🌊", "x" * 1000, b"", b"\x00\xff", [], [1, [2, [3]]], {}, {"a": 1, "b": [True, None]},
            {1: "int key", b"k": "bytes key"},
            dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc),
            dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            dt.date(2024, 2, 29), decimal.Decimal("273.15"), decimal.Decimal("-0.000001"), decimal.Decimal("1E+30"),
            decimal.Decimal(10**30) / 7, Tag(32, "http://example.com"), Simple(16),
        ]
        for v in values:
            with self.subTest(v=v):
                self.assertEqual(cbor.loads(cbor.dumps(v)), v)

    def test_nan(self):
        x = cbor.loads(cbor.dumps(float("nan")))
        self.assertNotEqual(x, x)

    def test_encode_only(self):
        self.assertEqual(cbor.loads(cbor.dumps((1, 2))), [1, 2])
        self.assertEqual(cbor.loads(cbor.dumps(bytearray(b"ab"))), b"ab")
        naive = dt.datetime(2024, 1, 1, 0, 0)
        self.assertEqual(cbor.dumps(naive), bytes.fromhex("c074") + b"2024-01-01T00:00:00Z")

        @dataclass
        class P:
            x: int
            y: str

        self.assertEqual(cbor.loads(cbor.dumps(P(1, "a"))), {"x": 1, "y": "a"})

    def test_unsupported_type_names_it(self):
        for v, name in [({1, 2}, "set"), (object(), "object"), (decimal.Decimal("NaN"), "NaN"), ("\ud800", "surrogate")]:
            with self.subTest(name=name):
                with self.assertRaises(EncodeError) as cm:
                    cbor.dumps({"r": [v]})
                self.assertEqual(cm.exception.code, "internal")
                self.assertIn(name, str(cm.exception))


class Vectors(unittest.TestCase):
    # RFC 8949, appendix A.
    def test_decode(self):
        cases = {
            "00": 0, "17": 23, "1818": 24, "1903e8": 1000, "1b000000e8d4a51000": 1000000000000,
            "1bffffffffffffffff": 18446744073709551615, "c249010000000000000000": 18446744073709551616,
            "3bffffffffffffffff": -18446744073709551616, "c349010000000000000000": -18446744073709551617,
            "20": -1, "3903e7": -1000, "f90000": 0.0, "f93c00": 1.0, "f97bff": 65504.0,
            "fa47c35000": 100000.0, "fb3ff199999999999a": 1.1, "f4": False, "f5": True, "f6": None, "f7": None,
            "f0": Simple(16), "f8ff": Simple(255), "40": b"", "4401020304": b"\x01\x02\x03\x04",
            "60": "", "6449455446": "IETF", "62c3bc": "ü", "83010203": [1, 2, 3],
            "a201020304": {1: 2, 3: 4}, "a26161016162820203": {"a": 1, "b": [2, 3]},
            "c074323031332d30332d32315432303a30343a30305a":
                dt.datetime(2013, 3, 21, 20, 4, tzinfo=dt.timezone.utc),
            "c11a514b67b0": dt.datetime(2013, 3, 21, 20, 4, tzinfo=dt.timezone.utc),
            "c48221196ab3": decimal.Decimal("273.15"),
            "d82076687474703a2f2f7777772e6578616d706c652e636f6d": Tag(32, "http://www.example.com"),
        }
        for h, want in cases.items():
            with self.subTest(h=h):
                self.assertEqual(cbor.loads(bytes.fromhex(h)), want)

    def test_encode_canonical_heads(self):
        self.assertEqual(cbor.dumps(1000000).hex(), "1a000f4240")
        self.assertEqual(cbor.dumps(-500).hex(), "3901f3")
        self.assertEqual(cbor.dumps({"a": [1]}).hex(), "a161618101")
        self.assertEqual(cbor.dumps(decimal.Decimal("273.15")).hex(), "c48221196ab3")


class Limits(unittest.TestCase):
    def assertRefused(self, data, code="bad_request", contains=""):
        with self.assertRaises(DecodeError) as cm:
            cbor.loads(data)
        self.assertEqual(cm.exception.code, code)
        self.assertIn(contains, str(cm.exception))

    def test_frame_size_checked_first(self):
        # Over the limit and malformed: the size is what is reported.
        self.assertRefused(b"\xff" * (MAX_FRAME + 1), "resource_exhausted", "byte limit")
        ok = cbor.dumps(b"x" * (MAX_FRAME - 5))
        self.assertEqual(len(ok), MAX_FRAME)
        self.assertEqual(len(cbor.loads(ok)), MAX_FRAME - 5)

    def test_depth(self):
        self.assertEqual(cbor.loads(b"\x81" * MAX_DEPTH + b"\x00"), _nest(MAX_DEPTH))
        self.assertRefused(b"\x81" * (MAX_DEPTH + 1) + b"\x00", contains="nesting")
        self.assertRefused(b"\xa1\x00" * (MAX_DEPTH + 1) + b"\x00", contains="nesting")
        # Tags count as levels, one more allowed than containers, as in the host's decoder.
        cbor.loads(b"\xd8\x20" * (MAX_DEPTH + 1) + b"\x00")
        cbor.loads(b"\x81" * MAX_DEPTH + b"\xd8\x20\x00")
        self.assertRefused(b"\xd8\x20" * (MAX_DEPTH + 2) + b"\x00", contains="nesting")
        self.assertRefused(b"\x81" * MAX_DEPTH + b"\xd8\x20" * 2 + b"\x00", contains="nesting")
        cbor.loads(b"\xd8\x20" + b"\x81" * MAX_DEPTH + b"\x00")
        self.assertRefused(b"\xd8\x20" * 2 + b"\x81" * MAX_DEPTH + b"\x00", contains="nesting")

    def test_encode_depth_and_cycles(self):
        cbor.dumps(_nest(MAX_DEPTH))
        with self.assertRaises(EncodeError) as cm:
            cbor.dumps(_nest(MAX_DEPTH + 1))
        self.assertEqual(cm.exception.code, "resource_exhausted")
        a = []
        a.append(a)
        with self.assertRaises(EncodeError):
            cbor.dumps(a)

    def test_elements(self):
        arr = b"\x9a" + MAX_ELEMENTS.to_bytes(4, "big") + b"\x00" * MAX_ELEMENTS
        self.assertEqual(len(cbor.loads(arr)), MAX_ELEMENTS)
        self.assertRefused(b"\x9a" + (MAX_ELEMENTS + 1).to_bytes(4, "big") + b"\x00" * (MAX_ELEMENTS + 1),
                           contains="over the limit")
        self.assertRefused(b"\xba" + (MAX_ELEMENTS + 1).to_bytes(4, "big"), contains="over the limit")
        # A huge count in a tiny frame fails fast, without allocating.
        self.assertRefused(b"\x9b" + (2**63).to_bytes(8, "big"))
        with self.assertRaises(EncodeError):
            cbor.dumps([0] * (MAX_ELEMENTS + 1))

    def test_strict(self):
        for h, why in [
            ("a2616101616102", "duplicate"), ("9f01ff", "indefinite"), ("5f4101ff", "indefinite"),
            ("bf616101ff", "indefinite"), ("7f6161ff", "indefinite"), ("62c328", "UTF-8"), ("0000", "trailing"),
            ("1c", "reserved"), ("fc", "reserved"), ("ff", "indefinite"), ("18", "truncated"), ("43010203"[:-2], "truncated"),
            ("", "empty"), ("a1800001", "not supported"), ("c2616a", "bignum"), ("c073323031332d30332d32315432303a30343a3030", "zone"),
            ("f818", "simple"), ("c48201f5", "decimal"),
        ]:
            with self.subTest(h=h):
                self.assertRefused(bytes.fromhex(h), contains=why)


def _nest(n):
    v = 0
    for _ in range(n):
        v = [v]
    return v


if __name__ == "__main__":
    unittest.main()
