package host

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/client"
	"github.com/nuropb/nuropb/guest-sdk/python/pack"
	"github.com/nuropb/nuropb/host/internal/sandbox"
	"github.com/nuropb/nuropb/internal/wasmsection"
)

// One contract, three languages: the Go, Rust and Python conformance guests
// (guest-sdk/go/internal/conformance, testdata/guests/rust/conformance,
// testdata/guests/python/conformance) run through the real host, the real
// sandbox and the embedded broker, called with client.Call as any caller
// would. Each language lives in its own tenant folder (all three declare the
// service "conformance"), may call the default tenant (the Go greeter) and
// the next language's tenant, so every guest also calls across languages.
//
// A language whose toolchain is missing (Debian's rustc, the built Python
// runtime) is skipped, and fails the test under CI=true.

// langGuest is one language's conformance guest and what differs for it.
type langGuest struct {
	lang    string // also its tenant
	wasm    []byte
	missing string // why it could not be built; the language is skipped
	// trap is the method that faults the instance: Go and Rust panic;
	// Python's panic is an exception (a handler error), its trap overflows
	// the C stack.
	trap string
}

// langSkip skips (or under CI=true fails) a test whose language is missing.
func langSkip(t testing.TB, what, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s: %s (CI must have every guest toolchain: make setup)", what, why)
	}
	t.Skipf("%s: %s", what, why)
}

// rustModules builds every Rust example and test guest with the project's
// script into a cached folder and returns it ("" and why when Debian's rustc
// is missing).
func rustModules(t testing.TB) (dir, missing string) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/rustc"); err != nil {
		return "", "Debian's rustc is not installed (apt-get install rustc libstd-rust-dev-wasm32 lld)"
	}
	key := sourceHash(t, []string{"scripts/build-rust-modules.sh", "guest-sdk/rust/src", "modules/examples/rust", "testdata/guests/rust"})
	dir = filepath.Join(cacheRoot(t), "host-test-guests", "rust-"+key)
	// The script builds every crate at once; the cached file is only a
	// marker that the folder is complete.
	cached(t, "rust-modules", key, func(out string) *exec.Cmd {
		cmd := exec.Command("sh", "-c", `rm -rf "$1" && "$0" --testdata "$1" >/dev/null && touch "$2"`,
			"scripts/build-rust-modules.sh", dir, out)
		cmd.Dir = repoRoot(t)
		return cmd
	})
	return dir, ""
}

// rustModule returns one module built by rustModules.
func rustModule(t testing.TB, name string) ([]byte, string) {
	t.Helper()
	dir, missing := rustModules(t)
	if missing != "" {
		return nil, missing
	}
	b, err := os.ReadFile(filepath.Join(dir, name+".wasm"))
	if err != nil {
		t.Fatal(err)
	}
	return b, ""
}

var (
	pyPackMu sync.Mutex
	pyPacked = map[string][]byte{}
)

