package nuropb

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nuropb/nuropb/abi"
)

// fakeHost records what a guest sends and answers calls with onCall.
type fakeHost struct {
	logs   []string
	calls  []*abi.Envelope
	sent   []*abi.Envelope
	onCall func(req *abi.Envelope) *abi.Envelope
	status int32
}

func (f *fakeHost) Log(level abi.LogLevel, msg string) {
	f.logs = append(f.logs, fmt.Sprintf("%d %s", level, msg))
}

func (f *fakeHost) Call(req []byte) []byte {
	env, err := abi.Default.DecodeEnvelope(req)
	if err != nil {
		panic(err)
	}
	f.calls = append(f.calls, env)
	b, err := abi.Default.EncodeEnvelope(f.onCall(env))
	if err != nil {
		panic(err)
	}
	return b
}

func (f *fakeHost) Send(msg []byte) int32 {
	env, err := abi.Default.DecodeEnvelope(msg)
	if err != nil {
		panic(err)
	}
	f.sent = append(f.sent, env)
	return f.status
}

func mustCBOR(v any) abi.RawValue {
	b, err := abi.Default.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

type helloParams struct {
	Name string `cbor:"name" nuropb:"required" doc:"who to greet"`
}

type line struct {
	SKU string `cbor:"sku"`
	Qty int    `cbor:"qty"`
}

type orderParams struct {
	Items  []line         `cbor:"items" nuropb:"required"`
	Note   *string        `cbor:"note"`
	Tags   map[string]int `cbor:"tags"`
	Rate   float64        `cbor:"rate"`
	Blob   []byte         `cbor:"blob"`
	Any    any            `cbor:"any"`
	Ignore string         `cbor:"-"`
	embedded
}

type embedded struct {
	Flag bool `json:"flag"`
}

func (p orderParams) Validate() error {
	if len(p.Items) == 0 {
		return errors.New("an order needs items")
	}
	return nil
}

func testService() *Service {
	s := NewService("greeter", "1.2.0", "Greets people.", Calls("other"), Publishes("greeted"))
	Method(s, "hello", "Says hello.", func(ctx *Context, p helloParams) (string, error) {
		return "Hello, " + p.Name + "!", nil
	})
	Method(s, "order", "Takes an order.", func(ctx *Context, p orderParams) (int, error) {
		n := 0
		for _, l := range p.Items {
			n += l.Qty
		}
		return n, nil
	}, RequiresAuth())
	Method(s, "fail", "", func(ctx *Context, p NoParams) (NoParams, error) {
		return p, errors.New("it broke")
	}, Hidden())
	Method(s, "coded", "", func(ctx *Context, p map[string]any) (any, error) {
		e := &abi.Error{Code: abi.ErrorCode(p["code"].(string)), Message: "coded"}
		if p["wrap"] == true {
			return nil, fmt.Errorf("wrapped: %w", e)
		}
		return nil, e
	})
	Method(s, "panic", "", func(ctx *Context, p NoParams) (NoParams, error) { panic("on purpose") })
	Method(s, "raw", "", func(ctx *Context, p abi.RawValue) (abi.RawValue, error) { return p, nil })
	Method(s, "call", "", func(ctx *Context, p NoParams) (string, error) {
		var out string
		err := ctx.Call("other", "m", map[string]any{"x": 1}, &out)
		return out, err
	})
	Method(s, "publish", "", func(ctx *Context, p NoParams) (bool, error) {
		return true, ctx.Publish("greeted", map[string]any{"who": "Ada"})
	})
	Method(s, "send", "", func(ctx *Context, p NoParams) (bool, error) {
		return true, ctx.Send("other", "cmd", nil)
	})
	Method(s, "claims", "", func(ctx *Context, p NoParams) (map[string]any, error) {
		ctx.Logf(LevelWarn, "tenant %s", ctx.Tenant())
		return ctx.Claims(), nil
	})
	s.Subscribe("order.*", func(ctx *Context, ev Event) error {
		var v string
		if err := ev.Decode(&v); err != nil {
			return err
		}
		if v == "bad" {
			return errors.New("bad event")
		}
		return nil
	})
	return s
}

func newTestInstance(t *testing.T) (*instance, *fakeHost) {
	t.Helper()
	f := &fakeHost{}
	in, err := newInstance(testService(), f)
	if err != nil {
		t.Fatal(err)
	}
	return in, f
}

func roundTrip(t *testing.T, in *instance, env *abi.Envelope) *abi.Envelope {
	t.Helper()
	frame, err := abi.Default.EncodeEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := abi.Default.DecodeEnvelope(in.handle(frame))
	if err != nil {
		t.Fatalf("reply does not decode: %v", err)
	}
	return rep
}

func TestDispatch(t *testing.T) {
	in, _ := newTestInstance(t)
	tests := []struct {
		method string
		params any
		result any    // decoded result, when no error
		code   string // expected error code
		msg    string // substring of the error message
	}{
		{"hello", map[string]any{"name": "Ada"}, "Hello, Ada!", "", ""},
		{"hello", map[string]any{"Name": "Ada"}, nil, "bad_request", `unknown param "Name"`}, // keys match exactly
		{"hello", nil, nil, "bad_request", `missing required param "name"`},
		{"hello", map[string]any{"name": nil}, nil, "bad_request", `missing required param "name"`},
		{"hello", map[string]any{"name": 1}, nil, "bad_request", `param "name": want string, got int`},
		{"hello", map[string]any{"name": "x", "age": 3}, nil, "bad_request", `unknown param "age" (known: name)`},
		{"hello", []any{"Ada"}, nil, "bad_request", "params must be a map"},
		{"nope", nil, nil, "method_not_found", `greeter has no method "nope"`},
		{"order", map[string]any{"items": []any{map[string]any{"sku": "a", "qty": 2}, map[string]any{"sku": "b", "qty": 3}}, "flag": true, "rate": 2}, int64(5), "", ""},
		{"order", map[string]any{"items": []any{}}, nil, "bad_request", "an order needs items"},
		{"order", map[string]any{"items": []any{map[string]any{"sku": "a", "qty": "two"}}}, nil, "bad_request", "param items[0].qty: want int, got string"},
		{"order", map[string]any{"items": []any{}, "tags": map[string]any{"x": "y"}}, nil, "bad_request", `param tags["x"]: want int, got string`},
		{"order", map[string]any{"items": []any{}, "rate": "fast"}, nil, "bad_request", `param "rate": want float, got string`},
		{"order", map[string]any{"items": []any{}, "Ignore": "x"}, nil, "bad_request", `unknown param "Ignore"`},
		{"fail", nil, nil, "handler", "it broke"},
		{"fail", map[string]any{"x": 1}, nil, "bad_request", "the method takes no params"},
		{"coded", map[string]any{"code": "forbidden"}, nil, "forbidden", "coded"},
		{"coded", map[string]any{"code": "timeout", "wrap": true}, nil, "timeout", "wrapped: timeout: coded"},
		{"raw", map[string]any{"a": []any{1, "b"}}, map[string]any{"a": []any{int64(1), "b"}}, "", ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %v", tt.method, tt.params), func(t *testing.T) {
			env := &abi.Envelope{Kind: abi.KindRequest, ID: "1", TraceID: "tr", Service: "greeter", Method: tt.method}
			if tt.params != nil {
				env.Params = mustCBOR(tt.params)
			}
			rep := roundTrip(t, in, env)
			if rep.ID != "1" || rep.TraceID != "tr" || rep.Kind != abi.KindResponse {
				t.Fatalf("reply envelope %+v", rep)
			}
			if tt.code != "" {
				if rep.Error == nil || string(rep.Error.Code) != tt.code || !strings.Contains(rep.Error.Message, tt.msg) {
					t.Fatalf("error %+v, want %s %q", rep.Error, tt.code, tt.msg)
				}
				return
			}
			if rep.Error != nil {
				t.Fatalf("error %v", rep.Error)
			}
			var got any
			if err := abi.Default.Unmarshal(rep.Result, &got); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.result) {
				t.Fatalf("result %#v, want %#v", got, tt.result)
			}
		})
	}
}

