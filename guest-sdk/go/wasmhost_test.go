//go:build !wasip1

package nuropb

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"

	"github.com/nuropb/nuropb/abi"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// The guests the integration tests build, by the name of their .wasm file.
var guestPackages = map[string]string{
	"greeter":     "github.com/nuropb/nuropb/modules/examples/go/greeter",
	"orders":      "github.com/nuropb/nuropb/modules/examples/go/orders",
	"audit":       "github.com/nuropb/nuropb/modules/examples/go/audit",
	"conformance": "github.com/nuropb/nuropb/guest-sdk/go/internal/conformance",
}

var (
	buildDir  string
	buildOnce sync.Once
	built     map[string][]byte
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// buildGuests builds every guest once per test binary, the way
// scripts/build-go-modules.sh does (stripped, trimmed paths).
func buildGuests(t testing.TB) map[string][]byte {
	t.Helper()
	if testing.Short() {
		t.Skip("builds wasm guests; skipped in -short mode")
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "nuropb-go-guests-")
		if buildErr != nil {
			return
		}
		built = map[string][]byte{}
		for name, pkg := range guestPackages {
			out := filepath.Join(buildDir, name+".wasm")
			cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
			if b, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("build %s: %v\n%s", pkg, err, b)
				return
			}
			if built[name], buildErr = os.ReadFile(out); buildErr != nil {
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

// cacheDir is where compiled guests are cached across test runs, keyed by
// wazero's version so that an upgrade never reads a stale cache.
func cacheDir() string {
	version := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/tetratelabs/wazero" {
				version = d.Version
			}
		}
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "nuropb", "wazero-"+version)
}

// harness is a minimal nuropb host: a wazero runtime with the nuropb imports,
// routing calls and events between the guests it instantiated.
type harness struct {
	t   testing.TB
	ctx context.Context
	rt  wazero.Runtime

	mu       sync.Mutex
	compiled map[string]wazero.CompiledModule
	byName   map[string]*guest // module instance name -> guest
	services map[string]*guest // service -> its one instance
	logs     []string
	sent     []*abi.Envelope
	queue    []*abi.Envelope
	n        int

	// onCall, if set, answers call imports instead of routing them.
	onCall func(req *abi.Envelope) *abi.Envelope
}

func newHarness(t testing.TB, memoryPages uint32) *harness {
	t.Helper()
	ctx := context.Background()
	cache, err := wazero.NewCompilationCacheWithDir(cacheDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := wazero.NewRuntimeConfig().WithCloseOnContextDone(true).WithCompilationCache(cache)
	if memoryPages > 0 {
		cfg = cfg.WithMemoryLimitPages(memoryPages)
	}
	h := &harness{t: t, ctx: ctx, rt: wazero.NewRuntimeWithConfig(ctx, cfg),
		compiled: map[string]wazero.CompiledModule{}, byName: map[string]*guest{}, services: map[string]*guest{}}
	t.Cleanup(func() { h.rt.Close(ctx); cache.Close(ctx) })
	wasi_snapshot_preview1.MustInstantiate(ctx, h.rt)
	i32, i64 := api.ValueTypeI32, api.ValueTypeI64
	_, err = h.rt.NewHostModuleBuilder(abi.ImportModule).
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(h.importLog), []api.ValueType{i32, i32, i32}, nil).Export(abi.ImportLog).
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(h.importCall), []api.ValueType{i32, i32}, []api.ValueType{i64}).Export(abi.ImportCall).
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(h.importSend), []api.ValueType{i32, i32}, []api.ValueType{i32}).Export(abi.ImportSend).
		Instantiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// guest is one instance of a guest module.
type guest struct {
	h        *harness
	name     string
	mod      api.Module
	manifest *abi.Manifest
	stderr   bytes.Buffer
	alloc    api.Function
	dealloc  api.Function
	describe api.Function
	handle   api.Function
	stack    []uint64
}

