package memory

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nuropb/nuropb/broker"
)

// ErrQueueFull is returned when a service queue already holds
// Config.MaxQueueLength messages: its consumers are not keeping up, or there
// are none. The wrapped error names the queue and the limit.
var ErrQueueFull = errors.New("memory broker: queue full")

// Broker is the in-process broker. Create it with New; it is safe for
// concurrent use, and Close stops every goroutine it started.
type Broker struct {
	cfg Config

	// mu serialises topology changes (Serve, Retire, Close); readers use
	// topo without it.
	mu     sync.Mutex
	topo   atomic.Pointer[topology]
	closed atomic.Bool

	cmu       sync.Mutex
	consumers map[*consumer]struct{} // live consumers, so Close can cancel them
	wg        sync.WaitGroup         // every worker goroutine

	replyPrefix string        // ReplyTo of this broker's requests, before the sequence number
	seq         atomic.Uint64 // request sequence numbers
	pmu         sync.Mutex
	pending     map[uint64]*pending // requests waiting for a response, by sequence number

	dead deadLetters
}

// topology is an immutable snapshot of the routing tables; a change builds a
// new one.
type topology struct {
	queues map[broker.Route]*queue // direct exchange of each tenant: route -> service queue
	events map[string][]binding    // topic exchange of each tenant: tenant -> bindings
}

// binding ties a queue to a topic pattern on one tenant's exchange.
type binding struct {
	raw     string
	pattern []string
	q       *queue
}

// pending is one Request waiting for its response.
type pending struct {
	ch   chan result // one slot: the responder never blocks
	corr string      // the request's CorrelationID, which the response must carry
}

// result is what a waiting Request receives: the response, or ErrClosed
// from Close. Close uses the same channel so that a Request waits on one
// channel, or two with a cancellable context, never three.
type result struct {
	msg broker.Message
	err error
}

var pendingPool = sync.Pool{New: func() any { return &pending{ch: make(chan result, 1)} }}

// brokers numbers Brokers so that ReplyTo names never cross between two
// brokers in one process.
var brokers atomic.Uint64

var _ broker.Broker = (*Broker)(nil)

// New returns a Broker with cfg's limits.
func New(cfg Config) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	b := &Broker{
		cfg:         cfg,
		consumers:   make(map[*consumer]struct{}),
		replyPrefix: "nuropb-memory-" + strconv.FormatUint(brokers.Add(1), 10) + "-rq.",
		pending:     make(map[uint64]*pending),
	}
	b.dead.max = cfg.MaxDeadLetters
	b.topo.Store(&topology{queues: map[broker.Route]*queue{}, events: map[string][]binding{}})
	return b, nil
}

// tenantOf folds the empty tenant into DefaultTenant, as broker's naming does.
func tenantOf(t string) string {
	if t == "" {
		return broker.DefaultTenant
	}
	return t
}

func routeOf(r broker.Route) broker.Route {
	r.Tenant = tenantOf(r.Tenant)
	return r
}

func noRoute(r broker.Route) error {
	return fmt.Errorf("%w: no queue %s for service %q of tenant %q", broker.ErrNoRoute,
		broker.ServiceQueue(r), r.Service, r.Tenant)
}

