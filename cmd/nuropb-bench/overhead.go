package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/client"
	"github.com/nuropb/nuropb/host"
	"github.com/nuropb/nuropb/internal/buildinfo"
	"github.com/nuropb/nuropb/internal/wasmsection"
)

// overhead compares, per language, a full in-process call (client.Call ->
// memory broker -> host -> sandbox -> guest echo -> back) with a bare wazero
// call of the same guest export on the same kind of envelope, one call at a
// time. The difference is what nuropb adds per call; the ratio says how much
// of a trivial call is nuropb rather than the guest.
func overhead(ctx context.Context, b *bench) error {
	for _, l := range b.opts.langs {
		if err := overheadLang(ctx, b, l); err != nil {
			return fmt.Errorf("%s: %w", langTitle[l], err)
		}
	}
	return nil
}

func overheadLang(ctx context.Context, b *bench, lang string) error {
	wasm, err := b.guest(lang)
	if err != nil {
		return err
	}
	// One instance, as one call at a time needs: the bare call has one too.
	e, err := startEmbedded(ctx, b, map[string][]byte{lang + "/conformance.wasm": wasm},
		host.Config{Defaults: host.Limits{MinInstances: 1, MaxInstances: 1}})
	if err != nil {
		return err
	}
	defer e.close()
	call := echoCall(e.client(lang), "conformance")
	// The sandbox's cache folder: wazero keys compiled code by module bytes
	// and CPU, not by runtime settings, so the host's compilation is reused.
	bare, err := newBareCall(ctx, wasm, filepath.Join(b.opts.cacheDir, "wazero-cache", "wazero-"+buildinfo.WazeroVersion()), lang)
	if err != nil {
		return err
	}
	defer bare.close(ctx)

	t := langTitle[lang]
	bareRow := b.newRow("overhead", t+": bare wazero call of nuropb_handle (close-on-done on, as the sandbox runs it)", "µs")
	bareOff := b.newRow("overhead", t+": bare wazero call, close-on-done off (for reference)", "µs")
	fullRow := b.newRow("overhead", t+": full call, client.Call → memory broker → host → guest", "µs")
	cpuDiff := b.newRow("overhead", t+": host overhead, CPU per call, full − bare", "µs").
		withTarget("≤ 2 µs", func(m float64) bool { return m <= 2 })
	wallDiff := b.newRow("overhead", t+": host overhead, wall time per call, full − bare", "µs")
	ratioRow := b.newRow("overhead", t+": full / bare, CPU per call", "x")
	for run := range b.opts.runs {
		bareWall, bareCPU, err := bare.measure(ctx, b.opts.dur, true)
		if err != nil {
			return err
		}
		offWall, offCPU, err := bare.measure(ctx, b.opts.dur/2, false)
		if err != nil {
			return err
		}
		res, err := drive(ctx, 1, b.warmup(), b.opts.dur, call, nil)
		if err != nil {
			return err
		}
		fullWall := res.elapsed.Seconds() * 1e6 / float64(res.calls)
		bareRow.add(bareWall)
		bareRow.addCPU(bareCPU)
		bareOff.add(offWall)
		bareOff.addCPU(offCPU)
		fullRow.add(fullWall)
		fullRow.addLatency(res.p(50), res.p(99))
		fullRow.addCPU(res.cpu)
		cpuDiff.add(res.cpu - bareCPU)
		wallDiff.add(fullWall - bareWall)
		ratioRow.add(res.cpu / bareCPU)
		b.progress("%s run %d: bare %s (cpu %s), full %s (cpu %s)", t, run+1, format(bareWall, "µs"), format(bareCPU, "µs"),
			format(fullWall, "µs"), format(res.cpu, "µs"))
	}
	return nil
}

// bareCall is the guest instantiated straight on wazero, twice: with the
// sandbox's close-on-context-done and without. Its nuropb imports are stubs:
// echo never calls them.
type bareCall struct {
	runtimes []wazero.Runtime
	handle   map[bool]api.Function
	ptr, n   uint32
}

