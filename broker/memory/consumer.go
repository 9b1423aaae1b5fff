package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nuropb/nuropb/broker"
)

// consumer is one Serve call: a pool of workers that grows on demand up to
// prefetch (unbounded for 0) and runs the handler.
type consumer struct {
	q        *queue
	h        broker.Handler
	prefetch int

	ctx      context.Context // handlers' context; cancelled by a hard stop
	cancel   context.CancelFunc
	finished chan struct{} // closed when the last worker has returned
	haltOnce sync.Once

	// Guarded by q.mu.
	workers int // worker goroutines running
	idle    int // of which waiting in q.idle
	stopped bool

	// mu and cond let a worker whose handler returned before settling its
	// delivery wait for the Ack or Reject, or for Stop.
	mu       sync.Mutex
	cond     sync.Cond
	stopping bool
	running  map[*worker]struct{}
}

// worker is one goroutine of a consumer; it runs one handler at a time.
type worker struct {
	c   *consumer
	ch  chan *delivery           // one slot: what an idle worker gets next, nil to leave
	cur atomic.Pointer[delivery] // the delivery being handled, for a hard stop to requeue
}

func newConsumer(q *queue, h broker.Handler, prefetch int) *consumer {
	c := &consumer{q: q, h: h, prefetch: prefetch,
		finished: make(chan struct{}), running: map[*worker]struct{}{}}
	c.cond.L = &c.mu
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

func (c *consumer) newWorker() *worker {
	w := &worker{c: c, ch: make(chan *delivery, 1)}
	c.mu.Lock()
	c.running[w] = struct{}{}
	c.mu.Unlock()
	return w
}

// run handles d and then whatever the queue gives, until told to exit (at
// once if d is nil).
func (w *worker) run(d *delivery) {
	c := w.c
	for d != nil {
		w.handle(d)
		d = c.q.take(w)
	}
	c.mu.Lock()
	delete(c.running, w)
	c.mu.Unlock()
	if c.q.workerExit(c) {
		c.finish()
	}
	c.q.b.wg.Done()
}

// start runs a consumer's first worker, parked in the idle line already or
// not.
func (w *worker) start(parked bool) {
	if parked {
		w.run(w.c.q.wait(w))
	} else {
		w.run(w.c.q.take(w))
	}
}

// handle runs the handler and holds the worker, and so the prefetch slot,
// until the delivery is settled: prefetch counts unacknowledged messages,
// not running handlers.
func (w *worker) handle(d *delivery) {
	c := w.c
	w.cur.Store(d)
	c.h(c.ctx, d)
	if d.state.Load() == open {
		d.waiting.Store(true)
		c.mu.Lock()
		for d.state.Load() == open && !c.stopping {
			c.cond.Wait()
		}
		c.mu.Unlock()
		d.revoke() // no-op if settled; else the consumer stopped, and RabbitMQ requeues unacked messages
	}
	w.cur.Store(nil)
}

// halt begins a stop: no new deliveries, idle workers leave, and workers
// waiting on an unsettled delivery give it back.
func (c *consumer) halt() {
	c.haltOnce.Do(func() {
		if c.q.detach(c) {
			c.finish()
		}
		c.mu.Lock()
		c.stopping = true
		c.cond.Broadcast()
		c.mu.Unlock()
	})
}

func (c *consumer) finish() {
	close(c.finished)
	c.cancel()
	b := c.q.b
	b.cmu.Lock()
	delete(b.consumers, c)
	b.cmu.Unlock()
}

// Stop stops taking deliveries and waits for running handlers. Deliveries
// not settled by then go back to the queue, marked redelivered, for another
// consumer. If ctx ends first the stop turns hard: handlers' contexts are
// cancelled, their deliveries requeued at once (a late Ack fails), and Stop
// returns ctx's error.
func (c *consumer) Stop(ctx context.Context) error {
	c.halt()
	select {
	case <-c.finished:
		return nil
	case <-ctx.Done():
	}
	c.cancel()
	c.mu.Lock()
	var held []*delivery
	for w := range c.running {
		if d := w.cur.Load(); d != nil {
			held = append(held, d)
		}
	}
	c.mu.Unlock()
	for _, d := range held {
		d.revoke()
	}
	return fmt.Errorf("memory broker: stop consumer of %s: %d handlers still running: %w",
		c.q.name, len(held), ctx.Err())
}

// Delivery states.
const (
	open    uint32 = iota // handed out, not yet settled
	settled               // acked or rejected
	revoked               // given back to the queue when its consumer stopped
)

// delivery is a message in a queue and, once handed out, the broker.Delivery
// a handler settles.
type delivery struct {
	msg         broker.Message
	q           *queue
	c           *consumer // set when handed to a worker
	expires     int64     // monotonic nanoseconds (see now); 0 for never
	redelivered bool
	state       atomic.Uint32
	waiting     atomic.Bool // a worker waits on c.cond for this delivery to settle
}

var (
	errSettled = errors.New("memory broker: delivery already acknowledged or rejected")
	errRevoked = errors.New("memory broker: delivery went back to its queue when its consumer stopped")
)

// Message returns the delivered message. Its Body and Headers are shared:
// read them, do not modify them.
func (d *delivery) Message() broker.Message { return d.msg }

// Redelivered reports that a consumer had this message before without
// acknowledging it.
func (d *delivery) Redelivered() bool { return d.redelivered }

// Ack removes the message for good.
func (d *delivery) Ack() error { return d.settle() }

// Reject requeues the message at the front of its queue, marked
// redelivered, or dead-letters it.
func (d *delivery) Reject(requeue bool) error {
	if err := d.settle(); err != nil {
		return err
	}
	if requeue {
		d.requeue()
	} else {
		d.q.b.deadLetter(d, "rejected")
	}
	return nil
}

func (d *delivery) settle() error {
	if d.q.b.closed.Load() {
		return broker.ErrClosed
	}
	if !d.state.CompareAndSwap(open, settled) {
		if d.state.Load() == revoked {
			return errRevoked
		}
		return errSettled
	}
	if d.waiting.Load() {
		c := d.c
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	}
	return nil
}

// revoke takes back an unsettled delivery and requeues it.
func (d *delivery) revoke() {
	if d.state.CompareAndSwap(open, revoked) {
		d.requeue()
	}
}

// requeue puts a fresh copy at the front of the queue: the old one stays
// settled so that its handler cannot settle the message twice.
func (d *delivery) requeue() {
	nd := &delivery{msg: d.msg, q: d.q, expires: d.expires, redelivered: true}
	_ = d.q.push(nd, true, true) // a deleted queue (Close) drops it, as a deleted RabbitMQ queue does
}