// Serve declares the route's queue and binds it to spec.Topics (both stay
// until Retire or Close), then starts a consumer. ctx bounds only the
// declaration; handlers get a context of the consumer's own.
func (b *Broker) Serve(ctx context.Context, spec broker.ServiceSpec, h broker.Handler) (broker.Consumer, error) {
	route := routeOf(spec.Route)
	switch {
	case h == nil:
		return nil, fmt.Errorf("memory broker: serve %s: nil handler", broker.ServiceQueue(route))
	case route.Service == "":
		return nil, errors.New("memory broker: serve: empty service name")
	case spec.Prefetch < 0:
		return nil, fmt.Errorf("memory broker: serve %s: prefetch %d, want 0 (unlimited) or more",
			broker.ServiceQueue(route), spec.Prefetch)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return nil, broker.ErrClosed
	}
	old := b.topo.Load()
	q := old.queues[route]
	next := &topology{queues: old.queues, events: old.events}
	if q == nil {
		q = newQueue(b, route)
		next.queues = make(map[broker.Route]*queue, len(old.queues)+1)
		for r, oq := range old.queues {
			next.queues[r] = oq
		}
		next.queues[route] = q
	}
	copied := false
	for _, tb := range spec.Topics {
		tenant := tenantOf(tb.Tenant)
		if hasBinding(next.events[tenant], q, tb.Pattern) {
			continue // RabbitMQ keeps one binding per (queue, key)
		}
		if !copied {
			next.events, copied = copyEvents(old.events), true
		}
		bs := next.events[tenant]
		next.events[tenant] = append(bs[:len(bs):len(bs)], // never write into a slice readers hold
			binding{raw: tb.Pattern, pattern: splitWords(tb.Pattern, nil), q: q})
	}
	b.topo.Store(next)

	c := newConsumer(q, h, spec.Prefetch)
	b.cmu.Lock()
	b.consumers[c] = struct{}{}
	b.cmu.Unlock()
	q.attach(c)
	return c, nil
}

func hasBinding(bs []binding, q *queue, pattern string) bool {
	for _, bd := range bs {
		if bd.q == q && bd.raw == pattern {
			return true
		}
	}
	return false
}