// pythonModule packs a Python service (repo-relative or absolute path) with
// the runtime built for this clone ("" and why when it is not built).
func pythonModule(t testing.TB, path string) ([]byte, string) {
	t.Helper()
	if !filepath.IsAbs(path) {
		path = filepath.Join(repoRoot(t), path)
	}
	pyPackMu.Lock()
	defer pyPackMu.Unlock()
	if b, ok := pyPacked[path]; ok {
		return b, ""
	}
	b, err := pack.Build(path)
	if errors.Is(err, pack.ErrNoRuntime) {
		return nil, err.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	pyPacked[path] = b
	return b, ""
}

// conformanceGuests builds the three conformance guests.
func conformanceGuests(t *testing.T) []*langGuest {
	t.Helper()
	rust, rustMissing := rustModule(t, "conformance")
	py, pyMissing := pythonModule(t, "testdata/guests/python/conformance")
	return []*langGuest{
		{lang: "go", wasm: goGuest(t, "guest-sdk/go/internal/conformance"), trap: "panic"},
		{lang: "rust", wasm: rust, missing: rustMissing, trap: "panic"},
		{lang: "python", wasm: py, missing: pyMissing, trap: "trap"},
	}
}

// startWithEngine is startReal with an engine the test holds, so it can read
// the engine's compile counters; the host uses it exactly as its own.
func startWithEngine(t *testing.T, cfg Config, files map[string][]byte) (*testEnv, *sandbox.Engine) {
	t.Helper()
	eng, err := sandbox.NewEngine(context.Background(), sandbox.Config{CacheDir: filepath.Join(cacheRoot(t), "wazero-cache")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close(context.Background()) }) // after the host's Shutdown (cleanups run last-in first-out)
	load := func(ctx context.Context, src sandbox.Source, imp sandbox.Imports) (module, error) {
		m, err := eng.Load(ctx, src, imp)
		if err != nil {
			return nil, err
		}
		return m, nil
	}
	m := map[string]string{}
	for name, b := range files {
		m[name] = string(b)
	}
	return start(t, cfg, load, m), eng
}

// canonical re-encodes a CBOR item deterministically (sorted keys, shortest
// floats), so that values equal in meaning compare equal as bytes whichever
// language encoded them.
func canonical(t testing.TB, raw []byte) []byte {
	t.Helper()
	var v any
	if err := abi.Default.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decode %x: %v", raw, err)
	}
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	b, err := em.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformanceAcrossLanguages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Go, Rust and Python guests")
	}
	guests := conformanceGuests(t)
	brokenPy, _ := pythonModule(t, writePython(t, "broken.py", "import nuropb\nimport no_such_module_here\n"))
	oddPy, _ := pythonModule(t, writePython(t, "odd.py", oddService))

	files := map[string][]byte{"greeter.wasm": goGuest(t, "modules/examples/go/greeter")}
	cfg := Config{Tenants: map[string]Tenant{}}
	var present []*langGuest
	for _, g := range guests {
		if g.missing == "" {
			present = append(present, g)
			files[g.lang+"/conformance.wasm"] = g.wasm
		}
	}
	// Each language may call the default tenant and the next language.
	for i, g := range present {
		next := present[(i+1)%len(present)]
		cfg.Tenants[g.lang] = Tenant{Call: []string{"default/*", next.lang + "/*"}}
	}
	if oddPy != nil {
		files["python/odd.wasm"] = oddPy
		files["python/broken.wasm"] = brokenPy
	}
	e, eng := startWithEngine(t, cfg, files)
	defaultClient := client.New(e.b)

	// Identical code is compiled once: every Python service is the same
	// runtime module once its nuropb.fs section is stripped.
	t.Run("one compilation per distinct code", func(t *testing.T) {
		codes := map[[32]byte]bool{}
		for name, b := range files {
			if name == "python/broken.wasm" {
				continue // refused: it holds no code
			}
			stripped, _, err := wasmsection.Split(b, wasmsection.FSSection)
			if err != nil {
				t.Fatal(err)
			}
			codes[sha256.Sum256(stripped)] = true
		}
		if got := eng.Stats().Compiled; got != len(codes) {
			t.Fatalf("engine holds %d compiled modules for %d distinct codes", got, len(codes))
		}
	})

	for i, g := range guests {
		t.Run(g.lang, func(t *testing.T) {
			if g.missing != "" {
				langSkip(t, g.lang, g.missing)
			}
			c := client.New(e.b, client.WithTenant(g.lang))
			call := func(t *testing.T, method string, p any, mut ...func(*abi.Envelope)) (*abi.Envelope, error) {
				t.Helper()
				env := &abi.Envelope{Service: "conformance", Method: method}
				if p != nil {
					env.Params = params(t, p)
				}
				for _, f := range mut {
					f(env)
				}
				return c.Call(ctxT(t, 30*time.Second), env)
			}
			mustCall := func(t *testing.T, method string, p any, mut ...func(*abi.Envelope)) *abi.Envelope {
				t.Helper()
				r, err := call(t, method, p, mut...)
				if err != nil {
					t.Fatalf("%s.%s: %v", g.lang, method, err)
				}
				return r
			}

			t.Run("echo every CBOR type", func(t *testing.T) {
				two70 := new(big.Int).Lsh(big.NewInt(1), 70)
				p := map[string]any{
					"int": int64(42), "zero": int64(0), "neg": int64(-7),
					"min": int64(math.MinInt64), "max": int64(math.MaxInt64),
					"big": two70, "negbig": new(big.Int).Neg(two70),
					"float": 3.25, "tiny": 1e-300, "negfloat": -0.5,
					"true": true, "false": false, "null": nil,
					"text": "héllo, wörld ✓", "empty": "",
					"bytes": []byte{0, 1, 2, 0xfe, 0xff}, "nobytes": []byte{},
					"list":   []any{int64(1), "two", 3.5, []any{}, nil},
					"nested": map[string]any{"a": map[string]any{"b": []any{map[string]any{"c": true}}}, "e": map[string]any{}},
				}
				sent := params(t, p)
				r := mustCall(t, "echo", nil, func(env *abi.Envelope) { env.Params = sent })
				if got, want := canonical(t, r.Result), canonical(t, sent); !bytes.Equal(got, want) {
					t.Fatalf("echo changed the value:\n got %x\nwant %x", got, want)
				}
			})
			t.Run("handler error carries the message", func(t *testing.T) {
				_, err := call(t, "fail", map[string]any{"message": "boom in " + g.lang})
				if ae := wantCode(t, err, abi.CodeHandler); !strings.Contains(ae.Message, "boom in "+g.lang) {
					t.Fatal(ae)
				}
			})
			t.Run("coded error keeps its code", func(t *testing.T) {
				_, err := call(t, "fail_code", map[string]any{"code": "forbidden", "message": "no entry"})
				if ae := wantCode(t, err, abi.CodeForbidden); !strings.Contains(ae.Message, "no entry") {
					t.Fatal(ae)
				}
			})
			t.Run("trap discards the instance, next call works", func(t *testing.T) {
				before := langServiceInfo(t, e.h, g.lang, "conformance").Traps
				_, err := call(t, g.trap, map[string]any{})
				wantCode(t, err, abi.CodeTrapped)
				if after := langServiceInfo(t, e.h, g.lang, "conformance").Traps; after != before+1 {
					t.Errorf("traps %d -> %d", before, after)
				}
				if _, err := call(t, "echo", map[string]any{}); err != nil {
					t.Fatal(err)
				}
			})
			t.Run("calls another service", func(t *testing.T) {
				r := mustCall(t, "call", map[string]any{"service": "default/greeter", "method": "hello", "params": map[string]any{"name": g.lang}})
				if got := decodeResult[string](t, r); got != "Hello, "+g.lang+"!" {
					t.Fatalf("greeter said %q", got)
				}
				if len(present) < 2 {
					return
				}
				var next *langGuest
				for j := range guests {
					if n := guests[(i+1+j)%len(guests)]; n.missing == "" {
						next = n
						break
					}
				}
				r = mustCall(t, "call", map[string]any{"service": next.lang + "/conformance", "method": "echo", "params": map[string]any{"from": g.lang}})
				if got := decodeResult[map[string]any](t, r); got["from"] != g.lang {
					t.Fatalf("%s -> %s echo: %v", g.lang, next.lang, got)
				}
			})
			t.Run("publish reaches the subscriber", func(t *testing.T) {
				topic := "conformance." + g.lang + ".published"
				mustCall(t, "publish", map[string]any{"topic": topic, "event": map[string]any{"n": int64(7)}})
				waitFor(t, func() bool {
					for _, ev := range decodeResult[[]map[string]any](t, mustCall(t, "events", nil)) {
						if ev["topic"] == topic {
							if m, ok := ev["event"].(map[string]any); !ok || m["n"] != int64(7) {
								t.Fatalf("event arrived as %v", ev)
							}
							return true
						}
					}
					return false
				})
			})
			t.Run("context round trip", func(t *testing.T) {
				trace := client.NewTraceID()
				before := time.Now()
				r := mustCall(t, "context", nil, func(env *abi.Envelope) {
					env.TraceID = trace
					env.Context = map[string]any{"user": "ada", "roles": []any{"admin"}}
				})
				got := decodeResult[map[string]any](t, r)
				claims, _ := got["context"].(map[string]any)
				if claims["user"] != "ada" || got["trace_id"] != trace || got["tenant"] != g.lang {
					t.Fatalf("context arrived as %v", got)
				}
				dl, _ := got["deadline"].(int64)
				if dl < before.UnixMilli() || dl > before.Add(31*time.Second).UnixMilli() {
					t.Fatalf("deadline %d, called at %d with 30 s", dl, before.UnixMilli())
				}
			})
			t.Run("512 KiB payload", func(t *testing.T) {
				blob := bytes.Repeat([]byte("nuropb-"), 512<<10/7)
				r := mustCall(t, "echo", map[string]any{"blob": blob})
				if got := decodeResult[map[string][]byte](t, r)["blob"]; !bytes.Equal(got, blob) {
					t.Fatalf("blob of %d bytes came back as %d bytes", len(blob), len(got))
				}
			})
			t.Run("bad params name the field", func(t *testing.T) {
				_, err := call(t, "big", map[string]any{"n": "lots"})
				ae := wantCode(t, err, abi.CodeBadRequest)
				if !regexp.MustCompile(`\bn\b`).MatchString(ae.Message) {
					t.Fatalf("message does not name the field n: %v", ae)
				}
			})
			t.Run("unknown method", func(t *testing.T) {
				_, err := call(t, "no_such_method", nil)
				wantCode(t, err, abi.CodeMethodNotFound)
			})
		})
	}

	t.Run("python specifics", func(t *testing.T) {
		if oddPy == nil {
			langSkip(t, "python", guests[2].missing)
		}
		c := client.New(e.b, client.WithTenant("python"))
		call := func(svc, method string, p any) (*abi.Envelope, error) {
			return c.Call(ctxT(t, 30*time.Second), &abi.Envelope{Service: svc, Method: method, Params: params(t, p)})
		}
		t.Run("an exception is a handler error naming it", func(t *testing.T) {
			r, err := call("conformance", "panic", map[string]any{"message": "stop"})
			ae := wantCode(t, err, abi.CodeHandler)
			if !strings.Contains(ae.Message, "conformance: stop") || r.Error.Details["exception"] != "SystemExit" {
				t.Fatalf("%v details %v", ae, r.Error.Details)
			}
		})
		t.Run("unencodable results are internal errors naming the type", func(t *testing.T) {
			for method, typ := range map[string]string{"a_set": "set", "an_object": "object"} {
				_, err := call("odd", method, map[string]any{})
				if ae := wantCode(t, err, abi.CodeInternal); !strings.Contains(ae.Message, typ) {
					t.Errorf("%s: %v", method, ae)
				}
			}
		})
		t.Run("an import error is refused with its traceback", func(t *testing.T) {
			var reason string
			for _, r := range e.h.Refusals() {
				if r.File == "python/broken.wasm" {
					reason = r.Reason
				}
			}
			for _, want := range []string{"Traceback", "/app/broken.py", "No module named 'no_such_module_here'"} {
				if !strings.Contains(reason, want) {
					t.Errorf("refusal %q lacks %q", reason, want)
				}
			}
			if !strings.Contains(e.logs.String(), "no_such_module_here") {
				t.Error("the host log does not show the traceback")
			}
		})
		t.Run("a broken reload is refused, the old version serves", func(t *testing.T) {
			path := filepath.Join(e.dir, "python", "conformance.wasm")
			writeFile(t, path, string(brokenPy))
			var ref *Refusal
			if err := e.h.LoadFile(ctxT(t, 60*time.Second), path); !errors.As(err, &ref) || !strings.Contains(ref.Reason, "No module named") {
				t.Fatalf("got %v, want a refusal with the traceback", err)
			}
			if _, err := call("conformance", "echo", map[string]any{"still": "here"}); err != nil {
				t.Fatal(err)
			}
			writeFile(t, path, string(guests[2].wasm))
		})
	})

	t.Run("default tenant is untouched", func(t *testing.T) {
		r, err := defaultClient.Call(ctxT(t, 10*time.Second), &abi.Envelope{Service: "greeter", Method: "hello", Params: params(t, map[string]any{"name": "Ada"})})
		if err != nil || decodeResult[string](t, r) != "Hello, Ada!" {
			t.Fatal(r, err)
		}
	})
}

