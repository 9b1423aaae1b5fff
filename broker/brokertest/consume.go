package brokertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"github.com/nuropb/nuropb/broker"
)

// testCompetingConsumers: two consumers of one route share its messages,
// each message handled once.
func testCompetingConsumers(e *env) {
	var a, b inbox
	slow := func(in *inbox) broker.Handler {
		return func(_ context.Context, d broker.Delivery) {
			time.Sleep(2 * time.Millisecond) // so that one consumer cannot drain the queue alone
			in.add(d)
			_ = d.Ack()
		}
	}
	e.serve(broker.ServiceSpec{Route: e.route("shared"), Prefetch: 1}, slow(&a))
	e.serve(broker.ServiceSpec{Route: e.route("shared"), Prefetch: 1}, slow(&b))

	const n = 20
	var sent []string
	for range n {
		corr := e.id("cmd")
		sent = append(sent, corr)
		e.send(e.route("shared"), e.command(corr))
	}
	e.eventually(fmt.Sprintf("%d deliveries", n), func() bool { return a.len()+b.len() >= n })
	e.quiet()
	ga, gb := corrs(a.list()), corrs(b.list())
	if len(ga) == 0 || len(gb) == 0 {
		e.t.Errorf("consumers got %d and %d messages: they must share", len(ga), len(gb))
	}
	all := append(ga, gb...)
	sort.Strings(all)
	sort.Strings(sent)
	if !slices.Equal(all, sent) {
		e.t.Errorf("handled %q, want each of %q exactly once", all, sent)
	}
}

// blocker is a handler that holds each delivery until released (or its
// context ends), counting how many run at once.
type blocker struct {
	running, peak, done atomic.Int64
	release             chan struct{}
}

func newBlocker() *blocker { return &blocker{release: make(chan struct{})} }

func (bl *blocker) handle(ctx context.Context, d broker.Delivery) {
	n := bl.running.Add(1)
	for p := bl.peak.Load(); n > p && !bl.peak.CompareAndSwap(p, n); p = bl.peak.Load() {
	}
	select {
	case <-bl.release:
	case <-ctx.Done():
	}
	bl.running.Add(-1)
	_ = d.Ack()
	bl.done.Add(1)
}

// testPrefetchBounds: no more handlers run at once than the prefetch.
func testPrefetchBounds(e *env) {
	for _, prefetch := range []int{1, 3} {
		bl := newBlocker()
		route := e.route(fmt.Sprintf("bounded%d", prefetch))
		e.serve(broker.ServiceSpec{Route: route, Prefetch: prefetch}, bl.handle)
		total := prefetch + 4
		for range total {
			e.send(route, e.command(e.id("cmd")))
		}
		e.eventually(fmt.Sprintf("%d handlers running", prefetch), func() bool { return bl.running.Load() >= int64(prefetch) })
		time.Sleep(e.f.Quiet)
		if p := bl.peak.Load(); p != int64(prefetch) {
			e.t.Errorf("prefetch %d: %d handlers ran at once", prefetch, p)
		}
		close(bl.release)
		e.eventually("every command handled", func() bool { return bl.done.Load() == int64(total) })
		if p := bl.peak.Load(); p != int64(prefetch) {
			e.t.Errorf("prefetch %d: %d handlers ran at once", prefetch, p)
		}
	}
}

// testPrefetchUnlimited: prefetch 0 means no limit (NuroPb could not
// configure it).
func testPrefetchUnlimited(e *env) {
	bl := newBlocker()
	defer close(bl.release)
	e.serve(broker.ServiceSpec{Route: e.route("unbounded"), Prefetch: 0}, bl.handle)
	const n = 40
	for range n {
		e.send(e.route("unbounded"), e.command(e.id("cmd")))
	}
	e.eventually(fmt.Sprintf("%d handlers at once", n), func() bool { return bl.running.Load() == n })
}

// testRejectRequeue: a message rejected with requeue comes back, marked
// redelivered.
func testRejectRequeue(e *env) {
	var in inbox
	e.serve(broker.ServiceSpec{Route: e.route("flaky"), Prefetch: 1}, func(_ context.Context, d broker.Delivery) {
		in.add(d)
		if d.Redelivered() {
			_ = d.Ack()
		} else if err := d.Reject(true); err != nil {
			e.t.Errorf("Reject(true): %v", err)
		}
	})
	corr := e.id("cmd")
	e.send(e.route("flaky"), e.command(corr))
	e.await(&in, 2)
	got := e.settle(&in)
	if len(got) != 2 {
		e.t.Fatalf("delivered %d times, want twice (once, then once redelivered)", len(got))
	}
	if got[0].redelivered || !got[1].redelivered {
		e.t.Errorf("redelivered flags %v, %v; want false, true", got[0].redelivered, got[1].redelivered)
	}
	if got[1].msg.CorrelationID != corr || string(got[1].msg.Body) != string(got[0].msg.Body) {
		e.t.Errorf("redelivered %+v, want the original %+v", got[1].msg, got[0].msg)
	}
}

// testRejectDeadLetters: a message rejected without requeue is dead-lettered
// and not delivered again.
func testRejectDeadLetters(e *env) {
	e.needDeadLetters()
	var in inbox
	e.serve(broker.ServiceSpec{Route: e.route("picky"), Prefetch: 1}, func(_ context.Context, d broker.Delivery) {
		in.add(d)
		if err := d.Reject(false); err != nil {
			e.t.Errorf("Reject(false): %v", err)
		}
	})
	corr := e.id("cmd")
	e.send(e.route("picky"), e.command(corr))
	dl := e.deadLetter(corr)
	if string(dl.Body) != "body of "+corr {
		e.t.Errorf("dead letter body %q", dl.Body)
	}
	if got := e.settle(&in); len(got) != 1 {
		e.t.Errorf("rejected message delivered %d times, want once", len(got))
	}
}

