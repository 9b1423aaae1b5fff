package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker"
)

// WSConfig bounds the WebSocket endpoint. Zero fields take the defaults
// named on each; every bound exists so one slow or hostile client costs a
// fixed amount of memory and goroutines, never an unbounded one.
type WSConfig struct {
	// Origins are the origin patterns (host, or scheme://host, with path.Match
	// wildcards) allowed besides the gateway's own origin. Empty means same
	// origin only, which is what stops another site from using a visitor's
	// nuropb_token cookie (cross-site WebSocket hijacking).
	Origins []string
	// MaxFrameBytes caps one incoming frame (default: the codec's MaxFrame,
	// 1 MiB). A bigger frame closes the connection with 1009.
	MaxFrameBytes int
	// MaxInFlight caps the requests and commands one connection has waiting
	// for an answer (default 64); over it a frame is answered at once with
	// resource_exhausted.
	MaxInFlight int
	// MaxSubscriptions caps the live subscriptions of one connection (default 16).
	MaxSubscriptions int
	// SendQueue is how many outgoing frames may wait for a slow client
	// (default 256). When it is full the client is not keeping up: the
	// connection is closed with 1008 rather than buffering without end.
	SendQueue int
	// WriteTimeout bounds writing one frame (default 10 s).
	WriteTimeout time.Duration
	// PingInterval is how often the server pings to find dead peers
	// (default 30 s).
	PingInterval time.Duration
}

func (c WSConfig) withDefaults(codec *abi.Codec) WSConfig {
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = codec.Limits().MaxFrame
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 64
	}
	if c.MaxSubscriptions <= 0 {
		c.MaxSubscriptions = 16
	}
	if c.SendQueue <= 0 {
		c.SendQueue = 256
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 30 * time.Second
	}
	return c
}

// Close codes the gateway uses besides the standard ones.
const (
	// CloseSlowConsumer (1008, policy violation) ends a connection whose
	// client reads too slowly for its send queue.
	CloseSlowConsumer = websocket.StatusPolicyViolation
	// CloseGoingAway (1001) ends every connection when the gateway shuts down.
	CloseGoingAway = websocket.StatusGoingAway
)

// inFrame is every frame a client sends. id is echoed back verbatim (a
// string or a number); it is the client's, never used on the wire.
type inFrame struct {
	Type         string          `json:"type"` // request, command, publish, subscribe, unsubscribe
	ID           json.RawMessage `json:"id"`
	Service      string          `json:"service"` // "[tenant/]service"
	Method       string          `json:"method"`
	Params       json.RawMessage `json:"params"`
	TimeoutMS    int64           `json:"timeout_ms"`
	TraceID      string          `json:"trace_id"`
	Traceparent  string          `json:"traceparent"`
	Topics       []string        `json:"topics"`       // subscribe
	Tenant       string          `json:"tenant"`       // subscribe, publish
	Subscription json.RawMessage `json:"subscription"` // unsubscribe: the id of the subscribe frame
	Topic        string          `json:"topic"`        // publish
	Event        json.RawMessage `json:"event"`        // publish
}

// responseFrame answers a frame that succeeded; result is null for those
// that return nothing (command, publish, unsubscribe).
type responseFrame struct {
	Type    string          `json:"type"` // "response"
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	TraceID string          `json:"trace_id,omitempty"`
}

// errorFrame answers a frame that failed.
type errorFrame struct {
	Type    string          `json:"type"` // "error"
	ID      json.RawMessage `json:"id"`   // null when the frame could not be read
	Error   *abi.Error      `json:"error"`
	TraceID string          `json:"trace_id,omitempty"`
}

// eventFrame carries one event to a subscriber.
type eventFrame struct {
	Type         string          `json:"type"`         // "event"
	Subscription json.RawMessage `json:"subscription"` // id of the subscribe frame that matched
	Tenant       string          `json:"tenant"`
	Topic        string          `json:"topic"`
	Event        json.RawMessage `json:"event"`
	TraceID      string          `json:"trace_id,omitempty"`
	Publisher    string          `json:"publisher,omitempty"` // service that published it, when a service did
}

