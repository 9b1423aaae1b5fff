package gateway_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/broker/memory"
	"github.com/nuropb/nuropb/client"
	"github.com/nuropb/nuropb/gateway"
)

// wsEnv is a gateway with WebSocket subscriptions on the real embedded
// broker, answered by the responder of gateway_test.go.
type wsEnv struct {
	srv *httptest.Server
	gw  *gateway.Gateway
	b   broker.Broker
	r   *responder
}

func newWSEnv(t *testing.T, ws gateway.WSConfig) *wsEnv {
	t.Helper()
	b, err := memory.New(memory.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	r := &responder{}
	r.serve(t, b, broker.Route{Tenant: "default", Service: "svc"})
	gw, err := gateway.New(gateway.Config{Client: client.New(b), Broker: b, WS: ws})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = gw.Shutdown(ctx)
		srv.Close()
	})
	return &wsEnv{srv: srv, gw: gw, b: b, r: r}
}

func (e *wsEnv) url() string { return "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/v1/ws" }

func (e *wsEnv) dial(t *testing.T, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.url(), opts)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(4 << 20)
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// frame is any frame the gateway sends, decoded loosely for assertions.
type frame struct {
	Type         string          `json:"type"`
	ID           json.RawMessage `json:"id"`
	Result       json.RawMessage `json:"result"`
	Error        *abi.Error      `json:"error"`
	TraceID      string          `json:"trace_id"`
	Subscription json.RawMessage `json:"subscription"`
	Tenant       string          `json:"tenant"`
	Topic        string          `json:"topic"`
	Event        json.RawMessage `json:"event"`
}

