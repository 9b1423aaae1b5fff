package amqp

import (
	"context"
	"log/slog"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/broker/amqp/amqptest"
)

// testEnv is one private vhost and the brokers made on it.
type testEnv struct {
	t     *testing.T
	url   string
	vhost string
}

func newEnv(t *testing.T) *testEnv {
	t.Helper()
	url, vhost := amqptest.Vhost(t)
	return &testEnv{t: t, url: url, vhost: vhost}
}

func (e *testEnv) broker(t *testing.T, mod ...func(*Config)) *Broker {
	t.Helper()
	cfg := Config{
		URL:          e.url,
		ReconnectMin: 50 * time.Millisecond,
		ReconnectMax: time.Second,
		Logger:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	for _, m := range mod {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// raw opens a plain amqp091 channel on the vhost, for what the Broker API
// does not offer (reading the dead-letter queue, publishing odd messages).
func (e *testEnv) raw(t *testing.T) *amqp091.Channel {
	t.Helper()
	conn, err := amqp091.Dial(e.url)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	return ch
}

// deadLetter waits for the next dead-lettered message.
func (e *testEnv) deadLetter(t *testing.T, ch *amqp091.Channel, within time.Duration) (amqp091.Delivery, bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		d, ok, err := ch.Get(broker.DeadLetterQueue, true)
		if err != nil {
			t.Fatalf("get %s: %v", broker.DeadLetterQueue, err)
		}
		if ok {
			return d, true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return amqp091.Delivery{}, false
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// echo replies with the request's body, then acknowledges.
func echo(b *Broker) broker.Handler {
	return func(ctx context.Context, d broker.Delivery) {
		m := d.Message()
		if m.ReplyTo != "" {
			_ = b.Reply(ctx, m.ReplyTo, broker.Message{Body: m.Body, CorrelationID: m.CorrelationID, ContentType: m.ContentType, Type: "response"})
		}
		_ = d.Ack()
	}
}

func serve(t *testing.T, b *Broker, spec broker.ServiceSpec, h broker.Handler) broker.Consumer {
	t.Helper()
	c, err := b.Serve(ctxFor(t, 10*time.Second), spec, h)
	if err != nil {
		t.Fatalf("Serve %+v: %v", spec.Route, err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	return c
}

func (b *Broker) pendingRequests() int {
	s := b.sess.Load()
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

func (b *Broker) pendingConfirms() int {
	s := b.sess.Load()
	if s == nil {
		return 0
	}
	s.conf.mu.Lock()
	defer s.conf.mu.Unlock()
	return len(s.conf.byID)
}
