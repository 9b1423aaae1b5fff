package host

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/client"
	"github.com/nuropb/nuropb/host/internal/watch"
)

// Hot reload end to end: the folder watcher, real Go guests, the real
// sandbox and the embedded broker. Files are replaced the ways people and
// tools replace them while callers keep calling.

// greeterV builds the example greeter with its answer and version marked n,
// through a build overlay so no source is copied: two builds answer
// differently and have different hashes.
func greeterV(t testing.TB, n int) []byte {
	t.Helper()
	if testing.Short() {
		t.Skip("builds WebAssembly guests")
	}
	const pkg = "modules/examples/go/greeter"
	key := sourceHash(t, []string{pkg, "guest-sdk/go", "abi"}, runtime.Version(), fmt.Sprint("v", n))
	return cached(t, fmt.Sprintf("greeter-v%d", n), key, func(out string) *exec.Cmd {
		src := filepath.Join(repoRoot(t), pkg, "main.go")
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		code := strings.Replace(string(b), `"Hello, " + p.Name`, fmt.Sprintf(`"Hello v%d, " + p.Name`, n), 1)
		code = strings.Replace(code, `"1.2.0"`, fmt.Sprintf(`"2.0.%d"`, n), 1)
		if code == string(b) {
			t.Fatal("greeter source changed: update greeterV's edits")
		}
		dir := t.TempDir()
		overlay := filepath.Join(dir, "overlay.json")
		edited := filepath.Join(dir, "main.go")
		j, _ := json.Marshal(map[string]any{"Replace": map[string]string{src: edited}})
		if os.WriteFile(edited, []byte(code), 0o644) != nil || os.WriteFile(overlay, j, 0o644) != nil {
			t.Fatal("writing the overlay")
		}
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-overlay", overlay, "-o", out, "./"+pkg)
		cmd.Dir = repoRoot(t)
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		return cmd
	})
}

// arrivals are the ways a new module file lands in the folder.
var arrivals = []struct {
	name  string
	write func(t testing.TB, path string, b []byte)
}{
	{"temp then mv", func(t testing.TB, path string, b []byte) { writeFile(t, path, string(b)) }},
	{"in place, in chunks with pauses longer than quiet", func(t testing.TB, path string, b []byte) {
		writeInChunks(t, path, b, 3, 250*time.Millisecond)
	}},
	{"vim: move away, write, delete backup", func(t testing.TB, path string, b []byte) {
		if err := os.Rename(path, path+"~"); err != nil {
			t.Fatal(err)
		}
		writeInChunks(t, path, b, 8, time.Millisecond)
		if err := os.Remove(path + "~"); err != nil {
			t.Fatal(err)
		}
	}},
	{"go build -o: truncate and write", func(t testing.TB, path string, b []byte) {
		writeInChunks(t, path, b, 64, 0)
	}},
}

// writeInChunks truncates path and writes b in n chunks with pause between.
func writeInChunks(t testing.TB, path string, b []byte, n int, pause time.Duration) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	step := (len(b) + n - 1) / n
	for i := 0; i < len(b); i += step {
		if _, err := f.Write(b[i:min(i+step, len(b))]); err != nil {
			t.Fatal(err)
		}
		if pause > 0 && i+step < len(b) {
			time.Sleep(pause)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// load keeps callers calling greeter.hello and checks every answer against
// the version that served it.
type load struct {
	c       *client.Client
	answers map[string]string // served-by hash -> the answer that version gives
	stop    chan struct{}
	wg      sync.WaitGroup

	calls, failures atomic.Int64
	mu              sync.Mutex
	bad             []string
	latencies       []time.Duration
}

// helloX is the call the greeter tests make.
var helloX = &abi.Envelope{Service: "greeter", Method: "hello", Params: mustCBOR(map[string]any{"name": "x"})}

// startLoad runs callers making call (a template: each call gets a copy).
// answers maps the hashes allowed to serve to their answer ("" for any).
func startLoad(t *testing.T, c *client.Client, callers int, call *abi.Envelope, answers map[string]string) *load {
	l := &load{c: c, answers: answers, stop: make(chan struct{})}
	for range callers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				begin := time.Now()
				env := *call
				r, err := c.Call(ctx, &env)
				took := time.Since(begin)
				cancel()
				l.calls.Add(1)
				l.mu.Lock()
				l.latencies = append(l.latencies, took)
				switch want, known := "", false; {
				case err != nil:
					l.failures.Add(1)
					l.bad = append(l.bad, err.Error())
				default:
					want, known = l.answers[r.ServedBy]
					if !known {
						l.bad = append(l.bad, fmt.Sprintf("served by %.12s, not a known version", r.ServedBy))
					} else if want != "" {
						if got := decodeResult[string](t, r); got != want {
							l.bad = append(l.bad, fmt.Sprintf("answer %q served by %.12s", got, r.ServedBy))
						}
					}
				}
				l.mu.Unlock()
			}
		})
	}
	return l
}

