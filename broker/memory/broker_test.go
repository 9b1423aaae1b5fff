package memory

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nuropb/nuropb/broker"
)

func newBroker(t *testing.T, cfg Config) *Broker {
	t.Helper()
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func serve(t *testing.T, b *Broker, spec broker.ServiceSpec, h broker.Handler) broker.Consumer {
	t.Helper()
	c, err := b.Serve(context.Background(), spec, h)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func stop(t *testing.T, c broker.Consumer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

func ack(_ context.Context, d broker.Delivery) { _ = d.Ack() }

func (b *Broker) pendingLen() int {
	b.pmu.Lock()
	defer b.pmu.Unlock()
	return len(b.pending)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s", what)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, cfg := range []Config{{MaxQueueLength: -1}, {MaxDeadLetters: -1}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted a negative limit", cfg)
		}
	}
}

func TestServeRejectsBadSpec(t *testing.T) {
	b := newBroker(t, Config{})
	cases := []struct {
		name string
		spec broker.ServiceSpec
		h    broker.Handler
	}{
		{"nil handler", broker.ServiceSpec{Route: broker.Route{Service: "s"}}, nil},
		{"no service", broker.ServiceSpec{}, ack},
		{"negative prefetch", broker.ServiceSpec{Route: broker.Route{Service: "s"}, Prefetch: -1}, ack},
	}
	for _, c := range cases {
		if _, err := b.Serve(context.Background(), c.spec, c.h); err == nil {
			t.Errorf("%s: Serve accepted it", c.name)
		}
	}
}

// TestPendingCleaned: every way a Request ends removes its entry from the
// correlation map (NuroPb kept them forever), and a late reply to an ended
// request neither blocks nor reaches a later request.
func TestPendingCleaned(t *testing.T) {
	b := newBroker(t, Config{})
	route := broker.Route{Service: "svc"}
	late := make(chan broker.Message, 100)
	serve(t, b, broker.ServiceSpec{Route: route, Prefetch: 16}, func(ctx context.Context, d broker.Delivery) {
		m := d.Message()
		resp := broker.Message{Body: m.Body, CorrelationID: m.CorrelationID}
		if string(m.Body) == "late" {
			late <- m // answered after the caller gave up
		} else if err := b.Reply(ctx, m.ReplyTo, resp); err != nil {
			t.Errorf("Reply: %v", err)
		}
		_ = d.Ack()
	})

	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			if i%2 == 1 {
				time.AfterFunc(5*time.Millisecond, cancel) // cancelled, not timed out
			}
			_, err := b.Request(ctx, route, broker.Message{Body: []byte("late"), CorrelationID: "c"})
			if err == nil {
				t.Error("a request nobody answered succeeded")
			}
		})
	}
	wg.Wait()
	if n := b.pendingLen(); n != 0 {
		t.Fatalf("%d requests left in the correlation map after they ended", n)
	}
	for range 50 {
		m := <-late
		if err := b.Reply(context.Background(), m.ReplyTo, broker.Message{Body: []byte("stale"), CorrelationID: m.CorrelationID}); err != nil {
			t.Fatalf("late Reply: %v", err)
		}
	}
	for range 50 { // reuse the pooled entries: none may hold a stale response
		resp, err := b.Request(context.Background(), route, broker.Message{Body: []byte("fresh"), CorrelationID: "c"})
		if err != nil || string(resp.Body) != "fresh" {
			t.Fatalf("Request after late replies: %q, %v", resp.Body, err)
		}
	}
	if n := b.pendingLen(); n != 0 {
		t.Fatalf("%d entries left after answered requests", n)
	}

	_, err := b.Request(context.Background(), broker.Route{Service: "nobody"}, broker.Message{})
	if !errors.Is(err, broker.ErrNoRoute) || b.pendingLen() != 0 {
		t.Fatalf("unroutable request: %v, %d entries left", err, b.pendingLen())
	}
}

func TestRequestMakesUpCorrelationID(t *testing.T) {
	b := newBroker(t, Config{})
	route := broker.Route{Service: "svc"}
	serve(t, b, broker.ServiceSpec{Route: route, Prefetch: 1}, func(ctx context.Context, d broker.Delivery) {
		m := d.Message()
		if m.CorrelationID == "" {
			t.Error("request delivered without a correlation id")
		}
		_ = b.Reply(ctx, m.ReplyTo, broker.Message{Body: []byte("ok"), CorrelationID: m.CorrelationID})
		_ = d.Ack()
	})
	if resp, err := b.Request(context.Background(), route, broker.Message{}); err != nil || string(resp.Body) != "ok" {
		t.Fatalf("Request without a correlation id: %q, %v", resp.Body, err)
	}
}

