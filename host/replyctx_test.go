package host

import (
	"context"
	"errors"
	"testing"
	"time"
)

type ctxKey struct{}

func TestReplyCtx(t *testing.T) {
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
	c := newReplyCtx(parent)
	defer c.stop()
	cancel()
	if c.Err() != nil || c.Value(ctxKey{}) != "v" {
		t.Fatalf("detached from the parent's cancellation, keeping its values: err %v, value %v", c.Err(), c.Value(ctxKey{}))
	}
	if dl, ok := c.Deadline(); !ok || time.Until(dl) < replyTimeout-time.Second {
		t.Fatalf("deadline %v, %v", dl, ok)
	}
	select {
	case <-c.Done():
		t.Fatal("done before its deadline")
	default:
	}

	// A short deadline closes Done and sets Err.
	c2 := newReplyCtx(context.Background())
	defer c2.stop()
	c2.deadline = time.Now().Add(10 * time.Millisecond)
	select {
	case <-c2.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done never closed")
	}
	if !errors.Is(c2.Err(), context.DeadlineExceeded) {
		t.Fatalf("err %v", c2.Err())
	}

	// Past its deadline before anyone asked for Done.
	c3 := newReplyCtx(context.Background())
	c3.deadline = time.Now().Add(-time.Millisecond)
	if !errors.Is(c3.Err(), context.DeadlineExceeded) {
		t.Fatalf("err %v", c3.Err())
	}
	<-c3.Done()
	c3.stop()

	// Stopped before anyone asked: Done never closes, and costs nothing.
	c4 := newReplyCtx(context.Background())
	c4.stop()
	if c4.Done() != nil {
		t.Fatal("Done after stop is a channel")
	}
}
