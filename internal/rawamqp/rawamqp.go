package rawamqp

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// Names the loop declares on its vhost. They do not collide with nuropb's
// topology, so the loop can share a vhost with a host.
const (
	Exchange   = "raw-rpc"
	Queue      = "raw-sq"
	RoutingKey = "raw"
)

// directReplyTo is RabbitMQ's pseudo-queue for replies without a reply queue.
const directReplyTo = "amq.rabbitmq.reply-to"

// ErrClosed is returned by RoundTrip once the loop's connections are gone.
var ErrClosed = errors.New("rawamqp: closed")

// Loop is a request/reply server and client on two connections to one
// vhost, as two processes would be. Build it with New; RoundTrip is safe for
// concurrent use.
type Loop struct {
	srvConn, cliConn *amqp091.Connection
	cli              *amqp091.Channel
	body             []byte
	pending          sync.Map // correlation id -> chan struct{}
	seq              atomic.Uint64
	done             chan struct{} // closed when the reply consumer ends
}

// New declares the loop's exchange and queue on the vhost of url and starts
// a server that echoes every request with the given prefetch. body is sent
// with every request.
func New(url string, prefetch int, body []byte) (*Loop, error) {
	l := &Loop{body: body, done: make(chan struct{})}
	var err error
	if l.srvConn, err = amqp091.Dial(url); err != nil {
		return nil, fmt.Errorf("rawamqp: dial server connection: %w", err)
	}
	if err := l.serve(prefetch); err != nil {
		l.Close()
		return nil, err
	}
	if l.cliConn, err = amqp091.Dial(url); err != nil {
		l.Close()
		return nil, fmt.Errorf("rawamqp: dial client connection: %w", err)
	}
	if l.cli, err = l.cliConn.Channel(); err != nil {
		l.Close()
		return nil, fmt.Errorf("rawamqp: client channel: %w", err)
	}
	replies, err := l.cli.Consume(directReplyTo, "", true, false, false, false, nil)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("rawamqp: consume replies: %w", err)
	}
	go func() {
		defer close(l.done)
		for d := range replies {
			if w, ok := l.pending.LoadAndDelete(d.CorrelationId); ok {
				w.(chan struct{}) <- struct{}{}
			}
		}
	}()
	return l, nil
}

func (l *Loop) serve(prefetch int) error {
	srv, err := l.srvConn.Channel()
	if err != nil {
		return fmt.Errorf("rawamqp: server channel: %w", err)
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"declare exchange " + Exchange, func() error { return srv.ExchangeDeclare(Exchange, "direct", true, false, false, false, nil) }},
		{"declare queue " + Queue, func() error { _, err := srv.QueueDeclare(Queue, true, false, false, false, nil); return err }},
		{"bind queue", func() error { return srv.QueueBind(Queue, RoutingKey, Exchange, false, nil) }},
		{"qos", func() error { return srv.Qos(prefetch, 0, false) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("rawamqp: %s: %w", s.what, err)
		}
	}
	reqs, err := srv.Consume(Queue, "", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("rawamqp: consume %s: %w", Queue, err)
	}
	go func() {
		for d := range reqs {
			_ = srv.Publish("", d.ReplyTo, false, false, amqp091.Publishing{CorrelationId: d.CorrelationId, Body: d.Body})
			_ = d.Ack(false)
		}
	}()
	return nil
}

// RoundTrip publishes one request and waits for its reply or for ctx to end.
func (l *Loop) RoundTrip(ctx context.Context) error {
	id := strconv.FormatUint(l.seq.Add(1), 36)
	w := make(chan struct{}, 1)
	l.pending.Store(id, w)
	err := l.cli.PublishWithContext(ctx, Exchange, RoutingKey, true, false,
		amqp091.Publishing{CorrelationId: id, ReplyTo: directReplyTo, Body: l.body})
	if err != nil {
		l.pending.Delete(id)
		return fmt.Errorf("rawamqp: publish: %w", err)
	}
	select {
	case <-w:
		return nil
	case <-l.done:
		return ErrClosed
	case <-ctx.Done():
		l.pending.Delete(id)
		return ctx.Err()
	}
}

// Close closes both connections; the server and reply goroutines end with
// them. The declared exchange and queue stay (delete the vhost to drop them).
func (l *Loop) Close() error {
	var errs []error
	for _, c := range []*amqp091.Connection{l.cliConn, l.srvConn} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}
