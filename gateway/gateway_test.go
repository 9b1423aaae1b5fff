package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/broker/memory"
	"github.com/nuropb/nuropb/client"
	"github.com/nuropb/nuropb/gateway"
)

// responder answers requests on the real embedded broker the way a host
// would, so the gateway is tested against real routing, not a mock.
type responder struct {
	mu     sync.Mutex
	seen   []*abi.Envelope
	events []*abi.Envelope
}

func (r *responder) serve(t *testing.T, b broker.Broker, route broker.Route, topics ...string) {
	t.Helper()
	spec := broker.ServiceSpec{Route: route, Prefetch: 8}
	for _, p := range topics {
		spec.Topics = append(spec.Topics, broker.TopicBinding{Tenant: route.Tenant, Pattern: p})
	}
	c, err := b.Serve(context.Background(), spec, func(ctx context.Context, d broker.Delivery) {
		env, err := abi.Default.DecodeEnvelope(d.Message().Body)
		if err != nil {
			_ = d.Reject(false)
			return
		}
		r.mu.Lock()
		if env.Kind == abi.KindEvent {
			r.events = append(r.events, env)
		} else {
			r.seen = append(r.seen, env)
		}
		r.mu.Unlock()
		if env.Kind == abi.KindRequest {
			reply := env.Reply()
			switch env.Method {
			case "echo":
				reply.Result = env.Params
			case "boom":
				reply.Error = abi.Errorf(abi.CodeHandler, "boom")
			case "slow":
				time.Sleep(300 * time.Millisecond)
				reply.Result, _ = abi.Default.Marshal("late")
			case "describe", client.DescribeMethod:
				reply.Result, _ = abi.Default.Marshal(client.Description{Tenant: route.Tenant,
					Manifest: abi.Manifest{ABI: 1, Service: route.Service, Version: "9.9.9"}})
			}
			body, _ := abi.Default.EncodeEnvelope(reply)
			_ = b.Reply(ctx, d.Message().ReplyTo, broker.Message{Body: body, CorrelationID: d.Message().CorrelationID})
		}
		_ = d.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
}

func newServer(t *testing.T) (*httptest.Server, *responder) {
	t.Helper()
	b, err := memory.New(memory.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	r := &responder{}
	r.serve(t, b, broker.Route{Tenant: "default", Service: "svc"}, "order.*")
	r.serve(t, b, broker.Route{Tenant: "acme", Service: "svc"})
	gw, err := gateway.New(gateway.Config{Client: client.New(b)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return srv, r
}

func do(t *testing.T, method, url, body string, header ...string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), resp.Header
}

func errorCode(t *testing.T, body string) abi.ErrorCode {
	t.Helper()
	var eb gateway.ErrorBody
	if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Error == nil {
		t.Fatalf("body %q is not an error body", body)
	}
	return eb.Error.Code
}

func TestCall(t *testing.T) {
	srv, r := newServer(t)
	status, body, hdr := do(t, "POST", srv.URL+"/v1/call/svc/echo", `{"name":"Ada","n":2}`,
		"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "Authorization", "Bearer tok")
	if status != 200 || body != `{"n":2,"name":"Ada"}` {
		t.Fatalf("got %d %s", status, body)
	}
	if hdr.Get("X-Trace-Id") != "0af7651916cd43dd8448eb211c80319c" {
		t.Fatalf("trace id not taken from traceparent: %q", hdr.Get("X-Trace-Id"))
	}
	r.mu.Lock()
	env := r.seen[len(r.seen)-1]
	r.mu.Unlock()
	if env.Context["token"] != "tok" || env.TraceID != "0af7651916cd43dd8448eb211c80319c" || env.Deadline == 0 {
		t.Fatalf("envelope lacks token, trace id or deadline: %+v", env)
	}
	// Tenant-qualified path reaches the other tenant's queue.
	if status, body, _ := do(t, "POST", srv.URL+"/v1/call/acme/svc/echo", `{}`); status != 200 || body != `{}` {
		t.Fatalf("tenant call: %d %s", status, body)
	}
}

func TestCallErrors(t *testing.T) {
	srv, _ := newServer(t)
	tests := []struct {
		name, path, body string
		header           []string
		status           int
		code             abi.ErrorCode
	}{
		{"unknown service", "/v1/call/nosuch/x", `{}`, nil, 404, abi.CodeNotFound},
		{"handler error", "/v1/call/svc/boom", `{}`, nil, 422, abi.CodeHandler},
		{"malformed json", "/v1/call/svc/echo", `{"a":`, nil, 400, abi.CodeBadRequest},
		{"params not an object", "/v1/call/svc/echo", `[1,2]`, nil, 400, abi.CodeBadRequest},
		{"bad timeout", "/v1/call/svc/echo?timeout=soon", `{}`, nil, 400, abi.CodeBadRequest},
		{"deadline passes", "/v1/call/svc/slow?timeout=50ms", `{}`, nil, 504, abi.CodeTimeout},
		{"bad service name", "/v1/call/No_Such/x", `{}`, nil, 400, abi.CodeBadRequest},
		{"oversized body", "/v1/call/svc/echo", `{"a":"` + strings.Repeat("x", 2<<20) + `"}`, nil, 429, abi.CodeResourceExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, _ := do(t, "POST", srv.URL+tt.path, tt.body, tt.header...)
			if status != tt.status || errorCode(t, body) != tt.code {
				t.Fatalf("got %d %s, want %d %s", status, body, tt.status, tt.code)
			}
		})
	}
}

func TestSendPublishDescribe(t *testing.T) {
	srv, r := newServer(t)
	if status, body, _ := do(t, "POST", srv.URL+"/v1/send/svc/work", `{"x":1}`); status != 202 {
		t.Fatalf("send: %d %s", status, body)
	}
	if status, body, _ := do(t, "POST", srv.URL+"/v1/send/nosuch/work", `{}`); status != 404 || errorCode(t, body) != abi.CodeNotFound {
		t.Fatalf("send to unknown: %d %s", status, body)
	}
	if status, body, _ := do(t, "POST", srv.URL+"/v1/publish/order.created", `{"id":"o-1"}`); status != 202 {
		t.Fatalf("publish: %d %s", status, body)
	}
	if status, body, _ := do(t, "POST", srv.URL+"/v1/publish/bad..topic", `{}`); status != 400 {
		t.Fatalf("publish bad topic: %d %s", status, body)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		r.mu.Lock()
		n, m := len(r.events), len(r.seen)
		r.mu.Unlock()
		if n == 1 && m >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events=%d commands=%d, want 1 event and the command", n, m)
		}
		time.Sleep(10 * time.Millisecond)
	}
	status, body, _ := do(t, "GET", srv.URL+"/v1/services/svc", "")
	var d client.Description
	if status != 200 || json.Unmarshal([]byte(body), &d) != nil || d.Manifest.Version != "9.9.9" {
		t.Fatalf("describe: %d %s", status, body)
	}
	if status, _, _ := do(t, "GET", srv.URL+"/readyz", ""); status != 200 {
		t.Fatalf("readyz: %d", status)
	}
}
