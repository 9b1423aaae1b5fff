package host

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/client"
	"github.com/nuropb/nuropb/host/internal/nuropbwire"
)

// replyTimeout bounds publishing one response, which must happen even when
// the handler's context has ended (a hard stop still owes the caller).
const replyTimeout = 10 * time.Second

// handler returns the broker.Handler of svc.
func (s *service) handler(h *Host) broker.Handler {
	return func(ctx context.Context, d broker.Delivery) {
		v := s.acquire()
		if v == nil {
			// Retired between delivery and dispatch: give it back to the queue
			// for another consumer (or the dead-letter queue once it expires).
			_ = d.Reject(true)
			return
		}
		defer v.leave()
		h.dispatch(ctx, s, v, d)
	}
}

// dispatch handles one delivery on version v: exactly one response per
// request that has somewhere to go, then exactly one Ack or Reject.
func (h *Host) dispatch(ctx context.Context, s *service, v *version, d broker.Delivery) {
	msg := d.Message()
	start := time.Now()
	var env *abi.Envelope
	var err error
	if nuropbwire.Is(msg) { // a NuroPb client; h.reply answers it in JSON
		env, err = nuropbwire.Decode(v.codec, msg, time.Now())
	} else {
		env, err = v.codec.DecodeEnvelope(msg.Body)
	}
	if err != nil {
		h.malformed(ctx, s, v, d, err)
		h.handled(v, nil, start, abi.AsError(err).Code, d.Redelivered())
		return
	}
	switch env.Kind {
	case abi.KindRequest:
		if dl, ok := env.DeadlineTime(); ok && !time.Now().Before(dl) {
			// The caller has already been told "timeout"; running it now would
			// only do work nobody waits for, and answer twice in effect.
			s.expired.Add(1)
			v.log.Debug("request dropped: deadline passed before it was handled", "method", env.Method,
				"trace_id", env.TraceID, "late_by", time.Since(dl))
			_ = d.Ack()
			return
		}
		reply := h.request(ctx, v, env)
		h.handled(v, env, start, codeOf(reply), d.Redelivered())
		if reply.Error != nil && ctx.Err() != nil {
			// Stopped hard mid-call: the broker has already put the delivery
			// back for another host, whose answer is the one to give.
			_ = d.Reject(true)
			return
		}
		s.requests.Add(1)
		if reply.Error != nil {
			s.failures.Add(1)
		}
		if msg.ReplyTo != "" {
			h.reply(ctx, v, msg, reply)
		} else {
			v.log.Warn("request without reply_to: nowhere to send the response", "method", env.Method, "trace_id", env.TraceID)
		}
		_ = d.Ack()
	case abi.KindCommand, abi.KindEvent:
		if env.Kind == abi.KindEvent && !s.wants(env.Topic) {
			v.log.Debug("event dropped: no current subscription matches", "topic", env.Topic, "trace_id", env.TraceID)
			_ = d.Ack()
			return
		}
		err := h.oneWay(ctx, v, env)
		h.handled(v, env, start, abi.CodeOf(err), d.Redelivered())
		if err != nil {
			s.deadLetters.Add(1)
			v.log.Warn(string(env.Kind)+" failed; dead-lettered", "method", env.Method, "topic", env.Topic,
				"trace_id", env.TraceID, "code", abi.CodeOf(err), "err", err, "redelivered", d.Redelivered())
			_ = d.Reject(false)
			return
		}
		_ = d.Ack()
	default:
		h.malformed(ctx, s, v, d, abi.Errorf(abi.CodeBadRequest, "a %s envelope cannot be delivered to a service", env.Kind))
	}
}

