package sandbox

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/internal/testguests"
)

// Test guests are built once per source hash and flag set, into the user's
// cache directory (internal/testguests), so repeated test runs (and -race)
// do not rebuild them.

func cacheRoot(t testing.TB) string { return testguests.CacheRoot(t) }

// buildGuest runs build (which writes the module to its argument) unless a
// module for key is cached.
func buildGuest(t testing.TB, key string, build func(out string) *exec.Cmd) []byte {
	t.Helper()
	return testguests.Build(t, key, build)
}

// sourceKey names a build by a hash of the files' contents and extra.
func sourceKey(t testing.TB, name string, files []string, extra ...string) string {
	t.Helper()
	return testguests.Key(t, name, files, extra...)
}

// cGuest builds testdata/cguest/guest.c with the given -D flags.
func cGuest(t testing.TB, defines ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("clang"); err != nil {
		t.Skip("clang not installed")
	}
	src := filepath.Join("testdata", "cguest", "guest.c")
	key := sourceKey(t, "cguest", []string{src}, defines...)
	return buildGuest(t, key, func(out string) *exec.Cmd {
		args := append([]string{"--target=wasm32-wasi", "-O2", "-mexec-model=reactor", "-Wl,--strip-all", "-o", out}, defines...)
		return exec.Command("clang", append(args, src)...)
	})
}

// goGuest builds testdata/goguest as a wasip1 reactor.
func goGuest(t testing.TB) []byte {
	t.Helper()
	src := filepath.Join("testdata", "goguest", "main.go")
	key := sourceKey(t, "goguest", []string{src}, "go1.26")
	return buildGuest(t, key, func(out string) *exec.Cmd {
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, ".")
		cmd.Dir = filepath.Join("testdata", "goguest")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		return cmd
	})
}

// testEngine returns an engine with the shared on-disk compilation cache.
func testEngine(t testing.TB) *Engine {
	t.Helper()
	e, err := NewEngine(context.Background(), Config{CacheDir: filepath.Join(cacheRoot(t), "wazero-cache")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	return e
}

func testLimits() Limits {
	return Limits{
		MemoryPages:     256,
		CallTimeout:     5 * time.Second,
		MinInstances:    1,
		MaxInstances:    2,
		MaxMessageBytes: 1 << 20,
		LogLinesPerSec:  1000,
		LogBytesPerSec:  1 << 20,
	}
}

// logLine is one line a guest logged.
type logLine struct {
	level abi.LogLevel
	msg   string
}

// fakeImports records logs and answers calls and sends.
type fakeImports struct {
	mu    sync.Mutex
	logs  []logLine
	calls [][]byte
	sends [][]byte
	call  func(ctx context.Context, req []byte) []byte
	send  func(ctx context.Context, env []byte) error
}

func (f *fakeImports) Log(_ context.Context, level abi.LogLevel, msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs = append(f.logs, logLine{level, msg})
}

func (f *fakeImports) Call(ctx context.Context, req []byte) []byte {
	f.mu.Lock()
	f.calls = append(f.calls, req)
	fn := f.call
	f.mu.Unlock()
	if fn != nil {
		return fn(ctx, req)
	}
	b, _ := abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindResponse, Result: abi.RawValue{0x63, 'y', 'e', 's'}})
	return b
}

func (f *fakeImports) Send(ctx context.Context, env []byte) error {
	f.mu.Lock()
	f.sends = append(f.sends, env)
	fn := f.send
	f.mu.Unlock()
	if fn != nil {
		return fn(ctx, env)
	}
	return nil
}

func (f *fakeImports) lines() []logLine {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]logLine(nil), f.logs...)
}

// load loads wasm with limits, failing the test on error; the module is
// closed at cleanup.
func load(t testing.TB, e *Engine, wasm []byte, l Limits, imp Imports) *Module {
	t.Helper()
	m, err := e.Load(context.Background(), Source{Name: "test/" + t.Name() + ".wasm", Tenant: "test", Bytes: wasm, Limits: l}, imp)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}

// request encodes a request envelope for method.
func request(t testing.TB, method string) []byte {
	t.Helper()
	b, err := abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindRequest, ID: "1", Service: "svc", Method: method, Params: abi.RawValue{0xa0}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// result decodes a reply envelope and returns its result, a CBOR byte string.
func result(t testing.TB, reply []byte) []byte {
	t.Helper()
	env, err := abi.Default.DecodeEnvelope(reply)
	if err != nil {
		t.Fatalf("reply does not decode: %v", err)
	}
	if env.Error != nil {
		t.Fatalf("reply carries an error: %v", env.Error)
	}
	var b []byte
	if err := abi.Default.Unmarshal(env.Result, &b); err != nil {
		t.Fatalf("result is not a byte string: %v", err)
	}
	return b
}

func call(t testing.TB, m *Module, method string, timeout time.Duration) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return m.Handle(ctx, request(t, method))
}

func wantCode(t testing.TB, err error, code abi.ErrorCode) *abi.Error {
	t.Helper()
	ae, ok := err.(*abi.Error)
	if !ok {
		t.Fatalf("error %v (%T) is not an *abi.Error", err, err)
	}
	if ae.Code != code {
		t.Fatalf("error code %s, want %s: %v", ae.Code, code, ae)
	}
	return ae
}

func echoOK(t testing.TB, m *Module) {
	t.Helper()
	req := request(t, "echo")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reply, err := m.Handle(ctx, req)
	if err != nil {
		t.Fatalf("echo: %v", err)
	}
	if got := result(t, reply); string(got) != string(req) {
		t.Fatalf("echo returned %x, want %x", got, req)
	}
}

// rustGuest is the Rust conformance guest (scripts/build-rust-modules.sh).
func rustGuest(t testing.TB) []byte { return testguests.RustConformance(t) }

// hostileCGuest is the project's hostile C guest name (testdata/guests/c).
func hostileCGuest(t testing.TB, name string) []byte { return testguests.HostileC(t, name) }
