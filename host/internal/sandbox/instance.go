package sandbox

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/nuropb/nuropb/abi"
)

// Why an instance was interrupted (instance.reason).
const (
	reasonNone int32 = iota
	reasonDeadline
	reasonCanceled
	reasonClosed
)

// Input buffers up to this size are kept in the guest between calls;
// larger envelopes get a buffer of their own, released after the call.
const (
	minInputBuffer  = 1 << 10
	keepInputBuffer = 64 << 10
)

// instance is one wazero module instance and what a call on it needs, all
// allocated once. An instance is used by one goroutine at a time (the pool
// hands it over through a channel), so its per-call fields need no lock.
type instance struct {
	m   *Module
	mod api.Module
	mem api.Memory
	// pages is mem's size when the instance was last idle. Memory grows
	// only on the goroutine running a call, so reading mem from Stats
	// would race; this copy is what other goroutines read.
	pages atomic.Uint32

	fnHandle, fnAlloc, fnDealloc api.Function

	stack  [2]uint64 // params and results of top-level calls
	nested [2]uint64 // for nuropb_alloc called from inside a host function
	gated  bool      // the call holds a slot of the tenant's gate (gate.go)

	inPtr, inCap uint32 // the kept input buffer in guest memory

	// ctx is the context every call into the instance runs under: its Done
	// channel is interruptCh, closed by the deadline timer, by the caller's
	// cancellation or by a forced Close; wazero then stops the guest at its
	// next loop back-edge or function call (WithCloseOnContextDone).
	ctx         callCtx
	interruptCh chan struct{}
	reason      atomic.Int32
	timer       *time.Timer

	// The caller's cancellation is watched with a context.AfterFunc kept
	// across calls: a host's calls all come under its consumer's context, so
	// registering once per instance instead of once per call saves three
	// allocations and a lock of that shared context per call. watchMu orders
	// the callback against the end of a call, so a cancellation interrupts
	// only a call running under the watched context.
	watchMu   sync.Mutex
	watchDone <-chan struct{} // Done of the watched context, nil for none
	watchStop func() bool
	watching  bool // a call under the watched context is running

	// Set by the goroutine running the current call, read by host functions
	// and the stdout/stderr writers on that same goroutine.
	parent   context.Context // the caller's ctx, for Imports
	logCtx   context.Context
	started  time.Time
	deadline time.Time

	stdout, stderr *lineWriter
}

// callCtx is the context.Context given to wazero for every call into an
// instance. It is allocated with the instance, so calls allocate no context;
// it carries no values but the instance (host functions find it there), so
// a caller's context cannot switch on wazero's experimental features.
type callCtx struct{ inst *instance }

type instanceKey struct{}

func (c *callCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *callCtx) Done() <-chan struct{}       { return c.inst.interruptCh }
func (c *callCtx) Err() error {
	switch c.inst.reason.Load() {
	case reasonNone:
		return nil
	case reasonDeadline:
		return context.DeadlineExceeded
	default:
		return context.Canceled
	}
}
func (c *callCtx) Value(key any) any {
	if key == (instanceKey{}) {
		return c.inst
	}
	return nil
}

// instanceOf returns the instance a host function was called from.
func instanceOf(ctx context.Context) *instance {
	if c, ok := ctx.(*callCtx); ok {
		return c.inst
	}
	inst, _ := ctx.Value(instanceKey{}).(*instance)
	return inst
}

// interrupt stops the instance's current (or next) call for reason. The
// first reason wins.
func (inst *instance) interrupt(reason int32) {
	if inst.reason.CompareAndSwap(reasonNone, reason) {
		close(inst.interruptCh)
	}
}

func (inst *instance) onDeadline() { inst.interrupt(reasonDeadline) }

// sleep implements WASI's nanosleep (poll_oneoff on a clock) so that a
// sleeping guest can still be interrupted.
func (inst *instance) sleep(ns int64) {
	t := time.NewTimer(time.Duration(ns))
	select {
	case <-t.C:
	case <-inst.interruptCh:
		t.Stop()
	}
}

