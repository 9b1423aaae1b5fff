package rustsdk_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nuropb/nuropb/abi"
)

// TestRustNative runs the SDK's and the examples' Rust unit tests natively
// (Debian's rustc ships the host std), so `go test ./...` covers them.
func TestRustNative(t *testing.T) {
	needRust(t)
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		out, err := exec.Command(rustc, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("rustc %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	test := func(bin string) {
		t.Helper()
		out, err := exec.Command(bin, "--test-threads=2").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", filepath.Base(bin), err, out)
		}
		t.Logf("%s: %s", filepath.Base(bin), lastLine(out))
	}
	sdk := filepath.Join(repoRoot, "guest-sdk/rust/src/lib.rs")
	run("--edition", "2021", "--test", "--crate-name", "nuropb", sdk, "-o", filepath.Join(dir, "sdk-tests"))
	test(filepath.Join(dir, "sdk-tests"))

	run("--edition", "2021", "--crate-type", "rlib", "--crate-name", "nuropb", sdk, "-o", filepath.Join(dir, "libnuropb.rlib"))
	// Doc examples, with the SDK as their extern crate.
	out, err := exec.Command("/usr/bin/rustdoc", "--edition", "2021", "--test", "--crate-name", "nuropb",
		"-L", dir, "--extern", "nuropb="+filepath.Join(dir, "libnuropb.rlib"), sdk).CombinedOutput()
	if err != nil {
		t.Fatalf("rustdoc --test: %v\n%s", err, out)
	}
	t.Logf("doc tests: %s", lastLine(out))

	examples, _ := filepath.Glob(filepath.Join(repoRoot, "modules/examples/rust/*/src/lib.rs"))
	for _, src := range examples {
		name := filepath.Base(filepath.Dir(filepath.Dir(src)))
		bin := filepath.Join(dir, name+"-tests")
		run("--edition", "2021", "--test", "--crate-name", strings.ReplaceAll(name, "-", "_"),
			"--extern", "nuropb="+filepath.Join(dir, "libnuropb.rlib"), "-L", dir, src, "-o", bin)
		test(bin)
	}
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// rustModules builds every Rust guest and returns the output directory.
func rustModules(t *testing.T) string {
	t.Helper()
	needRust(t)
	return build(t, "build-rust-modules.sh", "--testdata")
}

func TestRustModulesABI(t *testing.T) {
	dir := rustModules(t)
	wants := map[string][]string{
		"pricing":     {"quote", "tiers"},
		"conformance": {"echo", "fail", "fail_code", "panic", "spin", "call", "publish", "context", "big", "alloc", "log", "events"},
	}
	for name, methods := range wants {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".wasm")
			if fi, err := os.Stat(path); err == nil {
				t.Logf("%s: %d bytes", name, fi.Size())
			}
			s := newSandbox(t, 0)
			g := s.mustLoad(t, path)
			for _, f := range abi.RequiredExports {
				if g.mod.ExportedFunction(f) == nil {
					t.Fatalf("missing export %s", f)
				}
			}
			ctx := context.Background()
			v, err := g.version.Call(ctx)
			if err != nil || int32(v[0]) != abi.Version {
				t.Fatalf("nuropb_abi_version = %v, %v; want %d", v, err, abi.Version)
			}
			raw, err := g.manifest(ctx)
			if err != nil {
				t.Fatal(err)
			}
			m, err := abi.Default.DecodeManifest(raw)
			if err != nil {
				t.Fatalf("manifest refused: %v", err)
			}
			if m.Service != name {
				t.Errorf("service = %q, want %q", m.Service, name)
			}
			for _, meth := range methods {
				if _, ok := m.Methods[meth]; !ok {
					t.Errorf("manifest lacks method %q (has %v)", meth, m.Methods)
				}
			}
			// describe twice returns the same bytes (it is cached).
			again, _ := g.manifest(ctx)
			if !bytes.Equal(raw, again) {
				t.Error("second describe differs")
			}
			resp, err := g.call(ctx, request(t, name, "no_such_method", nil))
			if err != nil {
				t.Fatal(err)
			}
			wantError(t, resp, abi.CodeMethodNotFound, "no_such_method")
			if resp.ID != "id-1" || resp.TraceID != "trace-1" {
				t.Errorf("reply not correlated: id %q trace %q", resp.ID, resp.TraceID)
			}
		})
	}
}

func wantError(t *testing.T, resp *abi.Envelope, code abi.ErrorCode, contains string) {
	t.Helper()
	if resp.Error == nil {
		t.Fatalf("want a %s error, got result %x", code, []byte(resp.Result))
	}
	if resp.Error.Code != code || !strings.Contains(resp.Error.Message, contains) {
		t.Fatalf("error = %v; want code %s containing %q", resp.Error, code, contains)
	}
}

