package abi

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	params, err := Default.JSONToCBOR([]byte(`{"name":"Ada","n":3}`))
	if err != nil {
		t.Fatal(err)
	}
	in := &Envelope{Kind: KindRequest, ID: "c1", TraceID: "t1", Service: "greeter", Method: "hello",
		Params: params, Context: map[string]any{"token": "x"}, Deadline: 1700000000123, Tenant: "acme", Depth: 2}
	b, err := Default.EncodeEnvelope(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Default.DecodeEnvelope(b)
	if err != nil {
		t.Fatal(err)
	}
	if out.Service != "greeter" || out.Method != "hello" || out.Deadline != in.Deadline || out.Tenant != "acme" ||
		out.Depth != 2 || out.Context["token"] != "x" || !bytes.Equal(out.Params, params) {
		t.Fatalf("round trip changed the envelope: %+v", out)
	}
}

func TestDecodeRejects(t *testing.T) {
	small := MustCodec(Limits{MaxFrame: 64, MaxDepth: 4, MaxElements: 20})
	deep := bytes.Repeat([]byte{0x81}, 6) // [[[[[[1]]]]]]
	deep = append(deep, 0x01)
	tests := []struct {
		name string
		in   []byte
		code ErrorCode
		want string
	}{
		{"empty", nil, CodeBadRequest, "empty"},
		{"oversized frame", make([]byte, 65), CodeResourceExhausted, "over the 64 byte limit"},
		{"not cbor", []byte{0xff, 0x00}, CodeBadRequest, "malformed"},
		{"duplicate key", []byte{0xa2, 0x64, 'k', 'i', 'n', 'd', 0x61, 'x', 0x64, 'k', 'i', 'n', 'd', 0x61, 'y'}, CodeBadRequest, "duplicate"},
		{"indefinite map", []byte{0xbf, 0xff}, CodeBadRequest, "indefinite"},
		{"truncated", []byte{0xa1, 0x64, 'k', 'i'}, CodeBadRequest, "malformed"},
		{"too deep", deep, CodeBadRequest, "depth"},
		{"too many elements", append([]byte{0x98, 21}, bytes.Repeat([]byte{0x01}, 21)...), CodeBadRequest, "exceeded max"},
		{"trailing bytes", []byte{0xa0, 0x00}, CodeBadRequest, "malformed"},
		{"invalid utf-8", []byte{0x62, 0xff, 0xfe}, CodeBadRequest, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v any
			err := small.Unmarshal(tt.in, &v)
			var e *Error
			if !errors.As(err, &e) || e.Code != tt.code || !strings.Contains(e.Message, tt.want) {
				t.Fatalf("got %v, want %s containing %q", err, tt.code, tt.want)
			}
		})
	}
}

func TestEnvelopeValidate(t *testing.T) {
	tests := []struct {
		env Envelope
		ok  bool
	}{
		{Envelope{Kind: KindRequest, Service: "a", Method: "b"}, true},
		{Envelope{Kind: KindRequest, Service: "a"}, false},
		{Envelope{Kind: KindCommand, Method: "b"}, false},
		{Envelope{Kind: KindEvent, Topic: "order.created"}, true},
		{Envelope{Kind: KindEvent}, false},
		{Envelope{Kind: KindResponse}, true},
		{Envelope{Kind: "gossip"}, false},
	}
	for _, tt := range tests {
		if err := tt.env.Validate(); (err == nil) != tt.ok {
			t.Errorf("%+v: Validate() = %v, want ok=%v", tt.env, err, tt.ok)
		}
	}
}

func TestDeadline(t *testing.T) {
	var e Envelope
	if _, ok := e.DeadlineTime(); ok {
		t.Fatal("zero deadline reported as set")
	}
	at := time.UnixMilli(1700000000000).Add(300 * time.Microsecond)
	e.SetDeadline(at)
	got, ok := e.DeadlineTime()
	if !ok || got.Before(at) || got.Sub(at) >= time.Millisecond {
		t.Fatalf("SetDeadline(%v) stored %v", at, got)
	}
}

