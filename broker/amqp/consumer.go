package amqp

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/nuropb/nuropb/broker"
)

// Errors a Delivery's Ack and Reject return; test with errors.Is.
var (
	// ErrStaleDelivery: the delivery came on a channel that has closed
	// since (a reconnect, a stop). Its tag means nothing on any other
	// channel, so nothing is sent; RabbitMQ redelivers the message. It
	// wraps broker.ErrUnavailable.
	ErrStaleDelivery = fmt.Errorf("%w: delivery belongs to a closed channel; rabbitmq redelivers it", broker.ErrUnavailable)
	// ErrSettled: the delivery was already acknowledged or rejected, by
	// the handler or by the broker when Config.HandlerTimeout expired.
	// Acknowledging a tag twice would close the channel, so it is refused
	// here.
	ErrSettled = errors.New("amqp: delivery already settled")
)

// consumer is one Serve: a channel of its own (QoS and acks are per
// channel), reopened after every reconnect until Stop.
type consumer struct {
	b     *Broker
	spec  broker.ServiceSpec
	h     broker.Handler
	queue string
	tag   string

	hard       context.Context // parent of handler contexts; cancelled on a hard stop
	hardCancel context.CancelFunc
	stopping   chan struct{}
	stopOnce   sync.Once
	stopErr    error
	loopDone   chan struct{}
	handlers   sync.WaitGroup

	mu  sync.Mutex
	cur *consumerChan
}

// consumerChan is one channel generation of a consumer. Deliveries keep a
// pointer to theirs, so an ack can never reach another generation.
type consumerChan struct {
	ch         *amqp091.Channel
	deliveries <-chan amqp091.Delivery
	closed     atomic.Bool
}

// Serve declares the service queue (durable, dead-lettering to
// broker.DeadLetterExchange), binds it to the tenant's rpc exchange by
// service name and to each topic binding, and consumes it with manual
// acknowledgement and prefetch spec.Prefetch (0: unlimited). Each delivery
// runs h on its own goroutine; the prefetch bounds how many run at once.
func (b *Broker) Serve(ctx context.Context, spec broker.ServiceSpec, h broker.Handler) (broker.Consumer, error) {
	if spec.Service == "" {
		return nil, errors.New("amqp: Serve needs a service name")
	}
	if spec.Prefetch < 0 || spec.Prefetch > math.MaxUint16 {
		return nil, fmt.Errorf("amqp: prefetch %d for %s is outside 0..%d", spec.Prefetch, spec.Service, math.MaxUint16)
	}
	if h == nil {
		return nil, errors.New("amqp: Serve needs a handler")
	}
	s, err := b.live()
	if err != nil {
		return nil, err
	}
	c := &consumer{
		b:        b,
		spec:     spec,
		h:        h,
		queue:    broker.ServiceQueue(spec.Route),
		tag:      "nuropb-" + spec.Service + "-" + b.nextID(),
		stopping: make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	c.hard, c.hardCancel = context.WithCancel(context.Background())
	cc, err := c.open(ctx, s)
	if err != nil {
		c.hardCancel()
		return nil, err
	}
	c.cur = cc
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		_ = cc.ch.Close()
		c.hardCancel()
		return nil, broker.ErrClosed
	}
	b.consumers[c] = struct{}{}
	b.mu.Unlock()
	go c.run(cc)
	return c, nil
}

// open declares the queue and its bindings on a new channel and starts
// consuming. Everything runs on the consumer's own channel, so a
// conflicting declaration closes only it.
func (c *consumer) open(ctx context.Context, s *session) (*consumerChan, error) {
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, s.wrapConnErr(err)
	}
	spec := c.spec
	var deliveries <-chan amqp091.Delivery
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			if err := ch.Qos(spec.Prefetch, 0, false); err != nil {
				return fmt.Errorf("set prefetch %d: %w", spec.Prefetch, err)
			}
			rpc := broker.RPCExchange(spec.Tenant)
			if err := ch.ExchangeDeclare(rpc, amqp091.ExchangeDirect, true, false, false, false, nil); err != nil {
				return fmt.Errorf("declare exchange %s: %w", rpc, err)
			}
			s.markExchange(rpc)
			args := amqp091.Table{"x-dead-letter-exchange": broker.DeadLetterExchange}
			if _, err := ch.QueueDeclare(c.queue, true, false, false, false, args); err != nil {
				return fmt.Errorf("declare queue: %w", err)
			}
			if err := ch.QueueBind(c.queue, spec.Service, rpc, false, nil); err != nil {
				return fmt.Errorf("bind to %s: %w", rpc, err)
			}
			for _, t := range spec.Topics {
				ev := broker.EventsExchange(t.Tenant)
				if err := ch.ExchangeDeclare(ev, amqp091.ExchangeTopic, true, false, false, false, nil); err != nil {
					return fmt.Errorf("declare exchange %s: %w", ev, err)
				}
				s.markExchange(ev)
				if err := ch.QueueBind(c.queue, t.Pattern, ev, false, nil); err != nil {
					return fmt.Errorf("bind to %s by %q: %w", ev, t.Pattern, err)
				}
			}
			var err error
			deliveries, err = ch.Consume(c.queue, c.tag, false, false, false, false, nil)
			if err != nil {
				return fmt.Errorf("consume: %w", err)
			}
			return nil
		}()
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = ch.Close()
		<-done
		err = ctx.Err()
	}
	if err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("amqp: serve %s: %w", c.queue, s.wrapConnErr(err))
	}
	return &consumerChan{ch: ch, deliveries: deliveries}, nil
}