func decodeResult[T any](t *testing.T, resp *abi.Envelope) T {
	t.Helper()
	var v T
	if resp.Error != nil {
		t.Fatalf("unexpected error %v", resp.Error)
	}
	if err := abi.Default.Unmarshal(resp.Result, &v); err != nil {
		t.Fatalf("result %x: %v", []byte(resp.Result), err)
	}
	return v
}

func TestConformanceGuest(t *testing.T) {
	dir := rustModules(t)
	s := newSandbox(t, 256)
	g := s.mustLoad(t, filepath.Join(dir, "conformance.wasm"))
	ctx := context.Background()
	call := func(method string, params any) *abi.Envelope {
		t.Helper()
		resp, err := g.call(ctx, request(t, "conformance", method, params))
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		return resp
	}

	t.Run("echo", func(t *testing.T) {
		params := map[string]any{
			"null": nil, "t": true, "f": false, "int": int64(42), "neg": int64(-1 << 40),
			"float": 1.5, "text": "héllo", "bytes": []byte{0, 1, 255},
			"list": []any{int64(1), "two", []any{}}, "map": map[string]any{"k": map[string]any{}},
		}
		env := request(t, "conformance", "echo", params)
		resp, err := g.call(ctx, env)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Error != nil || !bytes.Equal(resp.Result, env.Params) {
			t.Fatalf("echo: error %v, result %x, want %x", resp.Error, []byte(resp.Result), []byte(env.Params))
		}
	})
	t.Run("fail", func(t *testing.T) {
		wantError(t, call("fail", map[string]any{"message": "it broke"}), abi.CodeHandler, "it broke")
		wantError(t, call("fail_code", map[string]any{"code": "forbidden", "message": "no"}), abi.CodeForbidden, "no")
	})
	t.Run("bad_request", func(t *testing.T) {
		resp := call("fail", map[string]any{"message": 5})
		wantError(t, resp, abi.CodeBadRequest, "`message`")
		if resp.Error.Details["field"] != "message" {
			t.Errorf("details = %v, want field=message", resp.Error.Details)
		}
		wantError(t, call("fail", nil), abi.CodeBadRequest, "`message`: is required")
		wantError(t, call("fail", map[string]any{"message": "x", "typo": 1}), abi.CodeBadRequest, "`typo`")
		wantError(t, call("big", []any{1}), abi.CodeBadRequest, "map of params")
	})
	t.Run("context", func(t *testing.T) {
		env := request(t, "conformance", "context", nil)
		env.Tenant, env.Deadline, env.Depth = "acme", 1_900_000_000_000, 3
		env.Context = map[string]any{"sub": "user-7", "roles": []any{"admin"}}
		resp, err := g.call(ctx, env)
		if err != nil {
			t.Fatal(err)
		}
		got := decodeResult[map[string]any](t, resp)
		if got["tenant"] != "acme" || got["trace_id"] != "trace-1" || got["deadline"] != int64(1_900_000_000_000) || got["depth"] != int64(3) {
			t.Errorf("context = %v", got)
		}
		if c, _ := got["context"].(map[string]any); c["sub"] != "user-7" {
			t.Errorf("context map = %v", got["context"])
		}
	})
	t.Run("call", func(t *testing.T) {
		resp := call("call", map[string]any{"service": "greeter", "method": "hello", "params": map[string]any{"name": "Bo"}})
		if got := decodeResult[string](t, resp); got != "hello, Bo" {
			t.Errorf("call = %q", got)
		}
		wantError(t, call("call", map[string]any{"service": "nobody", "method": "x"}), abi.CodeNotFound, "nobody")
	})
	t.Run("publish_and_events", func(t *testing.T) {
		call("publish", map[string]any{"topic": "conformance.ping", "event": map[string]any{"n": 1}})
		s.host.mu.Lock()
		sent := s.host.sends[len(s.host.sends)-1]
		s.host.mu.Unlock()
		if sent.Kind != abi.KindEvent || sent.Topic != "conformance.ping" || sent.TraceID != "trace-1" {
			t.Errorf("published %+v", sent)
		}
		ev := &abi.Envelope{Kind: abi.KindEvent, TraceID: "trace-ev", Topic: "conformance.a.b"}
		ev.Event, _ = abi.Default.Marshal(map[string]any{"x": "y"})
		if resp, err := g.call(ctx, ev); err != nil || resp.Error != nil {
			t.Fatalf("event: %v %v", err, resp)
		}
		got := decodeResult[[]map[string]any](t, call("events", nil))
		if len(got) != 1 || got[0]["topic"] != "conformance.a.b" || got[0]["trace_id"] != "trace-ev" {
			t.Errorf("events = %v", got)
		}
	})
	t.Run("log", func(t *testing.T) {
		n := decodeResult[int](t, call("log", map[string]any{"lines": []string{"one", "two"}, "level": 4}))
		logs := s.host.logLines()
		if n != 2 || len(logs) < 2 || logs[len(logs)-2] != "4 one" || logs[len(logs)-1] != "4 two" {
			t.Errorf("log: n=%d logs=%q", n, logs)
		}
	})
	t.Run("big", func(t *testing.T) {
		if b := decodeResult[[]byte](t, call("big", map[string]any{"n": 100_000})); len(b) != 100_000 {
			t.Errorf("big = %d bytes", len(b))
		}
		wantError(t, call("big", map[string]any{"n": 2 << 20}), abi.CodeResourceExhausted, "over the 1048576 byte limit")
	})
	t.Run("alloc", func(t *testing.T) {
		decodeResult[int](t, call("alloc", map[string]any{"mib": 4}))
		// 256 pages is 16 MiB: 64 MiB cannot be had, and the guest says so.
		wantError(t, call("alloc", map[string]any{"mib": 64}), abi.CodeResourceExhausted, "64 MiB")
	})
	t.Run("panic", func(t *testing.T) {
		g := s.mustLoad(t, filepath.Join(dir, "conformance.wasm"))
		_, err := g.call(ctx, request(t, "conformance", "panic", map[string]any{"message": "kaboom"}))
		if err == nil {
			t.Fatal("panic did not trap")
		}
		logs := s.host.logLines()
		if len(logs) == 0 || !strings.Contains(logs[len(logs)-1], "kaboom") {
			t.Errorf("panic not logged: %q", logs)
		}
	})
	t.Run("spin", func(t *testing.T) {
		g := s.mustLoad(t, filepath.Join(dir, "conformance.wasm"))
		tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := g.call(tctx, request(t, "conformance", "spin", nil))
		if err == nil || time.Since(start) > 5*time.Second {
			t.Fatalf("spin: err %v after %v", err, time.Since(start))
		}
	})
}

