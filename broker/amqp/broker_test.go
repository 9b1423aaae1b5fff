package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/nuropb/nuropb/broker"
)

// TestBroker runs the behaviour tests on one vhost: creating a vhost costs
// seconds of rabbitmqctl, and the subtests use distinct service names.
func TestBroker(t *testing.T) {
	env := newEnv(t)
	b := env.broker(t)

	t.Run("RequestReplyKeepsProperties", func(t *testing.T) {
		var got broker.Message
		var mu sync.Mutex
		serve(t, b, broker.ServiceSpec{Route: broker.Route{Service: "props"}, Prefetch: 4}, func(ctx context.Context, d broker.Delivery) {
			mu.Lock()
			got = d.Message()
			mu.Unlock()
			echo(b)(ctx, d)
		})
		in := broker.Message{
			Body: []byte("ping"), ContentType: broker.ContentTypeCBOR, Type: "request",
			Headers:    map[string]any{"nuropb_protocol": "0.1.1", "n": int32(7)},
			Expiration: 1500 * time.Microsecond, CorrelationID: "caller-chosen-id",
		}
		out, err := b.Request(ctxFor(t, 5*time.Second), broker.Route{Service: "props"}, in)
		if err != nil {
			t.Fatalf("Request: %v", err)
		}
		if string(out.Body) != "ping" || out.CorrelationID != "caller-chosen-id" {
			t.Fatalf("reply = %+v", out)
		}
		mu.Lock()
		defer mu.Unlock()
		if got.ContentType != broker.ContentTypeCBOR || got.Type != "request" || got.Headers["nuropb_protocol"] != "0.1.1" ||
			got.Headers["n"] != int32(7) || got.Expiration != 2*time.Millisecond || got.ReplyTo == "" || got.Persistent {
			t.Fatalf("handler saw %+v", got)
		}
		if n := b.pendingRequests(); n != 0 {
			t.Fatalf("%d requests still pending", n)
		}
	})

	t.Run("NoRouteFailsAtOnce", func(t *testing.T) {
		for _, to := range []broker.Route{{Service: "nobody"}, {Tenant: "no-such-tenant", Service: "x"}} {
			start := time.Now()
			_, err := b.Request(ctxFor(t, 5*time.Second), to, broker.Message{Body: []byte("x")})
			if !errors.Is(err, broker.ErrNoRoute) {
				t.Fatalf("Request %+v: err = %v, want ErrNoRoute", to, err)
			}
			if err := b.Send(ctxFor(t, 5*time.Second), to, broker.Message{Body: []byte("x")}); !errors.Is(err, broker.ErrNoRoute) {
				t.Fatalf("Send %+v: err = %v, want ErrNoRoute", to, err)
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("no-route took %s", d)
			}
		}
		if n := b.pendingConfirms(); n != 0 {
			t.Fatalf("%d confirms still pending", n)
		}
		// The channels survived: a routable request still works.
		serve(t, b, broker.ServiceSpec{Route: broker.Route{Service: "after-noroute"}}, echo(b))
		if _, err := b.Request(ctxFor(t, 5*time.Second), broker.Route{Service: "after-noroute"}, broker.Message{}); err != nil {
			t.Fatalf("Request after no-route: %v", err)
		}
	})

	t.Run("RequestTimeoutAndCancelLeaveNothingPending", func(t *testing.T) {
		serve(t, b, broker.ServiceSpec{Route: broker.Route{Service: "silent"}}, func(ctx context.Context, d broker.Delivery) { _ = d.Ack() })
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := b.Request(ctx, broker.Route{Service: "silent"}, broker.Message{})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want DeadlineExceeded", err)
		}
		ctx2, cancel2 := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel2)
		if _, err := b.Request(ctx2, broker.Route{Service: "silent"}, broker.Message{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want Canceled", err)
		}
		if n := b.pendingRequests(); n != 0 {
			t.Fatalf("%d requests still pending", n)
		}
	})

	t.Run("CommandsArePersistentAndConfirmed", func(t *testing.T) {
		got := make(chan broker.Message, 1)
		serve(t, b, broker.ServiceSpec{Route: broker.Route{Tenant: "acme", Service: "cmd"}, Prefetch: 1}, func(ctx context.Context, d broker.Delivery) {
			got <- d.Message()
			_ = d.Ack()
		})
		if err := b.Send(ctxFor(t, 5*time.Second), broker.Route{Tenant: "acme", Service: "cmd"}, broker.Message{Body: []byte("do")}); err != nil {
			t.Fatalf("Send: %v", err)
		}
		select {
		case m := <-got:
			if !m.Persistent || string(m.Body) != "do" {
				t.Fatalf("command arrived as %+v", m)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("command not delivered")
		}
	})

	t.Run("EventsFollowTopicPatterns", func(t *testing.T) {
		got := make(chan string, 10)
		serve(t, b, broker.ServiceSpec{
			Route:  broker.Route{Service: "listener"},
			Topics: []broker.TopicBinding{{Pattern: "orders.*"}, {Tenant: "acme", Pattern: "audit.#"}},
		}, func(ctx context.Context, d broker.Delivery) {
			got <- string(d.Message().Body)
			_ = d.Ack()
		})
		ctx := ctxFor(t, 5*time.Second)
		for _, p := range []struct{ tenant, topic string }{
			{"", "orders.created"}, {"", "orders.created.late"}, {"acme", "orders.created"}, {"acme", "audit.a.b"}, {"", "nobody.listens"},
		} {
			if err := b.Publish(ctx, p.tenant, p.topic, broker.Message{Body: []byte(p.tenant + "/" + p.topic)}); err != nil {
				t.Fatalf("Publish %s/%s: %v", p.tenant, p.topic, err)
			}
		}
		want := map[string]bool{"/orders.created": true, "acme/audit.a.b": true}
		for len(want) > 0 { // not range: deleting unvisited keys would end the loop early
			select {
			case m := <-got:
				if !want[m] {
					t.Fatalf("unexpected event %q", m)
				}
				delete(want, m)
			case <-time.After(5 * time.Second):
				t.Fatalf("events missing: %v", want)
			}
		}
		select {
		case m := <-got:
			t.Fatalf("unexpected event %q", m)
		case <-time.After(200 * time.Millisecond):
		}
	})

	t.Run("PrefetchZeroIsUnlimited", func(t *testing.T) {
		const n = 100
		var running, peak atomic.Int32
		release := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(n)
		serve(t, b, broker.ServiceSpec{Route: broker.Route{Service: "unlimited"}, Prefetch: 0}, func(ctx context.Context, d broker.Delivery) {
			defer wg.Done()
			now := running.Add(1)
			for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
			}
			<-release
			running.Add(-1)
			_ = d.Ack()
		})
		ctx := ctxFor(t, 10*time.Second)
		for i := range n {
			if err := b.Send(ctx, broker.Route{Service: "unlimited"}, broker.Message{Body: fmt.Appendf(nil, "%d", i)}); err != nil {
				t.Fatalf("Send: %v", err)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for peak.Load() < n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		close(release)
		wg.Wait()
		if p := peak.Load(); p != n {
			t.Fatalf("peak concurrency %d, want %d with prefetch 0", p, n)
		}
	})

	t.Run("PrefetchBoundsConcurrency", func(t *testing.T) {
		const n, prefetch = 40, 3
		var running, peak, done atomic.Int32
		serve(t, b, broker.ServiceSpec{Route: broker.Route{Service: "bounded"}, Prefetch: prefetch}, func(ctx context.Context, d broker.Delivery) {
			now := running.Add(1)
			for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
			}
			time.Sleep(5 * time.Millisecond)
			running.Add(-1)
			_ = d.Ack()
			done.Add(1)
		})
		ctx := ctxFor(t, 10*time.Second)
		for range n {
			if err := b.Send(ctx, broker.Route{Service: "bounded"}, broker.Message{}); err != nil {
				t.Fatalf("Send: %v", err)
			}
		}
		for done.Load() < n && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		if p := peak.Load(); p > prefetch || p < 2 {
			t.Fatalf("peak concurrency %d, want 2..%d", p, prefetch)
		}
	})

	t.Run("RejectDeadLettersAndDoubleSettleIsRefused", func(t *testing.T) {
		raw := env.raw(t)
		_, _ = raw.QueuePurge(broker.DeadLetterQueue, false)
		errs := make(chan error, 2)
		serve(t, b, broker.ServiceSpec{Route: broker.Route{Service: "rejecter"}}, func(ctx context.Context, d broker.Delivery) {
			errs <- d.Reject(false)
			errs <- d.Ack()
		})
		if err := b.Send(ctxFor(t, 5*time.Second), broker.Route{Service: "rejecter"}, broker.Message{Body: []byte("bad")}); err != nil {
			t.Fatalf("Send: %v", err)
		}
		if err := <-errs; err != nil {
			t.Fatalf("Reject: %v", err)
		}
		if err := <-errs; !errors.Is(err, ErrSettled) {
			t.Fatalf("second settle: %v, want ErrSettled", err)
		}
		d, ok := env.deadLetter(t, raw, 5*time.Second)
		if !ok || string(d.Body) != "bad" {
			t.Fatalf("dead letter = %q, %v", d.Body, ok)
		}
	})

	t.Run("ExpiredMessagesAreDeadLettered", func(t *testing.T) {
		raw := env.raw(t)
		_, _ = raw.QueuePurge(broker.DeadLetterQueue, false)
		to := broker.Route{Service: "sleeper"}
		c, err := b.Serve(ctxFor(t, 5*time.Second), broker.ServiceSpec{Route: to}, echo(b))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Stop(ctxFor(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		if err := b.Send(ctxFor(t, 5*time.Second), to, broker.Message{Body: []byte("stale"), Expiration: 50 * time.Millisecond}); err != nil {
			t.Fatalf("Send: %v", err)
		}
		d, ok := env.deadLetter(t, raw, 5*time.Second)
		if !ok || string(d.Body) != "stale" {
			t.Fatalf("dead letter = %q, %v", d.Body, ok)
		}
	})

	t.Run("RetireKeepsBusyQueuesAndDeletesIdleOnes", func(t *testing.T) {
		to := broker.Route{Service: "retiring"}
		c, err := b.Serve(ctxFor(t, 5*time.Second), broker.ServiceSpec{Route: to}, echo(b))
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Retire(ctxFor(t, 5*time.Second), to); err != nil {
			t.Fatalf("Retire while served: %v", err)
		}
		if _, err := b.Request(ctxFor(t, 5*time.Second), to, broker.Message{}); err != nil {
			t.Fatalf("Request after refused Retire: %v", err)
		}
		if err := c.Stop(ctxFor(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		if err := b.Retire(ctxFor(t, 5*time.Second), to); err != nil {
			t.Fatalf("Retire: %v", err)
		}
		if _, err := b.Request(ctxFor(t, 5*time.Second), to, broker.Message{}); !errors.Is(err, broker.ErrNoRoute) {
			t.Fatalf("Request after Retire: %v, want ErrNoRoute", err)
		}
		if err := b.Retire(ctxFor(t, 5*time.Second), to); err != nil {
			t.Fatalf("Retire twice: %v", err)
		}
	})

	t.Run("StopReturnsUnsettledDeliveries", func(t *testing.T) {
		to := broker.Route{Service: "stopper"}
		started := make(chan struct{}, 10)
		lateAck := make(chan error, 10)
		c1, err := b.Serve(ctxFor(t, 5*time.Second), broker.ServiceSpec{Route: to, Prefetch: 5}, func(ctx context.Context, d broker.Delivery) {
			started <- struct{}{}
			<-ctx.Done() // only a hard stop ends this handler
			lateAck <- d.Ack()
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			if err := b.Send(ctxFor(t, 5*time.Second), to, broker.Message{Body: fmt.Appendf(nil, "%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		for range 5 {
			<-started
		}
		stopCtx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := c1.Stop(stopCtx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Stop with stuck handlers: %v, want DeadlineExceeded", err)
		}
		for range 5 {
			if err := <-lateAck; !errors.Is(err, ErrStaleDelivery) {
				t.Fatalf("ack after hard stop: %v, want ErrStaleDelivery", err)
			}
		}
		got := make(chan bool, 10)
		serve(t, b, broker.ServiceSpec{Route: to, Prefetch: 10}, func(ctx context.Context, d broker.Delivery) {
			got <- d.Redelivered()
			_ = d.Ack()
		})
		for range 5 {
			select {
			case redelivered := <-got:
				if !redelivered {
					t.Fatal("message not marked redelivered")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("unsettled deliveries did not return to the queue")
			}
		}
	})

	t.Run("MalformedDeliveryReachesHandler", func(t *testing.T) {
		got := make(chan broker.Message, 1)
		serve(t, b, broker.ServiceSpec{Route: broker.Route{Service: "odd"}}, func(ctx context.Context, d broker.Delivery) {
			got <- d.Message()
			_ = d.Ack()
		})
		raw := env.raw(t)
		err := raw.Publish(broker.RPCExchange(""), "odd", false, false, amqp091.Publishing{
			Body: []byte{0xff, 0x00, 0xfe}, ContentType: "text/nonsense",
			Headers: amqp091.Table{"nested": amqp091.Table{"deep": []any{int64(1), "x"}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if m.ContentType != "text/nonsense" || len(m.Body) != 3 {
				t.Fatalf("got %+v", m)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("malformed delivery not handed to the handler")
		}
	})

	t.Run("ReplyToUnknownAddressIsHarmless", func(t *testing.T) {
		for _, to := range []string{"amq.rabbitmq.reply-to.bogus", "no-such-queue"} {
			if err := b.Reply(ctxFor(t, time.Second), to, broker.Message{}); err != nil {
				t.Fatalf("Reply to %s: %v", to, err)
			}
		}
		serve(t, b, broker.ServiceSpec{Route: broker.Route{Service: "after-bogus"}}, echo(b))
		time.Sleep(100 * time.Millisecond)
		if _, err := b.Request(ctxFor(t, 5*time.Second), broker.Route{Service: "after-bogus"}, broker.Message{}); err != nil {
			t.Fatalf("Request after bogus replies: %v", err)
		}
	})
}

func TestHandlerTimeoutDeadLettersAndKeepsChannel(t *testing.T) {
	env := newEnv(t)
	b := env.broker(t, func(c *Config) { c.HandlerTimeout = 300 * time.Millisecond })
	raw := env.raw(t)
	to := broker.Route{Service: "slow"}
	lateAck := make(chan error, 1)
	var calls atomic.Int32
	serve(t, b, broker.ServiceSpec{Route: to, Prefetch: 2}, func(ctx context.Context, d broker.Delivery) {
		if calls.Add(1) == 1 {
			<-ctx.Done()
			lateAck <- d.Ack()
			return
		}
		echo(b)(ctx, d)
	})
	if err := b.Send(ctxFor(t, 5*time.Second), to, broker.Message{Body: []byte("slow")}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-lateAck:
		if !errors.Is(err, ErrSettled) {
			t.Fatalf("late ack: %v, want ErrSettled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler context not cancelled at HandlerTimeout")
	}
	if d, ok := env.deadLetter(t, raw, 5*time.Second); !ok || string(d.Body) != "slow" {
		t.Fatalf("dead letter = %q, %v", d.Body, ok)
	}
	if _, err := b.Request(ctxFor(t, 5*time.Second), to, broker.Message{}); err != nil {
		t.Fatalf("channel did not survive: %v", err)
	}
}

func TestCloseFailsLaterCalls(t *testing.T) {
	env := newEnv(t)
	b := env.broker(t)
	stuck := make(chan struct{})
	serve(t, b, broker.ServiceSpec{Route: broker.Route{Service: "c"}}, func(ctx context.Context, d broker.Delivery) {
		<-stuck
		_ = d.Ack()
	})
	reqErr := make(chan error, 1)
	go func() {
		_, err := b.Request(context.Background(), broker.Route{Service: "c"}, broker.Message{})
		reqErr <- err
	}()
	time.Sleep(200 * time.Millisecond)
	time.AfterFunc(100*time.Millisecond, func() { close(stuck) })
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-reqErr:
		if !errors.Is(err, broker.ErrClosed) {
			t.Fatalf("in-flight request: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("in-flight request hangs after Close")
	}
	ctx := ctxFor(t, time.Second)
	if _, err := b.Request(ctx, broker.Route{Service: "c"}, broker.Message{}); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Request: %v", err)
	}
	if err := b.Send(ctx, broker.Route{Service: "c"}, broker.Message{}); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Send: %v", err)
	}
	if err := b.Publish(ctx, "", "t", broker.Message{}); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Publish: %v", err)
	}
	if err := b.Reply(ctx, "x", broker.Message{}); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Reply: %v", err)
	}
	if err := b.Retire(ctx, broker.Route{Service: "c"}); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Retire: %v", err)
	}
	if _, err := b.Serve(ctx, broker.ServiceSpec{Route: broker.Route{Service: "c"}}, echo(b)); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Serve: %v", err)
	}
}
