package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/broker/amqp"
	"github.com/nuropb/nuropb/client"
	"github.com/nuropb/nuropb/cmd/nuropb-host/internal/config"
	"github.com/nuropb/nuropb/gateway"
	"github.com/nuropb/nuropb/gateway/statuspage"
	"github.com/nuropb/nuropb/host"
	"github.com/nuropb/nuropb/metrics"
)

const runUsage = `Usage: nuropb-host run [flags]

Loads every .wasm module under the modules folder (files directly in it
belong to tenant "default", files in modules/<tenant>/ to that tenant), puts
their services on the mesh, answers requests, commands and events, and
reloads modules when their files change. SIGINT or SIGTERM drains in-flight
calls and exits 0.

Settings come from host.toml, then NUROPB_* environment variables, then
flags (each overrides the one before).

Example:
  nuropb-host run --config host.toml
  nuropb-host run --broker amqp://guest:guest@127.0.0.1:5672/ --listen 127.0.0.1:8081
  nuropb-host run --check            # validate the configuration and exit`

// flagKeys maps run's flags to the config keys they override.
var flagKeys = map[string]string{
	"broker":      "broker",
	"modules-dir": "modules_dir",
	"cache-dir":   "cache_dir",
	"listen":      "http.listen",
	"log-level":   "log.level",
	"log-format":  "log.format",
	"watch":       "watch",
	"prefetch":    "prefetch",
}

func runCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", runUsage, stderr)
	configPath := fs.String("config", envOr("NUROPB_CONFIG", "host.toml"), "configuration file (env NUROPB_CONFIG)")
	check := fs.Bool("check", false, "validate the configuration, print it and exit")
	for name, key := range flagKeys {
		fs.String(name, "", "overrides "+key+" in host.toml")
	}
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError{"run takes no arguments"}
	}
	settings, err := loadSettings(fs, *configPath)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(settings.Host.ModulesDir); err != nil || !fi.IsDir() {
		where := "settings"
		if _, err := os.Stat(*configPath); err == nil {
			where = *configPath
		}
		return fmt.Errorf("%s: modules_dir: %q is not a folder (create it, or set modules_dir in host.toml, NUROPB_MODULES_DIR or --modules-dir)", where, settings.Host.ModulesDir)
	}
	if *check {
		fmt.Fprintf(stdout, "configuration ok: broker=%s modules_dir=%s http.listen=%q tenants=%d\n",
			redactURL(settings.Broker), settings.Host.ModulesDir, settings.HTTPListen, len(settings.Host.Tenants))
		return nil
	}
	return serve(settings, stderr)
}

// loadSettings layers host.toml (when present, or required when named
// explicitly), NUROPB_* variables and the flags that were set.
func loadSettings(fs *flag.FlagSet, path string) (*config.Settings, error) {
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	_, envSet := os.LookupEnv("NUROPB_CONFIG")
	file := &config.File{}
	if _, err := os.Stat(path); err == nil || explicit || envSet {
		if file, err = config.Read(path); err != nil {
			return nil, err
		}
	}
	if err := file.ApplyEnv(os.LookupEnv); err != nil {
		return nil, err
	}
	var ferr error
	fs.Visit(func(f *flag.Flag) {
		if key, ok := flagKeys[f.Name]; ok && ferr == nil {
			if err := file.Set(key, f.Value.String()); err != nil {
				ferr = fmt.Errorf("--%s: %w", f.Name, err)
			}
		}
	})
	if ferr != nil {
		return nil, ferr
	}
	return file.Resolve()
}

func newLogger(s *config.Settings, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: s.LogLevel}
	if s.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs the host until SIGINT or SIGTERM, then drains and exits.
