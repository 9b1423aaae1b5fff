package host

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/host/internal/acl"
	"github.com/nuropb/nuropb/host/internal/sandbox"
)

// Config is everything a Host needs, as data. Build it (from host.toml, env,
// flags), call Validate, and hand it to New; the Host never changes it.
// The zero value of every field is safe: limits on, no cross-tenant grants.
type Config struct {
	// ModulesDir holds the module files: ModulesDir/x.wasm belongs to the
	// default tenant, ModulesDir/<tenant>/x.wasm to <tenant>. Required.
	ModulesDir string
	// CacheDir keeps wazero's compiled code between runs; "" disables it.
	CacheDir string
	// Logger receives the host's and the guests' log lines; nil means slog.Default().
	Logger *slog.Logger
	// Prefetch is how many deliveries each service consumer holds (and so
	// handles) at once. 0 means twice the module's MaxInstances, so the next
	// message is ready when an instance frees up; -1 means unlimited, which
	// must be asked for explicitly.
	Prefetch int
	// Watch turns hot reload on. The Host itself only offers LoadFile and
	// RemoveFile; the folder watcher that calls them reads this flag.
	Watch bool
	// Defaults are the limits of every module; zero fields take DefaultLimits.
	Defaults Limits
	// Tenants holds per-tenant limits and grants, keyed by tenant name. A
	// tenant folder without an entry gets Defaults and no grants.
	Tenants map[string]Tenant
	// Modules overrides limits per service, keyed "tenant/service"; zero
	// fields inherit the tenant's limits.
	Modules map[string]Limits
	// DrainTimeout bounds how long an old version may finish its in-flight
	// calls after a swap or removal when the caller's context sets no
	// deadline. 0 means 30 s.
	DrainTimeout time.Duration
	// Observer hears every handled delivery, load, refusal and removal
	// (metrics); nil means nobody listens.
	Observer Observer
}

// Limits bound one module version. In a Config, a zero field means "inherit"
// (module override -> tenant -> Defaults -> DefaultLimits); a negative one
// is invalid.
type Limits struct {
	MemoryPages     uint32        // linear memory cap in 64 KiB pages (at most 65536)
	CallTimeout     time.Duration // cap on one call; a request's own earlier deadline wins
	MinInstances    int           // instances started before a version serves
	MaxInstances    int           // instances running calls in parallel
	MaxMessageBytes int           // any envelope in or out of the module, and every call/send frame
	LogLinesPerSec  int           // guest log lines per second (burst: one second's worth)
	LogBytesPerSec  int           // guest log bytes per second
	MaxCallDepth    int           // nested call/send chain length before resource_exhausted
	// TenantMaxRunning is tenant-wide, not per module: how many calls of all
	// the tenant's modules may run guest code at once. Set it in Defaults or
	// a tenant's Limits; a module override of it is invalid. Calls beyond it
	// wait for a slot (bounded by their deadline); a guest blocked in a
	// nested call gives its slot up meanwhile. It keeps a tenant whose
	// guests spin from holding every core until their deadlines.
	TenantMaxRunning int
}

// Tenant is one tenant's limits and grants. By default a tenant reaches only
// its own services and topics; each grant opens one door to another tenant.
type Tenant struct {
	// Limits for the tenant's modules; zero fields inherit Config.Defaults.
	Limits Limits
	// Call grants calls and commands to "tenant/service" or "tenant/*".
	Call []string
	// Publish grants publishing on "tenant/pattern" topics of another tenant.
	Publish []string
	// Subscribe grants hearing "tenant/pattern" topics of another tenant: a
	// service subscription covered by the pattern is bound on that tenant too.
	Subscribe []string
	// RequireAuth makes every method of every service of the tenant behave
	// as if its manifest said requires_auth: a request or command without
	// claims or a token in its context is refused with forbidden before any
	// guest runs. It is the tenant's policy, so a module cannot opt out of
	// it. Describe still answers without claims: it tells what Services
	// already lists, and callers need it to find out how to authenticate.
	RequireAuth bool
}