// testExpiration: a message that waits in its queue longer than its
// expiration is dead-lettered, never delivered.
func testExpiration(e *env) {
	e.needDeadLetters()
	route := e.route("sleepy")
	e.stop(e.serve(broker.ServiceSpec{Route: route, Prefetch: 1}, e.acker(&inbox{}))) // the queue stays, unserved

	stale, fresh := e.id("stale"), e.id("fresh")
	msg := e.command(stale)
	msg.Expiration = 50 * time.Millisecond
	e.send(route, msg)
	e.send(route, e.command(fresh)) // no expiration: proves the queue still delivers
	time.Sleep(200 * time.Millisecond)

	var in inbox
	e.serve(broker.ServiceSpec{Route: route, Prefetch: 1}, e.acker(&in))
	e.await(&in, 1)
	if got := corrs(e.settle(&in)); !slices.Equal(got, []string{fresh}) {
		e.t.Errorf("delivered %q, want only %q (%q expired)", got, fresh, stale)
	}
	e.deadLetter(stale)
}

// testSettleOnce: a delivery is settled once; a second Ack or Reject fails
// instead of settling some other message.
func testSettleOnce(e *env) {
	errs := make(chan [3]error, 1)
	e.serve(broker.ServiceSpec{Route: e.route("twice"), Prefetch: 1}, func(_ context.Context, d broker.Delivery) {
		errs <- [3]error{d.Ack(), d.Ack(), d.Reject(true)}
	})
	e.send(e.route("twice"), e.command(e.id("cmd")))
	var got [3]error
	select {
	case got = <-errs:
	case <-time.After(e.f.Patience):
		e.t.Fatal("command not delivered")
	}
	if got[0] != nil || got[1] == nil || got[2] == nil {
		e.t.Errorf("Ack, Ack, Reject returned %v; want nil, then errors", got)
	}
}

// testStopWaits: Stop returns after running handlers finish, and no handler
// starts after it.
func testStopWaits(e *env) {
	started := make(chan struct{}, 1)
	var finished, calls atomic.Int64
	c := e.serve(broker.ServiceSpec{Route: e.route("slow"), Prefetch: 2}, func(_ context.Context, d broker.Delivery) {
		calls.Add(1)
		started <- struct{}{}
		time.Sleep(150 * time.Millisecond)
		finished.Add(1)
		_ = d.Ack()
	})
	e.send(e.route("slow"), e.command(e.id("cmd")))
	select {
	case <-started:
	case <-time.After(e.f.Patience):
		e.t.Fatal("command not delivered")
	}
	e.stop(c)
	if finished.Load() != 1 {
		e.t.Fatal("Stop returned while a handler was still running")
	}
	e.send(e.route("slow"), e.command(e.id("cmd"))) // the queue stays and takes it
	time.Sleep(e.f.Quiet)
	if n := calls.Load(); n != 1 {
		e.t.Fatalf("handler called %d times, want once: a stopped consumer took a delivery", n)
	}
}

// testStopRequeues: deliveries a stopped consumer did not settle go back to
// the queue, redelivered, for another consumer; settling them late fails.
func testStopRequeues(e *env) {
	var first inbox
	c := e.serve(broker.ServiceSpec{Route: e.route("fickle"), Prefetch: 2}, func(_ context.Context, d broker.Delivery) {
		first.add(d) // and neither Ack nor Reject
	})
	a, b := e.id("a"), e.id("b")
	e.send(e.route("fickle"), e.command(a))
	e.send(e.route("fickle"), e.command(b))
	held := e.await(&first, 2)
	e.stop(c)
	for _, r := range held {
		if err := r.d.Ack(); err == nil {
			e.t.Errorf("Ack of %s after its consumer stopped succeeded; want an error", r.msg.CorrelationID)
		}
	}

	var second inbox
	e.serve(broker.ServiceSpec{Route: e.route("fickle"), Prefetch: 2}, e.acker(&second))
	e.await(&second, 2)
	got := e.settle(&second)
	ids := corrs(got)
	sort.Strings(ids)
	want := []string{a, b}
	sort.Strings(want)
	if !slices.Equal(ids, want) {
		e.t.Fatalf("second consumer got %q, want %q", ids, want)
	}
	for _, r := range got {
		if !r.redelivered {
			e.t.Errorf("%s not marked redelivered", r.msg.CorrelationID)
		}
	}
}

// testStopHard: when Stop's context ends first, handlers' contexts end, Stop
// returns that error, and the message goes back to the queue.
func testStopHard(e *env) {
	var cancelled atomic.Bool
	started := make(chan struct{}, 1)
	c := e.serve(broker.ServiceSpec{Route: e.route("stuck"), Prefetch: 1}, func(ctx context.Context, d broker.Delivery) {
		started <- struct{}{}
		<-ctx.Done()
		cancelled.Store(true)
	})
	corr := e.id("cmd")
	e.send(e.route("stuck"), e.command(corr))
	select {
	case <-started:
	case <-time.After(e.f.Patience):
		e.t.Fatal("command not delivered")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Stop(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		e.t.Errorf("Stop with a handler that never returns: %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took > time.Second {
		e.t.Errorf("Stop took %v past its context", took)
	}
	e.eventually("the handler's context to end", cancelled.Load)

	var in inbox
	e.serve(broker.ServiceSpec{Route: e.route("stuck"), Prefetch: 1}, e.acker(&in))
	got := e.await(&in, 1)
	if got[0].msg.CorrelationID != corr || !got[0].redelivered {
		e.t.Errorf("after a hard stop got %s (redelivered %v), want %s redelivered",
			got[0].msg.CorrelationID, got[0].redelivered, corr)
	}
}
