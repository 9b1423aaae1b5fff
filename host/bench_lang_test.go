package host

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/broker/memory"
	"github.com/nuropb/nuropb/client"
)

// Per-language figures for BENCHMARKS.md: the cost of one call to a trivial
// method through the whole in-process path (client.Call -> embedded broker
// -> host dispatcher -> sandbox -> guest and back), and the memory one more
// instance costs. Run:
//
//	go test -run XXX -bench BenchmarkLang -benchtime 2000x ./host/
//
// cpu-ns/op is the process's CPU time (user+system, all threads) per call,
// steadier than wall time on a loaded machine. rss-KiB/instance is the
// growth of the process's resident memory when a second copy of the module
// pre-starts langInstances[lang] instances (code already compiled and
// shared), divided by their number: what an instance really touches, guest
// memory and the host's bookkeeping included.

// langInstances is how many instances the memory figure is taken over: many
// of the small Rust ones, so that the per-instance figure rises above the
// noise of the Go heap; few of the slow-starting Python ones.
var langInstances = map[string]int{"go": 8, "rust": 64, "python": 4}

// benchHost runs a Host over a fresh embedded broker with files in a temp
// modules folder, logging only errors.
func benchHost(b *testing.B, cfg Config, files map[string][]byte) (*Host, *memory.Broker, string) {
	b.Helper()
	dir := b.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	mem, err := memory.New(memory.Config{})
	if err != nil {
		b.Fatal(err)
	}
	cfg.ModulesDir = dir
	cfg.CacheDir = filepath.Join(cacheRoot(b), "wazero-cache")
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	h, err := New(cfg, mem)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := h.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = h.Shutdown(ctx)
		_ = mem.Close()
	})
	return h, mem, dir
}