func TestDispatchRefusals(t *testing.T) {
	in, _ := newTestInstance(t)
	for name, frame := range map[string][]byte{
		"empty":        nil,
		"not cbor":     {0xff},
		"not a map":    {0x01},
		"trailing":     append(mustCBOR(map[string]any{"kind": "request", "service": "s", "method": "hello"}), 0),
		"no method":    mustCBOR(map[string]any{"kind": "request", "service": "s"}),
		"unknown kind": mustCBOR(map[string]any{"kind": "gossip"}),
		"response":     mustCBOR(map[string]any{"kind": "response"}),
		"bad deadline": mustCBOR(map[string]any{"kind": "request", "service": "s", "method": "hello", "deadline": "soon"}),
	} {
		rep, err := abi.Default.DecodeEnvelope(in.handle(frame))
		if err != nil || rep.Error == nil || rep.Error.Code != abi.CodeBadRequest {
			t.Errorf("%s: reply %+v, %v", name, rep, err)
		}
	}
}

func TestPanicIsNotRecovered(t *testing.T) {
	in, _ := newTestInstance(t)
	defer func() {
		if r := recover(); r != "on purpose" {
			t.Fatalf("recovered %v", r)
		}
	}()
	in.handle(mustCBOR(&abi.Envelope{Kind: abi.KindRequest, Service: "greeter", Method: "panic"}))
	t.Fatal("the panic did not propagate")
}