// maxTopicsPerSubscription bounds the bindings one subscribe frame declares.
const maxTopicsPerSubscription = 32

// wsConn is one WebSocket connection: a reader (the HTTP handler's
// goroutine), a writer, one goroutine per call in flight and the broker's
// handlers of its subscriptions. It owns them all and stops them in close.
type wsConn struct {
	g     *Gateway
	c     *websocket.Conn
	cfg   WSConfig
	ctx   context.Context
	stop  context.CancelFunc
	id    string // random, names the connection's subscription queues
	token string

	out      chan []byte
	inflight chan struct{}
	calls    sync.WaitGroup

	mu      sync.Mutex
	subs    map[string]*wsSub // by the subscribe frame's id
	seq     int
	killed  bool
	dead    chan struct{}  // closed by kill: the writer stops taking frames
	drain   bool           // Shutdown is waiting for calls: take no more
	active  int            // calls in flight, for Shutdown (calls is close's)
	idle    chan struct{}  // closed when drain is set and active reaches 0
	writers sync.WaitGroup // the writer and the closer: serve waits for both
}

// wsSub is one subscription: its own queue on the broker, bound to the
// topics, so that unsubscribing can delete it (the broker cannot unbind).
type wsSub struct {
	id       json.RawMessage
	route    broker.Route
	consumer broker.Consumer
	mu       sync.Mutex
	done     bool
}

func (s *wsSub) active() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.done
}

func (g *Gateway) serveWS(w http.ResponseWriter, r *http.Request) {
	if g.closing() {
		writeJSON(w, http.StatusServiceUnavailable, ErrorBody{Error: abi.Errorf(abi.CodeUnavailable, "gateway shutting down")})
		return
	}
	token := bearer(r)
	if token == "" {
		if ck, err := r.Cookie("nuropb_token"); err == nil {
			token = ck.Value
		}
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: g.ws.Origins})
	if err != nil {
		// Accept has answered (403 for a foreign origin, 426 for a plain GET).
		g.cfg.Logger.Debug("websocket refused", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"), "err", err)
		return
	}
	c.SetReadLimit(int64(g.ws.MaxFrameBytes))
	var idb [5]byte
	_, _ = rand.Read(idb[:])
	// Not r.Context(): after Accept the request's context belongs to a
	// hijacked connection; the gateway's own context ends it on Shutdown.
	ctx, stop := context.WithCancel(g.base)
	wc := &wsConn{g: g, c: c, cfg: g.ws, ctx: ctx, stop: stop, id: hex.EncodeToString(idb[:]), token: token,
		out: make(chan []byte, g.ws.SendQueue), inflight: make(chan struct{}, g.ws.MaxInFlight),
		subs: map[string]*wsSub{}, dead: make(chan struct{})}
	if !g.track(wc) {
		_ = c.Close(CloseGoingAway, "gateway shutting down")
		stop()
		return
	}
	defer g.untrack(wc)
	wc.serve()
}

// serve reads frames until the client goes or the connection is killed,
// then stops everything the connection started.
func (w *wsConn) serve() {
	w.writers.Go(w.writeLoop)
	for {
		typ, data, err := w.c.Read(w.ctx)
		if err != nil {
			break
		}
		if typ != websocket.MessageText {
			w.kill(websocket.StatusUnsupportedData, "frames are JSON text")
			break
		}
		w.handle(data)
	}
	w.close()
}

// close ends the connection's work: calls are cancelled, subscriptions
// stopped and their queues deleted, the writer stopped.
func (w *wsConn) close() {
	w.stop()
	w.calls.Wait()
	w.mu.Lock()
	subs := w.subs
	w.subs = map[string]*wsSub{}
	w.mu.Unlock()
	for _, s := range subs {
		w.unsubscribe(s)
	}
	w.kill(websocket.StatusNormalClosure, "")
	w.writers.Wait()
}

