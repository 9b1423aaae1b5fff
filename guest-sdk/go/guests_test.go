//go:build !wasip1

package nuropb

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/nuropb/nuropb/abi"
)

func wantCode(t *testing.T, err error, code abi.ErrorCode, contains string) {
	t.Helper()
	var e *abi.Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v, want an *abi.Error %s", err, code)
	}
	if e.Code != code || !strings.Contains(e.Message, contains) {
		t.Fatalf("got %s %q, want %s containing %q", e.Code, e.Message, code, contains)
	}
}

// TestGuestModules checks every built guest against ABI v1: the exports,
// nuropb_abi_version, a manifest the host's codec accepts, and an answer.
func TestGuestModules(t *testing.T) {
	mods := buildGuests(t)
	h := newHarness(t, 0)
	for name, wasm := range mods {
		g := h.start(name, wasm) // checks exports, version, manifest
		if g.manifest.Service != name {
			t.Errorf("%s: manifest service %q", name, g.manifest.Service)
		}
		rep, err := g.send(h.ctx, request(name, "no_such_method", nil))
		if err != nil {
			t.Fatal(err)
		}
		if rep.Error == nil || rep.Error.Code != abi.CodeMethodNotFound || rep.ID != "req-1" || rep.TraceID != "trace-1" {
			t.Errorf("%s: unknown method answered %+v", name, rep)
		}
		// A frame that is not CBOR is refused, and the instance goes on serving.
		reply, err := g.raw(h.ctx, []byte{0xff, 0x00})
		if err != nil {
			t.Fatal(err)
		}
		if rep, err := abi.Default.DecodeEnvelope(reply); err != nil || rep.Error == nil || rep.Error.Code != abi.CodeBadRequest {
			t.Errorf("%s: garbage answered %+v, %v", name, rep, err)
		}
	}
}

// TestExamplesMesh drives the three examples as a mesh: orders calls greeter
// through the call import and publishes an event that audit records.
func TestExamplesMesh(t *testing.T) {
	mods := buildGuests(t)
	h := newHarness(t, 0)
	for _, name := range []string{"greeter", "orders", "audit"} {
		h.start(name, mods[name])
	}

	var hello string
	if err := h.call("greeter", "hello", map[string]any{"name": "Ada"}, &hello); err != nil || hello != "Hello, Ada!" {
		t.Fatalf("hello = %q, %v", hello, err)
	}
	wantCode(t, h.call("greeter", "hello", map[string]any{}, nil), abi.CodeBadRequest, `missing required param "name"`)
	wantCode(t, h.call("greeter", "hello", map[string]any{"name": 3}, nil), abi.CodeBadRequest, `param "name": want string, got int`)
	wantCode(t, h.call("greeter", "hello", map[string]any{"name": "x", "nmae": "y"}, nil), abi.CodeBadRequest, `unknown param "nmae"`)

	var g struct {
		Text     string `cbor:"text"`
		Language string `cbor:"language"`
	}
	if err := h.call("greeter", "greet", map[string]any{"name": " Ada ", "language": "fr", "times": 2}, &g); err != nil {
		t.Fatal(err)
	}
	if g.Text != "Bonjour, Ada! Bonjour, Ada!" || g.Language != "fr" {
		t.Fatalf("greet = %+v", g)
	}
	wantCode(t, h.call("greeter", "greet", map[string]any{"name": "Ada", "times": 9}, nil), abi.CodeBadRequest, "times must be 1 to 5")
	wantCode(t, h.call("greeter", "greet", map[string]any{"name": "Ada", "language": "xx"}, nil), abi.CodeBadRequest, `language "xx"`)

	items := []map[string]any{{"sku": "tea", "qty": 2, "price_cents": 350}, {"sku": "cake", "qty": 1, "price_cents": 425}}
	var created struct {
		ID         string `cbor:"id"`
		TotalCents int64  `cbor:"total_cents"`
		Message    string `cbor:"message"`
	}
	if err := h.call("orders", "create", map[string]any{"customer": "Ada", "items": items}, &created); err != nil {
		t.Fatal(err)
	}
	if created.TotalCents != 1125 || !strings.HasPrefix(created.Message, "Hello, Ada! Your order "+created.ID) || !strings.HasSuffix(created.Message, "11.25.") {
		t.Fatalf("create = %+v", created)
	}
	wantCode(t, h.call("orders", "create", map[string]any{"customer": "Ada", "items": []map[string]any{{"sku": "tea", "qty": 0}}}, nil),
		abi.CodeBadRequest, "items[0] (tea): qty must be 1 to 1000")
	wantCode(t, h.call("orders", "create", map[string]any{"customer": "Ada", "items": []any{map[string]any{"sku": "tea", "qty": "two"}}}, nil),
		abi.CodeBadRequest, "qty")

	var order struct {
		Customer string `cbor:"customer"`
		TraceID  string `cbor:"trace_id"`
	}
	if err := h.call("orders", "get", map[string]any{"id": created.ID}, &order); err != nil || order.Customer != "Ada" || order.TraceID != "trace-1" {
		t.Fatalf("get = %+v, %v", order, err)
	}
	wantCode(t, h.call("orders", "get", map[string]any{"id": "nope"}, nil), abi.CodeHandler, `no order "nope"`)

	var seen []struct {
		Topic   string         `cbor:"topic"`
		TraceID string         `cbor:"trace_id"`
		Event   map[string]any `cbor:"event"`
	}
	if err := h.call("audit", "seen", nil, &seen); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0].Topic != "order.created" || seen[0].TraceID != "trace-1" || seen[0].Event["id"] != created.ID {
		t.Fatalf("audit saw %+v", seen)
	}

	// With greeter gone, create fails as orders' own handler error naming the cause.
	h.mu.Lock()
	delete(h.services, "greeter")
	h.mu.Unlock()
	wantCode(t, h.call("orders", "create", map[string]any{"customer": "Bo", "items": items}, nil), abi.CodeHandler, "not_found")
}

