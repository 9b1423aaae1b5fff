package sandbox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/internal/buildinfo"
	"github.com/nuropb/nuropb/internal/wasmsection"
)

// Engine compiles and instantiates guest modules. It keeps one wazero
// runtime per memory limit (wazero's limit is per runtime), all sharing one
// compilation cache, and shares compiled code between module versions with
// identical bytes. One per host; safe for concurrent use.
type Engine struct {
	cfg   Config
	log   *slog.Logger
	cache wazero.CompilationCache
	gates gates // one per tenant, shared by its modules

	mu       sync.Mutex
	closed   bool
	runtimes map[uint32]*runtimeClass
	compiled map[compiledKey]*compiledEntry
	compiles uint64 // CompileModule calls made, for EngineStats
}

// EngineStats counts what an Engine compiled. Tests and operators read it to
// see that module versions with identical code (every Python service built
// from one runtime, a re-deployed file) share one compilation.
type EngineStats struct {
	Compiled     int    // distinct compiled modules held now
	Compilations uint64 // compilations started since NewEngine (each is a wazero CompileModule call)
}

// Stats returns a snapshot of the engine's counters.
func (e *Engine) Stats() EngineStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return EngineStats{Compiled: len(e.compiled), Compilations: e.compiles}
}

// runtimeClass is one wazero runtime and the memory limit it enforces.
type runtimeClass struct {
	r     wazero.Runtime
	pages uint32
}

// compiledKey identifies compiled code: the same bytes compiled for another
// memory limit live in another runtime, so they are another entry.
type compiledKey struct {
	pages uint32
	hash  [sha256.Size]byte // of the bytes compiled (after stripping nuropb.fs)
}

// compiledEntry is compiled code shared by every loaded version with the
// same key. ready is closed once cm or err is set.
type compiledEntry struct {
	ready chan struct{}
	cm    wazero.CompiledModule
	err   error
	refs  int
}

// NewEngine returns an Engine whose compilation cache lives under
// cfg.CacheDir (in a subdirectory named for the wazero version, since
// compiled code is only valid for the compiler that made it), or in memory
// when cfg.CacheDir is "".
func NewEngine(ctx context.Context, cfg Config) (*Engine, error) {
	e := &Engine{
		cfg:      cfg,
		log:      cfg.Logger,
		runtimes: map[uint32]*runtimeClass{},
		compiled: map[compiledKey]*compiledEntry{},
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if cfg.CacheDir == "" {
		e.cache = wazero.NewCompilationCache()
		return e, nil
	}
	dir := filepath.Join(cfg.CacheDir, "wazero-"+buildinfo.WazeroVersion())
	cache, err := wazero.NewCompilationCacheWithDir(dir)
	if err != nil {
		return nil, fmt.Errorf("sandbox: compilation cache %s: %w", dir, err)
	}
	e.cache = cache
	return e, nil
}

// Close closes every runtime, and with them every instance of every module
// still loaded. Modules should be closed first to drain their calls.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	rts := e.runtimes
	e.runtimes = nil
	e.mu.Unlock()
	var errs []error
	for _, rc := range rts {
		errs = append(errs, rc.r.Close(ctx))
	}
	errs = append(errs, e.cache.Close(ctx))
	return errors.Join(errs...)
}

var errEngineClosed = errors.New("sandbox: engine is closed")

// runtime returns the runtime for a memory limit, creating it (with WASI and
// the nuropb host module) on first use.
func (e *Engine) runtime(ctx context.Context, pages uint32) (*runtimeClass, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, errEngineClosed
	}
	if rc := e.runtimes[pages]; rc != nil {
		return rc, nil
	}
	rcfg := wazero.NewRuntimeConfig().
		WithMemoryLimitPages(pages).
		WithCloseOnContextDone(true).
		WithCompilationCache(e.cache)
	r := wazero.NewRuntimeWithConfig(ctx, rcfg)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, r); err != nil {
		_ = r.Close(ctx)
		return nil, fmt.Errorf("sandbox: instantiate WASI: %w", err)
	}
	if err := instantiateHostModule(ctx, r); err != nil {
		_ = r.Close(ctx)
		return nil, fmt.Errorf("sandbox: instantiate host module: %w", err)
	}
	rc := &runtimeClass{r: r, pages: pages}
	e.runtimes[pages] = rc
	return rc, nil
}

// acquireCompiled returns compiled code for code in rc, compiling it unless
// another version with the same bytes already holds it. Every successful
// call must be paired with releaseCompiled.
func (e *Engine) acquireCompiled(ctx context.Context, rc *runtimeClass, key compiledKey, code []byte) (wazero.CompiledModule, error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, errEngineClosed
	}
	ent := e.compiled[key]
	if ent != nil {
		ent.refs++
		e.mu.Unlock()
		<-ent.ready
		if ent.err != nil {
			e.releaseCompiled(ctx, key)
			return nil, ent.err
		}
		return ent.cm, nil
	}
	ent = &compiledEntry{ready: make(chan struct{}), refs: 1}
	e.compiled[key] = ent
	e.compiles++
	e.mu.Unlock()

	ent.cm, ent.err = rc.r.CompileModule(ctx, code)
	close(ent.ready)
	if ent.err != nil {
		e.releaseCompiled(ctx, key)
		return nil, ent.err
	}
	return ent.cm, nil
}

