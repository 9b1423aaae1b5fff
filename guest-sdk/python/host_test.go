package python

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/guest-sdk/python/pack"
	"github.com/nuropb/nuropb/internal/wasmsection"
)

// runtimeBytes returns the built Python runtime, skipping the test when it
// is missing (failing under CI=true: CI must build it first).
func runtimeBytes(t testing.TB) (wasm, stdlib []byte) {
	t.Helper()
	wasm, stdlib, err := pack.LoadRuntime()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v\nCI must build the Python runtime first: run scripts/build-python-runtime.sh", err)
		}
		t.Skipf("%v (run scripts/build-python-runtime.sh to enable these tests)", err)
	}
	return wasm, stdlib
}

// testHost is the minimal host: one wazero runtime with the nuropb imports,
// a compiled-module cache keyed by the stripped bytes' hash, and recorders
// for what guests log and send.
type testHost struct {
	rt       wazero.Runtime
	mu       sync.Mutex
	compiled map[[32]byte]wazero.CompiledModule
	logs     []string
	sent     []*abi.Envelope
	// calls answers the call import: service.method -> result or error.
	calls map[string]func(params map[string]any) (any, *abi.Error)
}

// memoryLimitPages caps guest memory at 64 MiB. Guests are interruptible
// (WithCloseOnContextDone), as the host runs them; set
// NUROPB_TEST_NO_INTERRUPT=1 to measure the cost of that.
const memoryLimitPages = 1024

var (
	hostOnce sync.Once
	host     *testHost
	hostErr  error
)

func sharedHost(t testing.TB) *testHost {
	t.Helper()
	hostOnce.Do(func() { host, hostErr = newTestHost(context.Background()) })
	if hostErr != nil {
		t.Fatal(hostErr)
	}
	return host
}

func newTestHost(ctx context.Context) (*testHost, error) {
	cfg := wazero.NewRuntimeConfig().WithCloseOnContextDone(os.Getenv("NUROPB_TEST_NO_INTERRUPT") == "").WithMemoryLimitPages(memoryLimitPages)
	if dir, err := os.UserCacheDir(); err == nil {
		cache, err := wazero.NewCompilationCacheWithDir(filepath.Join(dir, "nuropb", "wazero-cache"))
		if err == nil {
			cfg = cfg.WithCompilationCache(cache)
		}
	}
	h := &testHost{rt: wazero.NewRuntimeWithConfig(ctx, cfg), compiled: map[[32]byte]wazero.CompiledModule{}}
	h.calls = map[string]func(map[string]any) (any, *abi.Error){
		"greeter.hello": func(p map[string]any) (any, *abi.Error) {
			name, _ := p["name"].(string)
			if name == "" {
				return nil, abi.Errorf(abi.CodeBadRequest, "name is required")
			}
			return "Hello, " + name + "!", nil
		},
	}
	wasi_snapshot_preview1.MustInstantiate(ctx, h.rt)
	_, err := h.rt.NewHostModuleBuilder(abi.ImportModule).
		NewFunctionBuilder().WithFunc(h.log).Export(abi.ImportLog).
		NewFunctionBuilder().WithFunc(h.call).Export(abi.ImportCall).
		NewFunctionBuilder().WithFunc(h.send).Export(abi.ImportSend).
		Instantiate(ctx)
	return h, err
}

func read(m api.Module, ptr, n uint32) []byte {
	b, ok := m.Memory().Read(ptr, n)
	if !ok {
		panic(fmt.Sprintf("guest buffer %d+%d out of range", ptr, n))
	}
	return bytes.Clone(b)
}

func (h *testHost) log(_ context.Context, m api.Module, level int32, ptr, n uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.logs = append(h.logs, fmt.Sprintf("%d %s", level, read(m, ptr, n)))
}

func (h *testHost) send(_ context.Context, m api.Module, ptr, n uint32) int32 {
	e, err := abi.Default.DecodeEnvelope(read(m, ptr, n))
	if err != nil {
		return abi.SendStatus(err)
	}
	h.mu.Lock()
	h.sent = append(h.sent, e)
	h.mu.Unlock()
	return 0
}

func (h *testHost) call(ctx context.Context, m api.Module, ptr, n uint32) uint64 {
	reply := &abi.Envelope{Kind: abi.KindResponse}
	req, err := abi.Default.DecodeEnvelope(read(m, ptr, n))
	if err == nil {
		reply = req.Reply()
		var params map[string]any
		if len(req.Params) > 0 {
			err = abi.Default.Unmarshal(req.Params, &params)
		}
		fn := h.calls[req.Service+"."+req.Method]
		switch {
		case err != nil:
		case fn == nil:
			err = abi.Errorf(abi.CodeNotFound, "no service %q", req.Service)
		default:
			res, e := fn(params)
			if e != nil {
				err = e
			} else {
				reply.Result, err = abi.Default.Marshal(res)
			}
		}
	}
	if err != nil {
		reply.Error = abi.AsError(err)
	}
	b, _ := abi.Default.EncodeEnvelope(reply)
	res, err := m.ExportedFunction(abi.ExportAlloc).Call(ctx, uint64(len(b)))
	if err != nil || res[0] == 0 {
		return 0
	}
	m.Memory().Write(uint32(res[0]), b)
	return abi.PackPtrLen(uint32(res[0]), uint32(len(b)))
}

