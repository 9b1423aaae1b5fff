package host

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/client"
	"github.com/nuropb/nuropb/internal/testguests"
)

// End-to-end tests: real guests compiled to WebAssembly, the real sandbox,
// the real embedded broker. Guests are built once per source hash into
// os.UserCacheDir()/nuropb/host-test-guests; wazero's compilation cache
// lives beside them.

func cacheRoot(t testing.TB) string { return testguests.CacheRoot(t) }

func repoRoot(t testing.TB) string { return testguests.RepoRoot(t) }

// sourceHash hashes every file under the given repo-relative dirs (or
// files) plus extra strings.
func sourceHash(t testing.TB, paths []string, extra ...string) string {
	return strings.TrimPrefix(testguests.Key(t, "", testguests.Files(t, paths...), extra...), "-")
}

// cached returns the cached guest called name-key, building it with build
// (which writes to its argument) when missing.
func cached(t testing.TB, name, key string, build func(out string) *exec.Cmd) []byte {
	t.Helper()
	return testguests.Build(t, name+"-"+key, build)
}

// goGuest builds a Go guest package (repo-relative) as a wasip1 reactor.
func goGuest(t testing.TB, pkg string) []byte { return testguests.GoGuest(t, pkg) }

// cGuest builds the sandbox's hostile C test guest with -D flags.
func cGuest(t testing.TB, defines ...string) []byte {
	t.Helper()
	if testing.Short() {
		t.Skip("builds WebAssembly guests")
	}
	if _, err := exec.LookPath("clang"); err != nil {
		t.Skip("clang not installed")
	}
	src := "host/internal/sandbox/testdata/cguest/guest.c"
	key := sourceHash(t, []string{src}, defines...)
	return cached(t, "cguest", key, func(out string) *exec.Cmd {
		args := append([]string{"--target=wasm32-wasi", "-O2", "-mexec-model=reactor", "-Wl,--strip-all", "-o", out}, defines...)
		cmd := exec.Command("clang", append(args, src)...)
		cmd.Dir = repoRoot(t)
		return cmd
	})
}

// startReal runs a Host with the real sandbox over files (relative path ->
// module bytes).
func startReal(t testing.TB, cfg Config, files map[string][]byte) *testEnv {
	t.Helper()
	cfg.CacheDir = filepath.Join(cacheRoot(t), "wazero-cache")
	m := map[string]string{}
	for name, b := range files {
		m[name] = string(b)
	}
	return start(t, cfg, nil, m)
}

func TestE2EExamples(t *testing.T) {
	e := startReal(t, Config{}, map[string][]byte{
		"greeter.wasm": goGuest(t, "modules/examples/go/greeter"),
		"orders.wasm":  goGuest(t, "modules/examples/go/orders"),
		"audit.wasm":   goGuest(t, "modules/examples/go/audit"),
	})
	c := client.New(e.b)
	ctx := ctxT(t, 20*time.Second)
	r, err := c.Call(ctx, &abi.Envelope{Service: "greeter", Method: "hello", Params: params(t, map[string]any{"name": "Ada"})})
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeResult[string](t, r); got != "Hello, Ada!" {
		t.Fatalf("hello: %q", got)
	}
	r, err = c.Call(ctx, &abi.Envelope{Service: "orders", Method: "create", Params: params(t, map[string]any{
		"customer": "Ada", "items": []any{map[string]any{"sku": "book", "qty": 2, "price_cents": 1250}}})})
	if err != nil {
		t.Fatal(err)
	}
	created := decodeResult[map[string]any](t, r)
	if created["total_cents"] != int64(2500) || !strings.Contains(created["message"].(string), "Ada") {
		t.Fatalf("create: %v", created)
	}
	waitFor(t, func() bool {
		r, err := c.Call(ctx, &abi.Envelope{Service: "audit", Method: "seen", Params: params(t, map[string]any{})})
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(string(r.Result), "order.created")
	})
	if len(e.h.Services()) != 3 || len(e.h.Refusals()) != 0 {
		t.Fatalf("services %v refusals %v", e.h.Services(), e.h.Refusals())
	}
}