// DefaultLimits returns the limits a module gets when nothing is configured:
// 16 MiB of memory, 30 s per call, 1 to 2×GOMAXPROCS instances, 1 MiB
// messages, 100 log lines and 64 KiB of log per second, call depth 8, and
// GOMAXPROCS calls of one tenant running guest code at once.
func DefaultLimits() Limits {
	return Limits{
		MemoryPages:     256,
		CallTimeout:     30 * time.Second,
		MinInstances:    1,
		MaxInstances:    2 * runtime.GOMAXPROCS(0),
		MaxMessageBytes: 1 << 20,
		LogLinesPerSec:  100,
		LogBytesPerSec:  64 << 10,
		MaxCallDepth:    8,
		// One tenant alone can still use every core; several spinning
		// tenants each get at most that many goroutines in the scheduler's
		// round-robin. See RATIONALE.md, "One tenant's spin, another's calls".
		TenantMaxRunning: runtime.GOMAXPROCS(0),
	}
}

// DefaultDrainTimeout is the drain bound used when Config.DrainTimeout is 0.
const DefaultDrainTimeout = 30 * time.Second

// maxPages is WebAssembly's 4 GiB address space in 64 KiB pages.
const maxPages = 65536

// Validate checks the config and names the first bad field, e.g.
// `Tenants["shop"].Call[0]: "shop" is not "tenant/service" or "tenant/*"`.
func (c Config) Validate() error {
	if strings.TrimSpace(c.ModulesDir) == "" {
		return errors.New("ModulesDir: required")
	}
	if c.Prefetch < -1 {
		return fmt.Errorf("Prefetch: %d is invalid (0 = default, -1 = unlimited, or a positive count)", c.Prefetch)
	}
	if c.DrainTimeout < 0 {
		return fmt.Errorf("DrainTimeout: %s is negative", c.DrainTimeout)
	}
	if err := c.Defaults.validate("Defaults"); err != nil {
		return err
	}
	if err := c.Defaults.inherit(DefaultLimits()).validateResolved("Defaults"); err != nil {
		return err
	}
	for _, name := range sortedKeys(c.Tenants) {
		t := c.Tenants[name]
		field := fmt.Sprintf("Tenants[%q]", name)
		if !abi.ValidName(name) {
			return fmt.Errorf("%s: tenant name is not valid (want [a-z][a-z0-9_-]*, at most 63 bytes)", field)
		}
		if err := t.Limits.validate(field + ".Limits"); err != nil {
			return err
		}
		if err := c.tenantLimits(name).validateResolved(field + ".Limits"); err != nil {
			return err
		}
		for i, g := range t.Call {
			if _, err := acl.ParseCallGrant(g); err != nil {
				return fmt.Errorf("%s.Call[%d]: %w", field, i, err)
			}
		}
		for i, g := range t.Publish {
			if _, err := acl.ParseTopicGrant(g); err != nil {
				return fmt.Errorf("%s.Publish[%d]: %w", field, i, err)
			}
		}
		for i, g := range t.Subscribe {
			if _, err := acl.ParseTopicGrant(g); err != nil {
				return fmt.Errorf("%s.Subscribe[%d]: %w", field, i, err)
			}
		}
	}
	for _, key := range sortedKeys(c.Modules) {
		field := fmt.Sprintf("Modules[%q]", key)
		tenant, service, ok := strings.Cut(key, "/")
		if !ok || !abi.ValidName(tenant) || !abi.ValidName(service) {
			return fmt.Errorf("%s: key must be \"tenant/service\" with valid names", field)
		}
		if err := c.Modules[key].validate(field); err != nil {
			return err
		}
		if c.Modules[key].TenantMaxRunning != 0 {
			return fmt.Errorf("%s.TenantMaxRunning: is tenant-wide; set it in Tenants[%q].Limits or Defaults", field, tenant)
		}
		if err := c.moduleLimits(tenant, service).validateResolved(field); err != nil {
			return err
		}
	}
	return nil
}