func TestReplyToForeignAddress(t *testing.T) {
	b := newBroker(t, Config{})
	other := newBroker(t, Config{})
	for _, to := range []string{"", "nonsense", other.replyPrefix + "1", b.replyPrefix + "x"} {
		if err := b.Reply(context.Background(), to, broker.Message{}); !errors.Is(err, broker.ErrNoRoute) {
			t.Errorf("Reply to %q: %v, want ErrNoRoute", to, err)
		}
	}
	if err := b.Reply(context.Background(), b.replyPrefix+"12345", broker.Message{}); err != nil {
		t.Errorf("Reply to an ended request: %v, want nil (dropped)", err)
	}
}

func TestQueueFull(t *testing.T) {
	b := newBroker(t, Config{MaxQueueLength: 3})
	route := broker.Route{Tenant: "acme", Service: "svc"}
	stop(t, serve(t, b, broker.ServiceSpec{Route: route, Prefetch: 1,
		Topics: []broker.TopicBinding{{Tenant: "acme", Pattern: "#"}}}, ack))
	for i := range 3 {
		if err := b.Send(context.Background(), route, broker.Message{}); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	err := b.Send(context.Background(), route, broker.Message{})
	if !errors.Is(err, ErrQueueFull) || !strings.Contains(err.Error(), broker.ServiceQueue(route)) {
		t.Fatalf("Send beyond the limit: %v, want ErrQueueFull naming the queue", err)
	}
	if _, err := b.Request(context.Background(), route, broker.Message{}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Request beyond the limit: %v, want ErrQueueFull", err)
	}
	if err := b.Publish(context.Background(), "acme", "a.b", broker.Message{}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Publish beyond the limit: %v, want ErrQueueFull", err)
	}
	if n := b.pendingLen(); n != 0 {
		t.Fatalf("refused request left %d entries", n)
	}
	// Draining makes room again.
	got := make(chan struct{}, 3)
	serve(t, b, broker.ServiceSpec{Route: route, Prefetch: 1}, func(_ context.Context, d broker.Delivery) {
		_ = d.Ack()
		got <- struct{}{}
	})
	for range 3 {
		<-got
	}
	if err := b.Send(context.Background(), route, broker.Message{}); err != nil {
		t.Fatalf("Send after draining: %v", err)
	}
}

func TestDeadLettersBoundedWithReason(t *testing.T) {
	b := newBroker(t, Config{MaxDeadLetters: 2})
	route := broker.Route{Service: "svc"}
	serve(t, b, broker.ServiceSpec{Route: route, Prefetch: 1}, func(_ context.Context, d broker.Delivery) {
		_ = d.Reject(false)
	})
	for _, id := range []string{"1", "2", "3"} {
		if err := b.Send(context.Background(), route, broker.Message{CorrelationID: id, Headers: map[string]any{"k": id}}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "3 dead letters", func() bool {
		dl := b.DeadLetters()
		return len(dl) == 2 && dl[1].CorrelationID == "3"
	})
	dl := b.DeadLetters()
	if dl[0].CorrelationID != "2" {
		t.Errorf("kept %q first, want the oldest dropped", dl[0].CorrelationID)
	}
	h := dl[1].Headers
	if h["x-first-death-reason"] != "rejected" || h["x-first-death-queue"] != broker.ServiceQueue(route) || h["k"] != "3" {
		t.Errorf("dead letter headers %v", h)
	}
	if n := b.PurgeDeadLetters(); n != 2 || len(b.DeadLetters()) != 0 {
		t.Errorf("PurgeDeadLetters = %d, left %d", n, len(b.DeadLetters()))
	}
}

// TestExpirySweep: an expired message reaches the dead-letter queue even if
// no consumer ever looks at its queue again.
func TestExpirySweep(t *testing.T) {
	b := newBroker(t, Config{})
	route := broker.Route{Service: "svc"}
	stop(t, serve(t, b, broker.ServiceSpec{Route: route, Prefetch: 1}, ack))
	send := func(id string, exp time.Duration) {
		if err := b.Send(context.Background(), route, broker.Message{CorrelationID: id, Expiration: exp}); err != nil {
			t.Fatal(err)
		}
	}
	send("keep", 0)
	send("late", 60*time.Millisecond)
	send("soon", 20*time.Millisecond) // behind a later one: the sweep is not head-only
	send("past", -time.Millisecond)   // a deadline already gone: dead at once
	if dl := b.DeadLetters(); len(dl) != 1 || dl[0].CorrelationID != "past" {
		t.Fatalf("dead letters right after sending: %v, want only the already-expired one", dl)
	}
	eventually(t, "expired messages dead-lettered", func() bool { return len(b.DeadLetters()) == 3 })
	for _, m := range b.DeadLetters() {
		if m.Headers["x-first-death-reason"] != "expired" || m.Expiration != 0 {
			t.Errorf("dead letter %s: reason %v, expiration %v", m.CorrelationID, m.Headers["x-first-death-reason"], m.Expiration)
		}
	}
	q := b.queue(route)
	q.mu.Lock()
	n := q.msgs.len()
	q.mu.Unlock()
	if n != 1 {
		t.Fatalf("queue holds %d messages, want the one without expiration", n)
	}
}

func TestAckAfterClose(t *testing.T) {
	b, _ := New(Config{})
	route := broker.Route{Service: "svc"}
	got := make(chan broker.Delivery, 1)
	serve(t, b, broker.ServiceSpec{Route: route, Prefetch: 1}, func(_ context.Context, d broker.Delivery) { got <- d })
	if err := b.Send(context.Background(), route, broker.Message{}); err != nil {
		t.Fatal(err)
	}
	d := <-got
	_ = b.Close()
	if err := d.Ack(); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Ack after Close: %v, want ErrClosed", err)
	}
}

// TestNoGoroutineLeak: Close leaves no worker, timer or handler goroutine
// behind, whatever state the consumers were in.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	b, _ := New(Config{})
	release := make(chan struct{})
	for i, prefetch := range []int{0, 1, 8} {
		route := broker.Route{Service: string(rune('a' + i))}
		c := serve(t, b, broker.ServiceSpec{Route: route, Prefetch: prefetch}, func(ctx context.Context, d broker.Delivery) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			_ = d.Ack()
		})
		for range 20 {
			_ = b.Send(context.Background(), route, broker.Message{Expiration: time.Hour})
		}
		if i == 2 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
			_ = c.Stop(ctx) // hard stop with handlers stuck
			cancel()
		}
	}
	_ = b.Close()
	close(release)
	eventually(t, "goroutines to return", func() bool { return runtime.NumGoroutine() <= before })
}

