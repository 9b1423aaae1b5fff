package python

import (
	"context"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero/sys"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/guest-sdk/python/pack"
)

const (
	conformanceDir = "../../testdata/guests/python/conformance"
	statsDir       = "../../modules/examples/python/stats"
)

func TestExportsAndManifest(t *testing.T) {
	h := sharedHost(t)
	g := h.load(t, packService(t, conformanceDir))
	for _, name := range abi.RequiredExports {
		if g.mod.ExportedFunction(name) == nil {
			t.Errorf("missing export %s", name)
		}
	}
	res, err := g.mod.ExportedFunction(abi.ExportABIVersion).Call(context.Background())
	if err != nil || res[0] != abi.Version {
		t.Fatalf("nuropb_abi_version = %v, %v; want %d", res, err, abi.Version)
	}
	m, err := abi.Default.DecodeManifest(g.describeBytes(t))
	if err != nil {
		t.Fatal(err)
	}
	if m.Service != "conformance" || m.Version != "1.0.0" || m.Description != "Exercises every part of ABI v1 for host tests." {
		t.Errorf("manifest header: %+v", m)
	}
	var names []string
	for n := range m.Methods {
		names = append(names, n)
	}
	sort.Strings(names)
	want := "alloc big call context echo events fail fail_code hidden log panic publish secure send sleep_ms spin trap"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("methods: %s\nwant:    %s", got, want)
	}
	if !m.Methods["hidden"].Hidden || !m.Methods["secure"].RequiresAuth || !reflect.DeepEqual(m.Subscriptions, []string{"conformance.#"}) {
		t.Errorf("options or subscriptions: %+v %+v %v", m.Methods["hidden"], m.Methods["secure"], m.Subscriptions)
	}
	if p := m.Methods["fail_code"].Params; len(p) != 3 || p[0] != (abi.Param{Name: "code", Type: "string", Required: true, Description: "an abi error code, e.g. forbidden"}) {
		t.Errorf("fail_code params: %+v", p)
	}
}