// newInstance starts an instance of m under ctx (its deadline capped by
// CallTimeout, as for a call), running _initialize if the guest has one.
func (m *Module) newInstance(ctx context.Context) (*instance, error) {
	inst := &instance{m: m, interruptCh: make(chan struct{})}
	inst.ctx.inst = inst
	inst.stdout = newLineWriter(inst, abi.LogInfo)
	inst.stderr = newLineWriter(inst, abi.LogWarn)
	inst.timer = time.AfterFunc(time.Hour, inst.onDeadline)
	inst.timer.Stop()

	cfg := wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions("_initialize").
		WithStdout(inst.stdout).
		WithStderr(inst.stderr).
		WithRandSource(rand.Reader).
		WithSysWalltime().
		WithSysNanotime().
		WithNanosleep(inst.sleep)
	if m.fsys != nil {
		cfg = cfg.WithFSConfig(wazero.NewFSConfig().WithFSMount(m.fsys, "/"))
	}
	var mod api.Module
	err := inst.guard(ctx, func() (err error) {
		mod, err = m.rt.r.InstantiateModule(&inst.ctx, m.cm, cfg)
		return err
	})
	inst.stdout.flush()
	inst.stderr.flush()
	if err != nil {
		inst.close()
		return nil, inst.describeErr(err, "_initialize")
	}
	inst.mod = mod
	inst.mem = mod.Memory()
	inst.fnHandle = mod.ExportedFunction(abi.ExportHandle)
	inst.fnAlloc = mod.ExportedFunction(abi.ExportAlloc)
	inst.fnDealloc = mod.ExportedFunction(abi.ExportDealloc)
	if inst.reason.Load() != reasonNone {
		inst.close()
		// Interrupted as _initialize returned: a timeout (or a
		// cancellation), not a fault of the guest.
		return nil, inst.describeErr(nil, "_initialize")
	}
	m.register(inst)
	return inst, nil
}

// guard runs f (calls into the instance) with interruption armed at the
// call's deadline and on ctx's cancellation. It reports whether the
// interruption fired, in which case the instance must be discarded even if f
// succeeded.
func (inst *instance) guard(ctx context.Context, f func() error) error {
	now := time.Now()
	inst.started = now
	inst.deadline = inst.m.deadlineFor(ctx, now)
	inst.parent = ctx
	inst.logCtx = ctx
	inst.timer.Reset(inst.deadline.Sub(now))
	done := ctx.Done()
	if done != nil {
		inst.watch(ctx, done)
	}
	err := f()
	// A deadline that fired as f returned may still be on its way to
	// interrupt() on another goroutine. Interrupt here and now instead, so
	// the instance is marked (and discarded) by this call, and a late
	// interrupt can never stop the next call on a reused instance.
	if !inst.timer.Stop() {
		inst.interrupt(reasonDeadline)
	}
	if done != nil {
		inst.watchMu.Lock()
		inst.watching = false
		inst.watchMu.Unlock()
	}
	return err
}

// watch arranges for ctx's cancellation to interrupt the call starting now,
// registering with ctx only when its Done differs from the last call's.
func (inst *instance) watch(ctx context.Context, done <-chan struct{}) {
	inst.watchMu.Lock()
	defer inst.watchMu.Unlock()
	if inst.watchDone != done {
		if inst.watchStop != nil {
			inst.watchStop()
		}
		inst.watchDone = done
		// ctx, not inst.parent: the func may run after the next call has
		// replaced inst.parent. Its Err is set once done is closed, so
		// parentReason reads the cancellation, not this call's deadline.
		inst.watchStop = context.AfterFunc(ctx, func() {
			inst.watchMu.Lock()
			if inst.watching && inst.watchDone == done {
				inst.interrupt(parentReason(ctx))
			}
			inst.watchMu.Unlock()
		})
	}
	inst.watching = true
	// Cancelled already (the callback may have run while no call was):
	// interrupt this call at once.
	select {
	case <-done:
		inst.interrupt(parentReason(ctx))
	default:
	}
}

// unwatch drops the registration with the caller's context.
func (inst *instance) unwatch() {
	inst.watchMu.Lock()
	if inst.watchStop != nil {
		inst.watchStop()
		inst.watchStop, inst.watchDone = nil, nil
	}
	inst.watchMu.Unlock()
}

// parentReason is why a done caller's context interrupts a call.
func parentReason(ctx context.Context) int32 {
	if errors.Is(ctxErr(ctx), context.DeadlineExceeded) {
		return reasonDeadline
	}
	return reasonCanceled
}

