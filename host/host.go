package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/client"
	"github.com/nuropb/nuropb/host/internal/acl"
)

// ErrClosed is returned by LoadFile and Start once Shutdown has begun.
var ErrClosed = errors.New("host: shut down")

// ErrNotStarted is returned by LoadFile and RemoveFile before Start.
var ErrNotStarted = errors.New("host: not started")

// Host serves the modules of one folder on one broker. Build it with New; it
// is safe for concurrent use.
type Host struct {
	cfg      Config
	dir      string // ModulesDir, absolute and clean
	b        broker.Broker
	log      *slog.Logger
	policies map[string]*acl.Policy
	codec    *abi.Codec // the widest limits of any module: for clients that carry guests' calls

	load        loader
	closeEngine func(context.Context) error

	// runCtx outlives Start's ctx: consumers and guest calls hang off it,
	// and Shutdown cancels it last.
	runCtx    context.Context
	cancelRun context.CancelFunc

	mu       sync.Mutex // guards the fields below
	started  bool
	closing  bool
	loads    sync.WaitGroup // LoadFile calls in progress; Shutdown waits for them
	services map[broker.Route]*service
	files    map[string]*fileState // by absolute path
	refusals []Refusal
	watching *watching // hot reload (watch.go), when Config.Watch

	ready   atomic.Bool
	clients sync.Map // tenant -> *client.Client
}

// New checks cfg and returns a Host that will serve on b once started.
func New(cfg Config, b broker.Broker) (*Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("host config: %w", err)
	}
	if b == nil {
		return nil, errors.New("host: nil broker")
	}
	dir, err := filepath.Abs(cfg.ModulesDir)
	if err != nil {
		return nil, fmt.Errorf("host config: ModulesDir: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	h := &Host{cfg: cfg, dir: filepath.Clean(dir), b: b, log: cfg.Logger,
		policies: map[string]*acl.Policy{}, services: map[broker.Route]*service{}, files: map[string]*fileState{}}
	widest := cfg.Defaults.inherit(DefaultLimits()).MaxMessageBytes
	for name, t := range cfg.Tenants {
		p, err := acl.NewPolicy(name, t.Call, t.Publish, t.Subscribe)
		if err != nil {
			return nil, fmt.Errorf("host config: Tenants[%q]: %w", name, err)
		}
		h.policies[name] = p
		widest = max(widest, cfg.tenantLimits(name).MaxMessageBytes)
	}
	for key := range cfg.Modules {
		tenant, service, _ := strings.Cut(key, "/")
		widest = max(widest, cfg.moduleLimits(tenant, service).MaxMessageBytes)
	}
	if h.codec, err = abi.NewCodec(abi.Limits{MaxFrame: widest}); err != nil {
		return nil, err
	}
	return h, nil
}

// policy returns a tenant's grants; a tenant without config has none.
func (h *Host) policy(tenant string) *acl.Policy {
	if p := h.policies[tenant]; p != nil {
		return p
	}
	p, _ := acl.NewPolicy(tenant, nil, nil, nil)
	return p
}

// clientFor returns the client that resolves names in tenant.
func (h *Host) clientFor(tenant string) *client.Client {
	if c, ok := h.clients.Load(tenant); ok {
		return c.(*client.Client)
	}
	c, _ := h.clients.LoadOrStore(tenant, client.New(h.b, client.WithTenant(tenant), client.WithCodec(h.codec)))
	return c.(*client.Client)
}

// Start builds the sandbox engine and loads every module under ModulesDir.
// A module that fails is refused (logged and recorded in Refusals) and the
// others load regardless; Start fails only when the folder cannot be read or
// the engine cannot start.
func (h *Host) Start(ctx context.Context) error {
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return ErrClosed
	}
	if h.started {
		h.mu.Unlock()
		return errors.New("host: already started")
	}
	h.mu.Unlock()
	if h.load == nil {
		if err := h.startEngine(ctx); err != nil {
			return fmt.Errorf("host: sandbox engine: %w", err)
		}
	}
	files, err := h.moduleFiles()
	if err != nil {
		if h.closeEngine != nil {
			_ = h.closeEngine(ctx)
		}
		return err
	}
	h.runCtx, h.cancelRun = context.WithCancel(context.WithoutCancel(ctx))
	h.mu.Lock()
	h.started = true
	h.mu.Unlock()
	h.startWatch()
	h.log.Info("host starting", "modules_dir", h.dir, "files", len(files))
	for _, f := range files {
		err := h.LoadFile(ctx, f)
		var ref *Refusal
		switch {
		case errors.Is(err, ErrClosed):
			return err
		case err != nil && !errors.As(err, &ref):
			// Not the file's fault (ctx ended, say), so not a refusal, but
			// the file is not served and the operator must hear of it.
			h.log.Error("module not loaded", "file", f, "err", err)
		}
	}
	h.ready.Store(true)
	h.log.Info("host ready", "services", len(h.Services()), "refused", len(h.Refusals()))
	return nil
}

// moduleFiles lists ModulesDir/*.wasm and ModulesDir/<tenant>/*.wasm in a
// stable order, skipping (with a log line) folders that are not tenant names.
func (h *Host) moduleFiles() ([]string, error) {
	entries, err := os.ReadDir(h.dir)
	if err != nil {
		return nil, fmt.Errorf("host: ModulesDir: %w", err)
	}
	var files []string
	for _, e := range entries {
		path := filepath.Join(h.dir, e.Name())
		switch {
		case e.IsDir() && !abi.ValidName(e.Name()):
			h.log.Warn("skipping folder: not a valid tenant name ([a-z][a-z0-9_-]*)", "folder", path)
		case e.IsDir():
			sub, err := os.ReadDir(path)
			if err != nil {
				h.log.Error("skipping tenant folder", "folder", path, "err", err)
				continue
			}
			for _, s := range sub {
				if !s.IsDir() && isModuleFile(s.Name()) {
					files = append(files, filepath.Join(path, s.Name()))
				}
			}
		case isModuleFile(e.Name()):
			files = append(files, path)
		}
	}
	sort.Strings(files)
	return files, nil
}

func isModuleFile(name string) bool {
	return strings.HasSuffix(name, ".wasm") && !strings.HasPrefix(name, ".")
}

// Ready reports that Start has attempted every module file (loaded or
// refused) and Shutdown has not begun.
func (h *Host) Ready() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ready.Load() && !h.closing
}

// Shutdown stops every consumer (prefetched messages go back to their
// queues), lets in-flight calls finish until ctx ends, then closes the
// modules and the engine. Queues are kept: their messages wait for the next
// host. Calling it twice is harmless.
func (h *Host) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return nil
	}
	h.closing = true
	svcs := make([]*service, 0, len(h.services))
	for _, s := range h.services {
		svcs = append(svcs, s)
	}
	h.mu.Unlock()
	h.log.Info("host shutting down", "services", len(svcs))
	h.stopWatch(ctx) // before the drain: no reload may start a version now

	var wg sync.WaitGroup
	errs := make([]error, len(svcs))
	for i, s := range svcs {
		wg.Go(func() { errs[i] = s.stop(ctx, h.log) })
	}
	wg.Wait()
	// Loads still compiling cannot be interrupted; their versions are
	// refused as the host is closing, and the engine must outlive them.
	h.loads.Wait()
	if h.closeEngine != nil {
		if err := h.closeEngine(ctx); err != nil {
			errs = append(errs, fmt.Errorf("sandbox engine: %w", err))
		}
	}
	if h.cancelRun != nil {
		h.cancelRun()
	}
	h.log.Info("host stopped")
	return errors.Join(errs...)
}