func TestConformance(t *testing.T) {
	h := sharedHost(t)
	g := h.load(t, packService(t, conformanceDir))
	t.Logf("instance start (instantiate + _initialize + interpreter + service import): %v", g.initTime)

	t.Run("echo", func(t *testing.T) {
		bignum := new(big.Int).Lsh(big.NewInt(1), 80)
		params := map[string]any{
			"null": nil, "t": true, "f": false, "int": int64(-42), "i64": int64(-1 << 63), "big": bignum,
			"float": 1.25, "text": "héllo 水", "bytes": []byte{0, 1, 255}, "list": []any{int64(1), "two", []any{}},
			"map": map[string]any{"nested": map[string]any{"deep": int64(1)}}, "time": time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC),
		}
		r := g.request(t, "echo", params)
		var got map[string]any
		result(t, r, &got)
		if got["text"] != "héllo 水" || got["int"] != int64(-42) || got["i64"] != int64(-1<<63) || got["float"] != 1.25 ||
			got["null"] != nil || got["t"] != true || got["f"] != false {
			t.Errorf("scalars: %#v", got)
		}
		if b, ok := got["big"].(big.Int); !ok || b.Cmp(bignum) != 0 {
			t.Errorf("bignum: %#v", got["big"])
		}
		if !reflect.DeepEqual(got["bytes"], []byte{0, 1, 255}) || !reflect.DeepEqual(got["list"], []any{int64(1), "two", []any{}}) ||
			!reflect.DeepEqual(got["map"], map[string]any{"nested": map[string]any{"deep": int64(1)}}) {
			t.Errorf("containers: %#v", got)
		}
		// fxamacker/cbor hands tag 0 to an `any` as its RFC 3339 text.
		if tm, ok := got["time"].(string); !ok || tm != "2024-05-01T12:00:00Z" {
			t.Errorf("time: %#v", got["time"])
		}
	})
	t.Run("fail", func(t *testing.T) {
		wantError(t, g.request(t, "fail", map[string]any{"message": "it broke"}), abi.CodeHandler, "it broke")
	})
	t.Run("fail_code", func(t *testing.T) {
		r := g.request(t, "fail_code", map[string]any{"code": "forbidden", "message": "no", "details": map[string]any{"why": "test"}})
		wantError(t, r, abi.CodeForbidden, "no")
		if r.Error.Details["why"] != "test" {
			t.Errorf("details: %v", r.Error.Details)
		}
	})
	t.Run("bad_request", func(t *testing.T) {
		wantError(t, g.request(t, "big", map[string]any{}), abi.CodeBadRequest, "missing required parameter 'n'")
		wantError(t, g.request(t, "big", map[string]any{"n": "x"}), abi.CodeBadRequest, "'n' must be int, not string")
		wantError(t, g.request(t, "big", map[string]any{"n": 1, "m": 2}), abi.CodeBadRequest, "unexpected parameter 'm'")
	})
	t.Run("method_not_found", func(t *testing.T) {
		wantError(t, g.request(t, "nope", nil), abi.CodeMethodNotFound, "no method 'nope'")
		wantError(t, g.request(t, "_record", nil), abi.CodeMethodNotFound, "no method '_record'")
	})
	t.Run("panic", func(t *testing.T) {
		r := g.request(t, "panic", map[string]any{"message": "oops"})
		wantError(t, r, abi.CodeHandler, "conformance: oops")
		if r.Error.Details["exception"] != "SystemExit" {
			t.Errorf("details: %v", r.Error.Details)
		}
	})
	t.Run("call", func(t *testing.T) {
		var s string
		result(t, g.request(t, "call", map[string]any{"service": "greeter", "method": "hello", "params": map[string]any{"name": "Ada"}}), &s)
		if s != "Hello, Ada!" {
			t.Errorf("call: %q", s)
		}
		wantError(t, g.request(t, "call", map[string]any{"service": "ghost", "method": "x"}), abi.CodeNotFound, "ghost")
	})
	t.Run("publish_send", func(t *testing.T) {
		h.mu.Lock()
		n := len(h.sent)
		h.mu.Unlock()
		var ok bool
		result(t, g.request(t, "publish", map[string]any{"topic": "conformance.out", "event": map[string]any{"x": 1}}), &ok)
		result(t, g.request(t, "send", map[string]any{"service": "audit", "method": "record", "params": map[string]any{"y": 2}}), &ok)
		h.mu.Lock()
		sent := h.sent[n:]
		h.mu.Unlock()
		if len(sent) != 2 || sent[0].Kind != abi.KindEvent || sent[0].Topic != "conformance.out" || sent[0].TraceID != "trace-1" ||
			sent[1].Kind != abi.KindCommand || sent[1].Service != "audit" || sent[1].Method != "record" {
			t.Fatalf("sent: %+v", sent)
		}
	})
	t.Run("context", func(t *testing.T) {
		dl := time.Now().Add(time.Minute).UnixMilli()
		r := g.request(t, "context", nil, func(e *abi.Envelope) {
			e.Tenant, e.Deadline, e.Context = "acme", dl, map[string]any{"sub": "u1"}
		})
		var info struct {
			Context  map[string]any `cbor:"context"`
			TraceID  string         `cbor:"trace_id"`
			Tenant   string         `cbor:"tenant"`
			Deadline int64          `cbor:"deadline"`
			Method   string         `cbor:"method"`
		}
		result(t, r, &info)
		if info.TraceID != "trace-1" || info.Tenant != "acme" || info.Deadline != dl || info.Method != "context" || info.Context["sub"] != "u1" {
			t.Errorf("context: %+v", info)
		}
	})
	t.Run("secure", func(t *testing.T) {
		wantError(t, g.request(t, "secure", nil), abi.CodeForbidden, "authenticated")
		var claims map[string]any
		result(t, g.request(t, "secure", nil, func(e *abi.Envelope) { e.Context = map[string]any{"sub": "u1"} }), &claims)
	})
	t.Run("big", func(t *testing.T) {
		var b []byte
		result(t, g.request(t, "big", map[string]any{"n": 512 << 10}), &b)
		if len(b) != 512<<10 || b[27] != 'b' {
			t.Errorf("big: %d bytes", len(b))
		}
		wantError(t, g.request(t, "big", map[string]any{"n": 2 << 20}), abi.CodeResourceExhausted, "byte limit")
	})
	t.Run("log", func(t *testing.T) {
		var n int
		result(t, g.request(t, "log", map[string]any{"lines": []string{"one", "two"}, "level": 4}), &n)
		h.mu.Lock()
		logs := strings.Join(h.logs, "\n")
		h.mu.Unlock()
		if n != 2 || !strings.Contains(logs, "4 one\n4 two") {
			t.Errorf("log: %d, %s", n, logs)
		}
	})
	t.Run("events", func(t *testing.T) {
		for _, topic := range []string{"conformance.a", "other.b", "conformance.x.y"} {
			in, _ := abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindEvent, Topic: topic, TraceID: "te", Event: mustCBOR(t, topic)})
			out, err := g.handleRaw(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			if r, err := abi.Default.DecodeEnvelope(out); err != nil || r.Error != nil {
				t.Fatalf("event %s: %v %v", topic, err, r.Error)
			}
		}
		in, _ := abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindEvent, Topic: "conformance.fail"})
		out, _ := g.handleRaw(context.Background(), in)
		if r, _ := abi.Default.DecodeEnvelope(out); r == nil || r.Error == nil || r.Error.Code != abi.CodeHandler {
			t.Errorf("failing event handler: %+v", r)
		}
		var seen []map[string]any
		result(t, g.request(t, "events", nil), &seen)
		if len(seen) != 3 || seen[0]["topic"] != "conformance.a" || seen[1]["event"] != "conformance.x.y" || seen[0]["trace_id"] != "te" {
			t.Errorf("events: %v", seen)
		}
	})
	t.Run("alloc", func(t *testing.T) {
		var n int
		result(t, g.request(t, "alloc", map[string]any{"mib": 8}), &n)
		if n != 8<<20 {
			t.Errorf("alloc 8 MiB: %d", n)
		}
		// Past the 64 MiB cap: Python's MemoryError, not a trap.
		wantError(t, g.request(t, "alloc", map[string]any{"mib": 100}), abi.CodeResourceExhausted, "out of memory")
		result(t, g.request(t, "alloc", map[string]any{"mib": 1}), &n)
	})
}

