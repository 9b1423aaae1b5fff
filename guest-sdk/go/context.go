package nuropb

import (
	"fmt"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/guest-sdk/go/internal/wire"
)

// Log levels for Context.Log and Log; they are abi's, which match log/slog's.
const (
	LevelDebug = abi.LogDebug
	LevelInfo  = abi.LogInfo
	LevelWarn  = abi.LogWarn
	LevelError = abi.LogError
)

// Context is what a handler knows about the call it serves, and its way to
// reach the rest of the mesh through the host. It is valid only until the
// handler returns; do not keep it or use it from other goroutines.
type Context struct {
	in      *instance
	env     *wire.Envelope
	claims  map[string]any
	decoded bool
}

func (c *Context) reset(in *instance, env *wire.Envelope) {
	*c = Context{in: in, env: env}
}

// TraceID returns the trace id the call carries through every nested call.
func (c *Context) TraceID() string { return string(c.env.TraceID) }

// Tenant returns the tenant the host runs this call for.
func (c *Context) Tenant() string { return string(c.env.Tenant) }

// Method returns the method being called; empty for an event.
func (c *Context) Method() string { return string(c.env.Method) }

// Deadline returns when the host will stop the call, and false when the
// envelope carries none (the host's default applies). Its shape is
// context.Context's.
func (c *Context) Deadline() (time.Time, bool) {
	if c.env.Deadline <= 0 {
		return time.Time{}, false
	}
	return time.UnixMilli(c.env.Deadline), true
}

// Claims returns the envelope's context map: the caller's claims and token as
// the host passed them, or nil when there are none. It is decoded on first
// use and shared by later calls; treat it as read-only.
func (c *Context) Claims() map[string]any {
	if !c.decoded {
		c.decoded = true
		if raw := c.env.Context; len(raw) > 0 && raw[0] != wire.Null {
			if abi.Default.Unmarshal(raw, &c.claims) != nil {
				c.claims = nil
			}
		}
	}
	return c.claims
}

// Claim returns one entry of Claims.
func (c *Context) Claim(key string) (any, bool) {
	v, ok := c.Claims()[key]
	return v, ok
}

// Log sends msg to the host's log at level, tagged by the host with the
// tenant, service and trace id.
func (c *Context) Log(level abi.LogLevel, msg string) { c.in.host.Log(level, msg) }

// Logf is Log with a format.
func (c *Context) Logf(level abi.LogLevel, format string, args ...any) {
	c.in.host.Log(level, fmt.Sprintf(format, args...))
}

// Call calls service.method with params (a struct, a map with string keys,
// abi.RawValue or nil) and waits for the reply, decoding its result into
// result (a pointer, or nil to ignore it). The caller's context map travels
// with the call; the host stamps tenant, trace id and deadline. A failed call
// returns an *abi.Error with the code the callee, or the host, gave; returned
// unchanged from a handler it keeps that code, so wrap it (fmt.Errorf with
// %v) to report it as this service's own failure instead.
func (c *Context) Call(service, method string, params, result any) error {
	in := c.in
	req := wire.Envelope{
		Kind:     []byte(abi.KindRequest),
		Service:  []byte(service),
		Method:   []byte(method),
		TraceID:  c.env.TraceID,
		Context:  c.env.Context,
		Deadline: c.env.Deadline,
	}
	var err error
	if req.Params, err = encodeParams(params); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	in.call = wire.AppendEnvelope(in.call[:0], &req)
	reply := in.host.Call(in.call)
	if len(reply) == 0 {
		return abi.Errorf(abi.CodeUnavailable, "call %s.%s: the host gave no reply", service, method)
	}
	defer in.mem.freeSlice(reply)
	var rep wire.Envelope
	if err := wire.Parse(reply, limits, &rep); err != nil {
		return abi.Errorf(abi.CodeInternal, "call %s.%s: bad reply: %s", service, method, abi.AsError(err).Message)
	}
	if len(rep.Error) > 0 {
		e := &abi.Error{}
		if err := abi.Default.Unmarshal(rep.Error, e); err != nil || e.Code == "" {
			return abi.Errorf(abi.CodeInternal, "call %s.%s: bad error in reply", service, method)
		}
		return e
	}
	if result == nil || len(rep.Result) == 0 {
		return nil
	}
	if err := abi.Default.Unmarshal(rep.Result, result); err != nil {
		return abi.Errorf(abi.CodeBadRequest, "call %s.%s: result does not decode into %T: %s", service, method, result, decodeMessage(err))
	}
	return nil
}

// Send sends a command to service.method: delivered once, no reply. The
// error is the host's refusal (for instance not_found or forbidden), not
// the command's outcome.
func (c *Context) Send(service, method string, params any) error {
	cmd := wire.Envelope{
		Kind:    []byte(abi.KindCommand),
		Service: []byte(service),
		Method:  []byte(method),
		TraceID: c.env.TraceID,
		Context: c.env.Context,
	}
	var err error
	if cmd.Params, err = encodeParams(params); err != nil {
		return err
	}
	if err := cmd.Validate(); err != nil {
		return err
	}
	return c.send(&cmd)
}

// Publish publishes event (any value the codec can encode, or abi.RawValue)
// on a concrete topic, to every service subscribed to a matching pattern.
func (c *Context) Publish(topic string, event any) error {
	if !abi.ValidTopic(topic) {
		return abi.Errorf(abi.CodeBadRequest, "publish: %q is not a valid topic (dot-separated words)", topic)
	}
	ev := wire.Envelope{
		Kind:    []byte(abi.KindEvent),
		Topic:   []byte(topic),
		TraceID: c.env.TraceID,
		Context: c.env.Context,
	}
	var err error
	if ev.Event, err = appendResult(nil, event); err != nil {
		return err
	}
	return c.send(&ev)
}

func (c *Context) send(e *wire.Envelope) error {
	in := c.in
	in.call = wire.AppendEnvelope(in.call[:0], e)
	return abi.SendError(in.host.Send(in.call))
}

// encodeParams encodes call params, which must encode as a map (or be nil).
func encodeParams(params any) ([]byte, error) {
	if params == nil {
		return nil, nil
	}
	b, err := appendResult(nil, params)
	if err != nil {
		return nil, err
	}
	if b[0] == wire.Null {
		return nil, nil
	}
	if b[0]>>5 != wire.MajorMap {
		return nil, abi.Errorf(abi.CodeBadRequest, "params must encode as a map of keyword params, not %T", params)
	}
	return b, nil
}

// Log sends msg to the host's log at level from outside a handler (from init,
// say). Before Register it writes to standard error.
func Log(level abi.LogLevel, msg string) {
	if current != nil {
		current.host.Log(level, msg)
		return
	}
	fallbackHost{}.Log(level, msg)
}