// malformed answers an undecodable delivery: bad_request (or
// resource_exhausted for size) to its caller when there is one to answer,
// otherwise to the dead-letter queue.
func (h *Host) malformed(ctx context.Context, s *service, v *version, d broker.Delivery, err error) {
	msg := d.Message()
	id := msg.CorrelationID
	var head struct {
		ID      string `cbor:"id"`
		TraceID string `cbor:"trace_id"`
	}
	if v.codec.Unmarshal(msg.Body, &head) == nil && head.ID != "" {
		id = head.ID
	}
	v.log.Warn("malformed message", "type", msg.Type, "bytes", len(msg.Body), "correlation_id", msg.CorrelationID,
		"reply_to", msg.ReplyTo != "", "trace_id", head.TraceID, "err", err)
	if msg.ReplyTo == "" || id == "" || errors.Is(err, nuropbwire.ErrProtocol) {
		s.deadLetters.Add(1)
		_ = d.Reject(false)
		return
	}
	e := abi.AsError(err)
	e = &abi.Error{Code: e.Code, Message: fmt.Sprintf("%s/%s: %s", v.tenant, v.man.Service, e.Message)}
	s.requests.Add(1)
	s.failures.Add(1)
	h.reply(ctx, v, msg, &abi.Envelope{Kind: abi.KindResponse, ID: id, TraceID: head.TraceID, Error: e})
	_ = d.Ack()
}

// request runs a request and returns its response, never nil.
func (h *Host) request(ctx context.Context, v *version, env *abi.Envelope) *abi.Envelope {
	if env.Method == client.DescribeMethod {
		return h.describe(v, env)
	}
	if err := h.admit(v, env); err != nil {
		return errorReply(env, err)
	}
	return h.invoke(ctx, v, env)
}

// admit applies the host's rules that come before the guest: the method
// exists and the caller may see it, authentication is present when the
// manifest demands it, and the params match the declared ones.
func (h *Host) admit(v *version, env *abi.Envelope) error {
	// The tenant's policy is the operator's, not the module's: it holds
	// whatever the manifest says, and for callers inside the tenant too,
	// since a message's tenant field is only as trustworthy as the broker.
	// It comes first: without claims nothing else about the request matters.
	if h.cfg.Tenants[v.tenant].RequireAuth && !hasClaims(env.Context) {
		return abi.Errorf(abi.CodeForbidden, "%s/%s: tenant %q requires authentication: no claims or token in the context",
			v.tenant, v.man.Service, v.tenant)
	}
	m, ok := v.man.Methods[env.Method]
	if !ok || (m.Hidden && env.Tenant != v.tenant) {
		// A hidden method is indistinguishable from a missing one outside
		// its tenant, so its existence does not leak.
		return abi.Errorf(abi.CodeMethodNotFound, "%s/%s has no method %q", v.tenant, v.man.Service, env.Method)
	}
	if m.RequiresAuth && !hasClaims(env.Context) {
		return abi.Errorf(abi.CodeForbidden, "%s/%s.%s requires authentication: no claims or token in the context",
			v.tenant, v.man.Service, env.Method)
	}
	return checkParams(v, env.Method, m, env.Params)
}

// hasClaims reports whether ctx carries something to authorize on: a
// non-empty "claims" map or a non-empty "token" string. Anything else,
// including a malformed value, counts as none (fail closed).
func hasClaims(ctx map[string]any) bool {
	switch c := ctx["claims"].(type) {
	case map[string]any:
		if len(c) > 0 {
			return true
		}
	case map[any]any:
		if len(c) > 0 {
			return true
		}
	}
	t, _ := ctx["token"].(string)
	return t != ""
}

// invoke hands env to the guest with the host's fields stamped, and turns
// whatever comes back into a well-formed response.
func (h *Host) invoke(ctx context.Context, v *version, env *abi.Envelope) *abi.Envelope {
	ctx = h.callContext(ctx, v, env)
	in, err := v.codec.EncodeEnvelope(env)
	if err != nil {
		return errorReply(env, err)
	}
	out, err := v.mod.Handle(ctx, in)
	if err != nil {
		e := abi.AsError(err)
		if e.Code == abi.CodeTrapped || e.Code == abi.CodeInternal {
			v.log.Warn("guest call failed", "method", env.Method, "trace_id", env.TraceID, "code", e.Code, "err", e.Message)
		}
		return errorReply(env, e)
	}
	reply, err := v.codec.UnmarshalEnvelope(out)
	if err != nil {
		v.log.Warn("guest returned a malformed reply", "method", env.Method, "trace_id", env.TraceID, "err", err)
		return errorReply(env, abi.Errorf(abi.CodeInternal, "module %s (%s/%s %s) returned a malformed reply: %v",
			v.file, v.tenant, v.man.Service, v.man.Version, abi.AsError(err).Message))
	}
	reply.Kind = abi.KindResponse
	reply.ID, reply.TraceID = env.ID, env.TraceID
	reply.Service, reply.Method = env.Service, env.Method
	reply.Tenant, reply.ServedBy = v.tenant, v.hash
	reply.Depth, reply.Deadline = 0, 0
	reply.Topic, reply.Event, reply.Params = "", nil, nil
	return reply
}

