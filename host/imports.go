package host

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/client"
	"github.com/nuropb/nuropb/host/internal/acl"
)

// callInfo is what the host knows about the guest call in progress, carried
// in the context the sandbox hands back to the imports.
type callInfo struct {
	traceID string
	depth   int
}

type callInfoKey struct{}

// callInfoFrom returns the running call's info. Outside a call (a guest
// calling out from _initialize) it is a fresh trace at depth 0.
func callInfoFrom(ctx context.Context) callInfo {
	if ci, ok := ctx.Value(callInfoKey{}).(callInfo); ok {
		return ci
	}
	return callInfo{traceID: client.NewTraceID()}
}

// imports implements sandbox.Imports for one module version. Everything a
// guest sends is decoded with the version's limits and re-stamped by the
// host: tenant, trace id, deadline and depth never come from the guest.
type imports struct {
	h      *Host
	tenant string
	file   string
	limits Limits
	codec  *abi.Codec
	policy *acl.Policy

	logger  atomic.Pointer[slog.Logger]
	service atomic.Pointer[string] // known once the manifest has been read
}

func (i *imports) setLogger(l *slog.Logger) { i.logger.Store(l) }

func (i *imports) setVersion(v *version) {
	i.service.Store(&v.man.Service)
	i.logger.Store(v.log)
}

func (i *imports) serviceName() string {
	if s := i.service.Load(); s != nil {
		return *s
	}
	return ""
}

// Log writes a guest log line tagged with tenant, service, file and the
// running call's trace id.
func (i *imports) Log(ctx context.Context, level abi.LogLevel, msg string) {
	l := i.logger.Load()
	if ci, ok := ctx.Value(callInfoKey{}).(callInfo); ok {
		l.Log(ctx, slog.Level(level), msg, "source", "guest", "trace_id", ci.traceID)
		return
	}
	l.Log(ctx, slog.Level(level), msg, "source", "guest")
}

// Call performs a guest's request and returns the response envelope;
// failures travel inside it as its error.
func (i *imports) Call(ctx context.Context, frame []byte) []byte {
	ci := callInfoFrom(ctx)
	env, err := i.decode(frame, abi.KindRequest)
	if err != nil {
		return i.encodeReply(&abi.Envelope{Kind: abi.KindResponse, TraceID: ci.traceID, Error: abi.AsError(err)})
	}
	guestID := env.ID
	tenant, err := i.stampRouted(ctx, ci, env)
	if err != nil {
		return i.encodeReply(&abi.Envelope{Kind: abi.KindResponse, ID: guestID, TraceID: ci.traceID, Error: abi.AsError(err)})
	}
	reply, err := i.h.clientFor(tenant).Call(ctx, env)
	if reply == nil {
		reply = &abi.Envelope{Kind: abi.KindResponse, Error: abi.AsError(err)}
	}
	// The guest sees its own id back; the wire used a host-made one so that
	// guests cannot collide with other callers' correlation ids.
	reply.ID, reply.TraceID = guestID, ci.traceID
	return i.encodeReply(reply)
}

// Send performs a guest's command (routed like Call) or event (published in
// the guest's tenant, or "tenant/topic" where a Publish grant allows).
func (i *imports) Send(ctx context.Context, frame []byte) error {
	ci := callInfoFrom(ctx)
	env, err := i.decode(frame, "")
	if err != nil {
		return err
	}
	switch env.Kind {
	case abi.KindCommand:
		tenant, err := i.stampRouted(ctx, ci, env)
		if err != nil {
			return err
		}
		return i.h.clientFor(tenant).Send(ctx, env)
	case abi.KindEvent:
		tenant, topic := i.tenant, env.Topic
		if t, rest, ok := strings.Cut(env.Topic, "/"); ok {
			tenant, topic = t, rest
		}
		if !abi.ValidName(tenant) || !abi.ValidTopic(topic) {
			return abi.Errorf(abi.CodeBadRequest, "topic %q is not \"topic\" or \"tenant/topic\" (dot-separated words)", env.Topic)
		}
		if !i.policy.CanPublish(tenant, topic) {
			return abi.Errorf(abi.CodeForbidden, "tenant %q may not publish %q in tenant %q (no Publish grant)", i.tenant, topic, tenant)
		}
		if err := i.stamp(ctx, ci, env); err != nil {
			return err
		}
		env.Topic = topic
		env.Service = i.serviceName() // the publisher, for subscribers' logs
		return i.h.clientFor(tenant).Publish(ctx, tenant, env)
	default:
		return abi.Errorf(abi.CodeBadRequest, "send takes a command or an event, not %q", env.Kind)
	}
}

// decode reads a guest frame with the version's limits. force, when set,
// is the only kind the frame may be (the guest may leave it out).
func (i *imports) decode(frame []byte, force abi.Kind) (*abi.Envelope, error) {
	var env abi.Envelope
	if err := i.codec.Unmarshal(frame, &env); err != nil {
		return nil, err
	}
	if force != "" {
		if env.Kind != "" && env.Kind != force {
			return nil, abi.Errorf(abi.CodeBadRequest, "call takes a request, not %q", env.Kind)
		}
		env.Kind = force
	}
	if err := env.Validate(); err != nil {
		return nil, err
	}
	return &env, nil
}

// stampRouted resolves and authorizes a request's or command's target and
// stamps the envelope; it returns the target tenant.
func (i *imports) stampRouted(ctx context.Context, ci callInfo, env *abi.Envelope) (string, error) {
	route, err := client.ParseRoute(env.Service, i.tenant)
	if err != nil {
		return "", err
	}
	if !i.policy.CanCall(route.Tenant, route.Service) {
		return "", abi.Errorf(abi.CodeForbidden, "tenant %q may not call %s/%s (no Call grant)", i.tenant, route.Tenant, route.Service)
	}
	if err := i.stamp(ctx, ci, env); err != nil {
		return "", err
	}
	env.Service = route.Service
	return route.Tenant, nil
}

// stamp overwrites the fields the host owns, and enforces the call depth.
func (i *imports) stamp(ctx context.Context, ci callInfo, env *abi.Envelope) error {
	depth := ci.depth + 1
	if depth > i.limits.MaxCallDepth {
		return abi.Errorf(abi.CodeResourceExhausted, "%s/%s: call depth %d is over the limit of %d (a call loop?)",
			i.tenant, i.serviceName(), depth, i.limits.MaxCallDepth)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(i.limits.CallTimeout)
	}
	if dl, ok := env.DeadlineTime(); ok && dl.Before(deadline) {
		deadline = dl
	}
	env.ID = ""
	env.TraceID = ci.traceID
	env.Tenant = i.tenant
	env.Depth = depth
	env.SetDeadline(deadline)
	env.Result, env.Error, env.ServedBy = nil, nil, ""
	return nil
}

// encodeReply encodes a response for the guest within its limits; one that
// does not fit becomes an error response that does.
func (i *imports) encodeReply(env *abi.Envelope) []byte {
	env.Kind = abi.KindResponse
	b, err := i.codec.EncodeEnvelope(env)
	if err == nil {
		return b
	}
	small := &abi.Envelope{Kind: abi.KindResponse, ID: env.ID, TraceID: env.TraceID, Error: abi.AsError(err)}
	if b, err = i.codec.EncodeEnvelope(small); err == nil {
		return b
	}
	b, _ = i.codec.EncodeEnvelope(&abi.Envelope{Kind: abi.KindResponse, Error: &abi.Error{Code: abi.CodeResourceExhausted}})
	return b
}
