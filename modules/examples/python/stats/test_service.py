"""Native unit tests for the stats service: python3 -m unittest (from this
folder, with guest-sdk/python on PYTHONPATH). Not packed into the module."""

import unittest

import nuropb
from nuropb.testing import Harness
from service import Stats


class StatsTest(unittest.TestCase):
    def setUp(self):
        self.h = Harness(Stats, calls={("greeter", "hello"): lambda name: f"Hello, {name}!"})

    def test_summarize(self):
        r = self.h.call("summarize", values=[2, 4, 4, 4, 5, 5, 7, 9])
        self.assertEqual(r["mean"], 5.0)
        self.assertEqual(r["median"], 4.5)
        self.assertEqual(len(r["quantiles"]), 3)

    def test_bad_values(self):
        with self.assertRaises(nuropb.Error) as cm:
            self.h.call("summarize", values=[1, "x"])
        self.assertEqual(cm.exception.code, "bad_request")

    def test_parse_log(self):
        text = "2024-05-01T12:00:00Z ERROR db: connection lost\n2024-05-01T12:00:30Z INFO web: ok\nnoise\n"
        r = self.h.call("parse_log", text=text, level="error")
        self.assertEqual(r["levels"], {"ERROR": 1, "INFO": 1})
        self.assertEqual(r["span_seconds"], 30.0)
        self.assertEqual(r["skipped"], 1)
        self.assertEqual([e["component"] for e in r["entries"]], ["db"])

    def test_report_calls_greeter(self):
        r = self.h.call("report", name="Ada", values=[1, 2, 3])
        self.assertTrue(r.startswith("Hello, Ada!\n"))
        self.assertEqual(self.h.sent[0]["topic"], "stats.reported")


if __name__ == "__main__":
    unittest.main()
