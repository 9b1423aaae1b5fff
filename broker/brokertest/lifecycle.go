package brokertest

import (
	"context"
	"errors"
	"time"

	"github.com/nuropb/nuropb/broker"
)

// testRetire: Retire deletes an unused, empty queue and keeps one that is
// still served or still holds messages.
func testRetire(e *env) {
	request := func(to broker.Route) error {
		ctx, cancel := context.WithTimeout(context.Background(), e.f.Patience)
		defer cancel()
		_, err := e.b.Request(ctx, to, broker.Message{Body: []byte("r"), Type: "request", CorrelationID: e.id("req")})
		return err
	}
	cases := []struct {
		name string
		run  func(to broker.Route)
	}{
		{"unused", func(to broker.Route) {
			e.stop(e.serve(broker.ServiceSpec{Route: to, Prefetch: 1}, e.acker(&inbox{})))
			if err := e.b.Retire(e.ctx(), to); err != nil {
				e.t.Fatalf("Retire: %v", err)
			}
			if err := request(to); !errors.Is(err, broker.ErrNoRoute) {
				e.t.Errorf("Request after Retire: %v, want ErrNoRoute", err)
			}
			if err := e.b.Send(e.ctx(), to, e.command(e.id("cmd"))); !errors.Is(err, broker.ErrNoRoute) {
				e.t.Errorf("Send after Retire: %v, want ErrNoRoute", err)
			}
		}},
		{"still served", func(to broker.Route) {
			c1 := e.serve(broker.ServiceSpec{Route: to, Prefetch: 1}, e.responder(e.b))
			e.serve(broker.ServiceSpec{Route: to, Prefetch: 1}, e.responder(e.b))
			e.stop(c1)
			if err := e.b.Retire(e.ctx(), to); err != nil {
				e.t.Fatalf("Retire of a served queue: %v, want nil (a no-op)", err)
			}
			if err := request(to); err != nil {
				e.t.Errorf("Request after Retire of a served queue: %v", err)
			}
		}},
		{"holding messages", func(to broker.Route) {
			e.stop(e.serve(broker.ServiceSpec{Route: to, Prefetch: 1}, e.acker(&inbox{})))
			corr := e.id("cmd")
			e.send(to, e.command(corr))
			if err := e.b.Retire(e.ctx(), to); err != nil {
				e.t.Fatalf("Retire of a queue holding a message: %v, want nil (a no-op)", err)
			}
			var in inbox
			e.serve(broker.ServiceSpec{Route: to, Prefetch: 1}, e.acker(&in))
			if got := e.await(&in, 1); got[0].msg.CorrelationID != corr {
				e.t.Errorf("after Retire got %s, want the kept message %s", got[0].msg.CorrelationID, corr)
			}
		}},
		{"unknown", func(to broker.Route) {
			if err := e.b.Retire(e.ctx(), to); err != nil {
				e.t.Errorf("Retire of a route never declared: %v, want nil", err)
			}
		}},
	}
	for _, c := range cases {
		c.run(e.route(unique("retire")))
	}
}

// testRetireRemovesBindings: a retired queue declared again starts without
// its old subscriptions.
func testRetireRemovesBindings(e *env) {
	to := e.route("fan")
	e.stop(e.serve(broker.ServiceSpec{Route: to, Prefetch: 1,
		Topics: []broker.TopicBinding{{Tenant: e.tenant, Pattern: "x.#"}}}, e.acker(&inbox{})))
	if err := e.b.Retire(e.ctx(), to); err != nil {
		e.t.Fatalf("Retire: %v", err)
	}
	var in inbox
	e.serve(broker.ServiceSpec{Route: to, Prefetch: 1}, e.acker(&in))
	if err := e.b.Publish(e.ctx(), e.tenant, "x.y", broker.Message{Type: "event", CorrelationID: e.id("evt")}); err != nil {
		e.t.Fatalf("Publish: %v", err)
	}
	if got := e.settle(&in); len(got) != 0 {
		e.t.Fatalf("event reached a queue whose binding was retired: %q", corrs(got))
	}
}

// testCloseFailsCalls: after Close every call fails with ErrClosed.
func testCloseFailsCalls(e *env) {
	to := e.route("svc")
	c := e.serve(broker.ServiceSpec{Route: to, Prefetch: 1}, e.acker(&inbox{}))
	if err := e.b.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	ctx := context.Background()
	calls := []struct {
		name string
		call func() error
	}{
		{"Serve", func() error {
			_, err := e.b.Serve(ctx, broker.ServiceSpec{Route: to, Prefetch: 1}, e.acker(&inbox{}))
			return err
		}},
		{"Request", func() error { _, err := e.b.Request(ctx, to, broker.Message{Type: "request"}); return err }},
		{"Send", func() error { return e.b.Send(ctx, to, e.command(e.id("cmd"))) }},
		{"Publish", func() error { return e.b.Publish(ctx, e.tenant, "a.b", broker.Message{Type: "event"}) }},
		{"Reply", func() error { return e.b.Reply(ctx, "anywhere", broker.Message{Type: "response"}) }},
		{"Retire", func() error { return e.b.Retire(ctx, to) }},
	}
	for _, c := range calls {
		if err := c.call(); !errors.Is(err, broker.ErrClosed) {
			e.t.Errorf("%s after Close: %v, want ErrClosed", c.name, err)
		}
	}
	stopCtx, cancel := context.WithTimeout(ctx, e.f.Patience)
	defer cancel()
	if err := c.Stop(stopCtx); err != nil && !errors.Is(err, broker.ErrClosed) {
		e.t.Errorf("Stop after Close: %v, want nil or ErrClosed", err)
	}
	if err := e.b.Close(); err != nil && !errors.Is(err, broker.ErrClosed) {
		e.t.Errorf("second Close: %v, want nil or ErrClosed", err)
	}
}

// testCloseUnblocksRequest: a Request waiting for a response ends with
// ErrClosed when the broker closes, not at its deadline.
func testCloseUnblocksRequest(e *env) {
	got := make(chan struct{}, 1)
	e.serve(broker.ServiceSpec{Route: e.route("mute"), Prefetch: 1}, func(_ context.Context, d broker.Delivery) {
		_ = d.Ack()
		got <- struct{}{}
	})
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := e.b.Request(ctx, e.route("mute"), broker.Message{Type: "request", CorrelationID: e.id("req")})
		done <- err
	}()
	select {
	case <-got:
	case <-time.After(e.f.Patience):
		e.t.Fatal("request not delivered")
	}
	if err := e.b.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, broker.ErrClosed) {
			e.t.Errorf("waiting Request after Close: %v, want ErrClosed", err)
		}
	case <-time.After(e.f.Patience):
		e.t.Fatal("Close left a Request waiting")
	}
}