func TestE2EConformance(t *testing.T) {
	conf := goGuest(t, "guest-sdk/go/internal/conformance")
	hostile := cGuest(t)
	cfg := Config{
		// Nested self-calls hold an instance per level, so the depth limit
		// must be below MaxInstances for a loop to fail fast.
		Defaults: Limits{MaxCallDepth: 3, MaxInstances: 6, MaxMessageBytes: 64 << 10},
		Tenants:  map[string]Tenant{"shop": {Call: []string{"default/*"}}},
	}
	e := startReal(t, cfg, map[string][]byte{
		"conformance.wasm":      conf,
		"shop/conformance.wasm": conf,
		"hostile.wasm":          hostile,
		"bad-abi.wasm":          cGuest(t, "-DBAD_ABI"),
		"no-handle.wasm":        cGuest(t, "-DNO_HANDLE"),
		"text.wasm":             []byte("this is not WebAssembly"),
	})
	c := client.New(e.b)
	shop := client.New(e.b, client.WithTenant("shop"))
	call := func(c *client.Client, d time.Duration, svc, method string, p any, cx map[string]any) (*abi.Envelope, error) {
		env := &abi.Envelope{Service: svc, Method: method, Context: cx}
		if p != nil {
			env.Params = params(t, p)
		}
		return c.Call(ctxT(t, d), env)
	}

	t.Run("refusals name file and reason", func(t *testing.T) {
		refs := map[string]string{}
		for _, r := range e.h.Refusals() {
			refs[r.File] = r.Reason
		}
		if len(refs) != 3 || refs["bad-abi.wasm"] == "" || refs["no-handle.wasm"] == "" || refs["text.wasm"] == "" {
			t.Fatalf("refusals %v", refs)
		}
		if !strings.Contains(refs["no-handle.wasm"], abi.ExportHandle) {
			t.Errorf("no-handle reason: %s", refs["no-handle.wasm"])
		}
		for file := range refs {
			if !strings.Contains(e.logs.String(), "file="+file) {
				t.Errorf("no log line names %s", file)
			}
		}
		if len(e.h.Services()) != 3 {
			t.Fatalf("services %v", e.h.Services())
		}
	})
	t.Run("echo", func(t *testing.T) {
		r, err := call(c, 10*time.Second, "conformance", "echo", map[string]any{"a": int64(1)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := decodeResult[map[string]any](t, r); got["a"] != int64(1) {
			t.Fatal(got)
		}
	})
	t.Run("unknown and hidden methods", func(t *testing.T) {
		_, err := call(c, 10*time.Second, "conformance", "nope", nil, nil)
		wantCode(t, err, abi.CodeMethodNotFound)
		_, err = call(c, 10*time.Second, "conformance", "hidden", nil, nil)
		wantCode(t, err, abi.CodeMethodNotFound)
		// From shop through the granted call, still hidden.
		_, err = call(shop, 10*time.Second, "conformance", "call", map[string]any{"service": "default/conformance", "method": "hidden"}, nil)
		wantCode(t, err, abi.CodeMethodNotFound)
		// From inside default: callable.
		r, err := call(c, 10*time.Second, "conformance", "call", map[string]any{"service": "conformance", "method": "hidden"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if decodeResult[string](t, r) != "hidden" {
			t.Fatal(r)
		}
	})
	t.Run("requires_auth", func(t *testing.T) {
		_, err := call(c, 10*time.Second, "conformance", "secure", nil, nil)
		wantCode(t, err, abi.CodeForbidden)
		if _, err := call(c, 10*time.Second, "conformance", "secure", nil, map[string]any{"token": "t"}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("bad params name the field", func(t *testing.T) {
		_, err := call(c, 10*time.Second, "conformance", "sleep_ms", map[string]any{"ms": "soon"}, nil)
		ae := wantCode(t, err, abi.CodeBadRequest)
		if !strings.Contains(ae.Message, "ms") {
			t.Fatal(ae)
		}
		_, err = call(c, 10*time.Second, "conformance", "sleep_ms", map[string]any{}, nil)
		wantCode(t, err, abi.CodeBadRequest)
	})
	t.Run("panic traps, next call works", func(t *testing.T) {
		_, err := call(c, 10*time.Second, "conformance", "panic", map[string]any{"message": "boom"}, nil)
		wantCode(t, err, abi.CodeTrapped)
		if _, err := call(c, 10*time.Second, "conformance", "echo", map[string]any{}, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("spin times out at the deadline, next call works", func(t *testing.T) {
		start := time.Now()
		_, err := call(c, 500*time.Millisecond, "conformance", "spin", nil, nil)
		wantCode(t, err, abi.CodeTimeout)
		if el := time.Since(start); el > 3*time.Second {
			t.Fatalf("timeout after %s", el)
		}
		if _, err := call(c, 10*time.Second, "conformance", "echo", map[string]any{}, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("oversized envelope refused", func(t *testing.T) {
		_, err := call(c, 10*time.Second, "conformance", "echo", map[string]any{"x": strings.Repeat("y", 100<<10)}, nil)
		wantCode(t, err, abi.CodeResourceExhausted)
	})
	t.Run("cross-tenant calls need a grant", func(t *testing.T) {
		r, err := call(shop, 10*time.Second, "conformance", "call", map[string]any{"service": "default/conformance", "method": "echo",
			"params": map[string]any{"from": "shop"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if decodeResult[map[string]any](t, r)["from"] != "shop" {
			t.Fatal(r)
		}
		_, err = call(c, 10*time.Second, "conformance", "call", map[string]any{"service": "shop/conformance", "method": "echo"}, nil)
		wantCode(t, err, abi.CodeForbidden)
	})
	t.Run("publish into another tenant without a grant", func(t *testing.T) {
		// The Go SDK refuses the "tenant/topic" form itself (bad_request);
		// the host would refuse it as forbidden. Either way it never lands.
		_, err := call(c, 10*time.Second, "conformance", "publish", map[string]any{"topic": "shop/conformance.x"}, nil)
		if code := abi.CodeOf(err); code != abi.CodeForbidden && code != abi.CodeBadRequest {
			t.Fatalf("got %v", err)
		}
		// A plain topic stays home: default hears it, shop does not.
		if _, err := call(c, 10*time.Second, "conformance", "publish", map[string]any{"topic": "conformance.home"}, nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool {
			r, err := call(c, 10*time.Second, "conformance", "events", nil, nil)
			return err == nil && strings.Contains(string(r.Result), "conformance.home")
		})
		r, err := call(shop, 10*time.Second, "conformance", "events", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(r.Result), "conformance.home") {
			t.Fatal("shop heard default's event")
		}
	})
	t.Run("call recursion is stopped", func(t *testing.T) {
		var p any = map[string]any{"service": "conformance", "method": "echo"}
		for range 8 {
			p = map[string]any{"service": "conformance", "method": "call", "params": p}
		}
		_, err := call(c, 20*time.Second, "conformance", "call", p, nil)
		wantCode(t, err, abi.CodeResourceExhausted)
	})
	t.Run("describe", func(t *testing.T) {
		d, err := c.Describe(ctxT(t, 10*time.Second), "conformance")
		if err != nil {
			t.Fatal(err)
		}
		if d.Manifest.Service != "conformance" || d.File != "conformance.wasm" {
			t.Fatal(d)
		}
	})
}

func TestE2ESwapAndRemove(t *testing.T) {
	// The C guest compiles in milliseconds; each swap compiles anew.
	conf := cGuest(t)
	other := cGuest(t, "-DBAD_ABI")
	e := startReal(t, Config{}, map[string][]byte{"svc.wasm": conf})
	c := client.New(e.b)
	path := filepath.Join(e.dir, "svc.wasm")
	var calls, failures atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := c.Call(context.Background(), &abi.Envelope{Service: "cguest", Method: "echo"})
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					t.Log(err)
				}
			}
		})
	}
	ctx := ctxT(t, 60*time.Second)
	// Two versions with different bytes: the guest and the guest with a
	// custom section appended (id 0, size 5, name "pad", one byte).
	padded := append(append([]byte{}, conf...), 0x00, 0x05, 0x03, 'p', 'a', 'd', 0x01)
	for i := range 4 {
		time.Sleep(50 * time.Millisecond)
		b := padded
		if i%2 == 1 {
			b = conf
		}
		writeFile(t, path, string(b))
		if err := e.h.LoadFile(ctx, path); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if failures.Load() != 0 || calls.Load() < 10 {
		t.Fatalf("%d of %d calls failed during swaps", failures.Load(), calls.Load())
	}
	// A refused version leaves the old one serving.
	writeFile(t, path, string(other))
	var ref *Refusal
	if err := e.h.LoadFile(ctx, path); !errors.As(err, &ref) {
		t.Fatalf("got %v, want a refusal", err)
	}
	if _, err := c.Call(ctx, &abi.Envelope{Service: "cguest", Method: "echo"}); err != nil {
		t.Fatal(err)
	}
	if err := e.h.RemoveFile(ctx, path); err != nil {
		t.Fatal(err)
	}
	_, err := c.Call(ctx, &abi.Envelope{Service: "cguest", Method: "echo"})
	wantCode(t, err, abi.CodeNotFound)
}
