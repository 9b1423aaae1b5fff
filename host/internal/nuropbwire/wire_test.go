package nuropbwire

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/client"
)

var now = time.UnixMilli(1_700_000_000_000)

func nmsg(body string, hdr map[string]any) broker.Message {
	h := map[string]any{HeaderProtocol: Protocol}
	for k, v := range hdr {
		if v == nil {
			delete(h, k)
		} else {
			h[k] = v
		}
	}
	return broker.Message{Body: []byte(body), ContentType: ContentType, CorrelationID: "c-1", ReplyTo: "amq.rabbitmq.reply-to.x", Headers: h}
}

func cborOf(t *testing.T, v any) abi.RawValue {
	t.Helper()
	b, err := abi.Default.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIs(t *testing.T) {
	for _, tc := range []struct {
		msg  broker.Message
		want bool
	}{
		{broker.Message{ContentType: broker.ContentTypeCBOR}, false},
		{broker.Message{}, false},
		{broker.Message{ContentType: "application/json"}, true},
		{broker.Message{ContentType: "Application/JSON; charset=utf-8"}, true},
		{broker.Message{ContentType: broker.ContentTypeCBOR, Headers: map[string]any{HeaderProtocol: "0.1.1"}}, true},
		{broker.Message{Headers: map[string]any{"other": "x"}}, false},
	} {
		if got := Is(tc.msg); got != tc.want {
			t.Errorf("Is(%+v) = %v", tc.msg, got)
		}
	}
}

func TestDecode(t *testing.T) {
	req := `{"tag":"request","correlation_id":"body-id","context":{"user_id":"u1","n":3},"trace_id":"t-1",` +
		`"service":"greeter","method":"hello","params":{"name":"Ada","times":2,"ratio":0.5}}`
	for _, tc := range []struct {
		name string
		msg  broker.Message
		want *abi.Envelope
		code abi.ErrorCode // expected error code; "" = success
		prot bool          // expect ErrProtocol
	}{
		{name: "request", msg: func() broker.Message { m := nmsg(req, nil); m.Expiration = 1500 * time.Millisecond; return m }(),
			want: &abi.Envelope{Kind: abi.KindRequest, ID: "c-1", TraceID: "t-1", Service: "greeter", Method: "hello",
				Params:   cborOf(t, map[string]any{"name": "Ada", "times": int64(2), "ratio": 0.5}),
				Context:  map[string]any{"user_id": "u1", "n": int64(3)},
				Deadline: now.Add(1500 * time.Millisecond).UnixMilli()}},
		{name: "body correlation id and header trace id when the properties lack them",
			msg: func() broker.Message {
				m := nmsg(`{"tag":"command","correlation_id":"b","trace_id":null,"service":"orders","method":"create","params":null}`,
					map[string]any{HeaderTraceID: []byte("h-trace")})
				m.CorrelationID = ""
				return m
			}(),
			want: &abi.Envelope{Kind: abi.KindCommand, ID: "b", TraceID: "h-trace", Service: "orders", Method: "create"}},
		{name: "event", msg: nmsg(`{"tag":"event","correlation_id":"e","context":{},"trace_id":"t","topic":"order.created","event":[1,"x"],"target":null}`, nil),
			want: &abi.Envelope{Kind: abi.KindEvent, ID: "c-1", TraceID: "t", Topic: "order.created", Event: cborOf(t, []any{int64(1), "x"}), Context: map[string]any{}}},
		{name: "old protocol", msg: nmsg(req, map[string]any{HeaderProtocol: "0.1.0"}), prot: true},
		{name: "no protocol header", msg: nmsg(req, map[string]any{HeaderProtocol: nil}), prot: true},
		{name: "encrypted", msg: nmsg(req, map[string]any{HeaderEncrypted: "yes"}), code: abi.CodeBadRequest},
		{name: "not json", msg: nmsg(`\xa1dkind`, nil), code: abi.CodeBadRequest},
		{name: "json array", msg: nmsg(`[1,2]`, nil), code: abi.CodeBadRequest},
		{name: "type header disagrees", msg: nmsg(req, map[string]any{HeaderType: "command"}), code: abi.CodeBadRequest},
		{name: "response on a service queue", msg: nmsg(`{"tag":"response","correlation_id":"x"}`, nil), code: abi.CodeBadRequest},
		{name: "unknown tag", msg: nmsg(`{"tag":"gossip"}`, nil), code: abi.CodeBadRequest},
		{name: "no method", msg: nmsg(`{"tag":"request","service":"greeter"}`, nil), code: abi.CodeBadRequest},
		{name: "positional params", msg: nmsg(`{"tag":"request","service":"greeter","method":"hello","params":["Ada"]}`, nil), code: abi.CodeBadRequest},
		{name: "context not an object", msg: nmsg(`{"tag":"request","service":"greeter","method":"hello","context":"x"}`, nil), code: abi.CodeBadRequest},
		{name: "event without topic", msg: nmsg(`{"tag":"event","event":1}`, nil), code: abi.CodeBadRequest},
		{name: "params too deep", msg: nmsg(`{"tag":"request","service":"s","method":"m","params":{"a":`+strings.Repeat("[", 40)+strings.Repeat("]", 40)+`}}`, nil), code: abi.CodeBadRequest},
		{name: "too big", msg: nmsg(`{"tag":"request","service":"s","method":"m","params":{"a":"`+strings.Repeat("x", 2<<20)+`"}}`, nil), code: abi.CodeResourceExhausted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := Decode(abi.Default, tc.msg, now)
			switch {
			case tc.prot:
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("got %v, want ErrProtocol", err)
				}
			case tc.code != "":
				if abi.CodeOf(err) != tc.code || errors.Is(err, ErrProtocol) {
					t.Fatalf("got %v, want %s", err, tc.code)
				}
			case err != nil:
				t.Fatal(err)
			case !sameEnvelope(t, env, tc.want):
				t.Fatalf("got  %+v\nwant %+v", env, tc.want)
			}
		})
	}
}

