package nuropb

import (
	"fmt"
	"reflect"
	"slices"

	"github.com/nuropb/nuropb/abi"
)

// Service is one nuropb service: its identity, methods and subscriptions.
// Build it with NewService, add methods with Method and subscriptions with
// Subscribe, then hand it to Register, all from package init.
type Service struct {
	name, version, description string
	methods                    map[string]*method
	subs                       []subscription
	requires                   abi.Requires
	registered                 bool
}

// A ServiceOption adjusts a Service at construction.
type ServiceOption func(*Service)

// Calls declares services this service calls, for the manifest's requires
// section (informational in ABI v1).
func Calls(services ...string) ServiceOption {
	return func(s *Service) { s.requires.Calls = append(s.requires.Calls, services...) }
}

// Publishes declares topics this service publishes, for the manifest's
// requires section (informational in ABI v1).
func Publishes(topics ...string) ServiceOption {
	return func(s *Service) { s.requires.Publishes = append(s.requires.Publishes, topics...) }
}

// NewService returns a service with no methods yet. The name must be a valid
// service name (lower case letters, digits, '_' and '-'); Register checks it.
func NewService(name, version, description string, opts ...ServiceOption) *Service {
	s := &Service{name: name, version: version, description: description, methods: map[string]*method{}}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Name returns the service's name.
func (s *Service) Name() string { return s.name }

// A MethodOption adjusts how a method is described and exposed.
type MethodOption func(*abi.Method)

// Hidden marks a method as internal: the host does not list it and refuses
// calls to it from outside the service's tenant.
func Hidden() MethodOption { return func(m *abi.Method) { m.Hidden = true } }

// RequiresAuth marks a method as needing an authenticated caller; the host
// enforces it before the call reaches the guest.
func RequiresAuth() MethodOption { return func(m *abi.Method) { m.RequiresAuth = true } }

// method is a registered method: its manifest entry and its type-erased call.
type method struct {
	desc abi.Method
	// invoke decodes params, runs the handler and appends the encoded result to dst.
	invoke func(ctx *Context, params, dst []byte) ([]byte, error)
}

// Handler is the signature of a method: typed params in, a result or an error out.
type Handler[P, R any] func(ctx *Context, params P) (R, error)

// Method registers a method named name on s. P is the params type: usually a
// struct whose fields are the keyword params (see the package doc for tags),
// or NoParams, a map[string]T, or abi.RawValue to take the params map as raw
// CBOR. R is any type the CBOR codec can encode; an abi.RawValue result is
// sent as it is. Method panics on a misuse that a service author must fix:
// an invalid or duplicate name, an unsupported params type, or a call after
// Register.
func Method[P, R any](s *Service, name, description string, h Handler[P, R], opts ...MethodOption) {
	if s.registered {
		panic(fmt.Sprintf("nuropb: method %q added to service %q after Register", name, s.name))
	}
	if _, dup := s.methods[name]; dup {
		panic(fmt.Sprintf("nuropb: service %q registers method %q twice", s.name, name))
	}
	sch, err := schemaOf(reflect.TypeFor[P]())
	if err != nil {
		panic(fmt.Sprintf("nuropb: method %s.%s: %v", s.name, name, err))
	}
	m := &method{desc: abi.Method{
		Description: description,
		Params:      sch.manifestParams(),
		Result:      typeName(reflect.TypeFor[R]()),
	}}
	for _, o := range opts {
		o(&m.desc)
	}
	m.invoke = func(ctx *Context, params, dst []byte) ([]byte, error) {
		var p P
		if err := sch.decode(params, &p); err != nil {
			return dst, err
		}
		r, err := h(ctx, p)
		if err != nil {
			return dst, err
		}
		return appendResult(dst, r)
	}
	s.methods[name] = m
}

// NoParams is the params type of a method that takes none: any param sent to
// it is refused as unknown.
type NoParams struct{}

// Event is an event delivered to a subscription.
type Event struct {
	Topic string       // the concrete topic it was published on
	Raw   abi.RawValue // the event payload, CBOR; owned by the Event
}

// Decode decodes the event payload into into (a pointer), with the codec's limits.
func (e Event) Decode(into any) error {
	if len(e.Raw) == 0 {
		return abi.Errorf(abi.CodeBadRequest, "event on %q has no payload", e.Topic)
	}
	if err := abi.Default.Unmarshal(e.Raw, into); err != nil {
		return abi.Errorf(abi.CodeBadRequest, "event on %q: %s", e.Topic, abi.AsError(err).Message)
	}
	return nil
}

// EventHandler handles one event. Its error is reported to the host, which
// may redeliver or dead-letter the event.
type EventHandler func(ctx *Context, ev Event) error

type subscription struct {
	pattern string
	h       EventHandler
}

// Subscribe registers h for events whose topic matches pattern: dot-separated
// words where '*' matches exactly one word and '#' zero or more. When several
// subscriptions match a topic, each runs, in registration order.
func (s *Service) Subscribe(pattern string, h EventHandler) {
	if s.registered {
		panic(fmt.Sprintf("nuropb: subscription %q added to service %q after Register", pattern, s.name))
	}
	if !abi.ValidPattern(pattern) {
		panic(fmt.Sprintf("nuropb: service %q: subscription %q is not a valid topic pattern", s.name, pattern))
	}
	s.subs = append(s.subs, subscription{pattern: pattern, h: h})
}

// manifest returns s's manifest, validated.
func (s *Service) manifest() (*abi.Manifest, error) {
	m := &abi.Manifest{
		ABI:         abi.Version,
		Service:     s.name,
		Version:     s.version,
		Description: s.description,
		Methods:     make(map[string]abi.Method, len(s.methods)),
		Requires:    s.requires,
	}
	for name, meth := range s.methods {
		m.Methods[name] = meth.desc
	}
	for _, sub := range s.subs {
		if !slices.Contains(m.Subscriptions, sub.pattern) {
			m.Subscriptions = append(m.Subscriptions, sub.pattern)
		}
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// Manifest returns the manifest nuropb_describe reports for s, or an error
// naming what makes it invalid.
func (s *Service) Manifest() (*abi.Manifest, error) { return s.manifest() }

// topicMatches reports whether a concrete topic matches an AMQP-style
// pattern ('*' one word, '#' zero or more words), without allocating.
func topicMatches(pattern, topic string) bool { return match(pattern, true, topic, true) }

// match matches the words left in p against those left in t; pok and tok say
// whether any words are left (an empty string is one empty word otherwise).
func match(p string, pok bool, t string, tok bool) bool {
	if !pok {
		return !tok
	}
	pw, prest, pmore := cut(p)
	if pw == "#" {
		if match(prest, pmore, t, tok) {
			return true
		}
		if !tok {
			return false
		}
		_, trest, tmore := cut(t)
		return match(p, true, trest, tmore)
	}
	if !tok {
		return false
	}
	tw, trest, tmore := cut(t)
	if pw != "*" && pw != tw {
		return false
	}
	return match(prest, pmore, trest, tmore)
}

// cut splits off the first dot-separated word.
func cut(s string) (word, rest string, more bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