// writeLoop is the only writer of frames (the library allows one at a
// time); it also pings, so a peer that vanished is noticed.
func (w *wsConn) writeLoop() {
	ping := time.NewTicker(w.cfg.PingInterval)
	defer ping.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-w.dead:
			return
		case b := <-w.out:
			ctx, cancel := context.WithTimeout(w.ctx, w.cfg.WriteTimeout)
			err := w.c.Write(ctx, websocket.MessageText, b)
			cancel()
			if err != nil {
				w.kill(CloseSlowConsumer, "write timed out")
				return
			}
		case <-ping.C:
			ctx, cancel := context.WithTimeout(w.ctx, w.cfg.WriteTimeout)
			err := w.c.Ping(ctx)
			cancel()
			if err != nil {
				w.kill(websocket.StatusGoingAway, "no pong")
				return
			}
		}
	}
}

// kill closes the socket with code, once; the reader then ends and close
// cleans up. Close runs off the caller's goroutine (it waits up to 5 s for
// the peer's close frame, and the caller may be a broker handler), owned
// by writers so that serve does not return before it ends.
func (w *wsConn) kill(code websocket.StatusCode, reason string) {
	w.mu.Lock()
	if w.killed {
		w.mu.Unlock()
		return
	}
	w.killed = true
	close(w.dead)
	// Added under mu: close's own kill takes mu before it waits on writers,
	// so this Add is ordered before that Wait.
	w.writers.Go(func() {
		_ = w.c.Close(code, reason)
		w.stop()
	})
	w.mu.Unlock()
	if code != websocket.StatusNormalClosure {
		w.g.cfg.Logger.Info("websocket closed by the gateway", "conn", w.id, "code", int(code), "reason", reason)
	}
}

// send queues a frame for the writer without ever blocking: a full queue
// means the client does not keep up, and the connection is dropped.
func (w *wsConn) send(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		w.g.cfg.Logger.Error("websocket frame not encodable", "conn", w.id, "err", err)
		return
	}
	select {
	case w.out <- b:
	default:
		w.kill(CloseSlowConsumer, fmt.Sprintf("slow consumer: %d frames waiting", cap(w.out)))
	}
}

// drained marks the connection as draining and returns a channel closed
// once no call is in flight.
func (w *wsConn) drained() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.drain {
		w.drain = true
		w.idle = make(chan struct{})
		if w.active == 0 {
			close(w.idle)
		}
	}
	return w.idle
}

func (w *wsConn) fail(id json.RawMessage, traceID string, err error) {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	w.send(errorFrame{Type: "error", ID: id, Error: abi.AsError(err), TraceID: traceID})
}

func (w *wsConn) respond(id json.RawMessage, result json.RawMessage, traceID string) {
	if len(result) == 0 {
		result = json.RawMessage("null")
	}
	w.send(responseFrame{Type: "response", ID: id, Result: result, TraceID: traceID})
}

// handle acts on one frame. Requests and commands run on their own
// goroutine (bounded by MaxInFlight) so a slow service does not hold up
// the others on the same socket.
func (w *wsConn) handle(data []byte) {
	var f inFrame
	if err := json.Unmarshal(data, &f); err != nil {
		w.fail(nil, "", abi.Errorf(abi.CodeBadRequest, "frame is not a JSON object of the documented shape: %v", err))
		return
	}
	if len(f.ID) == 0 || string(f.ID) == "null" || len(f.ID) > 128 {
		w.fail(nil, "", abi.Errorf(abi.CodeBadRequest, "%s frame needs an id (a string or number, at most 128 bytes)", f.Type))
		return
	}
	if w.g.closing() {
		w.fail(f.ID, "", abi.Errorf(abi.CodeUnavailable, "gateway shutting down"))
		return
	}
	switch f.Type {
	case "request", "command":
		select {
		case w.inflight <- struct{}{}:
		default:
			w.fail(f.ID, "", abi.Errorf(abi.CodeResourceExhausted, "%d requests already in flight on this connection", cap(w.inflight)))
			return
		}
		w.mu.Lock()
		if w.drain {
			w.mu.Unlock()
			<-w.inflight
			w.fail(f.ID, "", abi.Errorf(abi.CodeUnavailable, "gateway shutting down"))
			return
		}
		w.active++
		w.calls.Add(1)
		w.mu.Unlock()
		go func() {
			defer w.calls.Done()
			defer func() { <-w.inflight }()
			w.call(&f)
			w.mu.Lock()
			if w.active--; w.active == 0 && w.drain {
				close(w.idle)
			}
			w.mu.Unlock()
		}()
	case "publish":
		w.publish(&f)
	case "subscribe":
		w.subscribe(&f)
	case "unsubscribe":
		w.mu.Lock()
		s := w.subs[string(f.Subscription)]
		delete(w.subs, string(f.Subscription))
		w.mu.Unlock()
		if s == nil {
			w.fail(f.ID, "", abi.Errorf(abi.CodeNotFound, "no subscription %s on this connection", f.Subscription))
			return
		}
		w.unsubscribe(s)
		w.respond(f.ID, nil, "")
	default:
		w.fail(f.ID, "", abi.Errorf(abi.CodeBadRequest, "unknown frame type %q (request, command, publish, subscribe, unsubscribe)", f.Type))
	}
}