func TestEvents(t *testing.T) {
	in, _ := newTestInstance(t)
	ev := func(topic string, payload any) *abi.Error {
		return roundTrip(t, in, &abi.Envelope{Kind: abi.KindEvent, Topic: topic, Event: mustCBOR(payload)}).Error
	}
	if e := ev("order.created", "ok"); e != nil {
		t.Fatal(e)
	}
	if e := ev("order.created", "bad"); e == nil || e.Code != abi.CodeHandler {
		t.Fatalf("failing handler: %v", e)
	}
	if e := ev("order.created", 3); e == nil || e.Code != abi.CodeBadRequest {
		t.Fatalf("undecodable event: %v", e)
	}
	if e := ev("order.created.late", "ok"); e == nil || e.Code != abi.CodeMethodNotFound {
		t.Fatalf("unmatched topic: %v", e)
	}
}

func TestContextReachesTheHost(t *testing.T) {
	in, f := newTestInstance(t)
	req := &abi.Envelope{Kind: abi.KindRequest, TraceID: "tr", Service: "greeter", Method: "call",
		Context: map[string]any{"user": "ada"}, Deadline: 1900000000000, Tenant: "acme"}

	f.onCall = func(req *abi.Envelope) *abi.Envelope {
		rep := req.Reply()
		rep.Result = mustCBOR("pong")
		return rep
	}
	rep := roundTrip(t, in, req)
	if rep.Error != nil || string(rep.Result) != string(mustCBOR("pong")) {
		t.Fatalf("call: %+v", rep)
	}
	c := f.calls[0]
	if c.Kind != abi.KindRequest || c.Service != "other" || c.Method != "m" || c.TraceID != "tr" ||
		c.Deadline != 1900000000000 || c.Context["user"] != "ada" || string(c.Params) != string(mustCBOR(map[string]any{"x": 1})) {
		t.Fatalf("request sent %+v", c)
	}

	f.onCall = func(req *abi.Envelope) *abi.Envelope {
		rep := req.Reply()
		rep.Error = abi.Errorf(abi.CodeForbidden, "not you")
		return rep
	}
	if rep := roundTrip(t, in, req); rep.Error == nil || rep.Error.Code != abi.CodeForbidden || rep.Error.Message != "not you" {
		t.Fatalf("call error: %+v", rep.Error)
	}

	f.onCall = func(req *abi.Envelope) *abi.Envelope {
		rep := req.Reply()
		rep.Result = mustCBOR(42)
		return rep
	}
	if rep := roundTrip(t, in, req); rep.Error == nil || rep.Error.Code != abi.CodeBadRequest || !strings.Contains(rep.Error.Message, "result does not decode") {
		t.Fatalf("result type mismatch: %+v", rep.Error)
	}

	req.Method = "publish"
	if rep := roundTrip(t, in, req); rep.Error != nil {
		t.Fatal(rep.Error)
	}
	if e := f.sent[0]; e.Kind != abi.KindEvent || e.Topic != "greeted" || e.TraceID != "tr" || string(e.Event) != string(mustCBOR(map[string]any{"who": "Ada"})) {
		t.Fatalf("published %+v", e)
	}

	req.Method = "send"
	f.status = abi.SendStatus(&abi.Error{Code: abi.CodeNotFound})
	if rep := roundTrip(t, in, req); rep.Error == nil || rep.Error.Code != abi.CodeNotFound {
		t.Fatalf("send refused: %+v", rep.Error)
	}
	if e := f.sent[1]; e.Kind != abi.KindCommand || e.Service != "other" || e.Method != "cmd" {
		t.Fatalf("sent %+v", e)
	}

	req.Method = "claims"
	rep = roundTrip(t, in, req)
	var claims map[string]any
	if err := abi.Default.Unmarshal(rep.Result, &claims); err != nil || claims["user"] != "ada" {
		t.Fatalf("claims %v, %v", claims, err)
	}
	if len(f.logs) != 1 || f.logs[0] != "4 tenant acme" {
		t.Fatalf("logs %q", f.logs)
	}
}

