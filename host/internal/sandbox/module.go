package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/tetratelabs/wazero"

	"github.com/nuropb/nuropb/abi"
)

// Load steps, the values of LoadError.Step.
const (
	StepLimits      = "limits"      // Source.Limits (or Imports) unusable
	StepRead        = "read"        // empty file, malformed nuropb.fs section
	StepCompile     = "compile"     // not WebAssembly, truncated, over the memory limit
	StepImports     = "imports"     // an import the sandbox does not grant
	StepExports     = "exports"     // an ABI export missing or mistyped
	StepInstantiate = "instantiate" // instantiation or _initialize failed
	StepABI         = "abi"         // nuropb_abi_version failed or is not abi.Version
	StepDescribe    = "describe"    // nuropb_describe failed or returned an unreadable buffer
	StepManifest    = "manifest"    // the manifest did not decode or validate
)

// validate checks that the host filled every limit.
func (l Limits) validate() error {
	switch {
	case l.MemoryPages == 0 || l.MemoryPages > 65536:
		return fmt.Errorf("MemoryPages is %d, want 1..65536", l.MemoryPages)
	case l.CallTimeout <= 0:
		return fmt.Errorf("CallTimeout is %v, want > 0", l.CallTimeout)
	case l.MaxInstances < 1:
		return fmt.Errorf("MaxInstances is %d, want >= 1", l.MaxInstances)
	case l.MinInstances < 0 || l.MinInstances > l.MaxInstances:
		return fmt.Errorf("MinInstances is %d, want 0..MaxInstances (%d)", l.MinInstances, l.MaxInstances)
	case l.MaxMessageBytes < 64:
		return fmt.Errorf("MaxMessageBytes is %d, want >= 64", l.MaxMessageBytes)
	case l.LogLinesPerSec < 1 || l.LogBytesPerSec < 1:
		return fmt.Errorf("LogLinesPerSec and LogBytesPerSec are %d and %d, want >= 1", l.LogLinesPerSec, l.LogBytesPerSec)
	case l.TenantMaxRunning < 0:
		return fmt.Errorf("TenantMaxRunning is %d, want 0 (no cap) or more", l.TenantMaxRunning)
	}
	return nil
}

// Module is one loaded module version: its manifest and a bounded pool of
// instances serving Handle. Safe for concurrent use.
type Module struct {
	e          *Engine
	rt         *runtimeClass
	key        compiledKey
	cm         wazero.CompiledModule
	name       string
	tenant     string
	hash       string
	limits     Limits
	imp        Imports
	codec      *abi.Codec
	replyCheck cbor.DecMode
	fsys       fs.FS // the nuropb.fs archive, nil without one
	manifest   *abi.Manifest
	logs       *logLimiter
	gate       *gate // the tenant's, shared with its other modules; nil: no cap

	// The pool: idle holds ready instances; free holds one token per
	// instance that may still be created. Together they never exceed
	// MaxInstances.
	idle chan *instance
	free chan struct{}

	mu       sync.Mutex
	closed   bool
	closing  chan struct{} // closed by Close: waiters give up
	drained  chan struct{} // closed when closed and no call is in flight
	inflight int
	all      map[*instance]struct{}

	busy  atomic.Int64
	calls atomic.Uint64
	traps atomic.Uint64
}

// init sets up the pool and limiter once the limits are known valid.
func (m *Module) init() {
	m.logs = newLogLimiter(m.limits.LogLinesPerSec, m.limits.LogBytesPerSec)
	m.idle = make(chan *instance, m.limits.MaxInstances)
	m.free = make(chan struct{}, m.limits.MaxInstances)
	for range m.limits.MaxInstances {
		m.free <- struct{}{}
	}
	<-m.free // the instance Load starts for describe
	m.closing = make(chan struct{})
	m.drained = make(chan struct{})
	m.all = map[*instance]struct{}{}
}

// newReplyChecker returns a decoder used only for its Wellformed check of
// replies, with the codec's limits: cheap and allocation-free, unlike a full
// decode. The host decodes the reply anyway; this check lets the sandbox
// blame the module for garbage.
func newReplyChecker(l abi.Limits) (cbor.DecMode, error) {
	return cbor.DecOptions{
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  max(l.MaxDepth, 4),
		MaxArrayElements: max(l.MaxElements, 16),
		MaxMapPairs:      max(l.MaxElements, 16),
	}.DecMode()
}

// Manifest returns the manifest the module described at load. Callers must
// not modify it.
func (m *Module) Manifest() *abi.Manifest { return m.manifest }

