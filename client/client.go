package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker"
)

// DescribeMethod is the reserved method every host answers for each service
// it serves, with the service's Manifest (NuroPb's nuropb_describe).
const DescribeMethod = "nuropb_describe"

// DefaultTimeout bounds a request that carries neither a deadline nor a
// context deadline.
const DefaultTimeout = 30 * time.Second

// Client sends envelopes through a broker. It is safe for concurrent use.
type Client struct {
	b       broker.Broker
	codec   *abi.Codec
	tenant  string
	timeout time.Duration
	idBase  string
	idSeq   atomic.Uint64
}

// Option configures a Client.
type Option func(*Client)

// WithTenant sets the tenant that unqualified service names resolve to
// (default broker.DefaultTenant).
func WithTenant(t string) Option { return func(c *Client) { c.tenant = t } }

// WithTimeout sets the deadline given to requests that carry none.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithCodec sets the codec (and so the limits) used for envelopes.
func WithCodec(codec *abi.Codec) Option { return func(c *Client) { c.codec = codec } }

// New returns a Client over b.
func New(b broker.Broker, opts ...Option) *Client {
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	c := &Client{b: b, codec: abi.Default, tenant: broker.DefaultTenant, timeout: DefaultTimeout,
		idBase: hex.EncodeToString(seed[:]) + "-"}
	for _, o := range opts {
		o(c)
	}
	return c
}

// NewID returns a correlation id unique to this client: a random prefix and
// a counter, which is cheaper than a random UUID per message.
func (c *Client) NewID() string {
	var buf [64]byte
	return string(strconv.AppendUint(append(buf[:0], c.idBase...), c.idSeq.Add(1), 36))
}

// NewTraceID returns a fresh 128-bit trace id in W3C hex form.
func NewTraceID() string {
	var b [16]byte
	var h [32]byte
	_, _ = rand.Read(b[:])
	hex.Encode(h[:], b[:])
	return string(h[:])
}

// Route resolves an envelope's service field, "service" or "tenant/service",
// against the client's tenant.
func (c *Client) Route(service string) (broker.Route, error) {
	return ParseRoute(service, c.tenant)
}

// ParseRoute splits "tenant/service" (or "service", which takes
// defaultTenant) into a broker.Route, checking both names.
func ParseRoute(service, defaultTenant string) (broker.Route, error) {
	tenant, name, ok := strings.Cut(service, "/")
	if !ok {
		tenant, name = defaultTenant, service
	}
	if !abi.ValidName(tenant) {
		return broker.Route{}, abi.Errorf(abi.CodeBadRequest, "tenant name %q is not valid", tenant)
	}
	if !abi.ValidName(name) {
		return broker.Route{}, abi.Errorf(abi.CodeBadRequest, "service name %q is not valid", name)
	}
	return broker.Route{Tenant: tenant, Service: name}, nil
}

// ParseTarget splits "[tenant/]service.method" as typed on a command line.
func ParseTarget(target string) (service, method string, err error) {
	i := strings.LastIndexByte(target, '.')
	if i <= 0 || i == len(target)-1 {
		return "", "", abi.Errorf(abi.CodeBadRequest, "%q is not of the form service.method or tenant/service.method", target)
	}
	return target[:i], target[i+1:], nil
}

// prepare fills the id, trace id and deadline of env and returns the context
// bounded by that deadline.
func (c *Client) prepare(ctx context.Context, env *abi.Envelope) (context.Context, context.CancelFunc) {
	if env.ID == "" {
		env.ID = c.NewID()
	}
	if env.TraceID == "" {
		env.TraceID = NewTraceID()
	}
	deadline, ok := env.DeadlineTime()
	if !ok {
		deadline = time.Now().Add(c.timeout)
	}
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	env.SetDeadline(deadline)
	return context.WithDeadline(ctx, deadline)
}

