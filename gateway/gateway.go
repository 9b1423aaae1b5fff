package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/client"
)

// Registry is what the gateway shows of the local host: its services and
// whether it is ready. *host.Host implements it.
type Registry interface {
	// ServiceList returns a JSON-encodable list of the services served here.
	ServiceList() any
	// Ready reports whether the host is ready to serve (modules loaded,
	// broker connected).
	Ready() bool
}

// Config configures a Gateway.
type Config struct {
	Client   *client.Client
	Registry Registry // may be nil: /v1/services then describes nothing locally
	Codec    *abi.Codec
	Logger   *slog.Logger
	// MaxTimeout caps the timeout a caller may ask for with ?timeout= or the
	// X-Nuropb-Timeout header (or timeout_ms in a WebSocket frame).
	MaxTimeout time.Duration
	// Broker carries WebSocket subscriptions (a queue per subscription);
	// nil leaves the WebSocket without subscribe.
	Broker broker.Broker
	// WS bounds the WebSocket endpoint GET /v1/ws.
	WS WSConfig
}

// Gateway serves the HTTP API. Build it with New; it is an http.Handler.
// Call Shutdown after http.Server.Shutdown: WebSocket connections are
// hijacked, so the server neither waits for nor closes them.
type Gateway struct {
	cfg Config
	ws  WSConfig
	mux *http.ServeMux

	base       context.Context // parent of every WebSocket connection's context
	cancelBase context.CancelFunc
	mu         sync.Mutex
	shutting   bool
	conns      map[*wsConn]struct{}
	handlers   sync.WaitGroup // WebSocket handlers still running
}

// New returns a Gateway. Client is required.
func New(cfg Config) (*Gateway, error) {
	if cfg.Client == nil {
		return nil, errors.New("gateway: Config.Client is required")
	}
	if cfg.Codec == nil {
		cfg.Codec = abi.Default
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxTimeout <= 0 {
		cfg.MaxTimeout = 5 * time.Minute
	}
	g := &Gateway{cfg: cfg, ws: cfg.WS.withDefaults(cfg.Codec), mux: http.NewServeMux(), conns: map[*wsConn]struct{}{}}
	g.base, g.cancelBase = context.WithCancel(context.Background())
	g.mux.HandleFunc("POST /v1/call/{service}/{method}", g.call)
	g.mux.HandleFunc("POST /v1/call/{tenant}/{service}/{method}", g.call)
	g.mux.HandleFunc("POST /v1/send/{service}/{method}", g.send)
	g.mux.HandleFunc("POST /v1/send/{tenant}/{service}/{method}", g.send)
	g.mux.HandleFunc("POST /v1/publish/{topic}", g.publish)
	g.mux.HandleFunc("POST /v1/publish/{tenant}/{topic}", g.publish)
	g.mux.HandleFunc("GET /v1/services", g.services)
	g.mux.HandleFunc("GET /v1/services/{service}", g.describe)
	g.mux.HandleFunc("GET /v1/services/{tenant}/{service}", g.describe)
	g.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	g.mux.HandleFunc("GET /readyz", g.ready)
	g.mux.HandleFunc("GET /v1/ws", g.serveWS)
	return g, nil
}

// Handle adds a handler to the gateway's mux, for features (metrics, status
// page, WebSocket) that share its listener.
func (g *Gateway) Handle(pattern string, h http.Handler) { g.mux.Handle(pattern, h) }

// ServeHTTP implements http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.mux.ServeHTTP(w, r) }

// ErrorBody is the JSON body of every failed response.
type ErrorBody struct {
	Error *abi.Error `json:"error"`
}

// StatusOf maps an error code to the HTTP status a JSON caller expects.
func StatusOf(code abi.ErrorCode) int {
	switch code {
	case abi.CodeNotFound, abi.CodeMethodNotFound:
		return http.StatusNotFound
	case abi.CodeBadRequest:
		return http.StatusBadRequest
	case abi.CodeTimeout:
		return http.StatusGatewayTimeout
	case abi.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case abi.CodeForbidden:
		return http.StatusForbidden
	case abi.CodeUnavailable:
		return http.StatusServiceUnavailable
	case abi.CodeHandler:
		return http.StatusUnprocessableEntity
	default:
		return http.StatusInternalServerError
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
	_, _ = w.Write([]byte("\n"))
}

func (g *Gateway) fail(w http.ResponseWriter, err error) {
	e := abi.AsError(err)
	writeJSON(w, StatusOf(e.Code), ErrorBody{Error: e})
}

// serviceOf joins the optional tenant path segment to the service name.
func serviceOf(r *http.Request) string {
	if t := r.PathValue("tenant"); t != "" {
		return t + "/" + r.PathValue("service")
	}
	return r.PathValue("service")
}

// envelope builds the request envelope common to call and send: params from
// the JSON body, trace id from X-Trace-Id or W3C traceparent, the bearer
// token into the context, the deadline from ?timeout= or X-Nuropb-Timeout.
func (g *Gateway) envelope(r *http.Request) (*abi.Envelope, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(g.cfg.Codec.Limits().MaxFrame)+1))
	if err != nil {
		return nil, abi.Errorf(abi.CodeBadRequest, "reading body: %v", err)
	}
	params, err := g.cfg.Codec.JSONToCBOR(body)
	if err != nil {
		return nil, err
	}
	env := &abi.Envelope{Service: serviceOf(r), Method: r.PathValue("method"), Params: params, TraceID: traceID(r)}
	if len(params) > 0 && params[0]>>5 != 5 {
		return nil, abi.Errorf(abi.CodeBadRequest, "params must be a JSON object of keyword arguments")
	}
	if tok := bearer(r); tok != "" {
		env.Context = map[string]any{"token": tok}
	}
	timeout := r.URL.Query().Get("timeout")
	if timeout == "" {
		timeout = r.Header.Get("X-Nuropb-Timeout")
	}
	if timeout != "" {
		d, err := time.ParseDuration(timeout)
		if err != nil || d <= 0 {
			return nil, abi.Errorf(abi.CodeBadRequest, "timeout %q is not a positive duration such as 5s", timeout)
		}
		env.SetDeadline(time.Now().Add(min(d, g.cfg.MaxTimeout)))
	}
	return env, nil
}