func send(t *testing.T, c *websocket.Conn, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, c *websocket.Conn) frame {
	t.Helper()
	f, err := tryRead(c, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func tryRead(c *websocket.Conn, d time.Duration) (frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		return frame{}, err
	}
	var f frame
	err = json.Unmarshal(b, &f)
	return f, err
}

// readByID reads frames until every id in want has been answered, and
// returns them by id (answers to concurrent requests come in any order).
func readByID(t *testing.T, c *websocket.Conn, want ...string) map[string]frame {
	t.Helper()
	got := map[string]frame{}
	for len(got) < len(want) {
		f := read(t, c)
		got[string(f.ID)] = f
	}
	for _, id := range want {
		if _, ok := got[id]; !ok {
			t.Fatalf("no answer for id %s; got %v", id, got)
		}
	}
	return got
}

func TestWSRequests(t *testing.T) {
	e := newWSEnv(t, gateway.WSConfig{})
	c := e.dial(t, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer tok-1"}}})

	send(t, c, map[string]any{"type": "request", "id": "a", "service": "svc", "method": "echo",
		"params": map[string]any{"name": "Ada"}, "timeout_ms": 2000, "trace_id": "trace-a"})
	send(t, c, map[string]any{"type": "request", "id": 7, "service": "default/svc", "method": "boom", "params": map[string]any{}})
	send(t, c, map[string]any{"type": "request", "id": "nf", "service": "nosuch", "method": "x"})
	send(t, c, map[string]any{"type": "command", "id": "cmd", "service": "svc", "method": "work", "params": map[string]any{"x": 1},
		"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
	send(t, c, map[string]any{"type": "request", "id": "late", "service": "svc", "method": "slow", "timeout_ms": 50})
	got := readByID(t, c, `"a"`, `7`, `"nf"`, `"cmd"`, `"late"`)

	if f := got[`"a"`]; f.Type != "response" || string(f.Result) != `{"name":"Ada"}` || f.TraceID != "trace-a" {
		t.Errorf("echo: %+v %s", f, f.Result)
	}
	if f := got[`7`]; f.Type != "error" || f.Error.Code != abi.CodeHandler {
		t.Errorf("boom: %+v", f)
	}
	if f := got[`"nf"`]; f.Type != "error" || f.Error.Code != abi.CodeNotFound {
		t.Errorf("unknown service: %+v", f)
	}
	if f := got[`"cmd"`]; f.Type != "response" || string(f.Result) != "null" || f.TraceID != "0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("command: %+v", f)
	}
	if f := got[`"late"`]; f.Type != "error" || f.Error.Code != abi.CodeTimeout {
		t.Errorf("deadline: %+v", f)
	}

	e.r.mu.Lock()
	var echo *abi.Envelope
	for _, env := range e.r.seen {
		if env.Method == "echo" {
			echo = env
		}
	}
	e.r.mu.Unlock()
	if echo == nil || echo.Context["token"] != "tok-1" || echo.TraceID != "trace-a" || echo.Deadline == 0 {
		t.Fatalf("envelope lacks token, trace id or deadline: %+v", echo)
	}

	// Malformed frames are answered, and the connection lives on.
	for _, tt := range []struct {
		frame string
		id    string
		code  abi.ErrorCode
	}{
		{`{"type":`, "null", abi.CodeBadRequest},
		{`{"type":"request","service":"svc","method":"echo"}`, "null", abi.CodeBadRequest},
		{`{"type":"dance","id":"d"}`, `"d"`, abi.CodeBadRequest},
		{`{"type":"request","id":"p","service":"svc","method":"echo","params":[1]}`, `"p"`, abi.CodeBadRequest},
		{`{"type":"request","id":"n","service":"No_Such","method":"echo"}`, `"n"`, abi.CodeBadRequest},
		{`{"type":"unsubscribe","id":"u","subscription":"nope"}`, `"u"`, abi.CodeNotFound},
		{`{"type":"subscribe","id":"s","topics":["bad..topic"]}`, `"s"`, abi.CodeBadRequest},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.Write(ctx, websocket.MessageText, []byte(tt.frame)); err != nil {
			t.Fatal(err)
		}
		cancel()
		f := read(t, c)
		if f.Type != "error" || string(f.ID) != tt.id || f.Error.Code != tt.code {
			t.Errorf("%s: got %+v", tt.frame, f)
		}
	}
}

func TestWSSubscribe(t *testing.T) {
	e := newWSEnv(t, gateway.WSConfig{})
	c := e.dial(t, nil)
	send(t, c, map[string]any{"type": "subscribe", "id": "orders", "topics": []string{"order.*"}})
	send(t, c, map[string]any{"type": "subscribe", "id": "acme-all", "topics": []string{"#"}, "tenant": "acme"})
	got := readByID(t, c, `"orders"`, `"acme-all"`)
	if f := got[`"orders"`]; f.Type != "response" || !strings.Contains(string(f.Result), `"order.*"`) {
		t.Fatalf("subscribe: %+v %s", f, f.Result)
	}

	cl := client.New(e.b)
	ctx := context.Background()
	publish := func(tenant, topic, body string) {
		t.Helper()
		ev, _ := abi.Default.JSONToCBOR([]byte(body))
		if err := cl.Publish(ctx, tenant, &abi.Envelope{Topic: topic, Event: ev, TraceID: "tr-" + topic}); err != nil {
			t.Fatal(err)
		}
	}
	publish("default", "order.created", `{"id":"o-1"}`)
	publish("default", "stock.low", `{"sku":"x"}`) // matches nothing here
	publish("acme", "invoice.paid", `{"n":3}`)
	want := map[string]string{"order.created": `{"id":"o-1"}`, "invoice.paid": `{"n":3}`}
	for range want {
		f := read(t, c)
		if f.Type != "event" || want[f.Topic] != string(f.Event) || f.TraceID != "tr-"+f.Topic {
			t.Fatalf("event: %+v %s", f, f.Event)
		}
		if f.Topic == "invoice.paid" && (f.Tenant != "acme" || string(f.Subscription) != `"acme-all"`) {
			t.Fatalf("acme event: %+v", f)
		}
	}

	// Publishing from the socket reaches subscribers too (here, itself).
	send(t, c, map[string]any{"type": "publish", "id": "p1", "topic": "order.shipped", "event": map[string]any{"id": "o-1"}})
	got = map[string]frame{}
	for len(got) < 2 {
		f := read(t, c)
		got[f.Type] = f
	}
	if got["response"].Type == "" || got["event"].Topic != "order.shipped" {
		t.Fatalf("publish: %+v", got)
	}

	send(t, c, map[string]any{"type": "unsubscribe", "id": "u1", "subscription": "orders"})
	if f := read(t, c); f.Type != "response" || string(f.ID) != `"u1"` {
		t.Fatalf("unsubscribe: %+v", f)
	}
	publish("default", "order.created", `{"id":"o-2"}`)
	publish("acme", "invoice.paid", `{"n":4}`)
	if f := read(t, c); f.Topic != "invoice.paid" {
		t.Fatalf("after unsubscribe, got %+v", f)
	}
	if f, err := tryRead(c, 200*time.Millisecond); err == nil {
		t.Fatalf("event after unsubscribe: %+v", f)
	}
}

func TestWSOrigin(t *testing.T) {
	e := newWSEnv(t, gateway.WSConfig{Origins: []string{"app.example.com"}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, e.url(), &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://evil.example"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: err=%v resp=%v", err, resp)
	}
	for _, origin := range []string{"https://app.example.com", "http://" + strings.TrimPrefix(e.srv.URL, "http://")} {
		c, _, err := websocket.Dial(ctx, e.url(), &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {origin}}})
		if err != nil {
			t.Fatalf("origin %s: %v", origin, err)
		}
		_ = c.CloseNow()
	}
}

func TestWSCookieToken(t *testing.T) {
	e := newWSEnv(t, gateway.WSConfig{})
	c := e.dial(t, &websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {"nuropb_token=from-cookie"}}})
	send(t, c, map[string]any{"type": "request", "id": 1, "service": "svc", "method": "echo", "params": map[string]any{}})
	if f := read(t, c); f.Type != "response" {
		t.Fatalf("%+v", f)
	}
	e.r.mu.Lock()
	defer e.r.mu.Unlock()
	if env := e.r.seen[len(e.r.seen)-1]; env.Context["token"] != "from-cookie" {
		t.Fatalf("token not taken from the cookie: %+v", env.Context)
	}
}