// Call sends a request envelope and returns the response. Every failure is
// an *abi.Error: not_found at once for an unknown service, timeout at the
// deadline, unavailable when the broker is down, or the error the service
// returned (the response is then returned too).
func (c *Client) Call(ctx context.Context, env *abi.Envelope) (*abi.Envelope, error) {
	env.Kind = abi.KindRequest
	route, err := c.Route(env.Service)
	if err != nil {
		return nil, err
	}
	ctx, cancel := c.prepare(ctx, env)
	defer cancel()
	body, err := c.codec.EncodeEnvelope(env)
	if err != nil {
		return nil, err
	}
	msg := broker.Message{Body: body, ContentType: broker.ContentTypeCBOR, Type: string(abi.KindRequest),
		CorrelationID: env.ID, Expiration: time.Until(time.UnixMilli(env.Deadline))}
	replyMsg, err := c.b.Request(ctx, route, msg)
	if err != nil {
		return nil, brokerError(err, route, env)
	}
	reply, err := c.codec.DecodeEnvelope(replyMsg.Body)
	if err != nil {
		return nil, abi.Errorf(abi.CodeInternal, "reply from %s.%s: %v", env.Service, env.Method, err)
	}
	if reply.Error != nil {
		return reply, reply.Error
	}
	return reply, nil
}

// Send sends a command: fire-and-forget, confirmed by the broker.
func (c *Client) Send(ctx context.Context, env *abi.Envelope) error {
	env.Kind = abi.KindCommand
	route, err := c.Route(env.Service)
	if err != nil {
		return err
	}
	ctx, cancel := c.prepare(ctx, env)
	defer cancel()
	body, err := c.codec.EncodeEnvelope(env)
	if err != nil {
		return err
	}
	msg := broker.Message{Body: body, ContentType: broker.ContentTypeCBOR, Type: string(abi.KindCommand),
		CorrelationID: env.ID, Persistent: true}
	if err := c.b.Send(ctx, route, msg); err != nil {
		return brokerError(err, route, env)
	}
	return nil
}

// Publish publishes an event on env.Topic in tenant's namespace (the
// client's tenant when empty).
func (c *Client) Publish(ctx context.Context, tenant string, env *abi.Envelope) error {
	env.Kind = abi.KindEvent
	if tenant == "" {
		tenant = c.tenant
	}
	if !abi.ValidTopic(env.Topic) {
		return abi.Errorf(abi.CodeBadRequest, "topic %q is not valid (dot-separated words)", env.Topic)
	}
	ctx, cancel := c.prepare(ctx, env)
	defer cancel()
	body, err := c.codec.EncodeEnvelope(env)
	if err != nil {
		return err
	}
	msg := broker.Message{Body: body, ContentType: broker.ContentTypeCBOR, Type: string(abi.KindEvent),
		CorrelationID: env.ID, Persistent: true}
	if err := c.b.Publish(ctx, tenant, env.Topic, msg); err != nil {
		return brokerError(err, broker.Route{Tenant: tenant}, env)
	}
	return nil
}

// Description is what describe returns: the manifest and where it came from.
type Description struct {
	Manifest abi.Manifest `cbor:"manifest" json:"manifest"`
	Tenant   string       `cbor:"tenant" json:"tenant"`
	Hash     string       `cbor:"hash" json:"hash"`           // content hash of the serving module version
	File     string       `cbor:"file" json:"file"`           // module file on the serving host
	LoadedAt time.Time    `cbor:"loaded_at" json:"loaded_at"` // when that version started serving
}

// Describe asks a service, through the mesh, to describe itself.
func (c *Client) Describe(ctx context.Context, service string) (*Description, error) {
	reply, err := c.Call(ctx, &abi.Envelope{Service: service, Method: DescribeMethod})
	if err != nil {
		return nil, err
	}
	var d Description
	if err := c.codec.Unmarshal(reply.Result, &d); err != nil {
		return nil, abi.Errorf(abi.CodeInternal, "describe %s: %v", service, err)
	}
	return &d, nil
}

// brokerError maps a broker failure to the typed error a caller acts on.
func brokerError(err error, route broker.Route, env *abi.Envelope) error {
	var ae *abi.Error
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, broker.ErrNoRoute):
		return abi.Errorf(abi.CodeNotFound, "no service %q in tenant %q", route.Service, route.Tenant)
	case errors.Is(err, context.DeadlineExceeded):
		return abi.Errorf(abi.CodeTimeout, "%s.%s: no reply by the deadline (%s)", env.Service, env.Method,
			time.UnixMilli(env.Deadline).UTC().Format(time.RFC3339Nano))
	case errors.Is(err, context.Canceled):
		return abi.Errorf(abi.CodeTimeout, "%s.%s: cancelled by the caller", env.Service, env.Method)
	case errors.Is(err, broker.ErrUnavailable), errors.Is(err, broker.ErrClosed):
		return abi.Errorf(abi.CodeUnavailable, "%v", err)
	default:
		return abi.Errorf(abi.CodeUnavailable, "%v", err)
	}
}