// callScalar calls a no-argument export returning one value.
func (inst *instance) callScalar(ctx context.Context, fn api.Function) (uint64, error) {
	err := inst.guard(ctx, func() error { return fn.CallWithStack(&inst.ctx, inst.stack[:]) })
	if err != nil || inst.reason.Load() != reasonNone {
		return 0, inst.describeErr(err, fn.Definition().Name())
	}
	return inst.stack[0], nil
}

// describe calls nuropb_describe and copies the manifest out.
func (inst *instance) describe(ctx context.Context) ([]byte, error) {
	v, err := inst.callScalar(ctx, inst.mod.ExportedFunction(abi.ExportDescribe))
	if err != nil {
		return nil, err
	}
	ptr, n := abi.UnpackPtrLen(v)
	if int(n) > inst.m.limits.MaxMessageBytes {
		return nil, fmt.Errorf("manifest of %d bytes is over the limit of %d", n, inst.m.limits.MaxMessageBytes)
	}
	b, ok := inst.mem.Read(ptr, n)
	if !ok {
		return nil, fmt.Errorf("manifest at %d+%d lies outside guest memory (%d bytes)", ptr, n, inst.mem.Size())
	}
	return append([]byte(nil), b...), nil
}

// handle runs one envelope. discard reports that the instance must not be
// reused (trap, interruption, broken allocator).
func (inst *instance) handle(ctx context.Context, env []byte) (reply []byte, aerr *abi.Error, discard bool) {
	m := inst.m
	stage := abi.ExportAlloc
	err := inst.guard(ctx, func() error {
		ptr, oneOff, err := inst.inputBuffer(uint32(len(env)))
		if err != nil {
			return err
		}
		if !inst.mem.Write(ptr, env) {
			return &guestError{fmt.Sprintf("nuropb_alloc returned %d, which cannot hold %d bytes in %d bytes of memory", ptr, len(env), inst.mem.Size())}
		}
		inst.stack[0], inst.stack[1] = uint64(ptr), uint64(len(env))
		stage = abi.ExportHandle
		if err := inst.fnHandle.CallWithStack(&inst.ctx, inst.stack[:]); err != nil {
			return err
		}
		rp, rn := abi.UnpackPtrLen(inst.stack[0])
		switch b, ok := inst.mem.Read(rp, rn); {
		case int(rn) > m.limits.MaxMessageBytes:
			aerr = m.errorf(abi.CodeResourceExhausted, "reply of %d bytes is over the module's limit of %d", rn, m.limits.MaxMessageBytes)
		case !ok:
			aerr = m.errorf(abi.CodeInternal, "reply at %d+%d lies outside guest memory (%d bytes)", rp, rn, inst.mem.Size())
		default:
			reply = make([]byte, len(b))
			copy(reply, b)
		}
		if oneOff {
			stage = abi.ExportDealloc
			inst.nested[0], inst.nested[1] = uint64(ptr), uint64(len(env))
			return inst.fnDealloc.CallWithStack(&inst.ctx, inst.nested[:])
		}
		return nil
	})
	inst.stdout.flush()
	inst.stderr.flush()
	m.flushDropped(ctx)
	if inst.reason.Load() != reasonNone {
		return nil, inst.callError(err, stage), true
	}
	if err != nil {
		var le *limitError
		var ge *guestError
		switch {
		case errors.As(err, &le):
			return nil, m.errorf(abi.CodeResourceExhausted, "%v", err), true
		case errors.As(err, &ge):
			return nil, m.errorf(abi.CodeInternal, "%v", err), true
		}
		return nil, inst.callError(err, stage), true
	}
	if aerr != nil {
		return nil, aerr, false
	}
	if len(reply) == 0 || reply[0]>>5 != 5 {
		return nil, m.errorf(abi.CodeInternal, "reply is not a CBOR map (first byte %s)", firstByte(reply)), false
	}
	if err := m.replyCheck.Wellformed(reply); err != nil {
		return nil, m.errorf(abi.CodeInternal, "malformed reply: %v", err), false
	}
	return reply, nil, false
}

func firstByte(b []byte) string {
	if len(b) == 0 {
		return "none: empty reply"
	}
	return fmt.Sprintf("0x%02x", b[0])
}

// limitError is a guest allocation failure.
type limitError struct{ msg string }

func (e *limitError) Error() string { return e.msg }