// guest is one instance of a packed Python service.
type guest struct {
	mod                              api.Module
	alloc, dealloc, describe, handle api.Function
	stdout                           *bytes.Buffer
	initTime                         time.Duration
}

// load splits a packed module, compiles the stripped bytes once per content
// hash, and instantiates it with the archive mounted read-only at "/".
func (h *testHost) load(t testing.TB, packed []byte) *guest {
	t.Helper()
	ctx := context.Background()
	module, archive, err := wasmsection.Split(packed, wasmsection.FSSection)
	if err != nil {
		t.Fatal(err)
	}
	if archive == nil {
		t.Fatalf("packed module has no %s section", wasmsection.FSSection)
	}
	key := sha256.Sum256(module)
	h.mu.Lock()
	cm, ok := h.compiled[key]
	h.mu.Unlock()
	if !ok {
		start := time.Now()
		if cm, err = h.rt.CompileModule(ctx, module); err != nil {
			t.Fatal(err)
		}
		t.Logf("compiled the runtime module (%d bytes) in %v", len(module), time.Since(start))
		h.mu.Lock()
		h.compiled[key] = cm
		h.mu.Unlock()
	}
	fsys, err := wasmsection.ZipFS(archive)
	if err != nil {
		t.Fatal(err)
	}
	out := &bytes.Buffer{}
	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions("_initialize").
		WithFSConfig(wazero.NewFSConfig().WithFSMount(fsys, "/")).
		WithRandSource(rand.Reader).WithSysWalltime().WithSysNanotime().WithSysNanosleep().
		WithStdout(out).WithStderr(out)
	start := time.Now()
	mod, err := h.rt.InstantiateModule(ctx, cm, cfg)
	if err != nil {
		t.Fatalf("instantiate: %v\noutput: %s", err, out)
	}
	g := &guest{mod: mod, stdout: out, initTime: time.Since(start),
		alloc: mod.ExportedFunction(abi.ExportAlloc), dealloc: mod.ExportedFunction(abi.ExportDealloc),
		describe: mod.ExportedFunction(abi.ExportDescribe), handle: mod.ExportedFunction(abi.ExportHandle)}
	t.Cleanup(func() { mod.Close(context.Background()) })
	return g
}

func (g *guest) describeBytes(t testing.TB) []byte {
	t.Helper()
	res, err := g.describe.Call(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p, n := abi.UnpackPtrLen(res[0])
	return read(g.mod, p, n)
}

// handleRaw passes an encoded envelope and returns the encoded reply.
func (g *guest) handleRaw(ctx context.Context, in []byte) ([]byte, error) {
	res, err := g.alloc.Call(ctx, uint64(len(in)))
	if err != nil {
		return nil, err
	}
	ptr := uint32(res[0])
	g.mod.Memory().Write(ptr, in)
	res, err = g.handle.Call(ctx, uint64(ptr), uint64(len(in)))
	if err != nil {
		return nil, err
	}
	p, n := abi.UnpackPtrLen(res[0])
	out := read(g.mod, p, n)
	if _, err := g.dealloc.Call(ctx, uint64(ptr), uint64(len(in))); err != nil {
		return nil, err
	}
	return out, nil
}

// request calls service.method(params) and returns the decoded reply.
func (g *guest) request(t testing.TB, method string, params any, mutate ...func(*abi.Envelope)) *abi.Envelope {
	t.Helper()
	e := &abi.Envelope{Kind: abi.KindRequest, ID: "c1", TraceID: "trace-1", Service: "svc", Method: method}
	if params != nil {
		b, err := abi.Default.Marshal(params)
		if err != nil {
			t.Fatal(err)
		}
		e.Params = b
	}
	for _, f := range mutate {
		f(e)
	}
	in, err := abi.Default.EncodeEnvelope(e)
	if err != nil {
		t.Fatal(err)
	}
	out, err := g.handleRaw(context.Background(), in)
	if err != nil {
		t.Fatalf("%s: %v\noutput: %s", method, err, g.stdout)
	}
	r, err := abi.Default.DecodeEnvelope(out)
	if err != nil {
		t.Fatalf("%s: reply: %v", method, err)
	}
	if r.Kind != abi.KindResponse || r.ID != "c1" || r.TraceID != "trace-1" {
		t.Fatalf("%s: reply not correlated: %+v", method, r)
	}
	return r
}

// result decodes a successful reply's result into v.
func result(t testing.TB, r *abi.Envelope, v any) {
	t.Helper()
	if r.Error != nil {
		t.Fatalf("%s: unexpected error %v", r.Method, r.Error)
	}
	if err := abi.Default.Unmarshal(r.Result, v); err != nil {
		t.Fatalf("%s: result: %v", r.Method, err)
	}
}

func wantError(t testing.TB, r *abi.Envelope, code abi.ErrorCode, contains string) {
	t.Helper()
	if r.Error == nil {
		t.Fatalf("%s: got result %x, want error %s", r.Method, r.Result, code)
	}
	if r.Error.Code != code || !strings.Contains(r.Error.Message, contains) {
		t.Fatalf("%s: got error %v, want %s containing %q", r.Method, r.Error, code, contains)
	}
}

func packService(t testing.TB, path string) []byte {
	t.Helper()
	wasm, stdlib := runtimeBytes(t)
	b, err := pack.Pack(wasm, stdlib, path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
