package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/host/internal/acl"
	"github.com/nuropb/nuropb/host/internal/sandbox"
)

// Refusal records a module file the host would not serve. It is also the
// error LoadFile returns in that case (test with errors.As).
type Refusal struct {
	Time   time.Time `json:"time"`
	File   string    `json:"file"` // relative to ModulesDir, e.g. "shop/orders.wasm"
	Tenant string    `json:"tenant"`
	Reason string    `json:"reason"`
}

func (r *Refusal) Error() string { return "module " + r.File + " refused: " + r.Reason }

// maxRefusals bounds the refusal history so a file rewritten in a loop
// cannot grow memory.
const maxRefusals = 256

// fileState serializes the lifecycle of one module file. sem is a one-slot
// lock that a context can abandon.
type fileState struct {
	sem     chan struct{}
	serving bool
	route   broker.Route
}

func (f *fileState) lock(ctx context.Context) error {
	select {
	case f.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fileState) unlock() { <-f.sem }

// locate returns a file's absolute path, display name and tenant, from where
// it sits: ModulesDir/x.wasm is the default tenant's, ModulesDir/t/x.wasm t's.
func (h *Host) locate(path string) (abs, name, tenant string, err error) {
	abs, err = filepath.Abs(path)
	if err != nil {
		return "", "", "", err
	}
	rel, err := filepath.Rel(h.dir, abs)
	if err != nil || strings.HasPrefix(rel, "..") {
		return "", "", "", fmt.Errorf("%s is not inside the modules folder %s", path, h.dir)
	}
	name = filepath.ToSlash(rel)
	parts := strings.Split(name, "/")
	switch {
	case len(parts) == 1:
		tenant = broker.DefaultTenant
	case len(parts) == 2 && abi.ValidName(parts[0]):
		tenant = parts[0]
	case len(parts) == 2:
		return "", "", "", fmt.Errorf("%s: folder %q is not a valid tenant name ([a-z][a-z0-9_-]*)", name, parts[0])
	default:
		return "", "", "", fmt.Errorf("%s: modules sit directly in the modules folder or in a tenant folder, not deeper", name)
	}
	if !isModuleFile(parts[len(parts)-1]) {
		return "", "", "", fmt.Errorf("%s: not a module file (*.wasm)", name)
	}
	return abs, name, tenant, nil
}

func (h *Host) fileState(abs string) *fileState {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.files[abs]
	if f == nil {
		f = &fileState{sem: make(chan struct{}, 1)}
		h.files[abs] = f
	}
	return f
}

// refuse logs and records why a file is not served, and returns the record.
func (h *Host) refuse(name, tenant string, reason error) *Refusal {
	var le *sandbox.LoadError
	msg := reason.Error()
	if errors.As(reason, &le) {
		msg = le.Step + ": " + le.Reason
	}
	r := &Refusal{Time: time.Now(), File: name, Tenant: tenant, Reason: msg}
	h.log.Error("module refused", "file", name, "tenant", tenant, "reason", msg)
	h.observer().Refused(*r)
	h.mu.Lock()
	h.refusals = append(h.refusals, *r)
	if len(h.refusals) > maxRefusals {
		h.refusals = slices.Delete(h.refusals, 0, len(h.refusals)-maxRefusals)
	}
	h.mu.Unlock()
	return r
}

// LoadFile loads the module file at path and serves it: a new service, or a
// new version of the service this file already serves. The new version is
// compiled, validated and pre-started off the hot path, then swapped in
// atomically; in-flight calls finish on the old version, which is then
// closed. Identical content is a no-op. A refused file (returned as
// *Refusal) leaves whatever was serving untouched. Calls for the same file
// are serialized; different files proceed in parallel.
func (h *Host) LoadFile(ctx context.Context, path string) error {
	if err := h.beginLoad(); err != nil {
		return err
	}
	defer h.loads.Done()
	abs, name, tenant, err := h.locate(path)
	if err != nil {
		return h.refuse(filepath.Base(path), "", err)
	}
	f := h.fileState(abs)
	if err := f.lock(ctx); err != nil {
		return err
	}
	defer f.unlock()

	data, err := os.ReadFile(abs)
	if err != nil {
		return h.refuse(name, tenant, fmt.Errorf("read: %w", err))
	}
	hash := hashOf(data)
	var svc *service
	guess := strings.TrimSuffix(filepath.Base(abs), ".wasm")
	if f.serving {
		h.mu.Lock()
		svc = h.services[f.route]
		h.mu.Unlock()
		if cur := svc.current.Load(); cur != nil && cur.hash == hash {
			h.log.Debug("module unchanged", "file", name, "hash", short(hash))
			return nil
		}
		guess = f.route.Service
	}

	// Limits are keyed by service name, known only once the manifest is
	// read: load with the likely name's limits, and again if they differ.
	limits := h.cfg.moduleLimits(tenant, guess)
	v, err := h.newVersion(ctx, abs, name, tenant, data, limits)
	if err != nil {
		return h.refuse(name, tenant, err)
	}
	if want := h.cfg.moduleLimits(tenant, v.man.Service); want != limits {
		_ = v.mod.Close(ctx)
		if v, err = h.newVersion(ctx, abs, name, tenant, data, want); err != nil {
			return h.refuse(name, tenant, err)
		}
	}
	if f.serving && v.man.Service != f.route.Service {
		_ = v.mod.Close(ctx)
		return h.refuse(name, tenant, fmt.Errorf("declares service %q but this file serves %q; remove the file and add it under a new name to rename a service",
			v.man.Service, f.route.Service))
	}
	if f.serving {
		return h.swap(ctx, svc, v)
	}
	route := broker.Route{Tenant: tenant, Service: v.man.Service}
	if err := h.serve(ctx, route, v); err != nil {
		_ = v.mod.Close(ctx)
		if errors.Is(err, ErrClosed) {
			return err
		}
		return h.refuse(name, tenant, err)
	}
	f.serving, f.route = true, route
	return nil
}

// hashOf is a file's content hash as the sandbox computes it: hex SHA-256.
func hashOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// live reports whether the host accepts LoadFile and RemoveFile calls.
func (h *Host) live() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.liveLocked()
}