func TestManifest(t *testing.T) {
	in, _ := newTestInstance(t)
	m, err := abi.Default.DecodeManifest(in.manifest)
	if err != nil {
		t.Fatal(err)
	}
	if m.ABI != 1 || m.Service != "greeter" || m.Version != "1.2.0" || m.Description != "Greets people." ||
		fmt.Sprint(m.Subscriptions) != "[order.*]" || fmt.Sprint(m.Requires) != "{[other] [greeted]}" {
		t.Fatalf("manifest %+v", m)
	}
	hello := m.Methods["hello"]
	if hello.Description != "Says hello." || hello.Result != "string" ||
		fmt.Sprint(hello.Params) != "[{name string true who to greet}]" {
		t.Fatalf("hello %+v", hello)
	}
	order := m.Methods["order"]
	if !order.RequiresAuth || order.Hidden || order.Result != "int" ||
		fmt.Sprint(order.Params) != "[{items list true } {note string false } {tags map false } {rate float false } {blob bytes false } {any any false } {flag bool false }]" {
		t.Fatalf("order %+v", order)
	}
	if !m.Methods["fail"].Hidden || m.Methods["fail"].Params != nil {
		t.Fatalf("fail %+v", m.Methods["fail"])
	}
}

func TestRegistrationMisuse(t *testing.T) {
	panics := func(name string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s: no panic", name)
			}
		}()
		f()
	}
	s := NewService("svc", "1", "")
	Method(s, "a", "", func(*Context, NoParams) (int, error) { return 0, nil })
	panics("duplicate", func() { Method(s, "a", "", func(*Context, NoParams) (int, error) { return 0, nil }) })
	panics("params type", func() { Method(s, "b", "", func(*Context, int) (int, error) { return 0, nil }) })
	panics("map keys", func() { Method(s, "c", "", func(*Context, map[int]any) (int, error) { return 0, nil }) })
	panics("tag option", func() {
		Method(s, "d", "", func(*Context, struct {
			X int `nuropb:"requried"`
		}) (int, error) {
			return 0, nil
		})
	})
	panics("pattern", func() { s.Subscribe("a..b", func(*Context, Event) error { return nil }) })
	if _, err := newInstance(NewService("Bad Name", "1", ""), &fakeHost{}); err == nil {
		t.Error("invalid service name registered")
	}
	if _, err := newInstance(NewService("empty", "1", ""), &fakeHost{}); err == nil {
		t.Error("service without methods registered")
	}
	if _, err := newInstance(s, &fakeHost{}); err != nil {
		t.Fatal(err)
	}
	panics("after register", func() { Method(s, "e", "", func(*Context, NoParams) (int, error) { return 0, nil }) })
}