// benchGuests returns the conformance guest per language, skipping (failing
// under CI=true) the missing ones in their sub-benchmarks.
func benchGuests(b *testing.B) map[string]func(*testing.B) []byte {
	return map[string]func(*testing.B) []byte{
		"go": func(b *testing.B) []byte { return goGuest(b, "guest-sdk/go/internal/conformance") },
		"rust": func(b *testing.B) []byte {
			w, missing := rustModule(b, "conformance")
			if missing != "" {
				langSkip(b, "rust", missing)
			}
			return w
		},
		"python": func(b *testing.B) []byte {
			w, missing := pythonModule(b, "testdata/guests/python/conformance")
			if missing != "" {
				langSkip(b, "python", missing)
			}
			return w
		},
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssBytes is the process's resident set size after a full GC that returns
// freed memory to the OS.
func rssBytes(b *testing.B) int64 {
	runtime.GC()
	debug.FreeOSMemory()
	statm, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		b.Skipf("no /proc/self/statm: %v", err)
	}
	f := bytes.Fields(statm)
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return pages * int64(os.Getpagesize())
}

func BenchmarkLangCall(b *testing.B) {
	for _, lang := range []string{"go", "rust", "python"} {
		b.Run(lang, func(b *testing.B) {
			wasm := benchGuests(b)[lang](b)
			// Sequential calls need one instance; the rest of the pool idles.
			_, mem, _ := benchHost(b, Config{}, map[string][]byte{"conformance.wasm": wasm})
			c := client.New(mem)
			ctx := context.Background()
			req := func() {
				if _, err := c.Call(ctx, &abi.Envelope{Service: "conformance", Method: "echo", Params: abi.RawValue{0xa0}}); err != nil {
					b.Fatal(err)
				}
			}
			for range 50 { // warm the instance, the broker's queues and the guest's allocator
				req()
			}
			b.ReportAllocs()
			cpu := cpuTime()
			b.ResetTimer()
			for b.Loop() {
				req()
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

func BenchmarkLangInstanceMemory(b *testing.B) {
	for _, lang := range []string{"go", "rust", "python"} {
		b.Run(lang, func(b *testing.B) {
			wasm := benchGuests(b)[lang](b)
			n := langInstances[lang]
			cfg := Config{Modules: map[string]Limits{"more/conformance": {MinInstances: n, MaxInstances: n}}}
			h, _, dir := benchHost(b, cfg, map[string][]byte{"conformance.wasm": wasm})
			path := filepath.Join(dir, "more", "conformance.wasm")
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(path, wasm, 0o644); err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			before := rssBytes(b)
			start := time.Now()
			if err := h.LoadFile(ctx, path); err != nil {
				b.Fatal(err)
			}
			took := time.Since(start)
			after := rssBytes(b)
			for _, s := range h.Services() {
				if s.Tenant == "more" && s.Instances != n {
					b.Fatalf("%d instances started, want %d", s.Instances, n)
				}
			}
			// The figure is per load, not per b.N iteration: report it once.
			for b.Loop() {
			}
			b.ReportMetric(float64(after-before)/float64(n)/1024, "rss-KiB/instance")
			b.ReportMetric(float64(took.Milliseconds())/float64(n), "start-ms/instance")
		})
	}
}

// BenchmarkLangLayers splits the in-process path by layer, per language:
//
//   - handle: sandbox.Module.Handle alone, on the envelope the dispatcher
//     hands the guest (stamped, re-encoded);
//   - call: the whole path, one call at a time (as BenchmarkLangCall);
//   - inflight64: the whole path with 64 calls in flight, the shape of
//     cmd/nuropb-bench's embedded-broker figure; rt/s is round trips per
//     second of wall time.
//
// call minus handle is what the client, the broker and the dispatcher add.
//
//	go test -run XXX -bench BenchmarkLangLayers -benchtime 20000x ./host/
func BenchmarkLangLayers(b *testing.B) {
	for _, lang := range []string{"go", "rust"} {
		b.Run(lang, func(b *testing.B) {
			wasm := benchGuests(b)[lang](b)
			h, mem, _ := benchHost(b, Config{}, map[string][]byte{"conformance.wasm": wasm})
			c := client.New(mem)
			ctx := context.Background()
			req := func() *abi.Envelope {
				return &abi.Envelope{Service: "conformance", Method: "echo", Params: abi.RawValue{0xa0}}
			}
			call := func(b *testing.B) {
				if _, err := c.Call(ctx, req()); err != nil {
					b.Fatal(err)
				}
			}
			for range 50 {
				call(b)
			}
			measure := func(b *testing.B, loop func()) {
				b.ReportAllocs()
				cpu := cpuTime()
				start := time.Now()
				b.ResetTimer()
				loop()
				b.StopTimer()
				b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rt/s")
			}
			b.Run("handle", func(b *testing.B) {
				h.mu.Lock()
				s := h.services[broker.Route{Tenant: broker.DefaultTenant, Service: "conformance"}]
				h.mu.Unlock()
				v := s.current.Load()
				env := req()
				env.Kind, env.ID, env.TraceID = abi.KindRequest, c.NewID(), client.NewTraceID()
				env.SetDeadline(time.Now().Add(time.Hour))
				gctx := h.callContext(ctx, v, env)
				in, err := v.codec.EncodeEnvelope(env)
				if err != nil {
					b.Fatal(err)
				}
				measure(b, func() {
					for b.Loop() {
						if _, err := v.mod.Handle(gctx, in); err != nil {
							b.Fatal(err)
						}
					}
				})
			})
			b.Run("call", func(b *testing.B) {
				measure(b, func() {
					for b.Loop() {
						call(b)
					}
				})
			})
			b.Run("inflight64", func(b *testing.B) {
				// Start every instance the pool may have before measuring.
				var wg sync.WaitGroup
				for range 64 {
					wg.Go(func() {
						for range 10 {
							call(b)
						}
					})
				}
				wg.Wait()
				b.SetParallelism((64 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				measure(b, func() {
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							call(b)
						}
					})
				})
			})
		})
	}
}
