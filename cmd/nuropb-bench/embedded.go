package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker/memory"
	"github.com/nuropb/nuropb/client"
	"github.com/nuropb/nuropb/host"
)

// tinyParams is the trivial method's param map, {"x": 1}.
var tinyParams = abi.RawValue{0xa1, 0x61, 'x', 0x01}

// echoEnvelope is a fresh request for service.echo (Call fills in ids and
// deadline, so envelopes are not reused).
func echoEnvelope(service string) *abi.Envelope {
	return &abi.Envelope{Service: service, Method: "echo", Params: tinyParams}
}

// benchLimits pre-starts every instance a module may have, so a run
// measures serving, not instance start-up (Python's takes ~0.4 s).
func benchLimits() host.Limits {
	l := host.DefaultLimits()
	return host.Limits{MinInstances: l.MaxInstances, MaxInstances: l.MaxInstances}
}

// embedded is a Host serving a temporary modules folder on the in-process
// broker.
type embedded struct {
	h   *host.Host
	b   *memory.Broker
	dir string
}

// startEmbedded writes files (path relative to the modules folder -> bytes)
// and serves them; a refused module is an error.
func startEmbedded(ctx context.Context, b *bench, files map[string][]byte, cfg host.Config) (*embedded, error) {
	dir, err := os.MkdirTemp("", "nuropb-bench-modules-")
	if err != nil {
		return nil, err
	}
	if err := writeModules(dir, files); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	br, err := memory.New(memory.Config{})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cfg.ModulesDir = dir
	cfg.CacheDir = filepath.Join(b.opts.cacheDir, "wazero-cache")
	cfg.Logger = b.log
	h, err := host.New(cfg, br)
	if err != nil {
		br.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	e := &embedded{h: h, b: br, dir: dir}
	if err := h.Start(ctx); err != nil {
		e.close()
		return nil, err
	}
	if refs := h.Refusals(); len(refs) > 0 {
		e.close()
		return nil, fmt.Errorf("module refused: %s", refs[0].Error())
	}
	return e, nil
}

func writeModules(dir string, files map[string][]byte) error {
	for rel, data := range files {
		path := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (e *embedded) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = e.h.Shutdown(ctx)
	_ = e.b.Close()
	_ = os.RemoveAll(e.dir)
}

// client returns a client of tenant on the embedded broker.
func (e *embedded) client(tenant string) *client.Client {
	return client.New(e.b, client.WithTenant(tenant))
}

// echoCall returns a call of service.echo through c.
func echoCall(c *client.Client, service string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := c.Call(ctx, echoEnvelope(service))
		return err
	}
}

// calls is the guest calls completed so far by every service's serving
// version: requests, commands and events alike.
func calls(h *host.Host) uint64 {
	var n uint64
	for _, s := range h.Services() {
		n += s.Calls
	}
	return n
}