// TestConformanceGuest runs every method of the conformance guest.
func TestConformanceGuest(t *testing.T) {
	wasm := buildGuests(t)["conformance"]
	h := newHarness(t, 512)
	g := h.start("conformance", wasm)

	t.Run("manifest", func(t *testing.T) {
		m := g.manifest
		if !m.Methods["hidden"].Hidden || !m.Methods["secure"].RequiresAuth || len(m.Subscriptions) != 1 || m.Subscriptions[0] != "conformance.#" {
			t.Fatalf("manifest %+v", m)
		}
		if p := m.Methods["fail_code"].Params; len(p) != 3 || p[0] != (abi.Param{Name: "code", Type: "string", Required: true, Description: "an abi error code, e.g. forbidden"}) {
			t.Fatalf("fail_code params %+v", p)
		}
	})
	t.Run("echo", func(t *testing.T) {
		params := mustCBOR(map[string]any{
			"uint": uint64(math.MaxUint64), "neg": int64(math.MinInt64), "zero": 0, "float": 1.5, "nan": math.NaN(),
			"true": true, "false": false, "null": nil, "bytes": []byte{0, 1, 2}, "text": "héllo",
			"list": []any{1, "two", []any{3.0}}, "map": map[string]any{"k": map[string]any{"deep": []any{}}},
			"time": time.Unix(1700000000, 0).UTC(), "big": abi.RawValue{0xc2, 0x49, 1, 0, 0, 0, 0, 0, 0, 0, 0},
		})
		rep, err := g.send(h.ctx, request("conformance", "echo", params))
		if err != nil || rep.Error != nil || !bytes.Equal(rep.Result, params) {
			t.Fatalf("echo = %x, %v, %v; want %x", rep.Result, rep.Error, err, params)
		}
	})
	t.Run("fail", func(t *testing.T) {
		wantCode(t, h.call("conformance", "fail", map[string]any{"message": "boom"}, nil), abi.CodeHandler, "boom")
		err := h.call("conformance", "fail_code", map[string]any{"code": "forbidden", "message": "no", "details": map[string]any{"why": "test"}}, nil)
		wantCode(t, err, abi.CodeForbidden, "no")
		if e := err.(*abi.Error); e.Details["why"] != "test" {
			t.Fatalf("details %+v", e.Details)
		}
	})
	t.Run("context", func(t *testing.T) {
		env := request("conformance", "context", nil)
		env.Context = map[string]any{"user": "ada", "roles": []any{"admin"}}
		env.Tenant, env.Deadline = "acme", 1900000000000
		rep, err := g.send(h.ctx, env)
		if err != nil || rep.Error != nil {
			t.Fatal(err, rep.Error)
		}
		var info struct {
			Context  map[string]any `cbor:"context"`
			TraceID  string         `cbor:"trace_id"`
			Tenant   string         `cbor:"tenant"`
			Deadline int64          `cbor:"deadline"`
			Method   string         `cbor:"method"`
		}
		if err := abi.Default.Unmarshal(rep.Result, &info); err != nil {
			t.Fatal(err)
		}
		if info.Context["user"] != "ada" || info.TraceID != "trace-1" || info.Tenant != "acme" || info.Deadline != 1900000000000 || info.Method != "context" {
			t.Fatalf("context = %+v", info)
		}
	})
	t.Run("call", func(t *testing.T) {
		h.onCall = func(req *abi.Envelope) *abi.Envelope {
			rep := req.Reply()
			if req.Service == "missing" {
				rep.Error = abi.Errorf(abi.CodeNotFound, "no service %q", req.Service)
				return rep
			}
			rep.Result = mustCBOR(map[string]any{"service": req.Service, "method": req.Method, "params": req.Params, "trace": req.TraceID})
			return rep
		}
		defer func() { h.onCall = nil }()
		var out map[string]any
		if err := h.call("conformance", "call", map[string]any{"service": "other", "method": "m", "params": map[string]any{"a": 1}}, &out); err != nil {
			t.Fatal(err)
		}
		if out["service"] != "other" || out["method"] != "m" || out["trace"] != "trace-1" {
			t.Fatalf("call = %+v", out)
		}
		wantCode(t, h.call("conformance", "call", map[string]any{"service": "missing", "method": "m"}, nil), abi.CodeNotFound, `no service "missing"`)
	})
	t.Run("publish and events", func(t *testing.T) {
		if err := h.call("conformance", "publish", map[string]any{"topic": "conformance.ping", "event": map[string]any{"n": 1}}, nil); err != nil {
			t.Fatal(err)
		}
		wantCode(t, h.call("conformance", "publish", map[string]any{"topic": "bad topic"}, nil), abi.CodeBadRequest, "not a valid topic")
		wantCode(t, h.call("conformance", "send", map[string]any{"service": "nowhere", "method": "m"}, nil), abi.CodeNotFound, "")
		// A failing event handler reports a handler error to the host.
		rep, err := g.send(h.ctx, &abi.Envelope{Kind: abi.KindEvent, Topic: "conformance.fail.now", Event: mustCBOR("x")})
		if err != nil || rep.Error == nil || rep.Error.Code != abi.CodeHandler {
			t.Fatalf("failing event: %+v, %v", rep, err)
		}
		rep, err = g.send(h.ctx, &abi.Envelope{Kind: abi.KindEvent, Topic: "other.topic", Event: mustCBOR("x")})
		if err != nil || rep.Error == nil || rep.Error.Code != abi.CodeMethodNotFound {
			t.Fatalf("unsubscribed event: %+v, %v", rep, err)
		}
		var seen []struct {
			Topic string       `cbor:"topic"`
			Event abi.RawValue `cbor:"event"`
		}
		if err := h.call("conformance", "events", nil, &seen); err != nil {
			t.Fatal(err)
		}
		if len(seen) != 2 || seen[0].Topic != "conformance.ping" || !bytes.Equal(seen[0].Event, mustCBOR(map[string]any{"n": 1})) || seen[1].Topic != "conformance.fail.now" {
			t.Fatalf("events = %+v", seen)
		}
	})
	t.Run("log", func(t *testing.T) {
		var n int
		if err := h.call("conformance", "log", map[string]any{"lines": []string{"one", "two"}, "level": 4}, &n); err != nil || n != 2 {
			t.Fatal(n, err)
		}
		if l := h.logged(); !strings.Contains(l, "4 one\n4 two") {
			t.Fatalf("logs %q", l)
		}
	})
	t.Run("big", func(t *testing.T) {
		var b []byte
		if err := h.call("conformance", "big", map[string]any{"n": 200_000}, &b); err != nil || len(b) != 200_000 || b[27] != 'b' {
			t.Fatal(len(b), err)
		}
		wantCode(t, h.call("conformance", "big", map[string]any{"n": 2 << 20}, nil), abi.CodeResourceExhausted, "over")
	})
	t.Run("sleep_ms", func(t *testing.T) {
		var ms int64
		start := time.Now()
		if err := h.call("conformance", "sleep_ms", map[string]any{"ms": 20}, &ms); err != nil || ms < 20 || time.Since(start) < 20*time.Millisecond {
			t.Fatal(ms, err)
		}
	})
	t.Run("alloc", func(t *testing.T) {
		var n int
		if err := h.call("conformance", "alloc", map[string]any{"mib": 4}, &n); err != nil || n != 4<<20 {
			t.Fatal(n, err)
		}
		// 64 MiB cannot fit under the 32 MiB limit: the guest traps.
		g2 := h.start("conformance", wasm)
		if _, err := g2.send(h.ctx, request("conformance", "alloc", map[string]any{"mib": 64})); err == nil {
			t.Fatal("64 MiB alloc under a 32 MiB limit did not trap")
		}
	})
	t.Run("panic traps", func(t *testing.T) {
		g2 := h.start("conformance", wasm)
		_, err := g2.send(h.ctx, request("conformance", "panic", map[string]any{"message": "on purpose"}))
		if err == nil || !strings.Contains(g2.stderr.String(), "conformance: on purpose") {
			t.Fatalf("panic: err %v, stderr %q", err, g2.stderr.String())
		}
	})
	t.Run("spin is interrupted", func(t *testing.T) {
		g2 := h.start("conformance", wasm)
		ctx, cancel := context.WithTimeout(h.ctx, 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		if _, err := g2.send(ctx, request("conformance", "spin", nil)); err == nil {
			t.Fatal("spin returned")
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("spin stopped after %v", d)
		}
	})
}

// BenchmarkWasmCall measures a trivial call (greeter.hello) through the ABI:
// alloc, write, handle, read, dealloc, with the envelope encoded once.
func BenchmarkWasmCall(b *testing.B) {
	wasm := buildGuests(b)["greeter"]
	h := newHarness(b, 0)
	g := h.start("greeter", wasm)
	frame, _ := abi.Default.EncodeEnvelope(request("greeter", "hello", map[string]any{"name": "Ada"}))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := g.raw(h.ctx, frame); err != nil {
			b.Fatal(err)
		}
	}
}
