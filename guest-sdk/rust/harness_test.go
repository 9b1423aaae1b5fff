package rustsdk_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/nuropb/nuropb/abi"
)

var repoRoot = func() string {
	d, _ := filepath.Abs("../..")
	return d
}()

// scratch holds what the build scripts produce, shared by every test in the
// binary so each guest is built once per `go test` run.
var scratch string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "nuropb-rustsdk-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scratch = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// missingTool skips the test, or fails it when CI=true, so a CI machine
// without the toolchain cannot pass by skipping.
func missingTool(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true but %s", msg)
	}
	t.Skip(msg)
}

const rustc = "/usr/bin/rustc"

// needRust checks for Debian's rustc and its wasm32-wasi std.
func needRust(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(rustc); err != nil {
		missingTool(t, "%s is missing (apt-get install rustc libstd-rust-dev-wasm32 lld)", rustc)
	}
	out, err := exec.Command(rustc, "--print", "sysroot").Output()
	if err != nil {
		missingTool(t, "%s --print sysroot: %v", rustc, err)
	}
	std, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "lib/rustlib/wasm32-wasi/lib/libstd-*.rlib"))
	if len(std) == 0 {
		missingTool(t, "%s has no wasm32-wasi std (apt-get install libstd-rust-dev-wasm32)", rustc)
	}
}

// needClang checks that clang can build a wasm32-wasi reactor.
func needClang(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("clang"); err != nil {
		missingTool(t, "clang is missing (apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32)")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "p.c")
	os.WriteFile(src, []byte("#include <stdlib.h>\nint f(void){return (int)(long)malloc(1);}\n"), 0o644)
	out, err := exec.Command("clang", "--target=wasm32-wasi", "-O2", "-mexec-model=reactor", "-o", filepath.Join(dir, "p.wasm"), src).CombinedOutput()
	if err != nil {
		missingTool(t, "clang cannot target wasm32-wasi (apt-get install lld wasi-libc libclang-rt-14-dev-wasm32): %v\n%s", err, out)
	}
}

type buildResult struct {
	dir string
	out string
	err error
}

var (
	buildMu sync.Mutex
	builds  = map[string]*buildResult{}
)

// build runs scripts/<script> [flags] into its own directory under
// scratch, once.
func build(t *testing.T, script string, flags ...string) string {
	t.Helper()
	buildMu.Lock()
	b, ok := builds[script]
	if !ok {
		b = &buildResult{dir: filepath.Join(scratch, strings.TrimSuffix(script, ".sh"))}
		cmd := exec.Command(filepath.Join(repoRoot, "scripts", script), append(flags, b.dir)...)
		out, err := cmd.CombinedOutput()
		b.out, b.err = string(out), err
		builds[script] = b
	}
	buildMu.Unlock()
	if b.err != nil {
		t.Fatalf("scripts/%s: %v\n%s", script, b.err, b.out)
	}
	return b.dir
}

// cacheDir is a wazero compilation cache shared across runs (and -race
// runs), keyed by wazero's version.
func cacheDir(t *testing.T) wazero.CompilationCache {
	t.Helper()
	version := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/tetratelabs/wazero" {
				version = d.Version
			}
		}
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	c, err := wazero.NewCompilationCacheWithDir(filepath.Join(base, "nuropb", "wazero-cache", version))
	if err != nil {
		t.Fatalf("compilation cache: %v", err)
	}
	return c
}

// fakeHost is a minimal nuropb host module: it records logs and sends, and
// answers calls to greeter.hello the way the Go greeter service does.
type fakeHost struct {
	mu    sync.Mutex
	logs  []string
	sends []*abi.Envelope
	calls []*abi.Envelope
}

func (h *fakeHost) logLines() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.logs...)
}

func readGuest(mod api.Module, ptr, n uint32) []byte {
	b, ok := mod.Memory().Read(ptr, n)
	if !ok {
		panic(fmt.Sprintf("guest buffer %d+%d is outside memory", ptr, n))
	}
	return append([]byte(nil), b...)
}