// Hash returns the hex SHA-256 of the module file, nuropb.fs section included.
func (m *Module) Hash() string { return m.hash }

// Codec returns the codec limited to the module's MaxMessageBytes: decode
// the module's replies with it.
func (m *Module) Codec() *abi.Codec { return m.codec }

// Name returns Source.Name, as used in errors.
func (m *Module) Name() string { return m.name }

// Stats returns a snapshot of the module's counters.
func (m *Module) Stats() Stats {
	m.mu.Lock()
	n := len(m.all)
	var pages uint64
	for inst := range m.all {
		pages += uint64(inst.pages.Load())
	}
	m.mu.Unlock()
	return Stats{Instances: n, Busy: int(m.busy.Load()), Calls: m.calls.Load(), Traps: m.traps.Load(), MemoryPages: pages}
}

// Handle runs one envelope through nuropb_handle on an idle instance and
// returns a copy of the reply. It waits for an instance until ctx ends or
// its deadline passes (ctx's Done need not close at its deadline: Handle
// enforces it); the call itself runs until min(ctx's deadline,
// now+CallTimeout). Errors are
// *abi.Error:
//   - resource_exhausted: envelope or reply over MaxMessageBytes, guest out
//     of memory for the input buffer;
//   - timeout: ctx ended while waiting for a free instance, or the call was
//     interrupted at its deadline (instance discarded);
//   - trapped: the guest faulted (instance discarded, replaced on demand);
//   - internal: the reply is not one well-formed CBOR map, or lies outside
//     guest memory;
//   - unavailable: the module is closed, or ctx was canceled.
func (m *Module) Handle(ctx context.Context, envelope []byte) ([]byte, error) {
	if len(envelope) > m.limits.MaxMessageBytes {
		return nil, m.errorf(abi.CodeResourceExhausted, "envelope of %d bytes is over the module's limit of %d", len(envelope), m.limits.MaxMessageBytes)
	}
	if err := ctxErr(ctx); err != nil {
		return nil, m.ctxError(err, "before the call started")
	}
	if !m.begin() {
		return nil, m.errorf(abi.CodeUnavailable, "module is closed")
	}
	inst, gated, aerr := m.acquire(ctx)
	if aerr != nil {
		m.end()
		return nil, aerr
	}
	// The tenant's slot is taken after the instance, never before: a call
	// holding a slot while it waits for an instance could wait on calls that
	// sit in nuropb.call (slot given up) for a callee that needs that slot.
	if !gated {
		if aerr := m.enterGate(ctx, "to run"); aerr != nil {
			m.release(inst, false)
			return nil, aerr
		}
	}
	inst.gated = true
	m.busy.Add(1)
	reply, aerr, discard := inst.handle(ctx, envelope)
	m.busy.Add(-1)
	if inst.gated {
		m.gate.leave()
		inst.gated = false
	}
	m.calls.Add(1)
	m.release(inst, discard)
	if aerr != nil {
		return nil, aerr
	}
	return reply, nil
}

func (m *Module) errorf(code abi.ErrorCode, format string, args ...any) *abi.Error {
	return &abi.Error{Code: code, Message: m.name + ": " + fmt.Sprintf(format, args...)}
}

// ctxError maps a done context to timeout (deadline) or unavailable (canceled).
func (m *Module) ctxError(err error, when string) *abi.Error {
	if errors.Is(err, context.DeadlineExceeded) {
		return m.errorf(abi.CodeTimeout, "deadline passed %s", when)
	}
	return m.errorf(abi.CodeUnavailable, "call canceled %s", when)
}

func (m *Module) begin() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.inflight++
	return true
}

// end marks a call finished; the caller holds no instance.
func (m *Module) end() {
	m.mu.Lock()
	m.inflight--
	m.signalDrainedLocked()
	m.mu.Unlock()
}

func (m *Module) signalDrainedLocked() {
	if m.closed && m.inflight == 0 {
		select {
		case <-m.drained:
		default:
			close(m.drained)
		}
	}
}