// liveLocked is live with h.mu held.
func (h *Host) liveLocked() error {
	switch {
	case h.closing:
		return ErrClosed
	case !h.started:
		return ErrNotStarted
	}
	return nil
}

// beginLoad admits a LoadFile and counts it, so Shutdown can wait for every
// compile in progress before closing the engine: wazero panics when its
// engine is closed under a compile.
func (h *Host) beginLoad() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.liveLocked(); err != nil {
		return err
	}
	h.loads.Add(1)
	return nil
}

// newVersion compiles, validates and pre-starts one module version.
func (h *Host) newVersion(ctx context.Context, abs, name, tenant string, data []byte, l Limits) (*version, error) {
	codec, err := abi.NewCodec(abi.Limits{MaxFrame: l.MaxMessageBytes})
	if err != nil {
		return nil, err
	}
	imp := &imports{h: h, tenant: tenant, file: name, limits: l, codec: codec, policy: h.policy(tenant)}
	imp.setLogger(h.log.With("tenant", tenant, "file", name))
	mod, err := h.load(ctx, sandbox.Source{Name: name, Tenant: tenant, Bytes: data, Limits: l.sandboxLimits()}, imp)
	if err != nil {
		return nil, err
	}
	man := mod.Manifest()
	if man == nil {
		_ = mod.Close(ctx)
		return nil, errors.New("manifest: the module did not describe itself")
	}
	if err := man.Validate(); err != nil {
		_ = mod.Close(ctx)
		return nil, fmt.Errorf("manifest: %w", err)
	}
	v := &version{mod: mod, man: man, hash: mod.Hash(), path: abs, file: name, tenant: tenant, limits: l, codec: codec,
		loadedAt: time.Now(), log: h.log.With("tenant", tenant, "service", man.Service, "file", name)}
	imp.setVersion(v)
	return v, nil
}

// serve registers a new route and starts consuming it.
func (h *Host) serve(ctx context.Context, route broker.Route, v *version) error {
	svc := &service{route: route}
	svc.current.Store(v)
	bindings := h.policy(route.Tenant).Bindings(v.man.Subscriptions)
	topics := slices.Clone(v.man.Subscriptions)
	svc.topics.Store(&topics)

	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return ErrClosed
	}
	if other := h.services[route]; other != nil {
		h.mu.Unlock()
		return fmt.Errorf("service %q of tenant %q is already served by %s", route.Service, route.Tenant, other.current.Load().file)
	}
	h.services[route] = svc // reserved now, so a second file declaring the service is refused
	h.mu.Unlock()

	c, err := h.b.Serve(h.runCtx, h.spec(route, bindings, v.limits), svc.handler(h))
	if err != nil {
		h.mu.Lock()
		delete(h.services, route)
		h.mu.Unlock()
		return fmt.Errorf("serve on the broker: %w", err)
	}
	svc.mu.Lock()
	svc.consumer, svc.bindings = c, bindings
	svc.mu.Unlock()
	h.logLoaded("module loaded", v, nil)
	h.loaded(v, nil)
	return nil
}