func (h *fakeHost) answer(req *abi.Envelope) *abi.Envelope {
	resp := req.Reply()
	if req.Service == "greeter" && req.Method == "hello" {
		var p struct {
			Name string `cbor:"name"`
		}
		if err := abi.Default.Unmarshal(req.Params, &p); err != nil || p.Name == "" {
			resp.Error = abi.Errorf(abi.CodeBadRequest, "greeter.hello needs a name")
			return resp
		}
		resp.Result, _ = abi.Default.Marshal("hello, " + p.Name)
		return resp
	}
	resp.Error = abi.Errorf(abi.CodeNotFound, "no service %q", req.Service)
	return resp
}

func (h *fakeHost) instantiate(ctx context.Context, r wazero.Runtime) error {
	i32, i64 := api.ValueTypeI32, api.ValueTypeI64
	_, err := r.NewHostModuleBuilder(abi.ImportModule).
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
		line := fmt.Sprintf("%d %s", int32(stack[0]), readGuest(mod, uint32(stack[1]), uint32(stack[2])))
		h.mu.Lock()
		h.logs = append(h.logs, line)
		h.mu.Unlock()
	}), []api.ValueType{i32, i32, i32}, nil).Export(abi.ImportLog).
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
		req, err := abi.Default.DecodeEnvelope(readGuest(mod, uint32(stack[0]), uint32(stack[1])))
		var resp *abi.Envelope
		if err != nil {
			resp = &abi.Envelope{Kind: abi.KindResponse, Error: abi.AsError(err)}
		} else {
			h.mu.Lock()
			h.calls = append(h.calls, req)
			h.mu.Unlock()
			resp = h.answer(req)
		}
		b, err := abi.Default.EncodeEnvelope(resp)
		if err != nil {
			panic(err)
		}
		res, err := mod.ExportedFunction(abi.ExportAlloc).Call(ctx, uint64(len(b)))
		if err != nil {
			panic(err)
		}
		if !mod.Memory().Write(uint32(res[0]), b) {
			panic("nuropb_alloc returned a buffer outside memory")
		}
		stack[0] = abi.PackPtrLen(uint32(res[0]), uint32(len(b)))
	}), []api.ValueType{i32, i32}, []api.ValueType{i64}).Export(abi.ImportCall).
		NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
		env, err := abi.Default.DecodeEnvelope(readGuest(mod, uint32(stack[0]), uint32(stack[1])))
		if err == nil {
			h.mu.Lock()
			h.sends = append(h.sends, env)
			h.mu.Unlock()
		}
		stack[0] = uint64(uint32(abi.SendStatus(err)))
	}), []api.ValueType{i32, i32}, []api.ValueType{i32}).Export(abi.ImportSend).
		Instantiate(ctx)
	return err
}

// sandbox is one wazero runtime with WASI and the fake nuropb host.
type sandbox struct {
	r      wazero.Runtime
	host   *fakeHost
	stdout bytes.Buffer
	stderr countingWriter
}

type countingWriter struct {
	mu sync.Mutex
	n  int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.n += len(p)
	w.mu.Unlock()
	return len(p), nil
}