// callContext stamps env (tenant, depth, trace id, effective deadline,
// served_by) and returns the context the guest runs under: its deadline is
// the earlier of the request's and now+CallTimeout, and it carries what the
// imports need to stamp the guest's own calls.
func (h *Host) callContext(ctx context.Context, v *version, env *abi.Envelope) context.Context {
	deadline := time.Now().Add(v.limits.CallTimeout)
	// Commands and events may have waited in a queue for a long time; their
	// deadline was about delivery, so they get the module's full CallTimeout.
	if dl, ok := env.DeadlineTime(); ok && env.Kind == abi.KindRequest && dl.Before(deadline) {
		deadline = dl
	}
	if env.TraceID == "" {
		env.TraceID = client.NewTraceID()
	}
	env.Depth = max(env.Depth, 0)
	env.Tenant = v.tenant
	env.Service = v.man.Service
	env.ServedBy = v.hash
	env.SetDeadline(deadline)
	return &guestCtx{Context: ctx, deadline: deadline, info: callInfo{traceID: env.TraceID, depth: env.Depth}}
}

// guestCtx is the context of one guest call: ctx with the call's deadline
// and callInfo, in one allocation. Its Done is ctx's (a hard stop), and does
// not close at the deadline: sandbox.Module.Handle enforces the deadline with
// its per-instance timer, and whatever the guest calls out to gets its own
// context bounded by Deadline (client.Call), so a context.WithDeadline here
// (a timer and a cancel registration per call) would only duplicate them.
type guestCtx struct {
	context.Context
	deadline time.Time
	info     callInfo
}

func (c *guestCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *guestCtx) Value(key any) any {
	if key == (callInfoKey{}) {
		return c.info
	}
	return c.Context.Value(key)
}

// oneWay runs a command or an event; an error means dead-letter it.
func (h *Host) oneWay(ctx context.Context, v *version, env *abi.Envelope) error {
	if env.Kind == abi.KindCommand {
		if err := h.admit(v, env); err != nil {
			return err
		}
	}
	reply := h.invoke(ctx, v, env)
	if reply.Error != nil {
		return reply.Error
	}
	return nil
}

// describe answers the reserved describe method from the manifest, without
// touching the guest. Hidden methods are listed only to the own tenant.
func (h *Host) describe(v *version, env *abi.Envelope) *abi.Envelope {
	man := *v.man
	if env.Tenant != v.tenant {
		man.Methods = make(map[string]abi.Method, len(v.man.Methods))
		for name, m := range v.man.Methods {
			if !m.Hidden {
				man.Methods[name] = m
			}
		}
	}
	d := client.Description{Manifest: man, Tenant: v.tenant, Hash: v.hash, File: v.file, LoadedAt: v.loadedAt}
	body, err := v.codec.Marshal(d)
	if err != nil {
		return errorReply(env, err)
	}
	r := env.Reply()
	r.Result, r.Tenant, r.ServedBy = body, v.tenant, v.hash
	return r
}

// reply publishes the one response of a request. A response that cannot be
// encoded within the limits becomes an error response, so the caller always
// hears back.
func (h *Host) reply(ctx context.Context, v *version, req broker.Message, reply *abi.Envelope) {
	if nuropbwire.Is(req) {
		h.replyNuroPb(ctx, v, req, reply)
		return
	}
	body, err := v.codec.EncodeEnvelope(reply)
	if err != nil {
		e := abi.AsError(err)
		body, err = abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindResponse, ID: reply.ID, TraceID: reply.TraceID,
			Tenant: reply.Tenant, ServedBy: reply.ServedBy,
			Error: &abi.Error{Code: e.Code, Message: fmt.Sprintf("reply of %s/%s.%s: %s", v.tenant, v.man.Service, reply.Method, e.Message)}})
		if err != nil {
			v.log.Error("cannot encode even an error reply", "trace_id", reply.TraceID, "err", err)
			return
		}
	}
	corr := req.CorrelationID
	if corr == "" {
		corr = reply.ID
	}
	rctx := newReplyCtx(ctx)
	defer rctx.stop()
	if err := h.b.Reply(rctx, req.ReplyTo, broker.Message{Body: body, ContentType: broker.ContentTypeCBOR,
		Type: string(abi.KindResponse), CorrelationID: corr}); err != nil {
		v.log.Warn("reply not delivered", "trace_id", reply.TraceID, "err", err)
	}
}