func mustCBOR(t testing.TB, v any) []byte {
	b, err := abi.Default.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestInterrupts runs last on fresh instances: spin and trap leave their
// instance closed or poisoned, as a host would discard them.
func TestInterrupts(t *testing.T) {
	h := sharedHost(t)
	packed := packService(t, conformanceDir)
	t.Run("spin", func(t *testing.T) {
		g := h.load(t, packed)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		in, _ := abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindRequest, Service: "conformance", Method: "spin"})
		start := time.Now()
		_, err := g.handleRaw(ctx, in)
		var exit *sys.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("spin: got %v, want a *sys.ExitError from the deadline", err)
		}
		t.Logf("spin interrupted after %v", time.Since(start))
	})
	t.Run("trap", func(t *testing.T) {
		g := h.load(t, packed)
		in, _ := abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindRequest, Service: "conformance", Method: "trap"})
		out, err := g.handleRaw(context.Background(), in)
		if err == nil {
			r, _ := abi.Default.DecodeEnvelope(out)
			t.Fatalf("trap: no trap, reply %+v", r)
		}
		t.Logf("trap: %v", firstLine(err.Error()))
	})
}

func firstLine(s string) string { return strings.SplitN(s, "\n", 2)[0] }

func TestStatsExample(t *testing.T) {
	h := sharedHost(t)
	g := h.load(t, packService(t, statsDir))
	m, err := abi.Default.DecodeManifest(g.describeBytes(t))
	if err != nil {
		t.Fatal(err)
	}
	if m.Service != "stats" || len(m.Methods) != 4 || !reflect.DeepEqual(m.Requires.Calls, []string{"greeter"}) {
		t.Errorf("manifest: %+v", m)
	}
	var sum struct {
		Count     int       `cbor:"count"`
		Mean      float64   `cbor:"mean"`
		Median    float64   `cbor:"median"`
		Stdev     float64   `cbor:"stdev"`
		Quantiles []float64 `cbor:"quantiles"`
	}
	result(t, g.request(t, "summarize", map[string]any{"values": []any{2, 4, 4, 4, 5, 5, 7, 9}}), &sum)
	if sum.Count != 8 || sum.Mean != 5 || sum.Median != 4.5 || len(sum.Quantiles) != 3 || sum.Stdev < 2.13 || sum.Stdev > 2.14 {
		t.Errorf("summarize: %+v", sum)
	}
	wantError(t, g.request(t, "summarize", map[string]any{"values": []any{1, "x"}}), abi.CodeBadRequest, "values[1]")

	var logs struct {
		Levels  map[string]int   `cbor:"levels"`
		Span    float64          `cbor:"span_seconds"`
		First   time.Time        `cbor:"first"`
		Entries []map[string]any `cbor:"entries"`
	}
	text := "2024-05-01T12:00:00Z ERROR db: connection lost\n2024-05-01T12:01:00Z INFO web: ok\n"
	result(t, g.request(t, "parse_log", map[string]any{"text": text, "level": "error"}), &logs)
	if logs.Levels["ERROR"] != 1 || logs.Span != 60 || logs.First.Hour() != 12 || len(logs.Entries) != 1 {
		t.Errorf("parse_log: %+v", logs)
	}
	var report string
	result(t, g.request(t, "report", map[string]any{"name": "Ada", "values": []any{1, 2, 3}}), &report)
	if !strings.HasPrefix(report, "Hello, Ada!\n{") || !strings.Contains(report, `"mean": 2.0`) {
		t.Errorf("report: %q", report)
	}
}