func (h *Host) spec(route broker.Route, bindings []acl.Binding, l Limits) broker.ServiceSpec {
	spec := broker.ServiceSpec{Route: route, Prefetch: h.cfg.prefetch(l)}
	for _, b := range bindings {
		spec.Topics = append(spec.Topics, broker.TopicBinding{Tenant: b.Tenant, Pattern: b.Pattern})
	}
	return spec
}

// swap makes v the serving version of svc and retires the old one.
func (h *Host) swap(ctx context.Context, svc *service, v *version) error {
	bindings := h.policy(svc.route.Tenant).Bindings(v.man.Subscriptions)
	svc.mu.Lock()
	if svc.stopped {
		svc.mu.Unlock()
		_ = v.mod.Close(ctx)
		return ErrClosed
	}
	var oldConsumer broker.Consumer
	if !sameBindings(bindings, svc.bindings) {
		// The broker cannot unbind, so subscriptions change by serving a
		// second consumer with the new bindings before stopping the first;
		// until then events for either set are let through.
		old := svc.current.Load()
		both := union(old.man.Subscriptions, v.man.Subscriptions)
		svc.topics.Store(&both)
		c, err := h.b.Serve(h.runCtx, h.spec(svc.route, bindings, v.limits), svc.handler(h))
		if err != nil {
			topics := slices.Clone(old.man.Subscriptions)
			svc.topics.Store(&topics)
			svc.mu.Unlock()
			_ = v.mod.Close(ctx)
			return h.refuse(v.file, v.tenant, fmt.Errorf("serve new subscriptions on the broker: %w", err))
		}
		oldConsumer, svc.consumer, svc.bindings = svc.consumer, c, bindings
	}
	old := svc.current.Swap(v)
	topics := slices.Clone(v.man.Subscriptions)
	svc.topics.Store(&topics)
	svc.mu.Unlock()
	h.logLoaded("module swapped", v, old)
	h.loaded(v, old)

	dctx, cancel := h.drainContext(ctx)
	defer cancel()
	if oldConsumer != nil {
		if err := oldConsumer.Stop(dctx); err != nil {
			v.log.Warn("stopping the previous consumer", "err", err)
		}
	}
	if old != nil {
		if err := old.retire(dctx); err != nil {
			old.log.Warn("closing the previous version", "err", err)
		}
	}
	return nil
}

// drainContext bounds a drain by DrainTimeout unless ctx already has a deadline.
func (h *Host) drainContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, h.cfg.DrainTimeout)
}

// RemoveFile retires the service the file at path serves: it stops
// consuming, drains in-flight calls, closes the module and retires the
// route on the broker so that later requests fail with not_found. A file
// that serves nothing is a no-op.
func (h *Host) RemoveFile(ctx context.Context, path string) error {
	if err := h.live(); err != nil {
		return err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	f := h.fileState(abs)
	if err := f.lock(ctx); err != nil {
		return err
	}
	defer f.unlock()
	if !f.serving {
		return nil
	}
	h.mu.Lock()
	svc := h.services[f.route]
	delete(h.services, f.route)
	h.mu.Unlock()
	f.serving = false
	if svc == nil {
		return nil
	}
	dctx, cancel := h.drainContext(ctx)
	defer cancel()
	err = svc.stop(dctx, h.log)
	if rerr := h.b.Retire(ctx, svc.route); rerr != nil {
		err = errors.Join(err, fmt.Errorf("retire %s/%s: %w", svc.route.Tenant, svc.route.Service, rerr))
	}
	h.log.Info("module removed", "tenant", svc.route.Tenant, "service", svc.route.Service, "err", err)
	h.observer().Removed(svc.route.Tenant, svc.route.Service)
	return err
}

func (h *Host) logLoaded(msg string, v, old *version) {
	attrs := []any{"tenant", v.tenant, "service", v.man.Service, "version", v.man.Version, "file", v.file,
		"hash", short(v.hash), "methods", publicMethods(v.man)}
	if len(v.man.Subscriptions) > 0 {
		attrs = append(attrs, "subscriptions", v.man.Subscriptions)
	}
	if old != nil {
		attrs = append(attrs, "previous_version", old.man.Version, "previous_hash", short(old.hash))
	}
	h.log.Info(msg, attrs...)
}

// publicMethods lists the methods callers may see, sorted.
func publicMethods(m *abi.Manifest) []string {
	var out []string
	for name, meth := range m.Methods {
		if !meth.Hidden {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}
