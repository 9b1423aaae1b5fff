package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nuropb/nuropb/abi"
)

// Test guests are built once per source hash and flag set, into the user's
// cache directory, so repeated test runs (and -race) do not rebuild them.

var (
	guestMu    sync.Mutex
	guestBuilt = map[string][]byte{}
)

func cacheRoot(t testing.TB) string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "nuropb")
}

// buildGuest runs build (which writes the module to its argument) unless a
// module for key is cached.
func buildGuest(t testing.TB, key string, build func(out string) *exec.Cmd) []byte {
	t.Helper()
	guestMu.Lock()
	defer guestMu.Unlock()
	if b, ok := guestBuilt[key]; ok {
		return b
	}
	dir := filepath.Join(cacheRoot(t), "test-guests")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, key+".wasm")
	if b, err := os.ReadFile(path); err == nil {
		guestBuilt[key] = b
		return b
	}
	tmp := path + ".tmp"
	cmd := build(tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building test guest: %v\n%s\n%s", err, strings.Join(cmd.Args, " "), out)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	guestBuilt[key] = b
	return b
}

func sourceKey(t testing.TB, name string, files []string, extra ...string) string {
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		h.Write(b)
	}
	for _, e := range extra {
		h.Write([]byte{0})
		h.Write([]byte(e))
	}
	return name + "-" + hex.EncodeToString(h.Sum(nil))[:16]
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

// rustGuest builds the Rust conformance guest with the project's script
// (scripts/build-rust-modules.sh), skipping when Rust is not installed.
func rustGuest(t testing.TB) []byte {
	t.Helper()
	root := filepath.Join("..", "..", "..")
	script := filepath.Join(root, "scripts", "build-rust-modules.sh")
	if _, err := os.Stat(script); err != nil {
		t.Skip("no scripts/build-rust-modules.sh")
	}
	if _, err := os.Stat("/usr/bin/rustc"); err != nil {
		t.Skip("Debian's rustc is not installed")
	}
	var files []string
	for _, glob := range []string{"scripts/build-rust-modules.sh", "guest-sdk/rust/src/*.rs", "testdata/guests/rust/conformance/src/*.rs"} {
		m, _ := filepath.Glob(filepath.Join(root, glob))
		files = append(files, m...)
	}
	key := sourceKey(t, "rust-conformance", files)
	return buildGuest(t, key, func(out string) *exec.Cmd {
		dir := out + ".d"
		return exec.Command("sh", "-c", `"$0" --testdata "$1" >/dev/null && mv "$1/conformance.wasm" "$2" && rm -rf "$1"`, script, dir, out)
	})
}

// hostileCGuest builds the project's hostile C guest name
// (testdata/guests/c, scripts/build-c-guests.sh).
func hostileCGuest(t testing.TB, name string) []byte {
	t.Helper()
	root := filepath.Join("..", "..", "..")
	script := filepath.Join(root, "scripts", "build-c-guests.sh")
	if _, err := os.Stat(script); err != nil {
		t.Skip("no scripts/build-c-guests.sh")
	}
	if _, err := exec.LookPath("clang"); err != nil {
		t.Skip("clang not installed")
	}
	files, _ := filepath.Glob(filepath.Join(root, "testdata", "guests", "c", "*"))
	files = append(files, script)
	key := sourceKey(t, "hostile-c", files)
	dir := filepath.Join(cacheRoot(t), "test-guests", key)
	buildGuest(t, key, func(out string) *exec.Cmd {
		return exec.Command("sh", "-c", `rm -rf "$1" && "$0" "$1" >/dev/null && touch "$2"`, script, dir, out)
	})
	b, err := os.ReadFile(filepath.Join(dir, name+".wasm"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
