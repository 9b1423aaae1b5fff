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
	return q.push(d, false)
}

// push hands d to an idle worker, or to a new worker of a consumer below its
// prefetch, or else stores it. Requeued deliveries go to the front and are
// not refused for length: they were already accepted once.
func (q *queue) push(d *delivery, front bool) error {
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return errGone
	}
	if d.expires != 0 && d.expires <= now() {
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

	select {
	case d := <-w.ch:
		return d
	case <-c.stopCh:
		// A publisher may have picked w just before the stop; it sent under
		// q.mu, so holding it now settles whether a delivery is in w.ch.
		q.mu.Lock()
		var d *delivery
		select {
		case d = <-w.ch:
		default:
		}
		q.mu.Unlock()
		if d != nil {
			d.c = nil
			_ = q.push(d, true) // never handed to a handler, so not marked redelivered
		}
		return nil
	}
}

// attach adds a consumer and starts its first worker, so that an idle
// consumer already waits in line and competing consumers alternate from the
// first message.
func (q *queue) attach(c *consumer) {
	q.mu.Lock()
	q.consumers = append(q.consumers, c)
	q.attached++
	c.workers = 1
	q.b.wg.Add(1)
	q.mu.Unlock()
	go c.newWorker().run(nil)
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
	q.idle.filter(func(w *worker) bool { return w.c != c })
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
