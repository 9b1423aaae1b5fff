package sandbox

import (
	"context"
	"testing"
	"time"

	"github.com/nuropb/nuropb/abi"
)

// A host's calls share its consumer's context; the instance watches it once,
// across calls, and a cancellation must still interrupt exactly the calls
// running under it.
func TestSharedCallerContext(t *testing.T) {
	e := testEngine(t)
	lim := testLimits()
	lim.MaxInstances, lim.MinInstances = 1, 1
	m := load(t, e, cGuest(t), lim, &fakeImports{})

	shared, cancel := context.WithCancel(context.Background())
	for range 3 {
		if _, err := m.Handle(shared, request(t, "echo")); err != nil {
			t.Fatal(err)
		}
	}
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := m.Handle(shared, request(t, "spin"))
	wantCode(t, err, abi.CodeUnavailable)
	echoOK(t, m)

	// Cancelled while the instance is idle: later calls under other
	// contexts run, calls under it are refused.
	shared2, cancel2 := context.WithCancel(context.Background())
	if _, err := m.Handle(shared2, request(t, "echo")); err != nil {
		t.Fatal(err)
	}
	cancel2()
	time.Sleep(10 * time.Millisecond)
	if _, err := m.Handle(context.Background(), request(t, "echo")); err != nil {
		t.Fatalf("a call under another context was interrupted: %v", err)
	}
	_, err = m.Handle(shared2, request(t, "echo"))
	wantCode(t, err, abi.CodeUnavailable)
	echoOK(t, m)
}

// lateCtx has a deadline its Done does not enforce, as the host's call
// contexts do: Handle must enforce it, running and waiting.
type lateCtx struct {
	context.Context
	deadline time.Time
}

func (c lateCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func TestDeadlineWithoutDone(t *testing.T) {
	e := testEngine(t)
	lim := testLimits()
	lim.MaxInstances, lim.MinInstances = 1, 1
	m := load(t, e, cGuest(t), lim, &fakeImports{})

	start := time.Now()
	_, err := m.Handle(lateCtx{context.Background(), time.Now().Add(150 * time.Millisecond)}, request(t, "spin"))
	wantCode(t, err, abi.CodeTimeout)

	// The only instance is busy: the wait for it ends at the deadline.
	busy := make(chan error, 1)
	go func() {
		_, err := m.Handle(lateCtx{context.Background(), time.Now().Add(time.Second)}, request(t, "spin"))
		busy <- err
	}()
	time.Sleep(50 * time.Millisecond)
	start = time.Now()
	_, err = m.Handle(lateCtx{context.Background(), time.Now().Add(100 * time.Millisecond)}, request(t, "echo"))
	wantCode(t, err, abi.CodeTimeout)
	if took := time.Since(start); took > 800*time.Millisecond {
		t.Fatalf("waited %v for an instance, past the 100ms deadline", took)
	}
	wantCode(t, <-busy, abi.CodeTimeout)

	// Already past: refused before the call, the instance kept.
	_, err = m.Handle(lateCtx{context.Background(), time.Now().Add(-time.Millisecond)}, request(t, "echo"))
	wantCode(t, err, abi.CodeTimeout)
	if s := m.Stats(); s.Traps != 2 {
		t.Errorf("%d instances discarded, want 2 (the two spins)", s.Traps)
	}
	echoOK(t, m)
}