// take returns the latencies seen since the last take.
func (l *load) take() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.latencies
	l.latencies = nil
	return out
}

// end stops the callers and fails the test on any failed or unexpected answer.
func (l *load) end(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.bad) > 0 {
		t.Fatalf("%d of %d calls went wrong, first: %v", len(l.bad), l.calls.Load(), l.bad[:min(5, len(l.bad))])
	}
	t.Logf("%d calls, none failed", l.calls.Load())
}

// waitServing waits until the service's current version is hash: new calls
// go to it from then on. (An answer's ServedBy cannot tell this: an answer
// from the old version may arrive after the first from the new.)
func waitServing(t *testing.T, h *Host, hash string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if s := h.Services(); len(s) == 1 && s[0].Hash == hash {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("version %.12s not serving after %s", hash, within)
		}
		time.Sleep(time.Millisecond)
	}
}

func startWatching(t *testing.T, files map[string][]byte) *testEnv {
	t.Helper()
	return startReal(t, Config{Watch: true, Defaults: Limits{MaxInstances: 4}}, files)
}

func hello(t *testing.T, c *client.Client) (string, string, error) {
	t.Helper()
	r, err := c.Call(ctxT(t, 10*time.Second), &abi.Envelope{Service: "greeter", Method: "hello", Params: params(t, map[string]any{"name": "x"})})
	if err != nil {
		return "", "", err
	}
	return decodeResult[string](t, r), r.ServedBy, nil
}

func TestHotReloadUnderLoad(t *testing.T) {
	v1, v2 := greeterV(t, 1), greeterV(t, 2)
	h1, h2 := hashOf(v1), hashOf(v2)
	// Under -race, wazero validates a 5 MiB Go module for seconds on every
	// load (the compilation cache skips only code generation), so the race
	// run replaces it once per arrival pattern, under lighter load.
	replacements, callers := 20, 8
	if raceEnabled() {
		replacements, callers = len(arrivals), 4
	}
	e := startWatching(t, map[string][]byte{"greeter.wasm": v1})
	path := filepath.Join(e.dir, "greeter.wasm")
	l := startLoad(t, client.New(e.b), callers, helloX, map[string]string{h1: "Hello v1, x!", h2: "Hello v2, x!"})
	waitServing(t, e.h, h1, 10*time.Second)
	var wrote time.Time
	for i := range replacements {
		b, h := v2, h2
		if i%2 == 1 {
			b, h = v1, h1
		}
		a := arrivals[i%len(arrivals)]
		a.write(t, path, b)
		wrote = time.Now()
		waitServing(t, e.h, h, time.Minute)
		t.Logf("replacement %2d (%s): serving %.12s %s after the write ended", i+1, a.name, h, time.Since(wrote).Round(time.Millisecond))
	}
	l.end(t)
	// The last version (v1) serves and describes itself with its hash.
	d, err := client.New(e.b).Describe(ctxT(t, 10*time.Second), "greeter")
	if err != nil {
		t.Fatal(err)
	}
	if d.Hash != h1 || d.Manifest.Version != "2.0.1" || !d.LoadedAt.After(wrote) {
		t.Fatalf("describe: hash %.12s version %s loaded_at %s (last write %s)", d.Hash, d.Manifest.Version, d.LoadedAt, wrote)
	}
	// No file was caught half written, so nothing was refused.
	if r := e.h.Refusals(); len(r) != 0 {
		t.Fatalf("refusals: %+v", r)
	}
	if n := strings.Count(e.logs.String(), "msg=\"module swapped\""); n != replacements {
		t.Fatalf("%d swaps logged, want %d", n, replacements)
	}
}

