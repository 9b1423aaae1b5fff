package amqp

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/broker/amqp/amqptest"
)

// TestReconnectAfterServerClose closes every connection of the test vhost
// from the server side, as an operator or a failing node would: the request
// in flight must end in an error, the delivery it held must refuse a stale
// ack, and the broker must serve again within 10 s.
func TestReconnectAfterServerClose(t *testing.T) {
	env := newEnv(t)
	b := env.broker(t)
	to := broker.Route{Service: "phoenix"}

	held := make(chan broker.Delivery, 1)
	serve(t, b, broker.ServiceSpec{Route: to, Prefetch: 8}, func(ctx context.Context, d broker.Delivery) {
		if string(d.Message().Body) == "hold" {
			held <- d // answered only after the connection is gone
			return
		}
		echo(b)(ctx, d)
	})
	if _, err := b.Request(ctxFor(t, 5*time.Second), to, broker.Message{Body: []byte("before")}); err != nil {
		t.Fatalf("Request before close: %v", err)
	}

	inflight := make(chan error, 1)
	go func() {
		_, err := b.Request(context.Background(), to, broker.Message{Body: []byte("hold")})
		inflight <- err
	}()
	var d broker.Delivery
	select {
	case d = <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("held request not delivered")
	}

	closedAt := time.Now()
	amqptest.CloseConnections(t, env.vhost)

	select {
	case err := <-inflight:
		if !errors.Is(err, broker.ErrUnavailable) {
			t.Fatalf("in-flight request: %v, want ErrUnavailable", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("in-flight request hangs after the connection closed")
	}
	if err := d.Ack(); !errors.Is(err, ErrStaleDelivery) {
		t.Fatalf("ack of a delivery from the dead channel: %v, want ErrStaleDelivery", err)
	}

	var last error
	for time.Since(closedAt) < 10*time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, last = b.Request(ctx, to, broker.Message{Body: []byte("after")})
		cancel()
		if last == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if last != nil {
		t.Fatalf("not serving 10 s after the close: %v", last)
	}
	t.Logf("serving again %s after the close", time.Since(closedAt).Round(time.Millisecond))

	// The "hold" request was redelivered on the new channel; settle it so
	// the queue is clean, and check it went through the new channel.
	select {
	case d2 := <-held:
		if !d2.Redelivered() {
			t.Fatal("held message not marked redelivered")
		}
		if err := d2.Ack(); err != nil {
			t.Fatalf("ack on the new channel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("held message not redelivered after reconnect")
	}
	if err := b.Send(ctxFor(t, 5*time.Second), to, broker.Message{Body: []byte("cmd")}); err != nil {
		t.Fatalf("Send after reconnect: %v", err)
	}
}