func newBareCall(ctx context.Context, wasm []byte, cacheDir, tenant string) (*bareCall, error) {
	cache, err := wazero.NewCompilationCacheWithDir(cacheDir)
	if err != nil {
		return nil, err
	}
	env, err := guestEnvelope(tenant)
	if err != nil {
		return nil, err
	}
	// A Python service carries its files in a custom section, mounted
	// read-only at / as the sandbox does; the runtime is compiled without it.
	code, files, err := wasmsection.Split(wasm, wasmsection.FSSection)
	if err != nil {
		return nil, err
	}
	modCfg := wazero.NewModuleConfig().WithStartFunctions("_initialize").
		WithSysWalltime().WithSysNanotime().WithRandSource(rand.Reader)
	if files != nil {
		fsys, err := wasmsection.ZipFS(files)
		if err != nil {
			return nil, err
		}
		modCfg = modCfg.WithFSConfig(wazero.NewFSConfig().WithFSMount(fsys, "/"))
	}
	bc := &bareCall{handle: map[bool]api.Function{}, n: uint32(len(env))}
	for _, closeOnDone := range []bool{true, false} {
		r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().
			WithCloseOnContextDone(closeOnDone).WithMemoryLimitPages(256).WithCompilationCache(cache))
		bc.runtimes = append(bc.runtimes, r)
		wasi_snapshot_preview1.MustInstantiate(ctx, r)
		stub := func(results ...uint64) api.GoModuleFunc {
			return func(_ context.Context, _ api.Module, stack []uint64) { copy(stack, results) }
		}
		i32, i64 := api.ValueTypeI32, api.ValueTypeI64
		_, err := r.NewHostModuleBuilder(abi.ImportModule).
			NewFunctionBuilder().WithGoModuleFunction(stub(), []api.ValueType{i32, i32, i32}, nil).Export(abi.ImportLog).
			NewFunctionBuilder().WithGoModuleFunction(stub(0), []api.ValueType{i32, i32}, []api.ValueType{i64}).Export(abi.ImportCall).
			NewFunctionBuilder().WithGoModuleFunction(stub(0), []api.ValueType{i32, i32}, []api.ValueType{i32}).Export(abi.ImportSend).
			Instantiate(ctx)
		if err != nil {
			bc.close(ctx)
			return nil, err
		}
		mod, err := r.InstantiateWithConfig(ctx, code, modCfg)
		if err != nil {
			bc.close(ctx)
			return nil, err
		}
		// The envelope is written once, as the sandbox keeps its input
		// buffer in the guest between calls.
		res, err := mod.ExportedFunction(abi.ExportAlloc).Call(ctx, uint64(len(env)))
		if err != nil {
			bc.close(ctx)
			return nil, err
		}
		ptr := uint32(res[0])
		if !mod.Memory().Write(ptr, env) {
			bc.close(ctx)
			return nil, fmt.Errorf("nuropb_alloc returned %d, outside memory", ptr)
		}
		if closeOnDone {
			bc.ptr = ptr
		} else if ptr != bc.ptr {
			// Same guest, same first allocation; measure() relies on it.
			bc.close(ctx)
			return nil, fmt.Errorf("the two instances allocated the envelope at %d and %d", bc.ptr, ptr)
		}
		bc.handle[closeOnDone] = mod.ExportedFunction(abi.ExportHandle)
	}
	return bc, nil
}

// guestEnvelope is a request as the host hands it to a guest: ids, deadline
// and tenant stamped.
func guestEnvelope(tenant string) ([]byte, error) {
	env := echoEnvelope("conformance")
	env.Kind, env.ID, env.TraceID, env.Tenant = abi.KindRequest, client.New(nil).NewID(), client.NewTraceID(), tenant
	env.SetDeadline(time.Now().Add(client.DefaultTimeout))
	return abi.Default.EncodeEnvelope(env)
}

// measure calls nuropb_handle in a loop for about dur and returns the mean
// wall time and CPU time per call in µs.
func (bc *bareCall) measure(ctx context.Context, dur time.Duration, closeOnDone bool) (wall, cpu float64, err error) {
	f := bc.handle[closeOnDone]
	var stack [2]uint64
	calls := 0
	meter := newCPUMeter()
	meter.begin()
	start := time.Now()
	for time.Since(start) < dur {
		for range 256 {
			stack[0], stack[1] = uint64(bc.ptr), uint64(bc.n)
			if err := f.CallWithStack(ctx, stack[:]); err != nil {
				return 0, 0, err
			}
		}
		calls += 256
	}
	return float64(time.Since(start).Nanoseconds()) / 1e3 / float64(calls), meter.perOp(calls), nil
}

func (bc *bareCall) close(ctx context.Context) {
	for _, r := range bc.runtimes {
		_ = r.Close(ctx)
	}
}
