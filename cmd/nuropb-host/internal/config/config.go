package config

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// File is host.toml as written. Pointer fields distinguish "not set" from a
// zero value so that defaults and overrides layer correctly.
type File struct {
	Broker       string            `toml:"broker"`
	ModulesDir   string            `toml:"modules_dir"`
	CacheDir     string            `toml:"cache_dir"`
	Watch        *bool             `toml:"watch"`
	Prefetch     *int              `toml:"prefetch"`
	DrainTimeout Duration          `toml:"drain_timeout"`
	HTTP         HTTP              `toml:"http"`
	Log          Log               `toml:"log"`
	AMQP         AMQP              `toml:"amqp"`
	Metrics      Metrics           `toml:"metrics"`
	Limits       Limits            `toml:"limits"`
	Module       map[string]Limits `toml:"module"`
	Tenants      map[string]Tenant `toml:"tenants"`
	path         string            `toml:"-"`
}

// HTTP configures the HTTP gateway.
type HTTP struct {
	Listen     string    `toml:"listen"`      // "" disables the gateway
	Origins    []string  `toml:"origins"`     // allowed WebSocket origins
	StatusPage *bool     `toml:"status_page"` // serve the status page at / and /status/
	WebSocket  WebSocket `toml:"websocket"`
}

// WebSocket bounds GET /v1/ws; unset fields take the gateway's defaults.
type WebSocket struct {
	MaxFrameBytes    *int `toml:"max_frame_bytes"`
	MaxInFlight      *int `toml:"max_in_flight"`
	MaxSubscriptions *int `toml:"max_subscriptions"`
	SendQueue        *int `toml:"send_queue"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Enabled *bool  `toml:"enabled"` // serve Prometheus metrics on the gateway's listener
	Path    string `toml:"path"`    // where; "/metrics" by default
}

// Log configures the host's logs.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text or json
}

// AMQP tunes the RabbitMQ broker.
type AMQP struct {
	ReconnectMin Duration `toml:"reconnect_min"`
	ReconnectMax Duration `toml:"reconnect_max"`
}

// Limits are the per-module limits; unset fields inherit.
type Limits struct {
	MemoryPages     *uint32  `toml:"memory_pages"`
	CallTimeout     Duration `toml:"call_timeout"`
	MinInstances    *int     `toml:"min_instances"`
	MaxInstances    *int     `toml:"max_instances"`
	MaxMessageBytes *int     `toml:"max_message_bytes"`
	LogLinesPerSec  *int     `toml:"log_lines_per_sec"`
	LogBytesPerSec  *int     `toml:"log_bytes_per_sec"`
	MaxCallDepth    *int     `toml:"max_call_depth"`
	// TenantMaxRunning caps the calls of one tenant running guest code at
	// once, so a tenant spinning on every core cannot starve the others.
	TenantMaxRunning *int `toml:"tenant_max_running"`
}

// Tenant is one [tenants.<name>] table.
type Tenant struct {
	Limits    Limits   `toml:"limits"`
	Call      []string `toml:"call"`      // "tenant/service" or "tenant/*" of other tenants
	Publish   []string `toml:"publish"`   // "tenant/topic-pattern"
	Subscribe []string `toml:"subscribe"` // "tenant/topic-pattern"
	// RequireAuth refuses every request and command to the tenant that
	// carries no claims or token (forbidden), whatever the manifests say.
	RequireAuth bool `toml:"require_auth"`
}

// Duration is a time.Duration written as text ("30s", "1m30s").
type Duration struct {
	time.Duration
	Set bool
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration such as \"30s\"", b)
	}
	if v <= 0 {
		return fmt.Errorf("%q must be positive", b)
	}
	d.Duration, d.Set = v, true
	return nil
}

// Read parses host.toml at path. A missing file is an error; unknown keys are
// errors naming the key and the file.
func Read(path string) (*File, error) {
	f := &File{path: path}
	md, err := toml.DecodeFile(path, f)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s: %s", path, pe.ErrorWithPosition())
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return nil, fmt.Errorf("%s: unknown key %s (check the spelling; every key is listed in the sample host.toml)", path, strings.Join(keys, ", "))
	}
	return f, nil
}

// Path is the file the settings came from, or "" for defaults only.
func (f *File) Path() string { return f.path }

// Env names the environment variables ApplyEnv reads, with the key each
// overrides.
var Env = map[string]string{
	"NUROPB_BROKER":      "broker",
	"NUROPB_MODULES_DIR": "modules_dir",
	"NUROPB_CACHE_DIR":   "cache_dir",
	"NUROPB_WATCH":       "watch",
	"NUROPB_PREFETCH":    "prefetch",
	"NUROPB_HTTP_LISTEN": "http.listen",
	"NUROPB_LOG_LEVEL":   "log.level",
	"NUROPB_LOG_FORMAT":  "log.format",
}

// ApplyEnv overrides keys from NUROPB_* variables found by lookup (os.LookupEnv
// in production). Errors name the variable.
func (f *File) ApplyEnv(lookup func(string) (string, bool)) error {
	for name, key := range Env {
		v, ok := lookup(name)
		if !ok {
			continue
		}
		if err := f.Set(key, v); err != nil {
			return fmt.Errorf("environment %s: %w", name, err)
		}
	}
	return nil
}

// Set overrides one top-level key by name, as flags and env variables do.
func (f *File) Set(key, value string) error {
	switch key {
	case "broker":
		f.Broker = value
	case "modules_dir":
		f.ModulesDir = value
	case "cache_dir":
		f.CacheDir = value
	case "watch":
		b, err := strconv.ParseBool(value)
		if err != nil {
			return fmt.Errorf("watch: %q is not true or false", value)
		}
		f.Watch = &b
	case "prefetch":
		n, err := strconv.Atoi(value)
		if err != nil {
			return fmt.Errorf("prefetch: %q is not a whole number", value)
		}
		f.Prefetch = &n
	case "http.listen":
		f.HTTP.Listen = value
	case "log.level":
		f.Log.Level = value
	case "log.format":
		f.Log.Format = value
	default:
		return fmt.Errorf("unknown key %q", key)
	}
	return nil
}

// Defaults returns the settings used when host.toml says nothing.
func Defaults() *File {
	watch := true
	on := true
	return &File{Broker: "memory", ModulesDir: "modules", HTTP: HTTP{Listen: "127.0.0.1:8080", StatusPage: &on},
		Log: Log{Level: "info", Format: "text"}, Watch: &watch, Metrics: Metrics{Enabled: &on, Path: "/metrics"}}
}

// DefaultCacheDir is where compiled modules are cached when cache_dir is
// unset: the user's cache directory, so every checkout shares it.
func DefaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return d + "/nuropb/wazero"
	}
	return ""
}