func decodeResponse(t *testing.T, m broker.Message) map[string]any {
	t.Helper()
	if m.ContentType != ContentType || m.Type != "response" || m.Headers[HeaderProtocol] != Protocol || m.Headers[HeaderType] != "response" {
		t.Fatalf("properties: %+v", m)
	}
	var out map[string]any
	if err := json.Unmarshal(m.Body, &out); err != nil {
		t.Fatalf("body %s: %v", m.Body, err)
	}
	for _, k := range []string{"tag", "correlation_id", "context", "trace_id", "result", "error", "warning", "reply_to"} {
		if _, ok := out[k]; !ok {
			t.Fatalf("response lacks %q: %s", k, m.Body)
		}
	}
	return out
}

func TestResponse(t *testing.T) {
	req := nmsg(`{"tag":"request","context":{"user":"ada"},"service":"greeter","method":"hello"}`, nil)
	big, _ := abi.Default.Marshal(strings.Repeat("x", 1<<20-100))
	for _, tc := range []struct {
		name  string
		req   broker.Message
		reply *abi.Envelope
		check func(t *testing.T, m broker.Message, r map[string]any)
	}{
		{"result", req, &abi.Envelope{Kind: abi.KindResponse, ID: "x", TraceID: "t-1", Result: cborOf(t, "Hello, Ada!")},
			func(t *testing.T, m broker.Message, r map[string]any) {
				want := map[string]any{"tag": "response", "correlation_id": "c-1", "context": map[string]any{"user": "ada"},
					"trace_id": "t-1", "result": "Hello, Ada!", "error": nil, "warning": nil, "reply_to": ""}
				if !reflect.DeepEqual(r, want) || m.CorrelationID != "c-1" || m.Headers[HeaderTraceID] != "t-1" {
					t.Fatalf("got %v %+v", r, m)
				}
			}},
		{"error", nmsg(`not json`, nil), &abi.Envelope{Kind: abi.KindResponse, Error: &abi.Error{Code: abi.CodeMethodNotFound, Message: "greeter has no method \"nope\"", Details: map[string]any{"b": []byte{1}}}},
			func(t *testing.T, m broker.Message, r map[string]any) {
				want := map[string]any{"error": "NuropbHandlingError", "description": `greeter has no method "nope"`, "code": "method_not_found", "details": map[string]any{"b": "AQ=="}}
				if !reflect.DeepEqual(r["error"], want) || r["result"] != nil || r["trace_id"] != nil || !reflect.DeepEqual(r["context"], map[string]any{}) {
					t.Fatalf("got %v", r)
				}
				if _, ok := m.Headers[HeaderTraceID]; ok {
					t.Fatal("empty trace id header sent")
				}
			}},
		{"too big", req, &abi.Envelope{Kind: abi.KindResponse, Service: "s", Method: "m", Result: big},
			func(t *testing.T, m broker.Message, r map[string]any) {
				if e, _ := r["error"].(map[string]any); e["code"] != "resource_exhausted" || len(m.Body) > 1<<20 {
					t.Fatalf("got %v (%d bytes)", r["error"], len(m.Body))
				}
			}},
		{"describe", req, &abi.Envelope{Kind: abi.KindResponse, Method: client.DescribeMethod, Result: cborOf(t, client.Description{
			Tenant: "default", Hash: "abc", File: "greeter.wasm", LoadedAt: now,
			Manifest: abi.Manifest{ABI: 1, Service: "greeter", Version: "1.2.0", Description: "Greets.", Methods: map[string]abi.Method{
				"hello": {Description: "Says hello.", Result: "string", Params: []abi.Param{{Name: "name", Type: "string", Required: true, Description: "who"}, {Name: "raw", Type: "bytes"}}}}}})},
			func(t *testing.T, m broker.Message, r map[string]any) {
				d, _ := json.Marshal(r["result"])
				want := `{"description":"Greets.","hash":"abc","loaded_at":"2023-11-14T22:13:20Z","methods":{"hello":{"description":"Says hello.","parameters":{"properties":{"name":{"description":"who","type":"string"},"raw":{"contentEncoding":"base64","type":"string"}},"required":["name"],"type":"object"},"requires_auth":false,"requires_encryption":false,"result":{"type":"string"}}},"service_name":"greeter","service_version":"1.2.0","tenant":"default","warnings":[]}`
				if string(d) != want {
					t.Fatalf("describe:\n got %s\nwant %s", d, want)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Response(abi.Default, tc.req, tc.reply)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, m, decodeResponse(t, m))
		})
	}
}

