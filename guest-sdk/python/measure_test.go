package python

import (
	"context"
	"runtime"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/nuropb/nuropb/abi"
)

// threadCPU is the CPU time of the calling OS thread: unlike wall time it
// does not grow when other processes load the machine.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	const rusageThread = 1
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestMeasure reports instance start-up and per-call cost (wall and thread
// CPU time; the machine may be shared, so CPU time is the steadier figure).
func TestMeasure(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	h := sharedHost(t)
	packed := packService(t, statsDir)
	h.load(t, packed) // compile outside the measurement
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	var walls, cpus []time.Duration
	var g *guest
	for i := 0; i < 5; i++ {
		c0 := threadCPU()
		g = h.load(t, packed)
		cpus = append(cpus, threadCPU()-c0)
		walls = append(walls, g.initTime)
	}
	t.Logf("instance start, stats example (instantiate + _initialize: interpreter, SDK, json/re/statistics imports): median wall %v, thread CPU %v",
		median(walls), median(cpus))

	call := func(name, method string, params any, n int) {
		in, err := abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindRequest, Service: "stats", Method: method, Params: mustCBOR(t, params)})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for i := 0; i < 50; i++ { // warm up
			if _, err := g.handleRaw(ctx, in); err != nil {
				t.Fatal(err)
			}
		}
		c0, w0 := threadCPU(), time.Now()
		for i := 0; i < n; i++ {
			if _, err := g.handleRaw(ctx, in); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("%s: %v wall, %v thread CPU per call (n=%d, incl. alloc/write/handle/read/dealloc)",
			name, time.Since(w0)/time.Duration(n), (threadCPU()-c0)/time.Duration(n), n)
	}
	call("unknown method (ABI + envelope decode/encode + dispatch)", "nope", map[string]any{}, 2000)
	call("summarize 8 values", "summarize", map[string]any{"values": []any{2, 4, 4, 4, 5, 5, 7, 9}}, 1000)
	call("parse_log 2 lines", "parse_log", map[string]any{"text": "2024-05-01T12:00:00Z ERROR db: lost\n2024-05-01T12:01:00Z INFO web: ok\n"}, 1000)
	mem := g.mod.Memory().Size()
	t.Logf("linear memory after the calls: %.1f MiB", float64(mem)/(1<<20))
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func BenchmarkEchoCall(b *testing.B) {
	h := sharedHost(b)
	g := h.load(b, packService(b, conformanceDir))
	in, _ := abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindRequest, Service: "conformance", Method: "echo",
		Params: mustCBOR(b, map[string]any{"a": 1, "b": "two", "c": []any{1.5, true}})})
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := g.handleRaw(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInstanceStart(b *testing.B) {
	h := sharedHost(b)
	packed := packService(b, conformanceDir)
	h.load(b, packed)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		g := h.load(b, packed)
		g.mod.Close(context.Background())
	}
}
