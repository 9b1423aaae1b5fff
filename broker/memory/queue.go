package memory

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nuropb/nuropb/broker"
)

// errGone tells a publisher that the queue it found was retired or closed
// meanwhile; it looks the route up again.
var errGone = errors.New("memory broker: queue deleted")

// sweepEvery is the shortest interval between two expiry sweeps of one
// queue, so that a queue of many expiring messages costs O(n) a few times a
// second rather than once per message.
const sweepEvery = 10 * time.Millisecond

// idleCap is how many idle workers an unlimited (prefetch 0) consumer keeps;
// more exit, so that one burst does not leave thousands of goroutines parked.
const idleCap = 128

// queue is one service queue with its consumers.
type queue struct {
	b     *Broker
	name  string
	route broker.Route
	max   int

	mu        sync.Mutex
	msgs      ring[*delivery] // ready messages, oldest first
	idle      ring[*worker]   // workers waiting for a message, longest waiting first
	consumers []*consumer     // serving consumers, in the order they grow workers
	grow      int             // next consumer to grow a worker, round robin
	attached  int             // consumers whose workers have not all exited
	deleted   bool
	timer     *time.Timer // expiry sweep
	timerAt   int64       // when timer fires, if armed
	armed     bool
}

func newQueue(b *Broker, r broker.Route) *queue {
	return &queue{b: b, name: broker.ServiceQueue(r), route: r, max: b.cfg.MaxQueueLength}
}

// publish enqueues a copy of msg as a new delivery.
func (q *queue) publish(msg *broker.Message) error {
	d := &delivery{msg: *msg, q: q}
	if msg.Expiration != 0 {
		d.expires = now() + int64(msg.Expiration)
	}
	return q.push(d, false, msg.Expiration < 0)
}

// push hands d to an idle worker, or to a new worker of a consumer below its
// prefetch, or else stores it. Requeued deliveries go to the front and are
// not refused for length: they were already accepted once. expired asks for
// an expiry check first; a fresh message with a positive expiration cannot
// have expired yet, which saves reading the clock twice.
func (q *queue) push(d *delivery, front, expired bool) error {
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return errGone
	}
	if expired && d.expires != 0 && d.expires <= now() {
		q.b.deadLetter(d, "expired")
		q.mu.Unlock()
		return nil
	}
	if w, ok := q.idle.popFront(); ok {
		w.c.idle--
		d.c = w.c
		w.ch <- d // never blocks: a worker is idle at most once and its slot is empty
		q.mu.Unlock()
		return nil
	}
	if c := q.growable(); c != nil {
		c.workers++
		q.b.wg.Add(1)
		d.c = c
		q.mu.Unlock()
		go c.newWorker().run(d)
		return nil
	}
	if !front && q.msgs.len() >= q.max {
		q.mu.Unlock()
		return fmt.Errorf("%w: %s holds %d messages, the limit (MaxQueueLength); its consumers are not keeping up",
			ErrQueueFull, q.name, q.max)
	}
	if front {
		q.msgs.pushFront(d)
	} else {
		q.msgs.pushBack(d)
	}
	if d.expires != 0 {
		q.arm(d.expires)
	}
	q.mu.Unlock()
	return nil
}

// growable returns the next consumer, round robin, that may run one more
// handler, or nil. Called with q.mu held.
func (q *queue) growable() *consumer {
	for i := range q.consumers {
		c := q.consumers[(q.grow+i)%len(q.consumers)]
		if c.prefetch == 0 || c.workers < c.prefetch {
			q.grow = (q.grow + i + 1) % len(q.consumers)
			return c
		}
	}
	return nil
}