// acquire takes an idle instance, or starts one if the pool may grow, or
// waits for either until ctx ends. Starting one runs guest code
// (_initialize), so it takes the tenant's slot first and keeps it for the
// call: gated reports that.
func (m *Module) acquire(ctx context.Context) (inst *instance, gated bool, aerr *abi.Error) {
	select {
	case inst := <-m.idle:
		return inst, false, nil
	default:
	}
	ctx, cancel := bounded(ctx)
	defer cancel()
	select {
	case inst := <-m.idle:
		return inst, false, nil
	case <-m.free:
		if aerr := m.enterGate(ctx, "to start an instance"); aerr != nil {
			m.free <- struct{}{}
			return nil, false, aerr
		}
		inst, err := m.newInstance(ctx)
		if err != nil {
			m.gate.leave()
			m.free <- struct{}{}
			if ctxErr(ctx) != nil || errors.Is(err, context.DeadlineExceeded) {
				return nil, false, m.errorf(abi.CodeTimeout, "deadline passed while starting an instance: %v", err)
			}
			return nil, false, m.errorf(abi.CodeTrapped, "starting an instance: %v", err)
		}
		return inst, true, nil
	case <-ctx.Done():
		return nil, false, m.ctxError(ctxErr(ctx), fmt.Sprintf("while waiting for a free instance (all %d busy)", m.limits.MaxInstances))
	case <-m.closing:
		return nil, false, m.errorf(abi.CodeUnavailable, "module is closed")
	}
}

// enterGate takes a slot of the tenant's gate for a call, or says why not.
func (m *Module) enterGate(ctx context.Context, what string) *abi.Error {
	if m.gate.enter(ctx, m.closing) {
		return nil
	}
	if err := ctxErr(ctx); err != nil {
		return m.ctxError(err, fmt.Sprintf("while waiting for one of tenant %q's %d running slots %s (TenantMaxRunning)",
			m.tenant, m.limits.TenantMaxRunning, what))
	}
	return m.errorf(abi.CodeUnavailable, "module is closed")
}

// release returns inst to the pool, or closes it when it must be discarded
// or the module is closed, and ends the call.
func (m *Module) release(inst *instance, discard bool) {
	if !discard {
		inst.notePages()
	}
	m.mu.Lock()
	drop := discard || m.closed
	if drop {
		delete(m.all, inst)
		if discard {
			m.traps.Add(1)
		}
		if !m.closed {
			m.free <- struct{}{}
		}
	} else {
		m.idle <- inst
	}
	m.inflight--
	m.signalDrainedLocked()
	m.mu.Unlock()
	if drop {
		inst.close()
	}
}

// Close stops new calls (they fail with unavailable), waits for in-flight
// calls until ctx ends, then interrupts those still running, closes every
// instance and releases the compiled code. Closing twice is harmless.
func (m *Module) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.closing)
	m.signalDrainedLocked()
	m.mu.Unlock()

	var err error
	select {
	case <-m.drained:
	case <-ctx.Done():
		err = fmt.Errorf("sandbox: %s: closed with calls in flight: %w", m.name, ctx.Err())
		m.e.log.Warn("module closed with calls in flight; interrupting them", "module", m.name, "tenant", m.tenant, "hash", m.hash)
		m.mu.Lock()
		for inst := range m.all {
			inst.interrupt(reasonClosed)
		}
		m.mu.Unlock()
	}
	m.abandon(context.WithoutCancel(ctx))
	return err
}

// abandon closes idle instances and drops the compiled code reference. Busy
// instances close themselves on release once m.closed is set; during Load
// there are none.
func (m *Module) abandon(ctx context.Context) {
	m.mu.Lock()
	m.closed = true
	var idle []*instance
	for done := false; !done && m.idle != nil; {
		select {
		case inst := <-m.idle:
			delete(m.all, inst)
			idle = append(idle, inst)
		default:
			done = true
		}
	}
	m.mu.Unlock()
	for _, inst := range idle {
		inst.close()
	}
	m.e.releaseCompiled(ctx, m.key)
}

// register records a started instance.
func (m *Module) register(inst *instance) {
	inst.notePages()
	m.mu.Lock()
	m.all[inst] = struct{}{}
	m.mu.Unlock()
}

// ctxErr is ctx.Err(), or context.DeadlineExceeded once ctx's deadline has
// passed. The host hands Handle a context whose deadline is enforced by the
// sandbox alone (the instance's timer), not by its Done channel: a timer per
// call saved. So the sandbox never relies on Done for a deadline.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// bounded returns ctx with a Done channel that also closes at ctx's
// deadline (see ctxErr), for the waits that may block: for an instance, for
// a running slot. Their fast paths do not call it.
func bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok {
		return context.WithDeadline(ctx, dl)
	}
	return ctx, func() {}
}

// deadlineFor returns the deadline of a call starting now under ctx.
func (m *Module) deadlineFor(ctx context.Context, now time.Time) time.Time {
	d := now.Add(m.limits.CallTimeout)
	if cd, ok := ctx.Deadline(); ok && cd.Before(d) {
		return cd
	}
	return d
}
