package sandbox

import (
	"context"
	"fmt"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/nuropb/nuropb/abi"
)

// instantiateHostModule registers the nuropb host module in r. The functions
// are shared by every module of the runtime and find the calling instance
// through the call's context (see callCtx).
func instantiateHostModule(ctx context.Context, r wazero.Runtime) error {
	b := r.NewHostModuleBuilder(abi.ImportModule)
	for name, f := range map[string]api.GoModuleFunc{
		abi.ImportLog:  hostLog,
		abi.ImportCall: hostCall,
		abi.ImportSend: hostSend,
	} {
		sig := hostFuncSigs[name]
		b.NewFunctionBuilder().WithGoModuleFunction(f, sig.params, sig.results).Export(name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

// trap aborts the running guest call; wazero turns the panic into the
// call's error, and the instance is discarded.
func trap(format string, args ...any) {
	panic(fmt.Errorf(format, args...))
}

// read copies nothing: it returns a view of guest memory, valid until the
// guest runs again or memory grows. It traps when the range is outside
// memory.
func (inst *instance) read(ptr, n uint32, what string) []byte {
	b, ok := inst.mem.Read(ptr, n)
	if !ok {
		trap("nuropb.%s: buffer %d+%d lies outside guest memory (%d bytes)", what, ptr, n, inst.mem.Size())
	}
	return b
}

func callingInstance(ctx context.Context, fn string) *instance {
	inst := instanceOf(ctx)
	if inst == nil || inst.mem == nil && fn != abi.ImportLog {
		trap("nuropb.%s called outside a call (during _initialize?)", fn)
	}
	return inst
}

// hostLog is log(level i32, ptr i32, len i32).
func hostLog(ctx context.Context, mod api.Module, stack []uint64) {
	inst := instanceOf(ctx)
	if inst == nil {
		trap("nuropb.log: no calling instance")
	}
	level := clampLevel(int32(stack[0]))
	ptr, n := uint32(stack[1]), uint32(stack[2])
	mem := inst.mem
	if mem == nil { // during _initialize
		mem = mod.Memory()
	}
	b, ok := mem.Read(ptr, n)
	if !ok {
		trap("nuropb.log: buffer %d+%d lies outside guest memory (%d bytes)", ptr, n, mem.Size())
	}
	truncated := len(b) > maxLogLine
	if truncated {
		b = b[:maxLogLine]
	}
	inst.m.emitLog(inst.logCtx, level, b, truncated)
}

func clampLevel(l int32) abi.LogLevel {
	switch {
	case l < int32(abi.LogDebug):
		return abi.LogDebug
	case l > int32(abi.LogError):
		return abi.LogError
	}
	return abi.LogLevel(l)
}

// importCtx is the context Imports receive: the caller's, with the call's
// deadline when that is earlier (CallTimeout). The cancel func must be
// called when the import returns.
func (inst *instance) importCtx() (context.Context, context.CancelFunc) {
	if d, ok := inst.parent.Deadline(); ok && !d.After(inst.deadline) {
		return inst.parent, func() {}
	}
	return context.WithDeadline(inst.parent, inst.deadline)
}

// hostCall is call(ptr i32, len i32) -> i64: a request envelope out, the
// response written into a buffer from the guest's nuropb_alloc.
func hostCall(ctx context.Context, _ api.Module, stack []uint64) {
	inst := callingInstance(ctx, abi.ImportCall)
	m := inst.m
	ptr, n := uint32(stack[0]), uint32(stack[1])
	req := inst.read(ptr, n, abi.ImportCall)
	var resp []byte
	if int(n) > m.limits.MaxMessageBytes {
		resp = m.errorEnvelope(abi.CodeResourceExhausted, "request of %d bytes is over the limit of %d", n, m.limits.MaxMessageBytes)
	} else {
		req = append([]byte(nil), req...) // the view goes stale when the guest runs again
		ictx, cancel := inst.importCtx()
		inst.yield()
		resp = m.imp.Call(ictx, req)
		resumed := inst.resume(ictx)
		cancel()
		if !resumed {
			inst.trapNoSlot(abi.ImportCall)
		}
		if len(resp) > m.limits.MaxMessageBytes {
			resp = m.errorEnvelope(abi.CodeResourceExhausted, "response of %d bytes is over the limit of %d", len(resp), m.limits.MaxMessageBytes)
		}
	}
	rp, err := inst.alloc(uint32(len(resp)), inst.nested[:])
	if err != nil {
		panic(err)
	}
	if !inst.mem.Write(rp, resp) {
		trap("nuropb.call: nuropb_alloc returned %d, outside memory", rp)
	}
	stack[0] = abi.PackPtrLen(rp, uint32(len(resp)))
}

// hostSend is send(ptr i32, len i32) -> i32: a command or event envelope.
func hostSend(ctx context.Context, _ api.Module, stack []uint64) {
	inst := callingInstance(ctx, abi.ImportSend)
	m := inst.m
	ptr, n := uint32(stack[0]), uint32(stack[1])
	env := inst.read(ptr, n, abi.ImportSend)
	if int(n) > m.limits.MaxMessageBytes {
		stack[0] = uint64(uint32(abi.SendStatus(m.errorf(abi.CodeResourceExhausted, "send of %d bytes over the limit", n))))
		return
	}
	env = append([]byte(nil), env...)
	ictx, cancel := inst.importCtx()
	inst.yield()
	err := m.imp.Send(ictx, env)
	resumed := inst.resume(ictx)
	cancel()
	if !resumed {
		inst.trapNoSlot(abi.ImportSend)
	}
	stack[0] = uint64(uint32(abi.SendStatus(err)))
}

// errorEnvelope is a response envelope carrying an error, given to a guest
// instead of a response it may not receive.
func (m *Module) errorEnvelope(code abi.ErrorCode, format string, args ...any) []byte {
	b, err := m.codec.EncodeEnvelope(&abi.Envelope{Kind: abi.KindResponse, Error: m.errorf(code, format, args...)})
	if err != nil {
		trap("encode error envelope: %v", err)
	}
	return b
}

// yield gives the tenant's slot up while the guest waits on another
// service: waiting uses no CPU, and the callee may be of the same tenant.
func (inst *instance) yield() {
	if inst.gated {
		inst.m.gate.leave()
		inst.gated = false
	}
}

// resume takes a slot again before the guest runs on. When the call's
// deadline passes (or the module closes) first, it interrupts the instance
// and reports false: the caller then traps, the call ends in timeout (or
// unavailable) and the guest never runs again.
func (inst *instance) resume(ctx context.Context) bool {
	if inst.m.gate.enter(ctx, inst.m.closing) {
		inst.gated = true
		return true
	}
	if ctxErr(ctx) != nil {
		inst.interrupt(parentReason(ctx))
	} else {
		inst.interrupt(reasonClosed)
	}
	return false
}

func (inst *instance) trapNoSlot(fn string) {
	trap("nuropb.%s: no running slot of tenant %q came free before the deadline", fn, inst.m.tenant)
}
