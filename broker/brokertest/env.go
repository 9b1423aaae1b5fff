package brokertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nuropb/nuropb/broker"
)

// env is one test's broker, tenant and helpers.
type env struct {
	t      *testing.T
	f      Factory
	b      broker.Broker
	tenant string // unique to this test: its queues and events touch no one else's
	ids    atomic.Uint64
}

func newEnv(t *testing.T, f Factory) *env {
	b := f.New(t)
	if b == nil {
		t.Fatal("brokertest: Factory.New returned nil")
	}
	t.Cleanup(func() { _ = b.Close() })
	return &env{t: t, f: f, b: b, tenant: unique("bt")}
}

// unique returns prefix and a random suffix: names that no other test, in
// this run or another sharing the broker, will use.
func unique(prefix string) string {
	var r [6]byte
	_, _ = rand.Read(r[:])
	return prefix + "-" + hex.EncodeToString(r[:])
}

// route names a service in the test's tenant.
func (e *env) route(service string) broker.Route {
	return broker.Route{Tenant: e.tenant, Service: service}
}

// id returns a correlation id unique to the test.
func (e *env) id(label string) string {
	return fmt.Sprintf("%s-%s-%d", e.tenant, label, e.ids.Add(1))
}

// ctx returns a context that ends after the test's patience.
func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), e.f.Patience)
	e.t.Cleanup(cancel)
	return ctx
}

// command is a message as a client would send it.
func (e *env) command(corr string) broker.Message {
	return broker.Message{Body: []byte("body of " + corr), ContentType: broker.ContentTypeCBOR,
		Type: "command", CorrelationID: corr, Persistent: true}
}

// serve starts a consumer, and stops it when the test ends and then retires
// its route, so that a shared broker is left as it was found.
func (e *env) serve(spec broker.ServiceSpec, h broker.Handler) broker.Consumer {
	e.t.Helper()
	c, err := e.b.Serve(e.ctx(), spec, h)
	if err != nil {
		e.t.Fatalf("Serve(%+v): %v", spec, err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), e.f.Patience)
		defer cancel()
		_ = c.Stop(ctx)
		_ = e.b.Retire(ctx, spec.Route)
	})
	return c
}

// send sends a command and fails the test if the broker refuses it.
func (e *env) send(to broker.Route, msg broker.Message) {
	e.t.Helper()
	if err := e.b.Send(e.ctx(), to, msg); err != nil {
		e.t.Fatalf("Send to %+v: %v", to, err)
	}
}

// stop stops a consumer gracefully and fails the test if that fails.
func (e *env) stop(c broker.Consumer) {
	e.t.Helper()
	if err := c.Stop(e.ctx()); err != nil {
		e.t.Fatalf("Stop: %v", err)
	}
}

// eventually polls cond until it holds or the patience runs out.
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(e.f.Patience)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("after %v: still waiting for %s", e.f.Patience, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// deadLetter waits for the dead letter with the correlation id.
func (e *env) deadLetter(corr string) broker.Message {
	e.t.Helper()
	var found broker.Message
	e.eventually("dead letter "+corr, func() bool {
		for _, m := range e.f.DeadLetters(e.t, e.b) {
			if m.CorrelationID == corr {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

// needDeadLetters skips a test the factory cannot observe.
func (e *env) needDeadLetters() {
	if e.f.DeadLetters == nil {
		e.t.Skip("Factory.DeadLetters is nil")
	}
}

// received is one delivery an inbox saw.
type received struct {
	msg         broker.Message
	redelivered bool
	d           broker.Delivery
}

// inbox records what a handler receives.
type inbox struct {
	mu  sync.Mutex
	got []received
}

func (in *inbox) add(d broker.Delivery) {
	in.mu.Lock()
	in.got = append(in.got, received{msg: d.Message(), redelivered: d.Redelivered(), d: d})
	in.mu.Unlock()
}

func (in *inbox) list() []received {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]received(nil), in.got...)
}

func (in *inbox) len() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.got)
}

// acker records and acknowledges every delivery.
func (e *env) acker(in *inbox) broker.Handler {
	return func(_ context.Context, d broker.Delivery) {
		in.add(d)
		if err := d.Ack(); err != nil {
			e.t.Errorf("Ack: %v", err)
		}
	}
}

// await waits until the inbox holds at least n deliveries.
func (e *env) await(in *inbox, n int) []received {
	e.t.Helper()
	e.eventually(fmt.Sprintf("%d deliveries", n), func() bool { return in.len() >= n })
	return in.list()
}

// quiet waits out the quiet period, after which what has not arrived is
// taken not to come.
func (e *env) quiet() { time.Sleep(e.f.Quiet) }

// settle waits out the quiet period, then returns what the inbox holds: for
// checking that nothing more arrives.
func (e *env) settle(in *inbox) []received {
	e.quiet()
	return in.list()
}

// corrs returns the correlation ids of the deliveries, in order.
func corrs(rs []received) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.msg.CorrelationID
	}
	return out
}

// responder answers every request with "re:" and its body, then acks.
func (e *env) responder(b broker.Broker) broker.Handler {
	return func(ctx context.Context, d broker.Delivery) {
		m := d.Message()
		resp := broker.Message{Body: append([]byte("re:"), m.Body...), ContentType: m.ContentType,
			Type: "response", CorrelationID: m.CorrelationID}
		if err := b.Reply(ctx, m.ReplyTo, resp); err != nil {
			e.t.Errorf("Reply to %q: %v", m.ReplyTo, err)
		}
		if err := d.Ack(); err != nil {
			e.t.Errorf("Ack: %v", err)
		}
	}
}
