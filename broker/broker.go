package broker

import (
	"context"
	"errors"
	"time"
)

// Message is what a Broker carries: an opaque body and the properties needed
// to route it and to answer it.
type Message struct {
	Body          []byte
	ContentType   string         // "application/cbor" for nuropb, "application/json" for NuroPb interop
	Type          string         // request, command, event or response (AMQP type / nuropb_type)
	CorrelationID string         // matches a response to its request
	ReplyTo       string         // where the response goes; set by Request, not by callers
	Headers       map[string]any // extra headers (NuroPb interop: nuropb_protocol, nuropb_type, trace_id)
	// Expiration is how long the message may wait in a queue before it is
	// dead-lettered instead of delivered; 0 means no limit.
	Expiration time.Duration
	// Persistent asks the broker to keep the message across its restarts.
	Persistent bool
}

// Route names a service's queue: its tenant and its service name.
type Route struct {
	Tenant  string
	Service string
}

// TopicBinding subscribes a service queue to a topic pattern on a tenant's
// event exchange. Pattern uses AMQP topic wildcards: '*' is one word, '#' is
// zero or more words.
type TopicBinding struct {
	Tenant  string
	Pattern string
}

// ServiceSpec says which queue to consume and how.
type ServiceSpec struct {
	Route
	Topics []TopicBinding
	// Prefetch is the most unacknowledged deliveries this consumer holds at
	// once; it is also how many handlers run in parallel. 0 means unlimited.
	Prefetch int
}

// Delivery is one message handed to a Handler. Exactly one of Ack and Reject
// must be called once the handler has finished with it.
type Delivery interface {
	Message() Message
	// Redelivered reports that the broker delivered this message before and
	// it was not acknowledged.
	Redelivered() bool
	// Ack removes the message from its queue.
	Ack() error
	// Reject returns the message to its queue (requeue) or dead-letters it.
	Reject(requeue bool) error
}

// Handler processes one delivery. The broker runs up to Prefetch handlers at
// once, each on its own goroutine, and passes a context that ends when the
// consumer is stopped hard.
type Handler func(ctx context.Context, d Delivery)

// Consumer is a running subscription created by Broker.Serve.
type Consumer interface {
	// Stop stops taking new deliveries, waits for running handlers until ctx
	// ends, and returns unhandled prefetched deliveries to the queue.
	Stop(ctx context.Context) error
}

// Broker moves messages. Implementations are safe for concurrent use.
type Broker interface {
	// Serve declares the service's shared queue, binds it to the service's
	// route and to spec.Topics, and delivers its messages to h until the
	// returned Consumer is stopped or the broker closed. Several consumers of
	// the same route, in this process or others, compete for its messages.
	Serve(ctx context.Context, spec ServiceSpec, h Handler) (Consumer, error)
	// Request publishes msg to the route (mandatory) and waits for the
	// response. It fails at once with ErrNoRoute when no queue exists for
	// the route, and with the context's error when ctx ends first.
	Request(ctx context.Context, to Route, msg Message) (Message, error)
	// Send publishes a command to the route, persistent and confirmed by the
	// broker before it returns. ErrNoRoute when no queue exists for the route.
	Send(ctx context.Context, to Route, msg Message) error
	// Publish publishes an event on the tenant's topic exchange, persistent
	// and confirmed. A topic nobody subscribes to is not an error.
	Publish(ctx context.Context, tenant, topic string, msg Message) error
	// Reply sends a response to the ReplyTo of a request delivery.
	Reply(ctx context.Context, replyTo string, msg Message) error
	// Retire deletes the route's queue if no consumer and no message remain
	// on it, so that later requests fail with ErrNoRoute. A queue still
	// served by another consumer (another host) or holding messages is kept,
	// and Retire returns nil.
	Retire(ctx context.Context, to Route) error
	// Close stops every consumer and releases the broker's resources.
	Close() error
}

// Errors a Broker returns; callers test them with errors.Is.
var (
	// ErrNoRoute: no queue is bound for the route (an unknown service).
	ErrNoRoute = errors.New("broker: no route to service")
	// ErrClosed: the broker was closed.
	ErrClosed = errors.New("broker: closed")
	// ErrUnavailable: the broker cannot be reached now (reconnecting).
	ErrUnavailable = errors.New("broker: unavailable")
)

// ContentTypeCBOR is the content type of nuropb envelopes.
const ContentTypeCBOR = "application/cbor"