func TestPricingExample(t *testing.T) {
	dir := rustModules(t)
	s := newSandbox(t, 256)
	g := s.mustLoad(t, filepath.Join(dir, "pricing.wasm"))
	ctx := context.Background()
	params := map[string]any{
		"items": []any{
			map[string]any{"sku": "pen", "quantity": 1, "unit_price_cents": 1000},
			map[string]any{"sku": "pad", "quantity": 10, "unit_price_cents": 250},
			map[string]any{"sku": "ink", "quantity": 100, "unit_price_cents": 99},
		},
		"tax_rate": 0.1,
		"customer": "Ann",
	}
	resp, err := g.call(ctx, request(t, "pricing", "quote", params))
	if err != nil {
		t.Fatal(err)
	}
	q := decodeResult[struct {
		Total    int64    `cbor:"total_cents"`
		Tax      int64    `cbor:"tax_cents"`
		Greeting string   `cbor:"greeting"`
		Warnings []string `cbor:"warnings"`
		Lines    []struct {
			Pct int `cbor:"discount_percent"`
		} `cbor:"lines"`
	}](t, resp)
	if q.Total != 1000+2375+8415+1179 || q.Tax != 1179 || q.Greeting != "hello, Ann" || len(q.Lines) != 3 || q.Lines[2].Pct != 15 {
		t.Errorf("quote = %+v", q)
	}
	bad := map[string]any{"items": []any{map[string]any{"sku": "pen", "quantity": "two", "unit_price_cents": 1}}}
	resp, err = g.call(ctx, request(t, "pricing", "quote", bad))
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, resp, abi.CodeBadRequest, "items[0].quantity")
	resp, _ = g.call(ctx, request(t, "pricing", "quote", map[string]any{"items": []any{}}))
	wantError(t, resp, abi.CodeBadRequest, "at least one item")
}

// TestRustCallCost measures a small echo through nuropb_handle, the
// figure to compare with TOOLCHAINS.md (a trivial Rust call ~15-50 ns
// without interruption, ~870 ns with WithCloseOnContextDone).
func TestRustCallCost(t *testing.T) {
	if testing.Short() {
		t.Skip("timing")
	}
	dir := rustModules(t)
	s := newSandbox(t, 0)
	g := s.mustLoad(t, filepath.Join(dir, "conformance.wasm"))
	ctx := context.Background()
	frame, _ := abi.Default.EncodeEnvelope(request(t, "conformance", "echo", map[string]any{"a": 1, "b": "two"}))
	res, _ := g.alloc.Call(ctx, uint64(len(frame)))
	ptr := uint32(res[0])
	g.mod.Memory().Write(ptr, frame)
	stack := make([]uint64, 2)
	const n = 20000
	var err error
	start := time.Now()
	for i := 0; i < n && err == nil; i++ {
		stack[0], stack[1] = uint64(ptr), uint64(len(frame))
		err = g.handle.CallWithStack(ctx, stack)
	}
	if err != nil {
		t.Fatal(err)
	}
	per := time.Since(start) / n
	rp, rn := abi.UnpackPtrLen(stack[0])
	b, _ := g.mod.Memory().Read(rp, rn)
	if _, err := abi.Default.DecodeEnvelope(b); err != nil {
		t.Fatal(err)
	}
	t.Logf("echo of a 2-key map through nuropb_handle: %v per call (decode envelope, dispatch, encode reply; interruptible runtime)", per)
	if errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}
