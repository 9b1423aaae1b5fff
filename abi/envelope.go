package abi

import (
	"time"

	"github.com/fxamacker/cbor/v2"
)

// Kind says what an Envelope is.
type Kind string

// The kinds of Envelope.
const (
	KindRequest  Kind = "request"  // expects exactly one response
	KindCommand  Kind = "command"  // fire-and-forget to one service
	KindEvent    Kind = "event"    // to every subscriber of a topic
	KindResponse Kind = "response" // the answer to a request
)

// RawValue is a CBOR-encoded value carried without being decoded, so the host
// never needs to understand a service's params or results.
type RawValue = cbor.RawMessage

// Envelope is every message on the mesh and across the ABI, encoded as a CBOR
// map with short text keys. Fields the host owns (Tenant, Depth, ServedBy)
// are overwritten by the host whatever a guest puts in them.
type Envelope struct {
	Kind     Kind           `cbor:"kind"`
	ID       string         `cbor:"id,omitempty"`       // correlation id
	TraceID  string         `cbor:"trace_id,omitempty"` // carried through every nested call
	Service  string         `cbor:"service,omitempty"`  // "service" or "tenant/service"
	Method   string         `cbor:"method,omitempty"`
	Params   RawValue       `cbor:"params,omitempty"`  // a CBOR map of keyword params
	Context  map[string]any `cbor:"context,omitempty"` // caller claims, token
	Topic    string         `cbor:"topic,omitempty"`
	Event    RawValue       `cbor:"event,omitempty"`
	Deadline int64          `cbor:"deadline,omitempty"` // unix milliseconds; 0 means the host's default
	Tenant   string         `cbor:"tenant,omitempty"`   // set by the host only
	Depth    int            `cbor:"depth,omitempty"`    // nested call depth, set by the host only
	Result   RawValue       `cbor:"result,omitempty"`
	Error    *Error         `cbor:"error,omitempty"`
	ServedBy string         `cbor:"served_by,omitempty"` // content hash of the module version that answered
}

// isZero reports whether e is the zero Envelope, which decoding may replace
// rather than merge into.
func (e *Envelope) isZero() bool {
	return e.Kind == "" && e.ID == "" && e.TraceID == "" && e.Service == "" && e.Method == "" && e.Params == nil &&
		e.Context == nil && e.Topic == "" && e.Event == nil && e.Deadline == 0 && e.Tenant == "" && e.Depth == 0 &&
		e.Result == nil && e.Error == nil && e.ServedBy == ""
}

// DeadlineTime returns the deadline as a time.Time, and false when none is set.
func (e *Envelope) DeadlineTime() (time.Time, bool) {
	if e.Deadline <= 0 {
		return time.Time{}, false
	}
	return time.UnixMilli(e.Deadline), true
}

// SetDeadline stores t (rounded up to the millisecond) as the deadline.
func (e *Envelope) SetDeadline(t time.Time) {
	e.Deadline = t.Add(time.Millisecond - 1).UnixMilli()
}

// Reply returns a response Envelope correlated with the request e.
func (e *Envelope) Reply() *Envelope {
	return &Envelope{Kind: KindResponse, ID: e.ID, TraceID: e.TraceID, Service: e.Service, Method: e.Method}
}

// Validate checks that the fields the kind needs are present. It is the only
// check the codec leaves to callers, because the codec does not know kinds.
func (e *Envelope) Validate() error {
	switch e.Kind {
	case KindRequest, KindCommand:
		if e.Service == "" || e.Method == "" {
			return Errorf(CodeBadRequest, "%s envelope needs service and method", e.Kind)
		}
	case KindEvent:
		if e.Topic == "" {
			return Errorf(CodeBadRequest, "event envelope needs a topic")
		}
	case KindResponse:
	default:
		return Errorf(CodeBadRequest, "unknown envelope kind %q", e.Kind)
	}
	return nil
}