func TestTopicMatches(t *testing.T) {
	for _, tt := range []struct {
		pattern, topic string
		want           bool
	}{
		{"order.created", "order.created", true},
		{"order.created", "order.updated", false},
		{"order.*", "order.created", true},
		{"order.*", "order", false},
		{"order.*", "order.created.eu", false},
		{"order.#", "order", true},
		{"order.#", "order.created.eu", true},
		{"#", "anything.at.all", true},
		{"#.eu", "order.created.eu", true},
		{"#.eu", "eu", true},
		{"#.eu", "order.eu.created", false},
		{"*.created.#", "order.created", true},
		{"a.#.z", "a.b.c.z", true},
		{"a.#.z", "a.z", true},
		{"a.#.z", "a.b.c", false},
		{"a.#.#.z", "a.z", true},
		{"a.*.z", "a.z", false},
	} {
		if got := topicMatches(tt.pattern, tt.topic); got != tt.want {
			t.Errorf("topicMatches(%q, %q) = %v", tt.pattern, tt.topic, got)
		}
	}
}

func TestAllocator(t *testing.T) {
	var a allocator
	b1 := a.alloc(10)
	b2 := a.alloc(5000)
	if v, ok := a.view(base(b1)+2, 8); !ok || &v[0] != &b1[2] {
		t.Fatal("view inside the first buffer")
	}
	if _, ok := a.view(base(b1), cap(b1)+1); ok {
		t.Fatal("view past a buffer's end")
	}
	if _, ok := a.view(base(b2)+uintptr(cap(b2))+100, 1); ok && cap(b1) < 5000 {
		t.Fatal("view outside every buffer")
	}
	a.free(base(b1))
	a.free(base(b1)) // twice: ignored
	if _, ok := a.view(base(b1), 1); ok {
		t.Fatal("view of a freed buffer")
	}
	b3 := a.alloc(100)
	if base(b3) != base(b1) {
		t.Fatal("a freed buffer was not reused")
	}
	if len(a.live) != 2 {
		t.Fatalf("%d live buffers", len(a.live))
	}
}

// TestAllocsPerCall keeps the trivial call path from regressing into
// allocating: the params struct, its string, and the context's boxing.
func TestAllocsPerCall(t *testing.T) {
	in, _ := newTestInstance(t)
	frame := mustCBOR(&abi.Envelope{Kind: abi.KindRequest, ID: "1", TraceID: "t", Service: "greeter", Method: "hello", Params: mustCBOR(map[string]any{"name": "Ada"})})
	in.handle(frame)
	if n := testing.AllocsPerRun(200, func() { in.handle(frame) }); n > 4 {
		t.Fatalf("%v allocations per call", n)
	}
}

func BenchmarkHandle(b *testing.B) {
	f := &fakeHost{}
	in, err := newInstance(testService(), f)
	if err != nil {
		b.Fatal(err)
	}
	frame := mustCBOR(&abi.Envelope{Kind: abi.KindRequest, ID: "1", TraceID: "t", Service: "greeter", Method: "hello", Params: mustCBOR(map[string]any{"name": "Ada"})})
	b.ReportAllocs()
	for b.Loop() {
		in.handle(frame)
	}
}