// frameTrace is the frame's trace id: trace_id, else a W3C traceparent's.
// A connection's handshake traceparent is not used: one socket carries
// many unrelated operations over hours, each its own trace.
func frameTrace(f *inFrame) string {
	if f.TraceID != "" && len(f.TraceID) <= 128 {
		return f.TraceID
	}
	return parseTraceparent(f.Traceparent)
}

func (w *wsConn) call(f *inFrame) {
	params, err := w.g.cfg.Codec.JSONToCBOR(f.Params)
	if err != nil {
		w.fail(f.ID, "", err)
		return
	}
	if len(params) > 0 && params[0]>>5 != 5 && params[0] != 0xf6 {
		w.fail(f.ID, "", abi.Errorf(abi.CodeBadRequest, "params must be a JSON object of keyword arguments"))
		return
	}
	if params != nil && params[0] == 0xf6 { // JSON null: no params
		params = nil
	}
	env := &abi.Envelope{Service: f.Service, Method: f.Method, Params: params, TraceID: frameTrace(f)}
	if w.token != "" {
		env.Context = map[string]any{"token": w.token}
	}
	if f.TimeoutMS < 0 {
		w.fail(f.ID, "", abi.Errorf(abi.CodeBadRequest, "timeout_ms %d is negative", f.TimeoutMS))
		return
	}
	if f.TimeoutMS > 0 {
		env.SetDeadline(time.Now().Add(min(time.Duration(f.TimeoutMS)*time.Millisecond, w.g.cfg.MaxTimeout)))
	}
	if f.Type == "command" {
		if err := w.g.cfg.Client.Send(w.ctx, env); err != nil {
			w.fail(f.ID, env.TraceID, err)
			return
		}
		w.respond(f.ID, nil, env.TraceID)
		return
	}
	reply, err := w.g.cfg.Client.Call(w.ctx, env)
	if err != nil {
		w.fail(f.ID, env.TraceID, err)
		return
	}
	out, err := w.g.cfg.Codec.CBORToJSON(reply.Result)
	if err != nil {
		w.fail(f.ID, env.TraceID, abi.Errorf(abi.CodeInternal, "result of %s.%s: %v", env.Service, env.Method, err))
		return
	}
	w.respond(f.ID, out, env.TraceID)
}

func (w *wsConn) publish(f *inFrame) {
	event, err := w.g.cfg.Codec.JSONToCBOR(f.Event)
	if err != nil {
		w.fail(f.ID, "", err)
		return
	}
	env := &abi.Envelope{Topic: f.Topic, Event: event, TraceID: frameTrace(f)}
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	if err := w.g.cfg.Client.Publish(ctx, f.Tenant, env); err != nil {
		w.fail(f.ID, env.TraceID, err)
		return
	}
	w.respond(f.ID, nil, env.TraceID)
}