// releaseCompiled drops one reference; the last one frees the code.
func (e *Engine) releaseCompiled(ctx context.Context, key compiledKey) {
	e.mu.Lock()
	ent := e.compiled[key]
	if ent == nil {
		e.mu.Unlock()
		return
	}
	ent.refs--
	if ent.refs > 0 {
		e.mu.Unlock()
		return
	}
	delete(e.compiled, key)
	e.mu.Unlock()
	if ent.cm != nil {
		_ = ent.cm.Close(ctx)
	}
}

// Load compiles, checks and starts one module version. See the Engine
// contract in api.go for the steps; every failure is a *LoadError.
func (e *Engine) Load(ctx context.Context, src Source, imp Imports) (*Module, error) {
	fail := func(step string, err error, format string, args ...any) error {
		return &LoadError{File: src.Name, Step: step, Reason: fmt.Sprintf(format, args...), Err: err}
	}
	if err := src.Limits.validate(); err != nil {
		return nil, fail(StepLimits, err, "%v", err)
	}
	if imp == nil {
		return nil, fail(StepLimits, nil, "no Imports given")
	}
	if len(src.Bytes) == 0 {
		return nil, fail(StepRead, nil, "empty file")
	}
	sum := sha256.Sum256(src.Bytes)
	code, payload, err := splitFS(src.Bytes)
	if err != nil {
		return nil, fail(StepRead, err, "%v", err)
	}
	m := &Module{
		e:      e,
		name:   src.Name,
		tenant: src.Tenant,
		hash:   hex.EncodeToString(sum[:]),
		limits: src.Limits,
		imp:    imp,
		gate:   e.gates.get(src.Tenant, src.Limits.TenantMaxRunning),
	}
	if payload != nil {
		// A copy: the archive is read in place for the module's life, and
		// the caller may reuse its buffer.
		if m.fsys, err = wasmsection.ZipFS(bytes.Clone(payload)); err != nil {
			return nil, fail(StepRead, err, "%v", err)
		}
	}
	if m.codec, err = abi.NewCodec(abi.Limits{MaxFrame: src.Limits.MaxMessageBytes}); err != nil {
		return nil, fail(StepLimits, err, "%v", err)
	}
	if m.replyCheck, err = newReplyChecker(m.codec.Limits()); err != nil {
		return nil, fail(StepLimits, err, "%v", err)
	}

	rc, err := e.runtime(ctx, src.Limits.MemoryPages)
	if err != nil {
		return nil, fail(StepCompile, err, "%v", err)
	}
	m.rt = rc
	m.key = compiledKey{pages: src.Limits.MemoryPages, hash: sha256.Sum256(code)}
	cm, err := e.acquireCompiled(ctx, rc, m.key, code)
	if err != nil {
		return nil, fail(StepCompile, err, "%v", err)
	}
	m.cm = cm
	ok := false
	defer func() {
		if !ok {
			m.abandon(ctx)
		}
	}()

	if err := checkImports(cm); err != nil {
		return nil, fail(StepImports, err, "%v", err)
	}
	if err := checkExports(cm); err != nil {
		return nil, fail(StepExports, err, "%v", err)
	}
	m.init()

	inst, err := m.newInstance(ctx)
	if err != nil {
		return nil, fail(StepInstantiate, err, "%v", err)
	}
	m.idle <- inst

	v, err := inst.callScalar(ctx, inst.mod.ExportedFunction(abi.ExportABIVersion))
	if err != nil {
		return nil, fail(StepABI, err, "nuropb_abi_version: %v", err)
	}
	if int32(v) != abi.Version {
		return nil, fail(StepABI, nil, "nuropb_abi_version returned %d, this host speaks ABI %d", int32(v), abi.Version)
	}
	raw, err := inst.describe(ctx)
	if err != nil {
		return nil, fail(StepDescribe, err, "nuropb_describe: %v", err)
	}
	if serr := startError(m.codec, raw); serr != nil {
		return nil, fail(StepDescribe, serr, "the service failed to start: %v", serr)
	}
	if m.manifest, err = m.codec.DecodeManifest(raw); err != nil {
		return nil, fail(StepManifest, err, "%v", err)
	}
	for i := 1; i < src.Limits.MinInstances; i++ {
		<-m.free
		inst, err := m.newInstance(ctx)
		if err != nil {
			m.free <- struct{}{}
			return nil, fail(StepInstantiate, err, "instance %d of %d: %v", i+1, src.Limits.MinInstances, err)
		}
		m.idle <- inst
	}
	ok = true
	return m, nil
}

