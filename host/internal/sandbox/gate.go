package sandbox

import (
	"context"
	"sync"
)

// gate bounds how many calls of one tenant run guest code at once, across
// every module of the tenant this Engine has loaded. Native guest code is
// only interrupted at its deadline, so a tenant with many instances spinning
// would otherwise take every core until then; with the gate it takes at most
// its slots, and the Go scheduler shares the cores between those and everyone
// else. A slot is held while guest code runs (nuropb_handle, and the start of
// an instance on demand), and given up while the guest waits in nuropb.call or
// nuropb.send: a call chain inside one tenant would otherwise need a slot per
// level and deadlock once deeper than the cap. A nil gate admits everyone.
type gate struct {
	slots chan struct{}
}

func newGate(n int) *gate { return &gate{slots: make(chan struct{}, n)} }

// enter takes a slot, waiting until ctx or stop ends. It reports whether the
// slot was taken.
func (g *gate) enter(ctx context.Context, stop <-chan struct{}) bool {
	if g == nil {
		return true
	}
	select {
	case g.slots <- struct{}{}:
		return true
	default:
	}
	ctx, cancel := bounded(ctx)
	defer cancel()
	select {
	case g.slots <- struct{}{}:
		return true
	case <-ctx.Done():
	case <-stop:
	}
	return false
}

func (g *gate) leave() {
	if g != nil {
		<-g.slots
	}
}

// gateKey identifies a tenant's gate; modules of one tenant that ask for
// different caps (the host never does) get different gates.
type gateKey struct {
	tenant string
	slots  int
}

// gates holds an Engine's gates, created on first use and kept for the
// Engine's life (one small channel per tenant).
type gates struct {
	mu sync.Mutex
	m  map[gateKey]*gate
}

// get returns the tenant's gate of n slots, nil when n is 0 (no cap).
func (gs *gates) get(tenant string, n int) *gate {
	if n <= 0 {
		return nil
	}
	gs.mu.Lock()
	defer gs.mu.Unlock()
	k := gateKey{tenant, n}
	g := gs.m[k]
	if g == nil {
		if gs.m == nil {
			gs.m = map[gateKey]*gate{}
		}
		g = newGate(n)
		gs.m[k] = g
	}
	return g
}