// start compiles (once) and instantiates wasm as a new instance, reads its
// manifest and makes it the instance calls to its service reach.
func (h *harness) start(file string, wasm []byte) *guest {
	h.t.Helper()
	h.mu.Lock()
	cm := h.compiled[file]
	h.n++
	name := fmt.Sprintf("%s#%d", file, h.n)
	h.mu.Unlock()
	if cm == nil {
		var err error
		if cm, err = h.rt.CompileModule(h.ctx, wasm); err != nil {
			h.t.Fatalf("compile %s: %v", file, err)
		}
		h.mu.Lock()
		h.compiled[file] = cm
		h.mu.Unlock()
	}
	g := &guest{h: h, name: name, stack: make([]uint64, 2)}
	mod, err := h.rt.InstantiateModule(h.ctx, cm, wazero.NewModuleConfig().WithName(name).
		WithStartFunctions("_initialize").WithStderr(&g.stderr).WithStdout(&g.stderr).
		WithSysWalltime().WithSysNanotime().WithRandSource(rand.Reader))
	if err != nil {
		h.t.Fatalf("instantiate %s: %v\nstderr: %s", file, err, g.stderr.String())
	}
	g.mod = mod
	for _, e := range abi.RequiredExports {
		if mod.ExportedFunction(e) == nil {
			h.t.Fatalf("%s does not export %s", file, e)
		}
	}
	g.alloc, g.dealloc = mod.ExportedFunction(abi.ExportAlloc), mod.ExportedFunction(abi.ExportDealloc)
	g.describe, g.handle = mod.ExportedFunction(abi.ExportDescribe), mod.ExportedFunction(abi.ExportHandle)
	v, err := mod.ExportedFunction(abi.ExportABIVersion).Call(h.ctx)
	if err != nil || len(v) != 1 || int32(v[0]) != abi.Version {
		h.t.Fatalf("%s: nuropb_abi_version = %v, %v; want %d", file, v, err, abi.Version)
	}
	res, err := g.describe.Call(h.ctx)
	if err != nil {
		h.t.Fatalf("%s: nuropb_describe: %v", file, err)
	}
	if g.manifest, err = abi.Default.DecodeManifest(g.read(res[0])); err != nil {
		h.t.Fatalf("%s: manifest: %v", file, err)
	}
	h.mu.Lock()
	h.byName[name] = g
	h.services[g.manifest.Service] = g
	h.mu.Unlock()
	return g
}

// read copies the ptr<<32|len region out of g's memory.
func (g *guest) read(packed uint64) []byte {
	ptr, n := abi.UnpackPtrLen(packed)
	b, ok := g.mod.Memory().Read(ptr, n)
	if !ok {
		g.h.t.Fatalf("%s: region %#x+%d is outside memory", g.name, ptr, n)
	}
	return bytes.Clone(b)
}

// write copies b into a buffer from g's nuropb_alloc and returns its pointer.
func (g *guest) write(ctx context.Context, m api.Module, b []byte) (uint32, error) {
	g.stack[0] = uint64(len(b))
	if err := g.alloc.CallWithStack(ctx, g.stack); err != nil {
		return 0, err
	}
	ptr := uint32(g.stack[0])
	if ptr == 0 || !m.Memory().Write(ptr, b) {
		return 0, fmt.Errorf("nuropb_alloc(%d) gave unusable pointer %#x", len(b), ptr)
	}
	return ptr, nil
}

// raw sends one encoded envelope and returns the raw reply. A trap or an
// interrupted call is returned as the error.
func (g *guest) raw(ctx context.Context, frame []byte) ([]byte, error) {
	ptr, err := g.write(ctx, g.mod, frame)
	if err != nil {
		return nil, err
	}
	g.stack[0], g.stack[1] = uint64(ptr), uint64(len(frame))
	if err := g.handle.CallWithStack(ctx, g.stack); err != nil {
		return nil, err
	}
	reply := g.read(g.stack[0])
	g.stack[0], g.stack[1] = uint64(ptr), uint64(len(frame))
	if err := g.dealloc.CallWithStack(ctx, g.stack); err != nil {
		return nil, err
	}
	return reply, nil
}

// send sends env and decodes the reply strictly, as a host would.
func (g *guest) send(ctx context.Context, env *abi.Envelope) (*abi.Envelope, error) {
	frame, err := abi.Default.EncodeEnvelope(env)
	if err != nil {
		return nil, err
	}
	reply, err := g.raw(ctx, frame)
	if err != nil {
		return nil, err
	}
	rep, err := abi.Default.DecodeEnvelope(reply)
	if err != nil {
		return nil, fmt.Errorf("%s: reply does not decode: %w", g.name, err)
	}
	if rep.Kind != abi.KindResponse {
		return nil, fmt.Errorf("%s: reply kind %q", g.name, rep.Kind)
	}
	g.h.deliver(ctx)
	return rep, nil
}

// request builds a request envelope for method with params (encoded by the
// codec unless already raw).
func request(service, method string, params any) *abi.Envelope {
	env := &abi.Envelope{Kind: abi.KindRequest, ID: "req-1", TraceID: "trace-1", Service: service, Method: method}
	switch p := params.(type) {
	case nil:
	case abi.RawValue:
		env.Params = p
	default:
		env.Params = mustCBOR(p)
	}
	return env
}

// call calls service.method and decodes the result into result, returning
// the reply's error (or the trap) as the error.
func (h *harness) call(service, method string, params, result any) error {
	h.t.Helper()
	h.mu.Lock()
	g := h.services[service]
	h.mu.Unlock()
	if g == nil {
		h.t.Fatalf("no instance of %s", service)
	}
	rep, err := g.send(h.ctx, request(service, method, params))
	if err != nil {
		return err
	}
	if rep.Error != nil {
		return rep.Error
	}
	if result != nil {
		if err := abi.Default.Unmarshal(rep.Result, result); err != nil {
			h.t.Fatalf("%s.%s: result: %v", service, method, err)
		}
	}
	return nil
}