func TestErrorNames(t *testing.T) {
	for _, c := range []abi.ErrorCode{abi.CodeNotFound, abi.CodeMethodNotFound, abi.CodeBadRequest, abi.CodeTimeout, abi.CodeTrapped,
		abi.CodeResourceExhausted, abi.CodeForbidden, abi.CodeUnavailable, abi.CodeInternal, abi.CodeHandler} {
		if n := ErrorName(c); !strings.HasPrefix(n, "Nuropb") {
			t.Errorf("%s -> %q", c, n)
		}
	}
	if ErrorName("made_up") != "NuropbException" || ToError(nil) != nil {
		t.Fatal("fallbacks")
	}
}

// FuzzDecode: no input panics, a success is a valid envelope that survives
// the CBOR codec, and every failure is typed.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"tag":"request","correlation_id":"a","context":{},"trace_id":null,"service":"s","method":"m","params":{"a":1}}`), "0.1.1")
	f.Add([]byte(`{"tag":"event","topic":"a.b","event":{"x":[1,2.5,null,true]}}`), "0.1.1")
	f.Add([]byte(`{"tag":"command","service":"s","method":"m","params":{"n":123456789012345678901234567890}}`), "0.1.1")
	f.Add([]byte(`{"tag":"request"`), "0.1.0")
	f.Fuzz(func(t *testing.T, body []byte, protocol string) {
		msg := broker.Message{Body: body, ContentType: ContentType, CorrelationID: "c", Expiration: time.Second,
			Headers: map[string]any{HeaderProtocol: protocol}}
		env, err := Decode(abi.Default, msg, now)
		if err != nil {
			var ae *abi.Error
			if !errors.Is(err, ErrProtocol) && !errors.As(err, &ae) {
				t.Fatalf("untyped error %T: %v", err, err)
			}
			return
		}
		if err := env.Validate(); err != nil {
			t.Fatal(err)
		}
		b, err := abi.Default.EncodeEnvelope(env)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := abi.Default.DecodeEnvelope(b); err != nil {
			t.Fatalf("decoded envelope does not round-trip: %v", err)
		}
		if _, err := Response(abi.Default, msg, env.Reply()); err != nil {
			t.Fatal(err)
		}
	})
}

// sameEnvelope compares envelopes with their CBOR values decoded: JSON
// objects have no key order, so the CBOR bytes of a params map may differ
// from run to run while meaning the same.
func sameEnvelope(t *testing.T, got, want *abi.Envelope) bool {
	t.Helper()
	if got == nil || want == nil {
		return got == want
	}
	g, w := *got, *want
	for _, pair := range [][2]*abi.RawValue{{&g.Params, &w.Params}, {&g.Event, &w.Event}, {&g.Result, &w.Result}} {
		if !reflect.DeepEqual(decodeAny(t, *pair[0]), decodeAny(t, *pair[1])) {
			return false
		}
		*pair[0], *pair[1] = nil, nil
	}
	return reflect.DeepEqual(g, w)
}

func decodeAny(t *testing.T, raw abi.RawValue) any {
	t.Helper()
	if len(raw) == 0 {
		return nil
	}
	var v any
	if err := abi.Default.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decoding %x: %v", raw, err)
	}
	return v
}
