package config

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/host"
)

// Settings is a validated configuration, ready to wire a host.
type Settings struct {
	Broker       string // "memory" or an amqp:// URL
	HTTPListen   string
	HTTPOrigins  []string
	StatusPage   bool
	WebSocket    WebSocketLimits
	Metrics      bool
	MetricsPath  string
	LogLevel     slog.Level
	LogFormat    string
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	Host         host.Config // Logger is left for the caller to set
}

// WebSocketLimits are the [http.websocket] bounds; 0 means the gateway's default.
type WebSocketLimits struct {
	MaxFrameBytes, MaxInFlight, MaxSubscriptions, SendQueue int
}

// Resolve fills unset keys from Defaults and validates everything, naming the
// key and the file in every error.
func (f *File) Resolve() (*Settings, error) {
	d := Defaults()
	where := "defaults"
	if f.path != "" {
		where = f.path
	}
	fail := func(key, format string, args ...any) error {
		return fmt.Errorf("%s: %s: %s", where, key, fmt.Sprintf(format, args...))
	}
	s := &Settings{
		Broker:      or(f.Broker, d.Broker),
		HTTPListen:  or(f.HTTP.Listen, d.HTTP.Listen),
		HTTPOrigins: f.HTTP.Origins,
		LogFormat:   or(f.Log.Format, d.Log.Format),
	}
	if f.HTTP.Listen == "off" {
		s.HTTPListen = ""
	}
	if s.HTTPListen != "" {
		if _, _, err := net.SplitHostPort(s.HTTPListen); err != nil {
			return nil, fail("http.listen", "%q is not host:port (e.g. 127.0.0.1:8080) or \"off\"", s.HTTPListen)
		}
	}
	if s.Broker != "memory" && !strings.HasPrefix(s.Broker, "amqp://") && !strings.HasPrefix(s.Broker, "amqps://") {
		return nil, fail("broker", "%q is neither \"memory\" nor an amqp:// URL", s.Broker)
	}
	if err := s.LogLevel.UnmarshalText([]byte(or(f.Log.Level, d.Log.Level))); err != nil {
		return nil, fail("log.level", "%q is not one of debug, info, warn, error", f.Log.Level)
	}
	if s.LogFormat != "text" && s.LogFormat != "json" {
		return nil, fail("log.format", "%q is not text or json", s.LogFormat)
	}
	s.StatusPage = *pick(f.HTTP.StatusPage, d.HTTP.StatusPage)
	s.Metrics = *pick(f.Metrics.Enabled, d.Metrics.Enabled)
	s.MetricsPath = or(f.Metrics.Path, d.Metrics.Path)
	if !strings.HasPrefix(s.MetricsPath, "/") || strings.ContainsAny(s.MetricsPath, " {}") {
		return nil, fail("metrics.path", "%q is not an absolute URL path such as \"/metrics\"", s.MetricsPath)
	}
	ws := f.HTTP.WebSocket
	for _, l := range []struct {
		key string
		v   *int
		dst *int
	}{
		{"http.websocket.max_frame_bytes", ws.MaxFrameBytes, &s.WebSocket.MaxFrameBytes},
		{"http.websocket.max_in_flight", ws.MaxInFlight, &s.WebSocket.MaxInFlight},
		{"http.websocket.max_subscriptions", ws.MaxSubscriptions, &s.WebSocket.MaxSubscriptions},
		{"http.websocket.send_queue", ws.SendQueue, &s.WebSocket.SendQueue},
	} {
		if l.v == nil {
			continue
		}
		if *l.v < 1 {
			return nil, fail(l.key, "%d must be at least 1", *l.v)
		}
		*l.dst = *l.v
	}
	s.ReconnectMin, s.ReconnectMax = f.AMQP.ReconnectMin.Duration, f.AMQP.ReconnectMax.Duration
	if s.ReconnectMin > 0 && s.ReconnectMax > 0 && s.ReconnectMin > s.ReconnectMax {
		return nil, fail("amqp.reconnect_min", "%s is more than amqp.reconnect_max %s", s.ReconnectMin, s.ReconnectMax)
	}

	hc := host.Config{
		ModulesDir: or(f.ModulesDir, d.ModulesDir),
		CacheDir:   or(f.CacheDir, DefaultCacheDir()),
		Watch:      *pick(f.Watch, d.Watch),
		Defaults:   f.Limits.over(host.DefaultLimits()),
		Tenants:    map[string]host.Tenant{},
		Modules:    map[string]host.Limits{},
	}
	if f.Prefetch != nil {
		if *f.Prefetch < -1 {
			return nil, fail("prefetch", "%d is not valid (0 means twice max_instances, -1 unlimited)", *f.Prefetch)
		}
		hc.Prefetch = *f.Prefetch
	}
	if f.DrainTimeout.Set {
		hc.DrainTimeout = f.DrainTimeout.Duration
	}
	for name, t := range f.Tenants {
		if !abi.ValidName(name) {
			return nil, fail("tenants."+name, "tenant name is not valid (lower case letters, digits, _ and -, starting with a letter)")
		}
		hc.Tenants[name] = host.Tenant{Limits: t.Limits.over(host.Limits{}), Call: t.Call, Publish: t.Publish, Subscribe: t.Subscribe, RequireAuth: t.RequireAuth}
	}
	for key, l := range f.Module {
		tenant, service, ok := strings.Cut(key, "/")
		if !ok || !abi.ValidName(tenant) || !abi.ValidName(service) {
			return nil, fail("module."+key, "module keys are \"tenant/service\", e.g. [module.\"default/audit\"]")
		}
		hc.Modules[key] = l.over(host.Limits{})
	}
	if err := hc.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	s.Host = hc
	return s, nil
}

// over returns base with every field set in l replacing base's.
func (l Limits) over(base host.Limits) host.Limits {
	set(&base.MemoryPages, l.MemoryPages)
	if l.CallTimeout.Set {
		base.CallTimeout = l.CallTimeout.Duration
	}
	set(&base.MinInstances, l.MinInstances)
	set(&base.MaxInstances, l.MaxInstances)
	set(&base.MaxMessageBytes, l.MaxMessageBytes)
	set(&base.LogLinesPerSec, l.LogLinesPerSec)
	set(&base.LogBytesPerSec, l.LogBytesPerSec)
	set(&base.MaxCallDepth, l.MaxCallDepth)
	set(&base.TenantMaxRunning, l.TenantMaxRunning)
	return base
}

// set overrides *dst with *v when the key was written (v not nil).
func set[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func pick[T any](v, def *T) *T {
	if v == nil {
		return def
	}
	return v
}