func copyEvents(m map[string][]binding) map[string][]binding {
	out := make(map[string][]binding, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// queue returns the service queue of the route, or nil.
func (b *Broker) queue(r broker.Route) *queue {
	return b.topo.Load().queues[routeOf(r)]
}

// route publishes msg to the route's queue, following the route again if
// the queue was retired (and perhaps declared anew) in the meantime.
func (b *Broker) route(to broker.Route, msg *broker.Message) error {
	for {
		q := b.queue(to)
		if q == nil {
			if b.closed.Load() {
				return broker.ErrClosed
			}
			return noRoute(routeOf(to))
		}
		err := q.publish(msg)
		if err != errGone {
			return err
		}
	}
}

// Request publishes msg to the route and waits for the response that carries
// its CorrelationID (one is made up when msg has none).
func (b *Broker) Request(ctx context.Context, to broker.Route, msg broker.Message) (broker.Message, error) {
	if b.closed.Load() {
		return broker.Message{}, broker.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return broker.Message{}, err
	}
	id := b.seq.Add(1)
	var buf [64]byte
	msg.ReplyTo = string(strconv.AppendUint(append(buf[:0], b.replyPrefix...), id, 10))
	if msg.CorrelationID == "" {
		msg.CorrelationID = msg.ReplyTo[len("nuropb-"):] // unique too, and shares ReplyTo's bytes
	}
	p := pendingPool.Get().(*pending)
	p.corr = msg.CorrelationID
	b.pmu.Lock()
	if b.closed.Load() { // checked under pmu: Close empties the map after setting closed
		b.pmu.Unlock()
		pendingPool.Put(p)
		return broker.Message{}, broker.ErrClosed
	}
	b.pending[id] = p
	b.pmu.Unlock()

	if err := b.route(to, &msg); err != nil {
		b.forget(id, p)
		return broker.Message{}, err
	}
	var r result
	if done := ctx.Done(); done == nil {
		r = <-p.ch
	} else {
		select {
		case r = <-p.ch:
		case <-done:
			b.forget(id, p)
			return broker.Message{}, ctx.Err()
		}
	}
	p.corr = ""
	pendingPool.Put(p)
	return r.msg, r.err
}

// forget removes a request that ends without its response. If a Reply took
// the entry first, its response is on the way and is drained so that p can
// be reused.
func (b *Broker) forget(id uint64, p *pending) {
	b.pmu.Lock()
	mine := b.pending[id] == p
	if mine {
		delete(b.pending, id)
	}
	b.pmu.Unlock()
	if !mine {
		<-p.ch
	}
	p.corr = ""
	pendingPool.Put(p)
}

// Send publishes a command to the route's queue.
func (b *Broker) Send(ctx context.Context, to broker.Route, msg broker.Message) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.route(to, &msg)
}

// Publish puts an event on the tenant's topic exchange: one copy to each
// queue with a matching binding, however many of its bindings match. A full
// queue does not keep the event from the others; its error is returned.
func (b *Broker) Publish(ctx context.Context, tenant, topic string, msg broker.Message) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	bs := b.topo.Load().events[tenantOf(tenant)]
	if len(bs) == 0 {
		return nil
	}
	var wb [16]string
	words := splitWords(topic, wb[:0])
	var sb [8]*queue
	sent := sb[:0]
	var errs []error
next:
	for _, bd := range bs {
		for _, q := range sent {
			if q == bd.q {
				continue next
			}
		}
		if !matchWords(bd.pattern, words) {
			continue
		}
		sent = append(sent, bd.q)
		if err := bd.q.publish(&msg); err != nil && err != errGone {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Reply hands a response to the Request waiting at replyTo. A response for a
// request that has already ended, or whose CorrelationID does not match the
// request's, is dropped, as RabbitMQ drops an unroutable response.
func (b *Broker) Reply(ctx context.Context, replyTo string, msg broker.Message) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	rest, ok := strings.CutPrefix(replyTo, b.replyPrefix)
	id, err := strconv.ParseUint(rest, 10, 64)
	if !ok || err != nil {
		return fmt.Errorf("%w: reply-to %q is not a request of this broker", broker.ErrNoRoute, replyTo)
	}
	b.pmu.Lock()
	p := b.pending[id]
	if p == nil || p.corr != msg.CorrelationID {
		b.pmu.Unlock()
		return nil
	}
	delete(b.pending, id)
	b.pmu.Unlock()
	p.ch <- result{msg: msg}
	return nil
}

// Retire deletes the route's queue and its bindings when no consumer is
// attached and no message waits, like RabbitMQ's queue.delete with if-unused
// and if-empty. A consumer still draining after Stop counts as attached.
func (b *Broker) Retire(ctx context.Context, to broker.Route) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	route := routeOf(to)
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.topo.Load()
	q := old.queues[route]
	if q == nil || !q.retire() {
		return nil
	}
	next := &topology{queues: make(map[broker.Route]*queue, len(old.queues)), events: make(map[string][]binding, len(old.events))}
	for r, oq := range old.queues {
		if oq != q {
			next.queues[r] = oq
		}
	}
	for t, bs := range old.events {
		var kept []binding
		for _, bd := range bs {
			if bd.q != q {
				kept = append(kept, bd)
			}
		}
		if len(kept) > 0 {
			next.events[t] = kept
		}
	}
	b.topo.Store(next)
	return nil
}

// Close stops every consumer at once (their handlers' contexts end), fails
// waiting and later calls with broker.ErrClosed, and waits for the workers
// to return: a handler that ignores its context holds Close up. Use
// Consumer.Stop first for a graceful drain. Closing twice is harmless.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed.Swap(true) {
		b.mu.Unlock()
		return nil
	}
	old := b.topo.Load()
	b.topo.Store(&topology{})
	b.mu.Unlock()

	b.pmu.Lock()
	for id, p := range b.pending {
		delete(b.pending, id)
		p.ch <- result{err: broker.ErrClosed}
	}
	b.pmu.Unlock()

	for _, q := range old.queues {
		q.shutdown()
	}
	b.cmu.Lock()
	for c := range b.consumers {
		c.cancel()
	}
	b.cmu.Unlock()
	b.wg.Wait()
	return nil
}

// DeadLetters returns a copy of the dead-letter queue, oldest first: messages
// rejected without requeue and messages that expired while queued. Each
// carries the headers x-first-death-reason ("rejected" or "expired") and
// x-first-death-queue, as RabbitMQ sets them.
func (b *Broker) DeadLetters() []broker.Message { return b.dead.list() }

// PurgeDeadLetters empties the dead-letter queue and returns how many
// messages it held.
func (b *Broker) PurgeDeadLetters() int { return b.dead.purge() }

// epoch anchors the monotonic clock used for expirations, so that a wall
// clock step never expires or revives messages.
var epoch = time.Now()

func now() int64 { return int64(time.Since(epoch)) }