// oddService returns values CBOR cannot carry.
const oddService = `import nuropb


@nuropb.service("odd", version="1.0.0")
class Odd:
    """Returns values that have no CBOR encoding."""

    def a_set(self):
        """A set: encode it as a list yourself."""
        return {1, 2}

    def an_object(self):
        """An arbitrary object."""
        return object()
`

// writePython writes a one-file Python service into a temp folder and
// returns its path.
func writePython(t testing.TB, name, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// langServiceInfo returns what Services says of one service.
func langServiceInfo(t testing.TB, h *Host, tenant, service string) ServiceInfo {
	t.Helper()
	for _, s := range h.Services() {
		if s.Tenant == tenant && s.Service == service {
			return s
		}
	}
	t.Fatalf("%s/%s is not served", tenant, service)
	return ServiceInfo{}
}

// TestExamplesAcrossLanguages runs the example mesh as it ships: the Go
// greeter, orders and audit, the Rust pricing and the Python stats, each
// calling into another language through the host.
func TestExamplesAcrossLanguages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Go, Rust and Python guests")
	}
	pricing, rustMissing := rustModule(t, "pricing")
	stats, pyMissing := pythonModule(t, "modules/examples/python/stats")
	files := map[string][]byte{
		"greeter.wasm": goGuest(t, "modules/examples/go/greeter"),
		"orders.wasm":  goGuest(t, "modules/examples/go/orders"),
		"audit.wasm":   goGuest(t, "modules/examples/go/audit"),
	}
	if pricing != nil {
		files["pricing.wasm"] = pricing
	}
	if stats != nil {
		files["stats.wasm"] = stats
	}
	e := startReal(t, Config{}, files)
	if refs := e.h.Refusals(); len(refs) != 0 {
		t.Fatalf("refused: %v", refs)
	}
	c := client.New(e.b)
	call := func(t *testing.T, svc, method string, p any) *abi.Envelope {
		t.Helper()
		r, err := c.Call(ctxT(t, 30*time.Second), &abi.Envelope{Service: svc, Method: method, Params: params(t, p)})
		if err != nil {
			t.Fatalf("%s.%s: %v", svc, method, err)
		}
		return r
	}

	t.Run("rust pricing calls the go greeter", func(t *testing.T) {
		if pricing == nil {
			langSkip(t, "rust", rustMissing)
		}
		q := decodeResult[map[string]any](t, call(t, "pricing", "quote", map[string]any{
			"customer": "Ada",
			"items":    []any{map[string]any{"sku": "tea", "quantity": 12, "unit_price_cents": 350}},
		}))
		// 12 x 350 = 4200, 5% off for 10+ = 3990, 20% tax = 798.
		if q["greeting"] != "Hello, Ada!" || q["total_cents"] != int64(4788) {
			t.Fatalf("quote %v", q)
		}
	})
	t.Run("python stats calls the go greeter", func(t *testing.T) {
		if stats == nil {
			langSkip(t, "python", pyMissing)
		}
		got := decodeResult[string](t, call(t, "stats", "report", map[string]any{"name": "Ada", "values": []any{1, 2, 3}}))
		if !strings.HasPrefix(got, "Hello, Ada!\n{") || !strings.Contains(got, `"mean": 2.0`) {
			t.Fatalf("report %q", got)
		}
	})
	t.Run("go orders calls the python stats", func(t *testing.T) {
		if stats == nil {
			langSkip(t, "python", pyMissing)
		}
		for _, cents := range []int{700, 1000, 1600} {
			call(t, "orders", "create", map[string]any{"customer": "Ada",
				"items": []any{map[string]any{"sku": "tea", "qty": 1, "price_cents": cents}}})
		}
		// orders keeps its orders per instance; sequential calls share one.
		s := decodeResult[map[string]any](t, call(t, "orders", "stats", map[string]any{}))
		totals, _ := s["order_totals_cents"].(map[string]any)
		if s["count"] != int64(3) || s["total_cents"] != int64(3300) || totals["mean"] != 1100.0 ||
			totals["median"] != 1000.0 || totals["min"] != 700.0 || totals["max"] != 1600.0 {
			t.Fatalf("stats %v", s)
		}
	})
}
