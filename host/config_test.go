package host

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{ModulesDir: "modules"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		cfg   Config
		field string
	}{
		{"no dir", Config{}, "ModulesDir"},
		{"prefetch", Config{ModulesDir: "m", Prefetch: -2}, "Prefetch"},
		{"drain", Config{ModulesDir: "m", DrainTimeout: -time.Second}, "DrainTimeout"},
		{"pages", Config{ModulesDir: "m", Defaults: Limits{MemoryPages: 70000}}, "Defaults.MemoryPages"},
		{"timeout", Config{ModulesDir: "m", Defaults: Limits{CallTimeout: -1}}, "Defaults.CallTimeout"},
		{"min>max", Config{ModulesDir: "m", Defaults: Limits{MinInstances: 5, MaxInstances: 2}}, "Defaults.MinInstances"},
		{"tiny messages", Config{ModulesDir: "m", Defaults: Limits{MaxMessageBytes: 10}}, "Defaults.MaxMessageBytes"},
		{"tenant name", Config{ModulesDir: "m", Tenants: map[string]Tenant{"Shop": {}}}, `Tenants["Shop"]`},
		{"tenant limits", Config{ModulesDir: "m", Tenants: map[string]Tenant{"shop": {Limits: Limits{MaxCallDepth: -1}}}}, `Tenants["shop"].Limits.MaxCallDepth`},
		{"call grant", Config{ModulesDir: "m", Tenants: map[string]Tenant{"shop": {Call: []string{"billing"}}}}, `Tenants["shop"].Call[0]`},
		{"publish grant", Config{ModulesDir: "m", Tenants: map[string]Tenant{"shop": {Publish: []string{"billing/a..b"}}}}, `Tenants["shop"].Publish[0]`},
		{"subscribe grant", Config{ModulesDir: "m", Tenants: map[string]Tenant{"shop": {Subscribe: []string{"x"}}}}, `Tenants["shop"].Subscribe[0]`},
		{"module key", Config{ModulesDir: "m", Modules: map[string]Limits{"greeter": {}}}, `Modules["greeter"]`},
		{"module limits", Config{ModulesDir: "m", Modules: map[string]Limits{"default/greeter": {MaxInstances: 1, MinInstances: 3}}}, `Modules["default/greeter"].MinInstances`},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), c.field) {
			t.Errorf("%s: got %v, want an error naming %s", c.name, err, c.field)
		}
	}
}

func TestLimitsInherit(t *testing.T) {
	cfg := Config{ModulesDir: "m",
		Defaults: Limits{CallTimeout: 5 * time.Second},
		Tenants:  map[string]Tenant{"shop": {Limits: Limits{MaxCallDepth: 3}}},
		Modules:  map[string]Limits{"shop/orders": {MemoryPages: 512}},
	}
	l := cfg.moduleLimits("shop", "orders")
	d := DefaultLimits()
	if l.MemoryPages != 512 || l.MaxCallDepth != 3 || l.CallTimeout != 5*time.Second || l.MaxInstances != d.MaxInstances {
		t.Fatalf("resolved %+v", l)
	}
	if l := cfg.moduleLimits("other", "x"); l.MaxCallDepth != d.MaxCallDepth || l.CallTimeout != 5*time.Second {
		t.Fatalf("resolved %+v", l)
	}
	if cfg.prefetch(l) != 2*l.MaxInstances || (Config{Prefetch: -1}).prefetch(l) != 0 || (Config{Prefetch: 7}).prefetch(l) != 7 {
		t.Fatal("prefetch")
	}
}

func TestLocate(t *testing.T) {
	h := &Host{dir: "/srv/modules"}
	for _, c := range []struct {
		path, name, tenant string
		bad                bool
	}{
		{path: "/srv/modules/greeter.wasm", name: "greeter.wasm", tenant: "default"},
		{path: "/srv/modules/shop/orders.wasm", name: "shop/orders.wasm", tenant: "shop"},
		{path: "/srv/modules/default/x.wasm", name: "default/x.wasm", tenant: "default"},
		{path: "/srv/modules/Shop/orders.wasm", bad: true},
		{path: "/srv/modules/shop/deep/orders.wasm", bad: true},
		{path: "/srv/other/x.wasm", bad: true},
		{path: "/srv/modules/readme.md", bad: true},
	} {
		_, name, tenant, err := h.locate(c.path)
		if c.bad != (err != nil) || name != c.name || tenant != c.tenant {
			t.Errorf("locate(%q) = %q, %q, %v", c.path, name, tenant, err)
		}
	}
}