func TestWSLimits(t *testing.T) {
	e := newWSEnv(t, gateway.WSConfig{MaxInFlight: 2, MaxFrameBytes: 4096, MaxSubscriptions: 1})
	c := e.dial(t, nil)
	for _, id := range []string{"s1", "s2", "s3"} {
		send(t, c, map[string]any{"type": "request", "id": id, "service": "svc", "method": "slow"})
	}
	got := readByID(t, c, `"s1"`, `"s2"`, `"s3"`)
	if f := got[`"s3"`]; f.Type != "error" || f.Error.Code != abi.CodeResourceExhausted {
		t.Fatalf("third request over MaxInFlight: %+v", f)
	}
	if got[`"s1"`].Type != "response" || got[`"s2"`].Type != "response" {
		t.Fatalf("requests within the limit: %+v", got)
	}
	send(t, c, map[string]any{"type": "subscribe", "id": "a", "topics": []string{"x.y"}})
	send(t, c, map[string]any{"type": "subscribe", "id": "b", "topics": []string{"x.z"}})
	got = readByID(t, c, `"a"`, `"b"`)
	if f := got[`"b"`]; f.Type != "error" || f.Error.Code != abi.CodeResourceExhausted {
		t.Fatalf("subscription over the limit: %+v", f)
	}

	// A frame over MaxFrameBytes ends the connection with 1009.
	send(t, c, map[string]any{"type": "request", "id": "big", "service": "svc", "method": "echo",
		"params": map[string]any{"s": strings.Repeat("x", 8192)}})
	_, err := tryRead(c, 5*time.Second)
	if websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Fatalf("oversized frame: %v", err)
	}
}

func TestWSSlowConsumer(t *testing.T) {
	e := newWSEnv(t, gateway.WSConfig{SendQueue: 4})
	// A tiny receive buffer so the gateway's writes back up quickly.
	dialer := &net.Dialer{}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dialer.DialContext(ctx, network, addr)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(32 << 10)
		}
		return conn, err
	}}
	c := e.dial(t, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	send(t, c, map[string]any{"type": "subscribe", "id": "all", "topics": []string{"#"}})
	if f := read(t, c); f.Type != "response" {
		t.Fatalf("%+v", f)
	}
	cl := client.New(e.b)
	body, _ := abi.Default.Marshal(strings.Repeat("x", 64<<10))
	for range 100 {
		if err := cl.Publish(context.Background(), "", &abi.Envelope{Topic: "flood.tick", Event: body}); err != nil {
			t.Fatal(err)
		}
	}
	// The client now reads: what the gateway had written, then the close.
	var err error
	for n := 0; err == nil; n++ {
		_, err = tryRead(c, 10*time.Second)
		if n > 100 {
			t.Fatal("every event delivered: the slow consumer was never dropped")
		}
	}
	if websocket.CloseStatus(err) != gateway.CloseSlowConsumer {
		t.Fatalf("want close %d (slow consumer), got %v", gateway.CloseSlowConsumer, err)
	}
}

func TestWSShutdown(t *testing.T) {
	e := newWSEnv(t, gateway.WSConfig{})
	c := e.dial(t, nil)
	send(t, c, map[string]any{"type": "subscribe", "id": "sub", "topics": []string{"#"}})
	read(t, c)
	send(t, c, map[string]any{"type": "request", "id": "inflight", "service": "svc", "method": "slow"})
	// Shut down only once the request is with the service: a frame the
	// gateway has not read yet is not in flight, and is not waited for.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		e.r.mu.Lock()
		n := len(e.r.seen)
		e.r.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the service")
		}
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- e.gw.Shutdown(ctx)
	}()
	if f := read(t, c); f.Type != "response" || string(f.ID) != `"inflight"` {
		t.Fatalf("in-flight request not answered before shutdown: %+v", f)
	}
	_, err := tryRead(c, 5*time.Second)
	if websocket.CloseStatus(err) != gateway.CloseGoingAway {
		t.Fatalf("want close 1001, got %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, _, err := websocket.Dial(ctx, e.url(), nil); err == nil {
		t.Fatal("a new connection was accepted after Shutdown")
	}
}