// guestError is a guest breaking the ABI without trapping (a buffer outside
// its memory).
type guestError struct{ msg string }

func (e *guestError) Error() string { return e.msg }

// inputBuffer returns a guest buffer of at least n bytes: the kept one,
// grown if needed, or a one-off buffer for envelopes over keepInputBuffer.
func (inst *instance) inputBuffer(n uint32) (ptr uint32, oneOff bool, err error) {
	if n <= inst.inCap {
		return inst.inPtr, false, nil
	}
	if n > keepInputBuffer {
		ptr, err = inst.alloc(n, inst.stack[:])
		return ptr, true, err
	}
	if inst.inCap > 0 {
		inst.stack[0], inst.stack[1] = uint64(inst.inPtr), uint64(inst.inCap)
		if err := inst.fnDealloc.CallWithStack(&inst.ctx, inst.stack[:]); err != nil {
			return 0, false, err
		}
		inst.inPtr, inst.inCap = 0, 0
	}
	c := uint32(minInputBuffer)
	for c < n {
		c <<= 1
	}
	if ptr, err = inst.alloc(c, inst.stack[:]); err != nil {
		return 0, false, err
	}
	inst.inPtr, inst.inCap = ptr, c
	return ptr, false, nil
}

// alloc calls nuropb_alloc(n) and checks the buffer lies inside memory.
func (inst *instance) alloc(n uint32, stack []uint64) (uint32, error) {
	stack[0] = uint64(n)
	if err := inst.fnAlloc.CallWithStack(&inst.ctx, stack); err != nil {
		return 0, err
	}
	ptr := uint32(stack[0])
	if ptr == 0 && n > 0 {
		return 0, &limitError{fmt.Sprintf("nuropb_alloc(%d) failed (guest out of memory?)", n)}
	}
	if uint64(ptr)+uint64(n) > uint64(inst.mem.Size()) {
		return 0, &guestError{fmt.Sprintf("nuropb_alloc(%d) returned %d, past the end of memory (%d bytes)", n, ptr, inst.mem.Size())}
	}
	return ptr, nil
}

// callError turns the failure of a call into the *abi.Error the caller sees.
func (inst *instance) callError(err error, fn string) *abi.Error {
	m := inst.m
	switch inst.reason.Load() {
	case reasonDeadline:
		return m.errorf(abi.CodeTimeout, "call interrupted at its deadline, %v after it started (CallTimeout %v)",
			inst.deadline.Sub(inst.started).Round(time.Millisecond), m.limits.CallTimeout)
	case reasonCanceled:
		return m.errorf(abi.CodeUnavailable, "call canceled by the caller; instance interrupted")
	case reasonClosed:
		return m.errorf(abi.CodeUnavailable, "module closed during the call; instance interrupted")
	}
	return m.errorf(abi.CodeTrapped, "%v", inst.describeErr(err, fn))
}

// describeErr says what went wrong in a call into the guest, on one line.
func (inst *instance) describeErr(err error, fn string) error {
	switch inst.reason.Load() {
	case reasonDeadline:
		return deadlineError(fn)
	case reasonCanceled, reasonClosed:
		return fmt.Errorf("%s interrupted: %w", fn, context.Canceled)
	}
	if err == nil {
		return fmt.Errorf("%s: instance closed", fn)
	}
	var ee *sys.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("%s: guest exited with code %d", fn, ee.ExitCode())
	}
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return fmt.Errorf("%s trapped: %s", fn, msg)
}

// close releases the instance. It is never used again.
func (inst *instance) close() {
	inst.timer.Stop()
	inst.unwatch()
	if inst.mod != nil {
		_ = inst.mod.Close(context.Background())
	}
}

// notePages records the memory size for Stats; only the goroutine that owns
// the instance calls it.
func (inst *instance) notePages() {
	if inst.mem != nil {
		inst.pages.Store(inst.mem.Size() / 65536)
	}
}

// deadlineError is a call into fn interrupted at its deadline. It matches
// context.DeadlineExceeded, so that an instance start cut off by the call's
// deadline is reported as the timeout it is, not as a guest fault.
type deadlineError string

func (e deadlineError) Error() string { return string(e) + " interrupted at its deadline" }

func (e deadlineError) Is(target error) bool { return target == context.DeadlineExceeded }