// subscribe serves a queue of the connection's own, named
// "gw-<conn>-<n>" in the subscribed tenant, bound to the topics. Its
// events are forwarded on the socket; unsubscribe and disconnect stop it
// and retire the queue. Both brokers support exactly this through the
// Broker interface, so no broker-specific exclusive queue is needed.
func (w *wsConn) subscribe(f *inFrame) {
	b := w.g.cfg.Broker
	if b == nil {
		w.fail(f.ID, "", abi.Errorf(abi.CodeUnavailable, "this gateway has no broker to subscribe on"))
		return
	}
	tenant := f.Tenant
	if tenant == "" {
		tenant = broker.DefaultTenant
	}
	if !abi.ValidName(tenant) {
		w.fail(f.ID, "", abi.Errorf(abi.CodeBadRequest, "tenant name %q is not valid", tenant))
		return
	}
	if len(f.Topics) == 0 || len(f.Topics) > maxTopicsPerSubscription {
		w.fail(f.ID, "", abi.Errorf(abi.CodeBadRequest, "subscribe needs 1 to %d topic patterns, got %d", maxTopicsPerSubscription, len(f.Topics)))
		return
	}
	spec := broker.ServiceSpec{Prefetch: 16}
	for _, p := range f.Topics {
		if !abi.ValidPattern(p) {
			w.fail(f.ID, "", abi.Errorf(abi.CodeBadRequest, "topic pattern %q is not valid (dot-separated words, * and #)", p))
			return
		}
		spec.Topics = append(spec.Topics, broker.TopicBinding{Tenant: tenant, Pattern: p})
	}
	w.mu.Lock()
	switch {
	case w.subs[string(f.ID)] != nil:
		w.mu.Unlock()
		w.fail(f.ID, "", abi.Errorf(abi.CodeBadRequest, "subscription %s exists on this connection", f.ID))
		return
	case len(w.subs) >= w.cfg.MaxSubscriptions:
		w.mu.Unlock()
		w.fail(f.ID, "", abi.Errorf(abi.CodeResourceExhausted, "%d subscriptions is this connection's limit", w.cfg.MaxSubscriptions))
		return
	}
	w.seq++
	s := &wsSub{id: f.ID, route: broker.Route{Tenant: tenant, Service: "gw-" + w.id + "-" + strconv.Itoa(w.seq)}}
	w.subs[string(f.ID)] = s
	w.mu.Unlock()
	spec.Route = s.route
	c, err := b.Serve(w.ctx, spec, w.forward(s))
	if err != nil {
		w.mu.Lock()
		delete(w.subs, string(f.ID))
		w.mu.Unlock()
		w.fail(f.ID, "", abi.Errorf(abi.CodeUnavailable, "subscribe: %v", err))
		return
	}
	s.mu.Lock()
	s.consumer = c
	s.mu.Unlock()
	result, _ := json.Marshal(map[string]any{"tenant": tenant, "topics": f.Topics})
	w.respond(f.ID, result, "")
}

// forward returns the broker handler of s: each event becomes an event
// frame. Events that arrive after unsubscribe are acked and dropped.
func (w *wsConn) forward(s *wsSub) broker.Handler {
	return func(_ context.Context, d broker.Delivery) {
		if !s.active() {
			_ = d.Ack()
			return
		}
		env, err := w.g.cfg.Codec.DecodeEnvelope(d.Message().Body)
		if err != nil || env.Kind != abi.KindEvent {
			_ = d.Reject(false)
			return
		}
		ev, err := w.g.cfg.Codec.CBORToJSON(env.Event)
		if err != nil {
			_ = d.Reject(false)
			return
		}
		w.send(eventFrame{Type: "event", Subscription: s.id, Tenant: s.route.Tenant, Topic: env.Topic, Event: ev,
			TraceID: env.TraceID, Publisher: env.Service})
		_ = d.Ack()
	}
}

// unsubscribe stops s's consumer and deletes its queue. The sub is marked
// done first, so events still arriving are drained (acked) rather than
// left in a queue Retire would then have to keep.
func (w *wsConn) unsubscribe(s *wsSub) {
	s.mu.Lock()
	s.done = true
	c := s.consumer
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), 5*time.Second)
	defer cancel()
	if c != nil {
		if err := c.Stop(ctx); err != nil {
			w.g.cfg.Logger.Warn("websocket subscription: stop consumer", "queue", s.route.Service, "err", err)
		}
	}
	if err := w.g.cfg.Broker.Retire(ctx, s.route); err != nil {
		w.g.cfg.Logger.Warn("websocket subscription: retire queue", "tenant", s.route.Tenant, "queue", s.route.Service, "err", err)
	}
}

// bearer is the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) string {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	return strings.TrimSpace(tok)
}