func TestManifestValidate(t *testing.T) {
	good := Manifest{ABI: Version, Service: "greeter", Version: "1.0.0", Methods: map[string]Method{"hello": {}},
		Subscriptions: []string{"order.*", "#", "a.#.b"}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(m *Manifest){
		func(m *Manifest) { m.ABI = 2 },
		func(m *Manifest) { m.Service = "Greeter" },
		func(m *Manifest) { m.Service = "" },
		func(m *Manifest) { m.Version = "" },
		func(m *Manifest) { m.Methods = nil; m.Subscriptions = nil },
		func(m *Manifest) { m.Methods = map[string]Method{"bad name": {}} },
		func(m *Manifest) { m.Subscriptions = []string{"order..x"} },
		func(m *Manifest) { m.Subscriptions = []string{"order.*x"} },
	}
	for i, mutate := range bad {
		m := good
		m.Methods = map[string]Method{"hello": {}}
		mutate(&m)
		if err := m.Validate(); CodeOf(err) != CodeBadRequest {
			t.Errorf("case %d: Validate() = %v, want bad_request", i, err)
		}
	}
}

func TestJSONConversion(t *testing.T) {
	tests := []struct{ in, out string }{
		{`{"a":1,"b":[true,null,"x"],"c":1.5}`, `{"a":1,"b":[true,null,"x"],"c":1.5}`},
		{`123456789012345678901234567890`, `123456789012345678901234567890`},
		{`-5`, `-5`},
		{`"text"`, `"text"`},
	}
	for _, tt := range tests {
		raw, err := Default.JSONToCBOR([]byte(tt.in))
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		out, err := Default.CBORToJSON(raw)
		if err != nil || string(out) != tt.out {
			t.Errorf("%s -> %s (%v), want %s", tt.in, out, err, tt.out)
		}
	}
	// Integers must arrive as CBOR integers (major type 0), not floats,
	// so typed guest params decode.
	raw, _ := Default.JSONToCBOR([]byte(`7`))
	if raw[0] != 0x07 {
		t.Fatalf("7 encoded as % x, want an unsigned integer", raw)
	}
	for _, bad := range []string{`{"a":`, `{} {}`, `[1,]`} {
		if _, err := Default.JSONToCBOR([]byte(bad)); CodeOf(err) != CodeBadRequest {
			t.Errorf("%s: got %v, want bad_request", bad, err)
		}
	}
	b, _ := Default.Marshal([]byte{1, 2, 3})
	if out, _ := Default.CBORToJSON(b); string(out) != `"AQID"` {
		t.Errorf("bytes -> %s, want base64", out)
	}
}

func TestErrors(t *testing.T) {
	e := Errorf(CodeTimeout, "late")
	if CodeOf(e) != CodeTimeout || !errors.Is(e, &Error{Code: CodeTimeout}) || errors.Is(e, &Error{Code: CodeInternal}) {
		t.Fatal("code matching broken")
	}
	for _, c := range []ErrorCode{CodeNotFound, CodeForbidden, CodeHandler} {
		if got := CodeOf(SendError(SendStatus(&Error{Code: c}))); got != c {
			t.Errorf("send status round trip of %s gave %s", c, got)
		}
	}
	if SendStatus(nil) != 0 || SendError(0) != nil {
		t.Fatal("success must be 0")
	}
	if p, l := UnpackPtrLen(PackPtrLen(0xdeadbeef, 42)); p != 0xdeadbeef || l != 42 {
		t.Fatal("ptr/len packing")
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	seed, _ := Default.EncodeEnvelope(&Envelope{Kind: KindRequest, Service: "a", Method: "b", ID: "1"})
	f.Add(seed)
	f.Add([]byte{0xa0})
	f.Add([]byte{0xbf, 0xff})
	codec := MustCodec(Limits{MaxFrame: 4096, MaxDepth: 8, MaxElements: 64})
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := codec.DecodeEnvelope(b)
		if err != nil {
			if CodeOf(err) != CodeBadRequest && CodeOf(err) != CodeResourceExhausted {
				t.Fatalf("untyped decode error: %v", err)
			}
			return
		}
		if _, err := codec.EncodeEnvelope(env); err != nil && CodeOf(err) != CodeResourceExhausted {
			t.Fatalf("decoded envelope does not re-encode: %v", err)
		}
	})
}

func FuzzJSONToCBOR(f *testing.F) {
	f.Add([]byte(`{"a":[1,2,{"b":null}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		raw, err := Default.JSONToCBOR(b)
		if err != nil || len(raw) == 0 {
			return
		}
		if _, err := Default.CBORToJSON(raw); err != nil {
			t.Fatalf("CBOR made from JSON does not convert back: %v", err)
		}
	})
}