func (w *countingWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// newSandbox returns a runtime that interrupts guests when their context
// ends and, when pages > 0, caps memory at that many 64 KiB pages.
func newSandbox(t *testing.T, pages uint32) *sandbox {
	t.Helper()
	ctx := context.Background()
	cfg := wazero.NewRuntimeConfig().WithCompilationCache(cacheDir(t)).WithCloseOnContextDone(true)
	if pages > 0 {
		cfg = cfg.WithMemoryLimitPages(pages)
	}
	s := &sandbox{r: wazero.NewRuntimeWithConfig(ctx, cfg), host: &fakeHost{}}
	t.Cleanup(func() { s.r.Close(ctx) })
	wasi_snapshot_preview1.MustInstantiate(ctx, s.r)
	if err := s.host.instantiate(ctx, s.r); err != nil {
		t.Fatalf("nuropb host module: %v", err)
	}
	return s
}

// guest is one instance of a guest module and its ABI exports.
type guest struct {
	mod                                       api.Module
	version, alloc, dealloc, describe, handle api.Function
}

// load compiles and instantiates path as a reactor (running _initialize).
func (s *sandbox) load(t *testing.T, path string) (*guest, error) {
	t.Helper()
	ctx := context.Background()
	wasm, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cm, err := s.r.CompileModule(ctx, wasm)
	if err != nil {
		return nil, fmt.Errorf("compile %s: %w", filepath.Base(path), err)
	}
	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions("_initialize").
		WithStdout(&s.stdout).WithStderr(&s.stderr)
	mod, err := s.r.InstantiateModule(ctx, cm, cfg)
	if err != nil {
		return nil, fmt.Errorf("instantiate %s: %w", filepath.Base(path), err)
	}
	t.Cleanup(func() { mod.Close(ctx) })
	return &guest{
		mod:      mod,
		version:  mod.ExportedFunction(abi.ExportABIVersion),
		alloc:    mod.ExportedFunction(abi.ExportAlloc),
		dealloc:  mod.ExportedFunction(abi.ExportDealloc),
		describe: mod.ExportedFunction(abi.ExportDescribe),
		handle:   mod.ExportedFunction(abi.ExportHandle),
	}, nil
}

func (s *sandbox) mustLoad(t *testing.T, path string) *guest {
	t.Helper()
	g, err := s.load(t, path)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// manifest calls nuropb_describe and returns the raw manifest bytes.
func (g *guest) manifest(ctx context.Context) ([]byte, error) {
	res, err := g.describe.Call(ctx)
	if err != nil {
		return nil, err
	}
	ptr, n := abi.UnpackPtrLen(res[0])
	b, ok := g.mod.Memory().Read(ptr, n)
	if !ok {
		return nil, fmt.Errorf("manifest at %d+%d is outside memory", ptr, n)
	}
	return append([]byte(nil), b...), nil
}

// raw writes frame into a guest buffer, calls nuropb_handle and returns the
// reply's pointer and length (unchecked) and the reply bytes when readable.
func (g *guest) raw(ctx context.Context, frame []byte) (ptr, n uint32, reply []byte, err error) {
	res, err := g.alloc.Call(ctx, uint64(len(frame)))
	if err != nil {
		return 0, 0, nil, fmt.Errorf("nuropb_alloc: %w", err)
	}
	in := uint32(res[0])
	if !g.mod.Memory().Write(in, frame) {
		return 0, 0, nil, fmt.Errorf("nuropb_alloc returned %d, outside memory", in)
	}
	out, err := g.handle.Call(ctx, uint64(in), uint64(len(frame)))
	if err != nil {
		return 0, 0, nil, err
	}
	ptr, n = abi.UnpackPtrLen(out[0])
	if b, ok := g.mod.Memory().Read(ptr, n); ok {
		reply = append([]byte(nil), b...)
	}
	if _, err := g.dealloc.Call(ctx, uint64(in), uint64(len(frame))); err != nil {
		return 0, 0, nil, fmt.Errorf("nuropb_dealloc: %w", err)
	}
	return ptr, n, reply, nil
}

// request builds a request envelope for method with params (any Go value).
func request(t *testing.T, service, method string, params any) *abi.Envelope {
	t.Helper()
	env := &abi.Envelope{Kind: abi.KindRequest, ID: "id-1", TraceID: "trace-1", Service: service, Method: method}
	if params != nil {
		b, err := abi.Default.Marshal(params)
		if err != nil {
			t.Fatal(err)
		}
		env.Params = b
	}
	return env
}

// call sends env through nuropb_handle and decodes the reply strictly.
func (g *guest) call(ctx context.Context, env *abi.Envelope) (*abi.Envelope, error) {
	frame, err := abi.Default.EncodeEnvelope(env)
	if err != nil {
		return nil, err
	}
	_, _, reply, err := g.raw(ctx, frame)
	if err != nil {
		return nil, err
	}
	return abi.Default.DecodeEnvelope(reply)
}

func readFile(path string) ([]byte, error) { return os.ReadFile(path) }