// run dispatches deliveries and, when the channel goes away without a Stop
// (connection lost, queue deleted, channel error), opens a new one.
func (c *consumer) run(cc *consumerChan) {
	defer close(c.loopDone)
	for {
		if !c.dispatch(cc) {
			return // Stop takes over the channel
		}
		cc.closed.Store(true)
		_ = cc.ch.Close()
		cc = c.reopen()
		if cc == nil {
			return
		}
	}
}

// dispatch hands deliveries to handlers until the delivery stream ends
// (true) or Stop is called (false).
func (c *consumer) dispatch(cc *consumerChan) bool {
	for {
		select {
		case d, ok := <-cc.deliveries:
			if !ok {
				return true
			}
			c.handle(cc, d)
		case <-c.stopping:
			return false
		}
	}
}

func (c *consumer) reopen() *consumerChan {
	log := c.b.log.With("queue", c.queue)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := context.AfterFunc(c.hard, cancel)
	defer stop()
	go func() {
		select {
		case <-c.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	for attempt := 0; ; attempt++ {
		s, err := c.b.waitLive(ctx)
		if err != nil {
			return nil
		}
		cc, err := c.open(ctx, s)
		if err == nil {
			c.mu.Lock()
			c.cur = cc
			c.mu.Unlock()
			log.Info("consumer resumed")
			return cc
		}
		wait := c.b.cfg.backoff(attempt)
		log.Warn("cannot resume consumer, retrying", "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func (c *consumer) handle(cc *consumerChan, d amqp091.Delivery) {
	ctx, cancel := context.WithCancel(c.hard)
	dl := &delivery{c: c, cc: cc, raw: d, msg: fromDelivery(&d), cancel: cancel}
	dl.timer = time.AfterFunc(c.b.cfg.HandlerTimeout, dl.expire)
	if d.Redelivered {
		c.b.stats.redeliveries.Add(1)
	}
	c.handlers.Add(1)
	go func() {
		defer c.handlers.Done()
		defer cancel()
		defer func() {
			if p := recover(); p != nil {
				c.b.log.Error("handler panicked; delivery dead-lettered", "queue", c.queue, "panic", p, "stack", string(debug.Stack()))
				_ = dl.Reject(false)
			}
		}()
		c.h(ctx, dl)
	}()
}

// Stop cancels the subscription, returns deliveries not yet handed to a
// handler to the queue, waits for running handlers until ctx ends (then
// cancels their contexts), and closes the channel, which returns every
// delivery still unsettled to the queue.
func (c *consumer) Stop(ctx context.Context) error {
	c.stopOnce.Do(func() { c.stopErr = c.stop(ctx) })
	return c.stopErr
}

func (c *consumer) stop(ctx context.Context) error {
	close(c.stopping)
	<-c.loopDone
	c.mu.Lock()
	cc := c.cur
	c.mu.Unlock()
	if cc != nil && !cc.closed.Load() {
		if err := cc.ch.Cancel(c.tag, false); err == nil {
			// The client library closes the stream after cancel-ok; what
			// it still holds was never seen by a handler.
			for d := range cc.deliveries {
				_ = d.Nack(false, true)
			}
		}
	}
	var err error
	done := make(chan struct{})
	go func() { c.handlers.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("amqp: stop %s: handlers still running: %w", c.queue, ctx.Err())
	}
	// Close before cancelling the handlers: a handler woken by the cancel
	// must find its delivery stale, so that every unsettled message goes
	// back to the queue rather than racing to be acknowledged.
	if cc != nil {
		cc.closed.Store(true)
		_ = cc.ch.Close()
	}
	c.hardCancel()
	c.b.mu.Lock()
	delete(c.b.consumers, c)
	c.b.mu.Unlock()
	return err
}

// delivery is a broker.Delivery bound to the channel generation it came on.
type delivery struct {
	c       *consumer
	cc      *consumerChan
	raw     amqp091.Delivery
	msg     broker.Message
	settled atomic.Bool
	cancel  context.CancelFunc
	timer   *time.Timer
}

func (d *delivery) Message() broker.Message { return d.msg }
func (d *delivery) Redelivered() bool       { return d.raw.Redelivered }

// Ack acknowledges the delivery on the channel it came on.
func (d *delivery) Ack() error {
	return d.settle(func() error { return d.raw.Ack(false) })
}

// Reject returns the delivery to its queue or, without requeue,
// dead-letters it.
func (d *delivery) Reject(requeue bool) error {
	return d.settle(func() error { return d.raw.Reject(requeue) })
}

func (d *delivery) settle(send func() error) error {
	if !d.settled.CompareAndSwap(false, true) {
		return ErrSettled
	}
	d.timer.Stop()
	if d.cc.closed.Load() {
		return ErrStaleDelivery
	}
	if err := send(); err != nil {
		if errors.Is(err, amqp091.ErrClosed) {
			return ErrStaleDelivery
		}
		return fmt.Errorf("amqp: settle delivery: %w", err)
	}
	return nil
}

// expire runs when Config.HandlerTimeout passes with the delivery
// unsettled: dead-letter it before RabbitMQ's consumer timeout closes the
// whole channel, and tell the handler to give up.
func (d *delivery) expire() {
	if !d.settled.CompareAndSwap(false, true) {
		return
	}
	d.cancel()
	if d.cc.closed.Load() {
		return
	}
	d.c.b.log.Warn("handler exceeded HandlerTimeout; delivery dead-lettered",
		"queue", d.c.queue, "timeout", d.c.b.cfg.HandlerTimeout, "correlation_id", d.raw.CorrelationId)
	_ = d.raw.Reject(false)
}