func TestHotReloadRefusesBrokenVersion(t *testing.T) {
	v1, v2 := greeterV(t, 1), greeterV(t, 2)
	h1, h2 := hashOf(v1), hashOf(v2)
	e := startWatching(t, map[string][]byte{"greeter.wasm": v1})
	path := filepath.Join(e.dir, "greeter.wasm")
	l := startLoad(t, client.New(e.b), 4, helloX, map[string]string{h1: "Hello v1, x!", h2: "Hello v2, x!"})
	waitServing(t, e.h, h1, 10*time.Second)

	// A complete binary that does not compile: refused at once. A file cut
	// short for good: refused once the watcher stops waiting for the rest.
	garbage := append([]byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00, 0x01, 0x03}, "bad"...)
	for i, b := range [][]byte{garbage, v2[:len(v2)/2]} {
		writeFile(t, path, string(b))
		waitForWithin(t, time.Minute, func() bool { return len(e.h.Refusals()) == i+1 })
		ref := e.h.Refusals()[i]
		if ref.File != "greeter.wasm" || ref.Reason == "" {
			t.Fatalf("refusal %+v", ref)
		}
		if !strings.Contains(e.logs.String(), "msg=\"module refused\" file=greeter.wasm") {
			t.Fatal("no log line names the refused file")
		}
		t.Logf("refused: %s", ref.Reason)
		if s := e.h.Services(); len(s) != 1 || s[0].Hash != h1 {
			t.Fatalf("after a refusal: %+v", s)
		}
	}
	// The old version kept serving throughout; a good file replaces it.
	writeFile(t, path, string(v2))
	waitServing(t, e.h, h2, time.Minute)
	l.end(t)
}

