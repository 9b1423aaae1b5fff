package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/host/internal/acl"
)

// version is one loaded module file: the unit that is swapped in, drained
// and closed. Its fields never change after load.
type version struct {
	mod      module
	man      *abi.Manifest
	hash     string
	path     string // absolute
	file     string // relative to ModulesDir, for messages: "shop/orders.wasm"
	tenant   string
	limits   Limits
	codec    *abi.Codec // envelopes in and out of this version, bounded by MaxMessageBytes
	loadedAt time.Time
	log      *slog.Logger // tagged with tenant, service, file

	mu       sync.Mutex
	draining bool
	inflight sync.WaitGroup
}

// enter registers an in-flight call; false once the version is draining, in
// which case the caller looks up the service's current version again.
func (v *version) enter() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.draining {
		return false
	}
	v.inflight.Add(1)
	return true
}

func (v *version) leave() { v.inflight.Done() }

// retire refuses new calls, waits for in-flight ones until ctx ends, then
// closes the module. Calls still running when ctx ends are cut off by Close.
func (v *version) retire(ctx context.Context) error {
	v.mu.Lock()
	v.draining = true
	v.mu.Unlock()
	done := make(chan struct{})
	go func() { v.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		v.log.Warn("drain deadline passed with calls in flight; closing anyway", "hash", short(v.hash))
	}
	if err := v.mod.Close(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("close %s: %w", v.file, err)
	}
	return nil
}

// service is one route this host serves. Its consumer outlives versions: a
// swap only changes the current pointer (and re-serves when the
// subscriptions change).
type service struct {
	route   broker.Route
	current atomic.Pointer[version]
	// topics is what events may be handed to the guest: bindings the broker
	// cannot remove (after a version dropped a subscription) are filtered
	// here instead.
	topics atomic.Pointer[[]string]

	requests    atomic.Uint64 // requests answered
	failures    atomic.Uint64 // requests answered with an error
	expired     atomic.Uint64 // requests dropped because their deadline had passed
	deadLetters atomic.Uint64 // commands, events or malformed messages dead-lettered

	mu       sync.Mutex // guards the fields below
	consumer broker.Consumer
	bindings []acl.Binding
	stopped  bool
}

// acquire returns the version to run a delivery on, registered as in
// flight, or nil when the service is being retired.
func (s *service) acquire() *version {
	for {
		v := s.current.Load()
		if v == nil || v.enter() {
			return v
		}
		// v began draining after we loaded it: a newer version is current.
	}
}

// wants reports whether an event on topic is for the current subscriptions.
func (s *service) wants(topic string) bool {
	p := s.topics.Load()
	if p == nil {
		return false
	}
	for _, pat := range *p {
		if acl.Match(pat, topic) {
			return true
		}
	}
	return false
}

// stop stops consuming, drains and closes the current version. Used by
// Shutdown and RemoveFile; after it no version will ever be swapped in.
func (s *service) stop(ctx context.Context, log *slog.Logger) error {
	s.mu.Lock()
	s.stopped = true
	c := s.consumer
	s.consumer = nil
	s.mu.Unlock()
	var errs []error
	if c != nil {
		if err := c.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: stop consumer: %w", s.route.Tenant, s.route.Service, err))
		}
	}
	if v := s.current.Swap(nil); v != nil {
		if err := v.retire(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		log.Error("service stopped with errors", "tenant", s.route.Tenant, "service", s.route.Service, "err", errors.Join(errs...))
	}
	return errors.Join(errs...)
}

func sameBindings(a, b []acl.Binding) bool {
	return slices.Equal(a, b)
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// short is the hash prefix used in log lines.
func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}