// checkImports refuses any import the sandbox does not grant, naming it.
func checkImports(cm wazero.CompiledModule) error {
	for _, mem := range cm.ImportedMemories() {
		mod, name, _ := mem.Import()
		return fmt.Errorf("imports memory %s.%s: guests must define and export their own memory", mod, name)
	}
	for _, fn := range cm.ImportedFunctions() {
		mod, name, _ := fn.Import()
		switch mod {
		case abi.ImportModule:
			want, ok := hostFuncSigs[name]
			if !ok {
				return fmt.Errorf("imports %s.%s: the host provides only nuropb.log, nuropb.call and nuropb.send", mod, name)
			}
			if !sameSig(fn, want) {
				return fmt.Errorf("imports %s.%s with signature %s, want %s", mod, name, sigString(fn.ParamTypes(), fn.ResultTypes()), sigString(want.params, want.results))
			}
		case wasi_snapshot_preview1.ModuleName:
			if !allowedWASI[name] {
				return fmt.Errorf("imports %s.%s, which the sandbox does not allow (no new sockets, no processes)", mod, name)
			}
		default:
			return fmt.Errorf("imports %s.%s: only %s.* and %s.* can be imported", mod, name, abi.ImportModule, wasi_snapshot_preview1.ModuleName)
		}
	}
	return nil
}

// checkExports requires every ABI v1 export with its exact signature, and an
// exported memory.
func checkExports(cm wazero.CompiledModule) error {
	exp := cm.ExportedFunctions()
	for _, name := range abi.RequiredExports {
		fn, ok := exp[name]
		if !ok {
			return fmt.Errorf("missing export %s", name)
		}
		want := exportSigs[name]
		if !sameSig(fn, want) {
			return fmt.Errorf("export %s has signature %s, want %s", name, sigString(fn.ParamTypes(), fn.ResultTypes()), sigString(want.params, want.results))
		}
	}
	if _, ok := cm.ExportedMemories()["memory"]; !ok {
		return errors.New("missing export memory")
	}
	return nil
}

type signature struct{ params, results []api.ValueType }

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

var exportSigs = map[string]signature{
	abi.ExportABIVersion: {nil, []api.ValueType{i32}},
	abi.ExportAlloc:      {[]api.ValueType{i32}, []api.ValueType{i32}},
	abi.ExportDealloc:    {[]api.ValueType{i32, i32}, nil},
	abi.ExportDescribe:   {nil, []api.ValueType{i64}},
	abi.ExportHandle:     {[]api.ValueType{i32, i32}, []api.ValueType{i64}},
}

var hostFuncSigs = map[string]signature{
	abi.ImportLog:  {[]api.ValueType{i32, i32, i32}, nil},
	abi.ImportCall: {[]api.ValueType{i32, i32}, []api.ValueType{i64}},
	abi.ImportSend: {[]api.ValueType{i32, i32}, []api.ValueType{i32}},
}

func sameSig(fn api.FunctionDefinition, s signature) bool {
	return bytes.Equal(fn.ParamTypes(), s.params) && bytes.Equal(fn.ResultTypes(), s.results)
}

func sigString(params, results []api.ValueType) string {
	var b bytes.Buffer
	b.WriteByte('(')
	for i, p := range params {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(api.ValueTypeName(p))
	}
	b.WriteString(") -> (")
	for i, r := range results {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(api.ValueTypeName(r))
	}
	b.WriteByte(')')
	return b.String()
}

// allowedWASI lists the WASI preview1 functions a guest may import. With no
// preopened directory (only the read-only nuropb.fs mount, when present),
// no environment and no arguments, these reach nothing outside the
// instance.
//
// Preview1 cannot create a socket: sock_accept, sock_recv, sock_send and
// sock_shutdown act only on sockets the host preopens (in wazero, listeners
// passed through experimental context values, which callCtx never carries),
// and the sandbox preopens none, so they fail with EBADF or ENOTSOCK. They
// are allowed because every C library build links them (CPython's socket
// module does, so the Python runtime imports all four). Extensions that
// would create sockets (WasmEdge's sock_open, sock_connect, ...) are refused
// by name like every other unknown import.
var allowedWASI = map[string]bool{
	"args_get": true, "args_sizes_get": true, "environ_get": true, "environ_sizes_get": true,
	"clock_res_get": true, "clock_time_get": true, "random_get": true,
	"proc_exit": true, "proc_raise": true, "sched_yield": true, "poll_oneoff": true,
	"fd_advise": true, "fd_allocate": true, "fd_close": true, "fd_datasync": true,
	"fd_fdstat_get": true, "fd_fdstat_set_flags": true, "fd_fdstat_set_rights": true,
	"fd_filestat_get": true, "fd_filestat_set_size": true, "fd_filestat_set_times": true,
	"fd_pread": true, "fd_prestat_get": true, "fd_prestat_dir_name": true, "fd_pwrite": true,
	"fd_read": true, "fd_readdir": true, "fd_renumber": true, "fd_seek": true, "fd_sync": true,
	"fd_tell": true, "fd_write": true,
	"path_create_directory": true, "path_filestat_get": true, "path_filestat_set_times": true,
	"path_link": true, "path_open": true, "path_readlink": true, "path_remove_directory": true,
	"path_rename": true, "path_symlink": true, "path_unlink_file": true,
	"sock_accept": true, "sock_recv": true, "sock_send": true, "sock_shutdown": true,
}
