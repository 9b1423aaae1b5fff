package brokertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nuropb/nuropb/broker"
)

// testRequestReply: concurrent requests each get their own response, matched
// by correlation id, and the request's properties reach the handler.
func testRequestReply(e *env) {
	var seen inbox
	answer := e.responder(e.b)
	e.serve(broker.ServiceSpec{Route: e.route("calc"), Prefetch: 8}, func(ctx context.Context, d broker.Delivery) {
		seen.add(d)
		answer(ctx, d)
	})

	const n = 16
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			corr := e.id("req")
			req := broker.Message{Body: fmt.Appendf(nil, "q%d", i), ContentType: broker.ContentTypeCBOR,
				Type: "request", CorrelationID: corr, Headers: map[string]any{"trace_id": "trace-" + corr}}
			resp, err := e.b.Request(e.ctx(), e.route("calc"), req)
			if err != nil {
				e.t.Errorf("request %d: %v", i, err)
				return
			}
			if want := fmt.Sprintf("re:q%d", i); string(resp.Body) != want {
				e.t.Errorf("request %d: response body %q, want %q", i, resp.Body, want)
			}
			if resp.CorrelationID != corr {
				e.t.Errorf("request %d: response correlation id %q, want %q", i, resp.CorrelationID, corr)
			}
		})
	}
	wg.Wait()

	got := seen.list()
	if len(got) != n {
		e.t.Fatalf("handler saw %d requests, want %d", len(got), n)
	}
	for _, r := range got {
		m := r.msg
		if m.ReplyTo == "" {
			e.t.Errorf("request %s arrived without ReplyTo", m.CorrelationID)
		}
		if m.Type != "request" || m.ContentType != broker.ContentTypeCBOR {
			e.t.Errorf("request %s arrived as type %q, content type %q", m.CorrelationID, m.Type, m.ContentType)
		}
		if h, _ := m.Headers["trace_id"].(string); h != "trace-"+m.CorrelationID {
			e.t.Errorf("request %s arrived with trace_id header %v", m.CorrelationID, m.Headers["trace_id"])
		}
	}
}

// testRequestIgnoresMismatchedReply: a response carrying another correlation
// id is not taken for the answer.
func testRequestIgnoresMismatchedReply(e *env) {
	e.serve(broker.ServiceSpec{Route: e.route("liar"), Prefetch: 1}, func(ctx context.Context, d broker.Delivery) {
		m := d.Message()
		_ = e.b.Reply(ctx, m.ReplyTo, broker.Message{Body: []byte("wrong"), CorrelationID: "not-" + m.CorrelationID})
		_ = e.b.Reply(ctx, m.ReplyTo, broker.Message{Body: []byte("right"), CorrelationID: m.CorrelationID})
		_ = d.Ack()
	})
	resp, err := e.b.Request(e.ctx(), e.route("liar"), broker.Message{Type: "request", CorrelationID: e.id("req")})
	if err != nil {
		e.t.Fatalf("Request: %v", err)
	}
	if string(resp.Body) != "right" {
		e.t.Fatalf("response body %q: the reply with a foreign correlation id was taken", resp.Body)
	}
}

// testUnknownRoute: requests and commands to a service nobody declared fail
// with ErrNoRoute at once, not at the deadline.
func testUnknownRoute(e *env) {
	// A served service in the same tenant, so the tenant's exchanges exist.
	e.serve(broker.ServiceSpec{Route: e.route("present"), Prefetch: 1}, e.acker(&inbox{}))
	cases := []struct {
		name string
		call func(ctx context.Context, to broker.Route) error
	}{
		{"Request", func(ctx context.Context, to broker.Route) error {
			_, err := e.b.Request(ctx, to, broker.Message{Type: "request", CorrelationID: e.id("req")})
			return err
		}},
		{"Send", func(ctx context.Context, to broker.Route) error {
			return e.b.Send(ctx, to, e.command(e.id("cmd")))
		}},
	}
	routes := []broker.Route{e.route("absent"), {Tenant: unique("bt-none"), Service: "present"}}
	for _, c := range cases {
		for _, to := range routes {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			start := time.Now()
			err := c.call(ctx, to)
			took := time.Since(start)
			cancel()
			if !errors.Is(err, broker.ErrNoRoute) {
				e.t.Errorf("%s to %+v: error %v, want ErrNoRoute", c.name, to, err)
			}
			if took > time.Second {
				e.t.Errorf("%s to %+v took %v: it must fail at once, not wait for the deadline", c.name, to, took)
			}
		}
	}
}