func (h *harness) caller(m api.Module) *guest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byName[m.Name()]
}

func (h *harness) importLog(_ context.Context, m api.Module, stack []uint64) {
	level, ptr, n := int32(stack[0]), uint32(stack[1]), uint32(stack[2])
	b, _ := m.Memory().Read(ptr, n)
	h.mu.Lock()
	h.logs = append(h.logs, fmt.Sprintf("%d %s", level, b))
	h.mu.Unlock()
}

// importCall answers a guest's request, writing the reply into a buffer from
// the caller's own nuropb_alloc: a call back into the instance mid-call.
func (h *harness) importCall(ctx context.Context, m api.Module, stack []uint64) {
	b, _ := m.Memory().Read(uint32(stack[0]), uint32(stack[1]))
	req, err := abi.Default.DecodeEnvelope(bytes.Clone(b))
	var rep *abi.Envelope
	switch {
	case err != nil:
		rep = &abi.Envelope{Kind: abi.KindResponse, Error: abi.AsError(err)}
	case req.Kind != abi.KindRequest:
		rep = req.Reply()
		rep.Error = abi.Errorf(abi.CodeBadRequest, "call import needs a request, got %s", req.Kind)
	case h.onCall != nil:
		rep = h.onCall(req)
	default:
		rep = h.route(ctx, req)
	}
	frame, err := abi.Default.EncodeEnvelope(rep)
	if err != nil {
		panic(err)
	}
	g := h.caller(m)
	ptr, err := g.write(ctx, m, frame)
	if err != nil {
		panic(err)
	}
	stack[0] = abi.PackPtrLen(ptr, uint32(len(frame)))
}

func (h *harness) route(ctx context.Context, req *abi.Envelope) *abi.Envelope {
	h.mu.Lock()
	target := h.services[req.Service]
	h.mu.Unlock()
	if target == nil {
		rep := req.Reply()
		rep.Error = abi.Errorf(abi.CodeNotFound, "no service %q", req.Service)
		return rep
	}
	frame, err := abi.Default.EncodeEnvelope(req)
	if err != nil {
		panic(err)
	}
	reply, err := target.raw(ctx, frame)
	if err != nil {
		rep := req.Reply()
		rep.Error = abi.Errorf(abi.CodeTrapped, "%s: %v", req.Service, err)
		return rep
	}
	rep, err := abi.Default.DecodeEnvelope(reply)
	if err != nil {
		rep = req.Reply()
		rep.Error = abi.Errorf(abi.CodeInternal, "%s: malformed reply: %v", req.Service, err)
	}
	return rep
}

func (h *harness) importSend(_ context.Context, m api.Module, stack []uint64) {
	b, _ := m.Memory().Read(uint32(stack[0]), uint32(stack[1]))
	env, err := abi.Default.DecodeEnvelope(bytes.Clone(b))
	if err == nil && env.Kind != abi.KindEvent && env.Kind != abi.KindCommand {
		err = abi.Errorf(abi.CodeBadRequest, "send import needs a command or an event, got %s", env.Kind)
	}
	if err == nil && env.Kind == abi.KindCommand {
		h.mu.Lock()
		if h.services[env.Service] == nil {
			err = abi.Errorf(abi.CodeNotFound, "no service %q", env.Service)
		}
		h.mu.Unlock()
	}
	if err == nil {
		h.mu.Lock()
		h.sent = append(h.sent, env)
		h.queue = append(h.queue, env)
		h.mu.Unlock()
	}
	stack[0] = uint64(uint32(abi.SendStatus(err)))
}

// deliver hands queued commands and events to their services, as the broker
// would after the sender's call ends.
func (h *harness) deliver(ctx context.Context) {
	for {
		h.mu.Lock()
		if len(h.queue) == 0 {
			h.mu.Unlock()
			return
		}
		env := h.queue[0]
		h.queue = h.queue[1:]
		var targets []*guest
		for _, g := range h.services {
			if env.Kind == abi.KindCommand && g.manifest.Service == env.Service {
				targets = append(targets, g)
			}
			if env.Kind == abi.KindEvent {
				for _, p := range g.manifest.Subscriptions {
					if topicMatches(p, env.Topic) {
						targets = append(targets, g)
						break
					}
				}
			}
		}
		h.mu.Unlock()
		for _, g := range targets {
			if _, err := g.send(ctx, env); err != nil {
				h.t.Errorf("deliver %s %s%s to %s: %v", env.Kind, env.Topic, env.Method, g.name, err)
			}
		}
	}
}

func (h *harness) logged() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.logs, "\n")
}