func TestImportFailureIsReported(t *testing.T) {
	dir := t.TempDir()
	src := "import nuropb\nimport numpy_is_not_installed\n"
	if err := os.WriteFile(filepath.Join(dir, "broken.py"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	h := sharedHost(t)
	g := h.load(t, packService(t, filepath.Join(dir, "broken.py")))
	var d struct {
		Error *abi.Error `cbor:"error"`
	}
	if err := abi.Default.Unmarshal(g.describeBytes(t), &d); err != nil || d.Error == nil {
		t.Fatalf("describe: %v %+v", err, d)
	}
	if d.Error.Code != abi.CodeInternal || !strings.Contains(d.Error.Message, "Traceback") ||
		!strings.Contains(d.Error.Message, "No module named 'numpy_is_not_installed'") || !strings.Contains(d.Error.Message, "/app/broken.py") {
		t.Errorf("describe error: %v", d.Error)
	}
	in, _ := abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindRequest, Service: "broken", Method: "x"})
	out, err := g.handleRaw(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := abi.Default.DecodeEnvelope(out); err != nil || r.Error == nil || r.Error.Code != abi.CodeInternal {
		t.Errorf("handle after a failed start: %v %+v", err, r)
	}
}

func TestPackSyntaxError(t *testing.T) {
	wasm, stdlib := runtimeBytes(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "svc.py")
	os.WriteFile(p, []byte("import nuropb\n\ndef f(:\n    pass\n"), 0o644)
	_, err := pack.Pack(wasm, stdlib, p)
	var se *pack.SyntaxError
	if !errors.As(err, &se) || se.Line != 3 || !strings.HasPrefix(err.Error(), p+":3:") {
		t.Fatalf("got %v, want a SyntaxError at %s:3", err, p)
	}
	t.Log(err)
}
