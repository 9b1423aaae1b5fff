package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "host.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSampleConfig keeps the repository's documented host.toml valid.
func TestSampleConfig(t *testing.T) {
	f, err := Read("../../../../host.toml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := f.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if s.Broker != "memory" || s.HTTPListen != "127.0.0.1:8080" || s.Host.Modules["default/audit"].MaxInstances != 1 {
		t.Fatalf("sample host.toml resolved to %+v", s)
	}
	if acme := s.Host.Tenants["acme"]; acme.Limits.CallTimeout != 5*time.Second || acme.Call[0] != "default/greeter" {
		t.Fatalf("tenant acme resolved to %+v", acme)
	}
}

func TestBadValuesNameTheKey(t *testing.T) {
	tests := []struct{ body, want string }{
		{`brokr = "memory"`, "unknown key brokr"},
		{"[limits]\nmemory_pags = 3", "unknown key limits.memory_pags"},
		{`broker = "nats://x"`, "broker:"},
		{"[log]\nlevel = \"loud\"", "log.level"},
		{"[log]\nformat = \"xml\"", "log.format"},
		{"[limits]\ncall_timeout = \"soon\"", "call_timeout"},
		{"[limits]\ncall_timeout = \"-1s\"", "call_timeout"},
		{"[tenants.Bad]\ncall = []", "tenants.Bad"},
		{"[module.greeter]\nmax_instances = 1", "module.greeter"},
		{"prefetch = -5", "prefetch"},
		{"[limits]\nmax_instances = -1", "MaxInstances"},
		{"broker = ", "line 1"},
		{"[http.websocket]\nmax_in_flight = 0", "http.websocket.max_in_flight"},
		{"[http.websocket]\nsend_qeue = 3", "unknown key http.websocket.send_qeue"},
		{"[metrics]\npath = \"metrics\"", "metrics.path"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			path := write(t, tt.body)
			f, err := Read(path)
			if err == nil {
				_, err = f.Resolve()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("got %v, want an error naming %q and the file", err, tt.want)
			}
		})
	}
}

func TestPrecedence(t *testing.T) {
	f, err := Read(write(t, "broker = \"memory\"\n[http]\nlisten = \"127.0.0.1:1\"\n[log]\nlevel = \"warn\""))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"NUROPB_HTTP_LISTEN": "127.0.0.1:2", "NUROPB_LOG_LEVEL": "debug"}
	if err := f.ApplyEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if err := f.Set("log.level", "error"); err != nil { // a flag beats the environment
		t.Fatal(err)
	}
	s, err := f.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if s.HTTPListen != "127.0.0.1:2" || s.LogLevel.String() != "ERROR" {
		t.Fatalf("precedence wrong: listen=%s level=%s", s.HTTPListen, s.LogLevel)
	}
	bad := func(k string) (string, bool) { return "maybe", k == "NUROPB_WATCH" }
	if err := f.ApplyEnv(bad); err == nil || !strings.Contains(err.Error(), "NUROPB_WATCH") {
		t.Fatalf("bad env value: %v", err)
	}
}

func TestDefaultsWithoutFile(t *testing.T) {
	s, err := (&File{}).Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if s.Broker != "memory" || s.Host.ModulesDir != "modules" || !s.Host.Watch || s.Host.Defaults.MaxInstances == 0 {
		t.Fatalf("defaults: %+v", s)
	}
}

func TestTenantPolicyKeys(t *testing.T) {
	f, err := Read(write(t, "[limits]\ntenant_max_running = 3\n[tenants.shop]\nrequire_auth = true\n[tenants.shop.limits]\ntenant_max_running = 1"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := f.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if s.Host.Defaults.TenantMaxRunning != 3 || !s.Host.Tenants["shop"].RequireAuth || s.Host.Tenants["shop"].Limits.TenantMaxRunning != 1 {
		t.Fatalf("tenant policy keys not applied: %+v", s.Host)
	}
	f, _ = Read(write(t, "[module.\"shop/x\"]\ntenant_max_running = 1"))
	if _, err := f.Resolve(); err == nil {
		t.Fatal("tenant_max_running per module must be refused")
	}
}

func TestListenAddressChecked(t *testing.T) {
	f, err := Read(write(t, "[http]\nlisten = \"nonsense\""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Resolve(); err == nil || !strings.Contains(err.Error(), "http.listen") {
		t.Fatalf("got %v, want an error naming http.listen", err)
	}
}