// testRequestEndsWithContext: with nobody answering, a request ends with its
// context's error, promptly.
func testRequestEndsWithContext(e *env) {
	e.serve(broker.ServiceSpec{Route: e.route("mute"), Prefetch: 4}, e.acker(&inbox{}))
	const after = 150 * time.Millisecond
	cases := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), after)
		}, context.DeadlineExceeded},
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(after, cancel)
			return ctx, cancel
		}, context.Canceled},
	}
	for _, c := range cases {
		ctx, cancel := c.ctx()
		start := time.Now()
		_, err := e.b.Request(ctx, e.route("mute"), broker.Message{Type: "request", CorrelationID: e.id("req")})
		took := time.Since(start)
		cancel()
		if !errors.Is(err, c.want) {
			e.t.Errorf("%s: error %v, want %v", c.name, err, c.want)
		}
		if took < after-10*time.Millisecond || took > after+500*time.Millisecond {
			e.t.Errorf("%s: returned after %v, want about %v", c.name, took, after)
		}
	}
}

// testRequestWaitsForConsumer: a declared queue with no consumer routes the
// request (it is not ErrNoRoute), and it is answered once a consumer comes.
func testRequestWaitsForConsumer(e *env) {
	e.stop(e.serve(broker.ServiceSpec{Route: e.route("later"), Prefetch: 1}, e.acker(&inbox{})))
	type result struct {
		resp broker.Message
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := e.b.Request(e.ctx(), e.route("later"), broker.Message{Body: []byte("x"), Type: "request",
			CorrelationID: e.id("req")})
		done <- result{resp, err}
	}()
	time.Sleep(e.f.Quiet)
	e.serve(broker.ServiceSpec{Route: e.route("later"), Prefetch: 1}, e.responder(e.b))
	r := <-done
	if r.err != nil || string(r.resp.Body) != "re:x" {
		e.t.Fatalf("Request: %q, %v; want the response once a consumer serves the queue", r.resp.Body, r.err)
	}
}

// testSendDeliveredOnce: a command reaches one handler once, intact.
func testSendDeliveredOnce(e *env) {
	var in inbox
	e.serve(broker.ServiceSpec{Route: e.route("worker"), Prefetch: 4}, e.acker(&in))
	msg := e.command(e.id("cmd"))
	msg.Headers = map[string]any{"nuropb_type": "command"}
	e.send(e.route("worker"), msg)
	e.await(&in, 1)
	got := e.settle(&in)
	if len(got) != 1 {
		e.t.Fatalf("command delivered %d times, want once", len(got))
	}
	m := got[0].msg
	if string(m.Body) != string(msg.Body) || m.CorrelationID != msg.CorrelationID || m.Type != "command" ||
		m.ContentType != msg.ContentType || m.Headers["nuropb_type"] != "command" {
		e.t.Errorf("delivered %+v, want %+v", m, msg)
	}
	if got[0].redelivered {
		e.t.Error("first delivery marked redelivered")
	}
}

// testDefaultTenantAlias: the empty tenant is the default tenant.
func testDefaultTenantAlias(e *env) {
	svc := unique("bt-svc")
	e.serve(broker.ServiceSpec{Route: broker.Route{Service: svc}, Prefetch: 1}, e.responder(e.b))
	to := broker.Route{Tenant: broker.DefaultTenant, Service: svc}
	resp, err := e.b.Request(e.ctx(), to, broker.Message{Body: []byte("d"), Type: "request", CorrelationID: e.id("req")})
	if err != nil || string(resp.Body) != "re:d" {
		e.t.Fatalf("Request to %+v: %q, %v; want the service served with an empty tenant", to, resp.Body, err)
	}
}
