package amqp

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/broker/brokertest"
)

// TestConformance runs the shared broker suite against RabbitMQ, all tests
// on one fresh vhost (they use unique tenants).
func TestConformance(t *testing.T) {
	env := newEnv(t)
	var mu sync.Mutex
	collectors := map[broker.Broker]*deadLetters{}
	brokertest.Run(t, brokertest.Factory{
		New: func(t *testing.T) broker.Broker {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			b, err := New(ctx, Config{
				URL:    env.url,
				Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
			})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			t.Cleanup(func() { _ = b.Close() })
			dl := collectDeadLetters(t, env.url)
			mu.Lock()
			collectors[b] = dl
			mu.Unlock()
			return b
		},
		DeadLetters: func(t *testing.T, b broker.Broker) []broker.Message {
			mu.Lock()
			dl := collectors[b]
			mu.Unlock()
			return dl.list()
		},
		Patience: 5 * time.Second,
		Quiet:    200 * time.Millisecond,
	})
}

// deadLetters accumulates what a private queue bound to the dead-letter
// exchange receives, so that tests sharing the vhost each see every dead
// letter without draining one another's.
type deadLetters struct {
	mu   sync.Mutex
	msgs []broker.Message
}

func (dl *deadLetters) list() []broker.Message {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	return append([]broker.Message(nil), dl.msgs...)
}

func collectDeadLetters(t *testing.T, url string) *deadLetters {
	t.Helper()
	conn, err := amqp091.Dial(url)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err == nil {
		err = ch.QueueBind(q.Name, "", broker.DeadLetterExchange, false, nil)
	}
	var ds <-chan amqp091.Delivery
	if err == nil {
		ds, err = ch.Consume(q.Name, "", true, true, false, false, nil)
	}
	if err != nil {
		t.Fatalf("dead-letter collector: %v", err)
	}
	dl := &deadLetters{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for d := range ds {
			dl.mu.Lock()
			dl.msgs = append(dl.msgs, fromDelivery(&d))
			dl.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = conn.Close()
		<-done
	})
	return dl
}