// take gives worker w its next delivery, waiting while the queue is empty.
// It returns nil when w should exit: its consumer stopped, or it is surplus.
func (q *queue) take(w *worker) *delivery {
	c := w.c
	q.mu.Lock()
	if c.stopped {
		q.mu.Unlock()
		return nil
	}
	for {
		d, ok := q.msgs.popFront()
		if !ok {
			break
		}
		if d.expires != 0 && d.expires <= now() {
			q.b.deadLetter(d, "expired") // RabbitMQ expires at the head, never delivers
			continue
		}
		d.c = c
		q.mu.Unlock()
		return d
	}
	if c.prefetch == 0 && c.idle >= idleCap {
		q.mu.Unlock()
		return nil
	}
	q.idle.pushBack(w)
	c.idle++
	q.mu.Unlock()
	return q.wait(w)
}

// wait parks an idle worker until a publisher hands it a delivery, or detach
// hands it nil to make it leave. One plain channel receive, not a select:
// this is on every message's path.
func (q *queue) wait(w *worker) *delivery { return <-w.ch }

// attach adds a consumer with its first worker already in the idle line
// (unless messages wait), so that a message sent once Serve returns goes
// straight to it and competing consumers alternate from the first message.
func (q *queue) attach(c *consumer) {
	w := c.newWorker()
	q.mu.Lock()
	q.consumers = append(q.consumers, c)
	q.attached++
	c.workers = 1
	q.b.wg.Add(1)
	parked := q.msgs.len() == 0
	if parked {
		q.idle.pushBack(w)
		c.idle++
	}
	q.mu.Unlock()
	go w.start(parked)
}

// detach takes a stopping consumer out of the rotation and out of the idle
// line. It reports whether the consumer has no worker left.
func (q *queue) detach(c *consumer) (finished bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if c.stopped {
		return false
	}
	c.stopped = true
	for i, o := range q.consumers {
		if o == c {
			q.consumers = append(q.consumers[:i], q.consumers[i+1:]...)
			break
		}
	}
	if len(q.consumers) > 0 {
		q.grow %= len(q.consumers)
	} else {
		q.grow = 0
	}
	q.idle.filter(func(w *worker) bool {
		if w.c != c {
			return true
		}
		w.ch <- nil // its slot is empty while it waits in line
		return false
	})
	c.idle = 0
	if c.workers == 0 {
		q.attached--
		return true
	}
	return false
}

// workerExit accounts for a worker that returned. It reports whether it was
// the last worker of a stopped consumer.
func (q *queue) workerExit(c *consumer) (finished bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	c.workers--
	if c.workers == 0 && c.stopped {
		q.attached--
		return true
	}
	return false
}

// retire marks the queue deleted if nothing uses it, and reports whether it
// did.
func (q *queue) retire() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.attached > 0 || q.msgs.len() > 0 {
		return false
	}
	q.deleted = true
	q.stopTimer()
	return true
}

// shutdown deletes the queue with whatever it holds and stops its consumers;
// used by Close.
func (q *queue) shutdown() {
	q.mu.Lock()
	q.deleted = true
	q.stopTimer()
	q.msgs = ring[*delivery]{}
	cs := append([]*consumer(nil), q.consumers...)
	q.mu.Unlock()
	for _, c := range cs {
		c.halt()
	}
}

// arm makes sure an expiry sweep runs no later than at. Called with q.mu held.
func (q *queue) arm(at int64) {
	if q.armed && q.timerAt <= at {
		return
	}
	delay := time.Duration(at - now())
	q.timerAt, q.armed = at, true
	if q.timer == nil {
		q.timer = time.AfterFunc(delay, q.sweep)
		return
	}
	q.timer.Reset(delay)
}

func (q *queue) stopTimer() {
	if q.timer != nil {
		q.timer.Stop()
	}
	q.armed = false
}

// sweep dead-letters every expired message, wherever it sits in the queue,
// and arms the timer for the next one to expire.
func (q *queue) sweep() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.armed = false
	if q.deleted {
		return
	}
	t := now()
	var next int64
	q.msgs.filter(func(d *delivery) bool {
		switch {
		case d.expires == 0:
			return true
		case d.expires <= t:
			q.b.deadLetter(d, "expired")
			return false
		case next == 0 || d.expires < next:
			next = d.expires
		}
		return true
	})
	if next != 0 {
		q.arm(max(next, t+int64(sweepEvery)))
	}
}