// replyNuroPb answers a NuroPb client with NuroPb's JSON response.
func (h *Host) replyNuroPb(ctx context.Context, v *version, req broker.Message, reply *abi.Envelope) {
	out, err := nuropbwire.Response(v.codec, req, reply)
	if err != nil {
		v.log.Error("cannot encode a NuroPb response", "trace_id", reply.TraceID, "err", err)
		return
	}
	rctx := newReplyCtx(ctx)
	defer rctx.stop()
	if err := h.b.Reply(rctx, req.ReplyTo, out); err != nil {
		v.log.Warn("reply not delivered", "trace_id", reply.TraceID, "err", err)
	}
}

// errorReply is the response carrying err.
func errorReply(req *abi.Envelope, err error) *abi.Envelope {
	r := req.Reply()
	r.Error = abi.AsError(err)
	return r
}

// checkParams checks params against the method's declared params: a CBOR
// map, every required one present (and not null), each of its declared
// type. Undeclared params are left to the guest. Methods that declare no
// params are not decoded at all.
func checkParams(v *version, method string, m abi.Method, raw abi.RawValue) error {
	if len(m.Params) == 0 {
		return nil
	}
	params := map[string]any{}
	if len(raw) > 0 {
		var decoded any
		if err := v.codec.Unmarshal(raw, &decoded); err != nil {
			return abi.Errorf(abi.CodeBadRequest, "%s.%s: params: %s", v.man.Service, method, abi.AsError(err).Message)
		}
		switch p := decoded.(type) {
		case map[string]any:
			params = p
		case nil:
		default:
			return abi.Errorf(abi.CodeBadRequest, "%s.%s: params must be a map of keyword arguments", v.man.Service, method)
		}
	}
	for _, p := range m.Params {
		val, ok := params[p.Name]
		if !ok || val == nil {
			if p.Required {
				return &abi.Error{Code: abi.CodeBadRequest, Details: map[string]any{"field": p.Name},
					Message: fmt.Sprintf("%s.%s: missing required param %q (%s)", v.man.Service, method, p.Name, p.Type)}
			}
			continue
		}
		if !typeMatches(p.Type, val) {
			return &abi.Error{Code: abi.CodeBadRequest, Details: map[string]any{"field": p.Name},
				Message: fmt.Sprintf("%s.%s: param %q must be %s, got %s", v.man.Service, method, p.Name, p.Type, typeName(val))}
		}
	}
	return nil
}

// typeMatches checks a decoded CBOR value against a manifest type name.
// Unknown type names match anything: the guest stays the judge of those.
func typeMatches(typ string, val any) bool {
	switch typ {
	case "string", "str", "text":
		_, ok := val.(string)
		return ok
	case "int", "integer":
		switch val.(type) {
		case int64, uint64, big.Int, *big.Int:
			return true
		}
		return false
	case "float", "number", "double":
		switch val.(type) {
		case float64, float32, int64, uint64:
			return true
		}
		return false
	case "bool", "boolean":
		_, ok := val.(bool)
		return ok
	case "bytes":
		_, ok := val.([]byte)
		return ok
	case "list", "array":
		_, ok := val.([]any)
		return ok
	case "map", "object", "dict":
		switch val.(type) {
		case map[string]any, map[any]any:
			return true
		}
		return false
	}
	return true
}

func typeName(val any) string {
	switch val.(type) {
	case string:
		return "string"
	case int64, uint64, big.Int, *big.Int:
		return "int"
	case float64, float32:
		return "float"
	case bool:
		return "bool"
	case []byte:
		return "bytes"
	case []any:
		return "list"
	case map[string]any, map[any]any:
		return "map"
	}
	return fmt.Sprintf("%T", val)
}
