package host

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// replyCtx bounds publishing one response by replyTimeout, detached from the
// handler's cancellation (a hard stop still owes the caller an answer): what
// context.WithTimeout(context.WithoutCancel(ctx), replyTimeout) gives, but
// its timer is made only when a broker waits on Done (RabbitMQ's publisher
// confirm). The embedded broker never does, and saves the timer and three
// allocations per request.
type replyCtx struct {
	values   context.Context // for Value only
	deadline time.Time
	once     sync.Once
	done     chan struct{}
	timer    *time.Timer
	fired    atomic.Bool
}

// newReplyCtx returns the context to publish a response under; stop it
// once the publish has returned.
func newReplyCtx(ctx context.Context) *replyCtx {
	return &replyCtx{values: ctx, deadline: time.Now().Add(replyTimeout)}
}

func (c *replyCtx) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *replyCtx) Value(key any) any           { return c.values.Value(key) }

func (c *replyCtx) Done() <-chan struct{} {
	c.once.Do(func() {
		c.done = make(chan struct{})
		if d := time.Until(c.deadline); d > 0 {
			c.timer = time.AfterFunc(d, c.expire)
		} else {
			c.expire()
		}
	})
	return c.done
}

func (c *replyCtx) expire() {
	c.fired.Store(true)
	close(c.done)
}

// Err is DeadlineExceeded from the deadline on, even in the instant before
// a lazily made Done closes.
func (c *replyCtx) Err() error {
	if c.fired.Load() || !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// stop releases the timer, if one was made; a Done after stop is nil (never
// closes).
func (c *replyCtx) stop() {
	c.once.Do(func() {})
	if c.timer != nil {
		c.timer.Stop()
	}
}