// validate rejects values that are wrong whatever they inherit.
func (l Limits) validate(field string) error {
	if l.MemoryPages > maxPages {
		return fmt.Errorf("%s.MemoryPages: %d is over WebAssembly's %d pages (4 GiB)", field, l.MemoryPages, maxPages)
	}
	if l.CallTimeout < 0 {
		return fmt.Errorf("%s.CallTimeout: %s is negative", field, l.CallTimeout)
	}
	for _, f := range []struct {
		name  string
		value int
	}{
		{"MinInstances", l.MinInstances}, {"MaxInstances", l.MaxInstances},
		{"MaxMessageBytes", l.MaxMessageBytes}, {"LogLinesPerSec", l.LogLinesPerSec},
		{"LogBytesPerSec", l.LogBytesPerSec}, {"MaxCallDepth", l.MaxCallDepth},
		{"TenantMaxRunning", l.TenantMaxRunning},
	} {
		if f.value < 0 {
			return fmt.Errorf("%s.%s: %d is negative", field, f.name, f.value)
		}
	}
	return nil
}

// validateResolved checks relations between fields once inheritance is done.
func (l Limits) validateResolved(field string) error {
	if l.MinInstances > l.MaxInstances {
		return fmt.Errorf("%s.MinInstances: %d is over MaxInstances (%d)", field, l.MinInstances, l.MaxInstances)
	}
	if l.MaxMessageBytes < 256 {
		return fmt.Errorf("%s.MaxMessageBytes: %d is too small for an envelope (at least 256)", field, l.MaxMessageBytes)
	}
	return nil
}

// inherit fills l's zero fields from parent.
func (l Limits) inherit(parent Limits) Limits {
	inheritField(&l.MemoryPages, parent.MemoryPages)
	inheritField(&l.CallTimeout, parent.CallTimeout)
	inheritField(&l.MinInstances, parent.MinInstances)
	inheritField(&l.MaxInstances, parent.MaxInstances)
	inheritField(&l.MaxMessageBytes, parent.MaxMessageBytes)
	inheritField(&l.LogLinesPerSec, parent.LogLinesPerSec)
	inheritField(&l.LogBytesPerSec, parent.LogBytesPerSec)
	inheritField(&l.MaxCallDepth, parent.MaxCallDepth)
	inheritField(&l.TenantMaxRunning, parent.TenantMaxRunning)
	return l
}

// inheritField sets *v to parent when *v is zero ("inherit").
func inheritField[T comparable](v *T, parent T) {
	var zero T
	if *v == zero {
		*v = parent
	}
}

// tenantLimits resolves a tenant's limits.
func (c Config) tenantLimits(tenant string) Limits {
	return c.Tenants[tenant].Limits.inherit(c.Defaults.inherit(DefaultLimits()))
}

// moduleLimits resolves one service's limits: override, tenant, defaults.
func (c Config) moduleLimits(tenant, service string) Limits {
	return c.Modules[tenant+"/"+service].inherit(c.tenantLimits(tenant))
}

// sandboxLimits maps the host's limits to the sandbox's.
func (l Limits) sandboxLimits() sandbox.Limits {
	return sandbox.Limits{
		MemoryPages:     l.MemoryPages,
		CallTimeout:     l.CallTimeout,
		MinInstances:    l.MinInstances,
		MaxInstances:    l.MaxInstances,
		MaxMessageBytes: l.MaxMessageBytes,
		LogLinesPerSec:  l.LogLinesPerSec,
		LogBytesPerSec:  l.LogBytesPerSec,

		TenantMaxRunning: l.TenantMaxRunning,
	}
}

// prefetch is the consumer prefetch for a module with limits l (0 = unlimited
// for the broker).
func (c Config) prefetch(l Limits) int {
	switch {
	case c.Prefetch < 0:
		return 0
	case c.Prefetch == 0:
		return 2 * l.MaxInstances
	}
	return c.Prefetch
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