// traceID takes the caller's trace id: X-Trace-Id, else the trace-id field of
// a W3C traceparent header ("00-<32 hex>-<16 hex>-<2 hex>").
func traceID(r *http.Request) string {
	if t := r.Header.Get("X-Trace-Id"); t != "" && len(t) <= 128 {
		return t
	}
	return parseTraceparent(r.Header.Get("traceparent"))
}

// parseTraceparent returns the trace-id field of a W3C traceparent value,
// or "" when v is not one.
func parseTraceparent(v string) string {
	parts := strings.Split(v, "-")
	if len(parts) == 4 && len(parts[1]) == 32 {
		return parts[1]
	}
	return ""
}

func (g *Gateway) call(w http.ResponseWriter, r *http.Request) {
	env, err := g.envelope(r)
	if err != nil {
		g.fail(w, err)
		return
	}
	reply, err := g.cfg.Client.Call(r.Context(), env)
	w.Header().Set("X-Trace-Id", env.TraceID)
	if reply != nil && reply.ServedBy != "" {
		w.Header().Set("X-Nuropb-Served-By", reply.ServedBy)
	}
	if err != nil {
		g.fail(w, err)
		return
	}
	out, err := g.cfg.Codec.CBORToJSON(reply.Result)
	if err != nil {
		g.fail(w, abi.Errorf(abi.CodeInternal, "result of %s.%s: %v", env.Service, env.Method, err))
		return
	}
	writeRaw(w, http.StatusOK, out)
}

func (g *Gateway) send(w http.ResponseWriter, r *http.Request) {
	env, err := g.envelope(r)
	if err != nil {
		g.fail(w, err)
		return
	}
	if err := g.cfg.Client.Send(r.Context(), env); err != nil {
		g.fail(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"id": env.ID, "trace_id": env.TraceID})
}

func (g *Gateway) publish(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(g.cfg.Codec.Limits().MaxFrame)+1))
	if err != nil {
		g.fail(w, abi.Errorf(abi.CodeBadRequest, "reading body: %v", err))
		return
	}
	event, err := g.cfg.Codec.JSONToCBOR(body)
	if err != nil {
		g.fail(w, err)
		return
	}
	env := &abi.Envelope{Topic: r.PathValue("topic"), Event: event, TraceID: traceID(r)}
	if err := g.cfg.Client.Publish(r.Context(), r.PathValue("tenant"), env); err != nil {
		g.fail(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"id": env.ID, "trace_id": env.TraceID})
}

func (g *Gateway) services(w http.ResponseWriter, _ *http.Request) {
	if g.cfg.Registry == nil {
		writeJSON(w, http.StatusOK, []any{})
		return
	}
	writeJSON(w, http.StatusOK, g.cfg.Registry.ServiceList())
}

func (g *Gateway) describe(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	d, err := g.cfg.Client.Describe(ctx, serviceOf(r))
	if err != nil {
		g.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (g *Gateway) ready(w http.ResponseWriter, _ *http.Request) {
	if g.cfg.Registry != nil && !g.cfg.Registry.Ready() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (g *Gateway) closing() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.shutting
}

// track registers a WebSocket connection; false once Shutdown has begun.
func (g *Gateway) track(w *wsConn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shutting {
		return false
	}
	g.conns[w] = struct{}{}
	g.handlers.Add(1)
	return true
}

func (g *Gateway) untrack(w *wsConn) {
	g.mu.Lock()
	delete(g.conns, w)
	g.mu.Unlock()
	g.handlers.Done()
}

// Shutdown ends the WebSocket side gracefully: new connections and new
// frames are refused (unavailable), calls in flight are answered, queued
// frames are written, then every connection is closed with 1001 (going
// away) and its subscription queues deleted. When ctx ends first, the
// remaining calls are cancelled and the connections closed anyway.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	g.shutting = true
	conns := make([]*wsConn, 0, len(g.conns))
	for w := range g.conns {
		conns = append(conns, w)
	}
	g.mu.Unlock()
	for _, w := range conns {
		select {
		case <-w.drained():
		case <-ctx.Done():
		}
		// Give the writer the answers just queued before the close frame.
		for len(w.out) > 0 && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		w.kill(CloseGoingAway, "gateway shutting down")
	}
	done := make(chan struct{})
	go func() { g.handlers.Wait(); close(done) }()
	select {
	case <-done:
		g.cancelBase()
		return nil
	case <-ctx.Done():
		g.cancelBase()
		<-done
		return ctx.Err()
	}
}