func serve(s *config.Settings, logw io.Writer) error {
	logger := newLogger(s, logw)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	b, err := openBroker(ctx, s, logger)
	if err != nil {
		return err
	}
	defer b.Close()
	hc := s.Host
	hc.Logger = logger
	var h *host.Host
	var m *metrics.Metrics
	if s.Metrics && s.HTTPListen != "" {
		// Built before the host, which takes it as its Observer; it reads
		// the host's state only at scrape time, once h is set.
		m = metrics.New(metrics.Config{
			Services:        func() []host.ServiceInfo { return h.Services() },
			Ready:           func() bool { return h.Ready() && brokerConnected(b) },
			BrokerConnected: func() bool { return brokerConnected(b) },
			Broker:          brokerStats(b),
		})
		hc.Observer = m
	}
	h, err = host.New(hc, b)
	if err != nil {
		return err
	}
	if err := h.Start(ctx); err != nil {
		return err
	}

	var srv *http.Server
	var gw *gateway.Gateway
	if s.HTTPListen != "" {
		if gw, err = newGateway(s, h, b, m, logger); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", s.HTTPListen)
		if err != nil {
			_ = h.Shutdown(context.Background())
			return fmt.Errorf("http.listen %s: %w", s.HTTPListen, err)
		}
		srv = &http.Server{Handler: gw, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("http gateway stopped", "err", err)
			}
		}()
		logger.Info("http gateway listening", "addr", ln.Addr().String())
	}
	logger.Info("nuropb-host serving", "broker", redactURL(s.Broker), "modules_dir", hc.ModulesDir)

	<-ctx.Done()
	stop()
	logger.Info("shutting down: draining in-flight calls")
	drain := hc.DrainTimeout
	if drain <= 0 {
		drain = 30 * time.Second
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if srv != nil {
		// HTTP first (no new requests, in-flight ones answered), then the
		// WebSocket connections the server hijacked and does not track, then
		// the host, which answers whatever they were still waiting for.
		_ = srv.Shutdown(shutdownCtx)
		if err := gw.Shutdown(shutdownCtx); err != nil {
			logger.Warn("websocket connections closed before their calls ended", "err", err)
		}
	}
	if err := h.Shutdown(shutdownCtx); err != nil {
		logger.Error("shutdown did not finish cleanly", "err", err)
		return err
	}
	logger.Info("stopped")
	return nil
}

// newGateway builds the HTTP side: the JSON API and WebSocket, metrics
// and the status page, as the settings ask.
func newGateway(s *config.Settings, h *host.Host, b broker.Broker, m *metrics.Metrics, logger *slog.Logger) (*gateway.Gateway, error) {
	gw, err := gateway.New(gateway.Config{Client: client.New(b), Registry: hostRegistry{h, b}, Logger: logger, Broker: b,
		WS: gateway.WSConfig{Origins: s.HTTPOrigins, MaxFrameBytes: s.WebSocket.MaxFrameBytes, MaxInFlight: s.WebSocket.MaxInFlight,
			MaxSubscriptions: s.WebSocket.MaxSubscriptions, SendQueue: s.WebSocket.SendQueue}})
	if err != nil {
		return nil, err
	}
	if m != nil {
		gw.Handle("GET "+s.MetricsPath, m.Handler())
	}
	if s.StatusPage {
		gw.Handle("GET /status/", http.StripPrefix("/status", statuspage.Handler()))
		gw.Handle("GET /{$}", http.RedirectHandler("/status/", http.StatusFound))
	}
	return gw, nil
}

// hostRegistry shows a Host's services and refusals on the gateway.
type hostRegistry struct {
	h *host.Host
	b broker.Broker
}

func (r hostRegistry) ServiceList() any {
	// Empty lists, not null, so JSON callers can iterate without a check.
	services, refusals := r.h.Services(), r.h.Refusals()
	if services == nil {
		services = []host.ServiceInfo{}
	}
	if refusals == nil {
		refusals = []host.Refusal{}
	}
	return map[string]any{"services": services, "refusals": refusals}
}

// Ready is readiness for /readyz: every module file attempted and the
// broker connected, since a host that cannot reach its broker serves nobody.
func (r hostRegistry) Ready() bool { return r.h.Ready() && brokerConnected(r.b) }

// brokerConnected asks a broker that can tell (broker/amqp) whether it is
// connected; the embedded broker cannot be disconnected.
func brokerConnected(b broker.Broker) bool {
	if c, ok := b.(interface{ Connected() bool }); ok {
		return c.Connected()
	}
	return true
}

// brokerStats returns the broker's totals for metrics, or nil when the
// broker keeps none.
func brokerStats(b broker.Broker) func() metrics.BrokerStats {
	ab, ok := b.(*amqp.Broker)
	if !ok {
		return nil
	}
	return func() metrics.BrokerStats {
		st := ab.Stats()
		return metrics.BrokerStats{Reconnects: st.Reconnects, Confirmed: st.Confirmed, Nacked: st.Nacked,
			ConfirmTimeouts: st.ConfirmTimeouts, Redeliveries: st.Redeliveries}
	}
}