func TestHotReloadAddAndRemove(t *testing.T) {
	v1 := greeterV(t, 1)
	e := startWatching(t, nil)
	c := client.New(e.b)
	shop := client.New(e.b, client.WithTenant("shop"))
	ctx := ctxT(t, 3*time.Minute)
	// A new file, and a tenant folder created after Start with a file in it.
	writeFile(t, filepath.Join(e.dir, "greeter.wasm"), string(v1))
	if err := os.Mkdir(filepath.Join(e.dir, "shop"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeInChunks(t, filepath.Join(e.dir, "shop", "greeter.wasm"), v1, 4, 10*time.Millisecond)
	for _, cl := range []*client.Client{c, shop} {
		waitForWithin(t, 2*time.Minute, func() bool {
			_, err := cl.Call(ctx, &abi.Envelope{Service: "greeter", Method: "hello", Params: params(t, map[string]any{"name": "x"})})
			return err == nil
		})
	}
	// Removed: retired, and callers get not_found.
	if err := os.Remove(filepath.Join(e.dir, "greeter.wasm")); err != nil {
		t.Fatal(err)
	}
	waitForWithin(t, time.Minute, func() bool { return len(e.h.Services()) == 1 })
	_, _, err := hello(t, c)
	wantCode(t, err, abi.CodeNotFound)
	if _, err := shop.Call(ctx, &abi.Envelope{Service: "greeter", Method: "hello", Params: params(t, map[string]any{"name": "x"})}); err != nil {
		t.Fatalf("the other tenant's greeter: %v", err)
	}
	// Invalid tenant folder names are not watched, as Start skips them.
	writeFile(t, filepath.Join(e.dir, "Bad Tenant", "greeter.wasm"), string(v1))
	time.Sleep(500 * time.Millisecond)
	if len(e.h.Services()) != 1 || len(e.h.Refusals()) != 0 {
		t.Fatalf("services %+v refusals %+v", e.h.Services(), e.h.Refusals())
	}
}

func TestHotReloadHalfWrittenFile(t *testing.T) {
	v1, v2 := greeterV(t, 1), greeterV(t, 2)
	h1, h2 := hashOf(v1), hashOf(v2)
	e := startWatching(t, map[string][]byte{"greeter.wasm": v1})
	path := filepath.Join(e.dir, "greeter.wasm")
	l := startLoad(t, client.New(e.b), 4, helloX, map[string]string{h1: "Hello v1, x!", h2: "Hello v2, x!"})
	waitServing(t, e.h, h1, 10*time.Second)

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	half := len(v2) / 2
	if _, err := f.Write(v2[:half]); err != nil {
		t.Fatal(err)
	}
	// Half the file sits there for several quiet periods; v1 keeps
	// answering (every answer is checked against its hash).
	time.Sleep(600 * time.Millisecond)
	if s := e.h.Services(); s[0].Hash != h1 {
		t.Fatalf("served by %.12s while the file was half written", s[0].Hash)
	}
	if _, err := f.Write(v2[half:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	waitServing(t, e.h, h2, time.Minute)
	l.end(t)
	if r := e.h.Refusals(); len(r) != 0 {
		t.Fatalf("the half-written file was tried: %+v", r)
	}
}

func TestReloadMemoryIsFlat(t *testing.T) {
	// LoadFile directly (the watcher adds nothing per cycle but time), with
	// the C guest: a Go guest's reload costs 200-400 ms here, a C guest's a
	// few ms, and what could leak per reload (versions, instances, compiled
	// code, consumers, file state) is the same for both. Two versions: the
	// guest, and the guest with a custom section appended.
	v1 := cGuest(t)
	v2 := append(slices.Clone(v1), 0x00, 0x05, 0x03, 'p', 'a', 'd', 0x01)
	const cycles = 500
	e := startReal(t, Config{}, map[string][]byte{"svc.wasm": v1})
	path := filepath.Join(e.dir, "svc.wasm")
	c := client.New(e.b)
	ctx := ctxT(t, 5*time.Minute)
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	var at50 uint64
	var logAt50 int
	begin := time.Now()
	for i := 1; i <= cycles; i++ {
		b := v2
		if i%2 == 0 {
			b = v1
		}
		writeFile(t, path, string(b))
		if err := e.h.LoadFile(ctx, path); err != nil {
			t.Fatal(err)
		}
		r, err := c.Call(ctx, &abi.Envelope{Service: "cguest", Method: "echo"})
		if err != nil || r.ServedBy != hashOf(b) {
			t.Fatalf("cycle %d: served by %.12s, err %v", i, r.ServedBy, err)
		}
		if i == 50 {
			at50, logAt50 = heap(), len(e.logs.String())
			begin = time.Now()
		}
	}
	end := heap()
	growth := int64(end) - int64(at50)
	t.Logf("%d reload cycles: heap %.1f MiB after 50, %.1f MiB after %d (growth %+.2f MiB, of which the test's log buffer %+.2f MiB); %s per cycle; %d goroutines",
		cycles, mib(at50), mib(end), cycles, float64(growth)/(1<<20), float64(len(e.logs.String())-logAt50)/(1<<20),
		(time.Since(begin) / time.Duration(cycles-50)).Round(100*time.Microsecond), runtime.NumGoroutine())
	if growth > 64<<20 {
		t.Fatalf("heap grew %.1f MiB over %d reloads", float64(growth)/(1<<20), cycles-50)
	}
}

// TestReloadFigures measures hot reload for BENCHMARKS.md: the time from a
// new file landing (the rename that ends a write) to the new version
// serving, and call latency with 8 callers, steady and during reloads. It
// logs figures and asserts only correctness. Opt in, without -race:
//
//	NUROPB_RELOAD_FIGURES=1 go test -run TestReloadFigures -v ./host/
func TestReloadFigures(t *testing.T) {
	if os.Getenv("NUROPB_RELOAD_FIGURES") == "" {
		t.Skip("set NUROPB_RELOAD_FIGURES=1 to measure hot reload")
	}
	t.Run("go", func(t *testing.T) {
		v1, v2 := greeterV(t, 1), greeterV(t, 2)
		reloadFigures(t, v1, v2, helloX, map[string]string{hashOf(v1): "Hello v1, x!", hashOf(v2): "Hello v2, x!"})
	})
	t.Run("rust", func(t *testing.T) {
		v1 := rustConformance(t)
		v2 := append(slices.Clone(v1), 0x00, 0x05, 0x03, 'p', 'a', 'd', 0x01)
		echo := &abi.Envelope{Service: "conformance", Method: "echo", Params: mustCBOR("x")}
		reloadFigures(t, v1, v2, echo, map[string]string{hashOf(v1): "x", hashOf(v2): "x"})
	})
}

func reloadFigures(t *testing.T, v1, v2 []byte, call *abi.Envelope, answers map[string]string) {
	const reloads = 10
	e := startWatching(t, map[string][]byte{"svc.wasm": v1})
	path := filepath.Join(e.dir, "svc.wasm")
	l := startLoad(t, client.New(e.b), 8, call, answers)
	time.Sleep(time.Second) // warm up
	l.take()
	time.Sleep(3 * time.Second)
	steady := l.take()
	var swaps []time.Duration
	for i := range reloads {
		b := v2
		if i%2 == 1 {
			b = v1
		}
		writeFile(t, path, string(b))
		wrote := time.Now()
		waitServing(t, e.h, hashOf(b), 30*time.Second)
		swaps = append(swaps, time.Since(wrote))
		t.Logf("reload %d: %.12s serving after %s", i+1, hashOf(b), swaps[i])
		time.Sleep(100 * time.Millisecond)
	}
	during := l.take()
	l.end(t)
	slices.Sort(swaps)
	t.Logf("%d reloads of a %d KiB module, quiet period %s: file landed -> new version serving: min %s, median %s, max %s",
		reloads, len(v1)>>10, watch.DefaultQuiet, swaps[0].Round(time.Millisecond), swaps[len(swaps)/2].Round(time.Millisecond),
		swaps[len(swaps)-1].Round(time.Millisecond))
	t.Logf("call latency, 8 callers, steady:         %s", percentiles(steady))
	t.Logf("call latency, 8 callers, during reloads: %s", percentiles(during))
}

func percentiles(d []time.Duration) string {
	if len(d) == 0 {
		return "no calls"
	}
	slices.Sort(d)
	at := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	return fmt.Sprintf("%d calls, p50 %s, p99 %s, max %s", len(d), at(0.50), at(0.99), d[len(d)-1])
}

// rustConformance builds the Rust conformance guest with the repo's script.
func rustConformance(t testing.TB) []byte {
	t.Helper()
	if _, err := os.Stat("/usr/bin/rustc"); err != nil {
		t.Skip("Debian's rustc is not installed (see scripts/build-rust-modules.sh)")
	}
	key := sourceHash(t, []string{"guest-sdk/rust/src", "testdata/guests/rust/conformance", "scripts/build-rust-modules.sh"})
	return cached(t, "rust-conformance", key, func(out string) *exec.Cmd {
		dir := t.TempDir()
		cmd := exec.Command("sh", "-c", `scripts/build-rust-modules.sh --testdata "$1" && cp "$1/conformance.wasm" "$2"`, "sh", dir, out)
		cmd.Dir = repoRoot(t)
		return cmd
	})
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// raceEnabled reports whether the test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	return ok && slices.ContainsFunc(bi.Settings, func(s debug.BuildSetting) bool { return s.Key == "-race" && s.Value == "true" })
}

func waitForWithin(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met in %s", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
