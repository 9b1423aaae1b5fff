package host

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/broker/memory"
	"github.com/nuropb/nuropb/host/internal/sandbox"
)

// A fake guest: Go code standing in for a WebAssembly module, so that the
// host's own rules are tested fast and in isolation. The file content names
// the fake ("fake:<key>"); the e2e tests use real compiled guests.
type fakeDef struct {
	man    abi.Manifest
	handle func(ctx context.Context, imp sandbox.Imports, env *abi.Envelope) ([]byte, error)
}

var (
	fakesMu sync.Mutex
	fakes   = map[string]*fakeDef{}
)

func registerFake(key string, d *fakeDef) {
	fakesMu.Lock()
	defer fakesMu.Unlock()
	fakes[key] = d
}

type fakeModule struct {
	def      *fakeDef
	imp      sandbox.Imports
	hash     string
	closed   atomic.Bool
	calls    atomic.Uint64
	busy     atomic.Int64
	inflight sync.WaitGroup
}

func fakeLoad(_ context.Context, src sandbox.Source, imp sandbox.Imports) (module, error) {
	key, ok := bytes.CutPrefix(src.Bytes, []byte("fake:"))
	fakesMu.Lock()
	def := fakes[string(bytes.TrimSpace(key))]
	fakesMu.Unlock()
	if !ok || def == nil {
		return nil, &sandbox.LoadError{File: src.Name, Step: "compile", Reason: "not a WebAssembly module (bad magic)"}
	}
	return &fakeModule{def: def, imp: imp, hash: hashOf(src.Bytes)}, nil
}

func (m *fakeModule) Manifest() *abi.Manifest { man := m.def.man; return &man }
func (m *fakeModule) Hash() string            { return m.hash }
func (m *fakeModule) Stats() sandbox.Stats {
	return sandbox.Stats{Instances: 1, Busy: int(m.busy.Load()), Calls: m.calls.Load()}
}
func (m *fakeModule) Close(ctx context.Context) error {
	m.closed.Store(true)
	m.inflight.Wait()
	return nil
}
func (m *fakeModule) Handle(ctx context.Context, in []byte) ([]byte, error) {
	if m.closed.Load() {
		return nil, abi.Errorf(abi.CodeUnavailable, "module closed")
	}
	m.inflight.Add(1)
	defer m.inflight.Done()
	m.busy.Add(1)
	defer m.busy.Add(-1)
	defer m.calls.Add(1)
	env, err := abi.Default.DecodeEnvelope(in)
	if err != nil {
		return nil, abi.Errorf(abi.CodeInternal, "fake got a bad envelope: %v", err)
	}
	// The deadline is Handle's to enforce (see module), as the sandbox's
	// timer does.
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl)
		defer cancel()
	}
	return m.def.handle(ctx, m.imp, env)
}

// result encodes a response carrying v.
func result(env *abi.Envelope, v any) ([]byte, error) {
	r := env.Reply()
	b, err := abi.Default.Marshal(v)
	if err != nil {
		return nil, err
	}
	r.Result = b
	return abi.Default.EncodeEnvelope(r)
}

func params(t testing.TB, v any) abi.RawValue {
	t.Helper()
	b, err := abi.Default.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeResult[T any](t testing.TB, env *abi.Envelope) T {
	t.Helper()
	var v T
	if err := abi.Default.Unmarshal(env.Result, &v); err != nil {
		t.Fatalf("result: %v", err)
	}
	return v
}

// logBuffer collects log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// countingBroker counts replies per correlation id, to prove exactly one.
type countingBroker struct {
	broker.Broker
	mu      sync.Mutex
	replies map[string]int
}

func (c *countingBroker) Reply(ctx context.Context, replyTo string, msg broker.Message) error {
	c.mu.Lock()
	c.replies[msg.CorrelationID]++
	c.mu.Unlock()
	return c.Broker.Reply(ctx, replyTo, msg)
}

func (c *countingBroker) moreThanOnce() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for id, n := range c.replies {
		if n != 1 {
			out = append(out, id)
		}
	}
	return out
}

type testEnv struct {
	h    *Host
	mem  *memory.Broker
	b    *countingBroker
	dir  string
	logs *logBuffer
}

// start runs a Host over a fresh embedded broker with files (relative path
// -> content) in a temp modules folder, using load to load them.
func start(t testing.TB, cfg Config, load loader, files map[string]string) *testEnv {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		writeFile(t, filepath.Join(dir, name), content)
	}
	mem, err := memory.New(memory.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cb := &countingBroker{Broker: mem, replies: map[string]int{}}
	logs := &logBuffer{}
	cfg.ModulesDir = dir
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := New(cfg, cb)
	if err != nil {
		t.Fatal(err)
	}
	h.load = load
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		_ = mem.Close()
		if ids := cb.moreThanOnce(); len(ids) > 0 {
			t.Errorf("requests answered more than once: %v", ids)
		}
		if t.Failed() {
			t.Logf("host log:\n%s", logs.String())
		}
	})
	return &testEnv{h: h, mem: mem, b: cb, dir: dir, logs: logs}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	// Write then rename, as editors and build tools do.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func wantCode(t testing.TB, err error, code abi.ErrorCode) *abi.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	var e *abi.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Fatalf("got %v, want %s", err, code)
	}
	return e
}
