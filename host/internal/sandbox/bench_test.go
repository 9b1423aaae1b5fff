package sandbox

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/nuropb/nuropb/abi"
)

// The benchmarks compare Module.Handle with a bare wazero call of the same
// guest export on the same envelope: the difference is the sandbox's
// overhead per call (pool, deadline, buffer reuse, reply copy and check).

var benchGuests = map[string]func(testing.TB) []byte{
	"c":    func(t testing.TB) []byte { return cGuest(t) },
	"go":   goGuest,
	"rust": rustGuest,
}

func benchEnvelope(tb testing.TB) []byte {
	b, err := abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindRequest, ID: "1", Service: "svc", Method: "echo", Params: abi.RawValue{0xa0}})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func BenchmarkHandle(b *testing.B) {
	for _, name := range []string{"c", "go", "rust"} {
		b.Run(name, func(b *testing.B) {
			e := testEngine(b)
			m := load(b, e, benchGuests[name](b), testLimits(), &fakeImports{})
			env := benchEnvelope(b)
			b.Run("ctx=background", func(b *testing.B) {
				ctx := context.Background()
				b.ReportAllocs()
				defer reportCPU(b)()
				for b.Loop() {
					if _, err := m.Handle(ctx, env); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("ctx=deadline", func(b *testing.B) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
				defer cancel()
				b.ReportAllocs()
				defer reportCPU(b)()
				for b.Loop() {
					if _, err := m.Handle(ctx, env); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkBare calls nuropb_handle directly, the envelope written once.
// closeOnDone=true is the runtime configuration the sandbox uses.
func BenchmarkBare(b *testing.B) {
	for _, name := range []string{"c", "go", "rust"} {
		b.Run(name, func(b *testing.B) {
			wasm := benchGuests[name](b)
			for _, closeOnDone := range []bool{true, false} {
				b.Run(map[bool]string{true: "closeOnDone=true", false: "closeOnDone=false"}[closeOnDone], func(b *testing.B) {
					ctx := context.Background()
					cache, err := wazero.NewCompilationCacheWithDir(cacheRoot(b) + "/wazero-cache/bench")
					if err != nil {
						b.Fatal(err)
					}
					r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().
						WithCloseOnContextDone(closeOnDone).WithMemoryLimitPages(256).WithCompilationCache(cache))
					defer r.Close(ctx)
					wasi_snapshot_preview1.MustInstantiate(ctx, r)
					if err := instantiateHostModule(ctx, r); err != nil {
						b.Fatal(err)
					}
					mod, err := r.InstantiateModule(ctx, mustCompile(b, r, wasm), wazero.NewModuleConfig().WithStartFunctions("_initialize"))
					if err != nil {
						b.Fatal(err)
					}
					env := benchEnvelope(b)
					res, err := mod.ExportedFunction(abi.ExportAlloc).Call(ctx, uint64(len(env)))
					if err != nil {
						b.Fatal(err)
					}
					ptr := uint32(res[0])
					mod.Memory().Write(ptr, env)
					handle := mod.ExportedFunction(abi.ExportHandle)
					var stack [2]uint64
					b.Run("handle", func(b *testing.B) {
						b.ReportAllocs()
						defer reportCPU(b)()
						for b.Loop() {
							stack[0], stack[1] = uint64(ptr), uint64(len(env))
							if err := handle.CallWithStack(ctx, stack[:]); err != nil {
								b.Fatal(err)
							}
						}
					})
					// The ABI flow without buffer reuse: three guest calls.
					alloc, dealloc := mod.ExportedFunction(abi.ExportAlloc), mod.ExportedFunction(abi.ExportDealloc)
					b.Run("alloc+handle+dealloc", func(b *testing.B) {
						b.ReportAllocs()
						defer reportCPU(b)()
						for b.Loop() {
							stack[0] = uint64(len(env))
							if err := alloc.CallWithStack(ctx, stack[:]); err != nil {
								b.Fatal(err)
							}
							p := uint32(stack[0])
							mod.Memory().Write(p, env)
							stack[0], stack[1] = uint64(p), uint64(len(env))
							if err := handle.CallWithStack(ctx, stack[:]); err != nil {
								b.Fatal(err)
							}
							stack[0], stack[1] = uint64(p), uint64(len(env))
							if err := dealloc.CallWithStack(ctx, stack[:]); err != nil {
								b.Fatal(err)
							}
						}
					})
				})
			}
		})
	}
}

func mustCompile(b *testing.B, r wazero.Runtime, wasm []byte) wazero.CompiledModule {
	cm, err := r.CompileModule(context.Background(), wasm)
	if err != nil {
		b.Fatal(err)
	}
	return cm
}

// reportCPU reports the process's CPU time (user+system, all threads) per
// op: on a shared, loaded machine wall time mostly measures waiting for a
// core, CPU time what a call costs.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() {
		b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReplyCheck compares the reply check Handle does (well-formedness
// within limits) with a full decode, which the host does anyway.
func BenchmarkReplyCheck(b *testing.B) {
	env := benchEnvelope(b)
	reply, _ := abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindResponse, ID: "1", Result: append([]byte{0x58, byte(len(env))}, env...)})
	rc, _ := newReplyChecker(abi.DefaultLimits)
	b.Run("wellformed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := rc.Wellformed(reply); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("codec.Valid", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := abi.Default.Valid(reply); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("DecodeEnvelope", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := abi.Default.DecodeEnvelope(reply); err != nil {
				b.Fatal(err)
			}
		}
	})
}