// TestUnlimitedIdleCap: after a burst, an unlimited consumer keeps at most
// idleCap idle workers.
func TestUnlimitedIdleCap(t *testing.T) {
	b := newBroker(t, Config{})
	route := broker.Route{Service: "svc"}
	release := make(chan struct{})
	var running sync.WaitGroup
	const burst = idleCap + 100
	running.Add(burst)
	c := serve(t, b, broker.ServiceSpec{Route: route}, func(_ context.Context, d broker.Delivery) {
		running.Done()
		<-release
		_ = d.Ack()
	})
	for range burst {
		_ = b.Send(context.Background(), route, broker.Message{})
	}
	running.Wait()
	close(release)
	cons := c.(*consumer)
	q := b.queue(route)
	eventually(t, "surplus workers to exit", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return cons.workers <= idleCap && cons.idle == cons.workers
	})
}

// TestCompetingConsumersAlternate: idle workers wait in one line, so two
// consumers take turns exactly, as RabbitMQ's round robin does.
func TestCompetingConsumersAlternate(t *testing.T) {
	b := newBroker(t, Config{})
	route := broker.Route{Service: "svc"}
	who := make(chan string, 10)
	for _, name := range []string{"a", "b"} {
		serve(t, b, broker.ServiceSpec{Route: route, Prefetch: 1}, func(_ context.Context, d broker.Delivery) {
			_ = d.Ack()
			who <- name
		})
	}
	var got []string
	for range 6 {
		if err := b.Send(context.Background(), route, broker.Message{}); err != nil {
			t.Fatal(err)
		}
		got = append(got, <-who)
		time.Sleep(time.Millisecond) // let the worker go back in line
	}
	for i := 2; i < len(got); i++ {
		if got[i] != got[i-2] || got[i] == got[i-1] {
			t.Fatalf("consumers served %v, want strict alternation", got)
		}
	}
}
