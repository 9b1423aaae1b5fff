package abi

import (
	"fmt"
	"reflect"

	"github.com/fxamacker/cbor/v2"
)

// Limits bound what the codec accepts. Every frame is checked against
// MaxFrame before a byte of it is decoded; the rest are enforced while
// decoding.
type Limits struct {
	MaxFrame    int // bytes in one encoded frame
	MaxDepth    int // nesting of arrays and maps
	MaxElements int // entries in one array, and pairs in one map
}

// DefaultLimits suit service traffic: 1 MiB frames, 32 levels, 65,536 entries.
var DefaultLimits = Limits{MaxFrame: 1 << 20, MaxDepth: 32, MaxElements: 1 << 16}

// Codec encodes and strictly decodes CBOR under fixed Limits. It is safe for
// concurrent use. Build one with NewCodec.
type Codec struct {
	limits Limits
	dec    cbor.DecMode
	enc    cbor.EncMode
}

// NewCodec returns a codec enforcing l. Zero fields take DefaultLimits' values.
func NewCodec(l Limits) (*Codec, error) {
	if l.MaxFrame <= 0 {
		l.MaxFrame = DefaultLimits.MaxFrame
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultLimits.MaxDepth
	}
	if l.MaxElements <= 0 {
		l.MaxElements = DefaultLimits.MaxElements
	}
	// fxamacker/cbor refuses limits below 16.
	l.MaxDepth = max(l.MaxDepth, 4)
	dec, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  max(l.MaxDepth, 16),
		MaxArrayElements: max(l.MaxElements, 16),
		MaxMapPairs:      max(l.MaxElements, 16),
		DefaultMapType:   reflect.TypeOf(map[string]any(nil)),
		IntDec:           cbor.IntDecConvertSigned,
		UTF8:             cbor.UTF8RejectInvalid,
		// Keys are exact: "topiC" is not "topic".
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
	}.DecMode()
	if err != nil {
		return nil, fmt.Errorf("abi: codec options: %w", err)
	}
	enc, err := cbor.EncOptions{IndefLength: cbor.IndefLengthForbidden, Time: cbor.TimeRFC3339Nano}.EncMode()
	if err != nil {
		return nil, fmt.Errorf("abi: codec options: %w", err)
	}
	return &Codec{limits: l, dec: dec, enc: enc}, nil
}

// MustCodec is NewCodec for limits known to be valid at compile time.
func MustCodec(l Limits) *Codec {
	c, err := NewCodec(l)
	if err != nil {
		panic(err)
	}
	return c
}

// Default is a codec with DefaultLimits.
var Default = MustCodec(DefaultLimits)

// Limits returns the codec's limits.
func (c *Codec) Limits() Limits { return c.limits }

// Marshal encodes v as CBOR and refuses a result over MaxFrame.
func (c *Codec) Marshal(v any) ([]byte, error) {
	var b []byte
	ok := false
	if e, isEnv := v.(*Envelope); isEnv && e != nil {
		b, ok = c.encodeEnvelope(e)
	}
	if !ok {
		var err error
		if b, err = c.enc.Marshal(v); err != nil {
			return nil, Errorf(CodeInternal, "encode: %v", err)
		}
	}
	if len(b) > c.limits.MaxFrame {
		return nil, Errorf(CodeResourceExhausted, "encoded message is %d bytes, over the %d byte limit", len(b), c.limits.MaxFrame)
	}
	return b, nil
}

// Unmarshal decodes one CBOR item from b into v, refusing frames over
// MaxFrame before decoding, trailing bytes, and anything outside the limits.
// Failures are *Error with CodeBadRequest (or CodeResourceExhausted for size).
func (c *Codec) Unmarshal(b []byte, v any) error {
	e, isEnv := v.(*Envelope)
	return c.unmarshal(b, v, isEnv && e != nil && e.isZero())
}

// unmarshal is Unmarshal, trying the direct envelope decoder first when fast
// is set (v is a zero *Envelope).
func (c *Codec) unmarshal(b []byte, v any, fast bool) error {
	if len(b) > c.limits.MaxFrame {
		return Errorf(CodeResourceExhausted, "message is %d bytes, over the %d byte limit", len(b), c.limits.MaxFrame)
	}
	if len(b) == 0 {
		return Errorf(CodeBadRequest, "empty message")
	}
	if fast && c.dec.Wellformed(b) == nil && c.checkDepth(b) == nil {
		if d, ok := c.decodeEnvelope(b); ok {
			*v.(*Envelope) = *d
			return nil
		}
	}
	if err := c.dec.Unmarshal(b, v); err != nil {
		return &DecodeError{Err: err}
	}
	if err := c.checkDepth(b); err != nil {
		return err
	}
	return nil
}

// checkDepth enforces MaxDepth when it is below the decoder library's floor.
func (c *Codec) checkDepth(b []byte) error {
	if c.limits.MaxDepth >= 16 {
		return nil
	}
	if d := depthOf(b); d > c.limits.MaxDepth {
		return Errorf(CodeBadRequest, "nesting depth %d is over the limit of %d", d, c.limits.MaxDepth)
	}
	return nil
}

// DecodeEnvelope decodes and validates an Envelope.
func (c *Codec) DecodeEnvelope(b []byte) (*Envelope, error) {
	e, err := c.decodeEnvelopeOnce(b)
	if err != nil {
		return nil, err
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return e, nil
}

// UnmarshalEnvelope decodes an Envelope without validating its kind's
// fields (a guest's reply, whose routing fields the host sets).
func (c *Codec) UnmarshalEnvelope(b []byte) (*Envelope, error) { return c.decodeEnvelopeOnce(b) }

// decodeEnvelopeOnce is Unmarshal into a new Envelope, without copying it.
func (c *Codec) decodeEnvelopeOnce(b []byte) (*Envelope, error) {
	if len(b) > 0 && len(b) <= c.limits.MaxFrame && c.dec.Wellformed(b) == nil && c.checkDepth(b) == nil {
		if e, ok := c.decodeEnvelope(b); ok {
			return e, nil
		}
	}
	var e Envelope
	if err := c.unmarshal(b, &e, false); err != nil {
		return nil, err
	}
	return &e, nil
}

// EncodeEnvelope encodes e.
func (c *Codec) EncodeEnvelope(e *Envelope) ([]byte, error) { return c.Marshal(e) }

// DecodeManifest decodes and validates a Manifest.
func (c *Codec) DecodeManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := c.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Valid reports whether b is one well-formed CBOR item within the limits.
func (c *Codec) Valid(b []byte) error {
	var v any
	return c.Unmarshal(b, &v)
}

// DecodeError is a decode failure; it is an *Error with CodeBadRequest (via
// As) and keeps the decoder's own typed error (via Unwrap) so callers can
// name the offending field.
type DecodeError struct{ Err error }

func (e *DecodeError) Error() string { return "bad_request: malformed CBOR: " + e.Err.Error() }

// Unwrap returns the decoder's error.
func (e *DecodeError) Unwrap() error { return e.Err }

// As lets errors.As(err, **Error) see a DecodeError as a bad_request.
func (e *DecodeError) As(target any) bool {
	if t, ok := target.(**Error); ok {
		*t = &Error{Code: CodeBadRequest, Message: "malformed CBOR: " + e.Err.Error()}
		return true
	}
	return false
}
