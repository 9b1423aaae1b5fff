package rustsdk_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nuropb/nuropb/abi"
)

// The hostile C guests live in testdata/guests/c; `go test ./...` skips
// testdata directories, so their checks live here beside the Rust ones.

func cGuests(t *testing.T) string {
	t.Helper()
	needClang(t)
	return build(t, "build-c-guests.sh")
}

func TestCGuestsLoadTimeMisbehaviour(t *testing.T) {
	dir := cGuests(t)
	ctx := context.Background()
	path := func(name string) string { return filepath.Join(dir, name+".wasm") }

	t.Run("badabi", func(t *testing.T) {
		g := newSandbox(t, 0).mustLoad(t, path("badabi"))
		v, err := g.version.Call(ctx)
		if err != nil || int32(v[0]) != 2 {
			t.Fatalf("nuropb_abi_version = %v, %v; want 2", v, err)
		}
	})
	t.Run("noexports", func(t *testing.T) {
		g := newSandbox(t, 0).mustLoad(t, path("noexports"))
		if g.handle != nil {
			t.Fatal("noexports exports nuropb_handle")
		}
		for _, f := range []string{abi.ExportABIVersion, abi.ExportAlloc, abi.ExportDealloc, abi.ExportDescribe} {
			if g.mod.ExportedFunction(f) == nil {
				t.Errorf("noexports lacks %s; only nuropb_handle should be missing", f)
			}
		}
	})
	t.Run("forbiddenimport", func(t *testing.T) {
		s := newSandbox(t, 0)
		wasm := mustRead(t, path("forbiddenimport"))
		cm, err := s.r.CompileModule(ctx, wasm)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, f := range cm.ImportedFunctions() {
			mod, name, _ := f.Import()
			found = found || (mod == "wasi_snapshot_preview1" && name == "sock_accept")
		}
		if !found {
			t.Fatal("forbiddenimport does not import wasi_snapshot_preview1.sock_accept")
		}
	})
	t.Run("unknownimport", func(t *testing.T) {
		_, err := newSandbox(t, 0).load(t, path("unknownimport"))
		if err == nil || !strings.Contains(err.Error(), "exec") {
			t.Fatalf("instantiating with only log/call/send: err = %v, want a missing nuropb.exec", err)
		}
	})
	t.Run("trapinit", func(t *testing.T) {
		_, err := newSandbox(t, 0).load(t, path("trapinit"))
		if err == nil || !strings.Contains(err.Error(), "_initialize") {
			t.Fatalf("err = %v, want a trap in _initialize", err)
		}
	})
	t.Run("badmanifest", func(t *testing.T) {
		g := newSandbox(t, 0).mustLoad(t, path("badmanifest"))
		raw, err := g.manifest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := abi.Default.Valid(raw); err != nil {
			t.Fatalf("badmanifest should be well-formed CBOR: %v", err)
		}
		_, err = abi.Default.DecodeManifest(raw)
		if err == nil || !strings.Contains(err.Error(), "service name") {
			t.Fatalf("DecodeManifest: %v, want an invalid service name", err)
		}
	})
	t.Run("valid_manifests", func(t *testing.T) {
		for _, name := range []string{"loop", "membomb", "stackbomb", "stdoutflood", "badreply", "hugereply"} {
			g := newSandbox(t, 0).mustLoad(t, path(name))
			raw, err := g.manifest(ctx)
			if err != nil {
				t.Fatal(err)
			}
			m, err := abi.Default.DecodeManifest(raw)
			if err != nil || m.Service != "c-"+name {
				t.Errorf("%s: manifest %+v, %v", name, m, err)
			}
		}
	})
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := readFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCGuestsCallTimeMisbehaviour(t *testing.T) {
	dir := cGuests(t)
	ctx := context.Background()
	path := func(name string) string { return filepath.Join(dir, name+".wasm") }
	frame := func(method string) []byte {
		b, err := abi.Default.EncodeEnvelope(request(t, "c-guest", method, nil))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	t.Run("loop", func(t *testing.T) {
		g := newSandbox(t, 0).mustLoad(t, path("loop"))
		tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, _, _, err := g.raw(tctx, frame("run"))
		if err == nil || time.Since(start) > 5*time.Second {
			t.Fatalf("loop: err %v after %v; want an interruption near 100ms", err, time.Since(start))
		}
	})
	t.Run("membomb", func(t *testing.T) {
		s := newSandbox(t, 64) // 4 MiB
		g := s.mustLoad(t, path("membomb"))
		_, _, _, err := g.raw(ctx, frame("run"))
		if err == nil {
			t.Fatal("membomb returned")
		}
		if pages := g.mod.Memory().Size() / 65536; pages > 64 {
			t.Errorf("memory grew to %d pages past the 64 page limit", pages)
		}
	})
	t.Run("stackbomb", func(t *testing.T) {
		g := newSandbox(t, 0).mustLoad(t, path("stackbomb"))
		_, _, _, err := g.raw(ctx, frame("run"))
		if err == nil || !strings.Contains(err.Error(), "stack") {
			t.Fatalf("stackbomb: %v, want a stack overflow", err)
		}
	})
	t.Run("stdoutflood", func(t *testing.T) {
		s := newSandbox(t, 0)
		g := s.mustLoad(t, path("stdoutflood"))
		_, _, reply, err := g.raw(ctx, frame("run"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := abi.Default.DecodeEnvelope(reply); err != nil {
			t.Errorf("reply after the flood: %v", err)
		}
		if s.stdout.Len() < 4<<20 || s.stderr.count() < 4<<20 {
			t.Errorf("flooded %d bytes to stdout, %d to stderr; want 4 MiB each", s.stdout.Len(), s.stderr.count())
		}
	})
	t.Run("badreply", func(t *testing.T) {
		g := newSandbox(t, 0).mustLoad(t, path("badreply"))
		for _, variant := range []string{"truncated", "notmap", "indefinite", "dupkey", "badutf8", "trailing", "empty"} {
			_, _, reply, err := g.raw(ctx, frame(variant))
			if err != nil {
				t.Fatalf("%s: %v", variant, err)
			}
			if _, err := abi.Default.DecodeEnvelope(reply); err == nil {
				t.Errorf("%s: reply %x decoded as an envelope", variant, reply)
			}
		}
	})
	t.Run("hugereply", func(t *testing.T) {
		g := newSandbox(t, 0).mustLoad(t, path("hugereply"))
		memSize := uint64(g.mod.Memory().Size())
		_, n, reply, err := g.raw(ctx, frame("toobig"))
		if err != nil {
			t.Fatal(err)
		}
		if n <= 1<<20 || len(reply) != int(n) {
			t.Fatalf("toobig: len %d (read %d)", n, len(reply))
		}
		var e *abi.Error
		if err := abi.Default.Valid(reply); !errors.As(err, &e) || e.Code != abi.CodeResourceExhausted {
			t.Errorf("toobig: Valid = %v, want resource_exhausted", err)
		}
		for _, v := range []string{"pastmemory", "wrap"} {
			ptr, n, reply, err := g.raw(ctx, frame(v))
			if err != nil {
				t.Fatal(err)
			}
			memSize = uint64(g.mod.Memory().Size())
			if reply != nil || uint64(ptr)+uint64(n) <= memSize {
				t.Errorf("%s: %d+%d lies inside %d bytes of memory", v, ptr, n, memSize)
			}
		}
	})
}
