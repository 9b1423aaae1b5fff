package nuropbwire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker"
)

// Protocol is the only NuroPb protocol version understood. NuroPb itself
// refuses every other version on receive, and so does nuropb: a field whose
// meaning changed would otherwise be misread silently.
const Protocol = "0.1.1"

// ContentType is the content type of NuroPb bodies.
const ContentType = "application/json"

// AMQP header names of the NuroPb protocol.
const (
	HeaderProtocol  = "nuropb_protocol"
	HeaderType      = "nuropb_type"
	HeaderTraceID   = "trace_id"
	HeaderEncrypted = "encrypted"
)

// ErrProtocol marks a message whose nuropb_protocol is missing or not
// Protocol. It is not answered: a client of another version may not even
// parse the answer, so the host dead-letters it for an operator to see.
var ErrProtocol = errors.New("nuropbwire: unsupported NuroPb protocol version")

// Is reports whether msg speaks NuroPb's JSON protocol rather than nuropb's
// CBOR envelopes. The header is checked first because it is what NuroPb
// itself checks; the content type catches JSON sent without it, which is
// then refused as an unsupported version rather than misread as CBOR.
func Is(msg broker.Message) bool {
	if _, ok := msg.Headers[HeaderProtocol]; ok {
		return true
	}
	ct, _, _ := strings.Cut(msg.ContentType, ";")
	return strings.EqualFold(strings.TrimSpace(ct), ContentType)
}

// header returns a header as text; AMQP tables carry text as string or,
// from some clients, as bytes.
func header(msg broker.Message, name string) (string, bool) {
	switch v := msg.Headers[name].(type) {
	case string:
		return v, true
	case []byte:
		return string(v), true
	}
	return "", false
}

// body is the union of NuroPb's request, command and event bodies. Fields
// that may be any JSON stay raw so the codec converts them under its limits.
type body struct {
	Tag           string          `json:"tag"`
	CorrelationID string          `json:"correlation_id"`
	Context       json.RawMessage `json:"context"`
	TraceID       *string         `json:"trace_id"`
	Service       string          `json:"service"`
	Method        string          `json:"method"`
	Params        json.RawMessage `json:"params"`
	Topic         string          `json:"topic"`
	Event         json.RawMessage `json:"event"`
}

// Decode turns a NuroPb message into the envelope the host dispatches. The
// deadline is now + the message's expiration (NuroPb's ttl); RabbitMQ
// delivers the original expiration, so this is a bound, never too short.
// Errors are *abi.Error (bad_request, resource_exhausted), except a wrong
// protocol version, which wraps ErrProtocol.
func Decode(codec *abi.Codec, msg broker.Message, now time.Time) (*abi.Envelope, error) {
	if v, _ := header(msg, HeaderProtocol); v != Protocol {
		return nil, fmt.Errorf("%w: nuropb_protocol %q, want %q", ErrProtocol, v, Protocol)
	}
	if enc, _ := header(msg, HeaderEncrypted); enc != "" && enc != "no" {
		return nil, abi.Errorf(abi.CodeBadRequest, "encrypted NuroPb payloads are not supported")
	}
	if limit := codec.Limits().MaxFrame; len(msg.Body) > limit {
		return nil, abi.Errorf(abi.CodeResourceExhausted, "NuroPb message is %d bytes, over the %d byte limit", len(msg.Body), limit)
	}
	var b body
	if err := json.Unmarshal(msg.Body, &b); err != nil {
		return nil, abi.Errorf(abi.CodeBadRequest, "NuroPb body is not a JSON object: %v", err)
	}
	if t, ok := header(msg, HeaderType); ok && t != b.Tag {
		return nil, abi.Errorf(abi.CodeBadRequest, "nuropb_type header %q disagrees with body tag %q", t, b.Tag)
	}
	env := &abi.Envelope{Kind: abi.Kind(b.Tag), ID: msg.CorrelationID}
	if env.ID == "" {
		env.ID = b.CorrelationID
	}
	if b.TraceID != nil {
		env.TraceID = *b.TraceID
	} else if t, ok := header(msg, HeaderTraceID); ok {
		env.TraceID = t
	}
	ctx, err := contextMap(codec, b.Context)
	if err != nil {
		return nil, err
	}
	env.Context = ctx
	switch env.Kind {
	case abi.KindRequest, abi.KindCommand:
		env.Service, env.Method = b.Service, b.Method
		if env.Params, err = object(codec, "params", b.Params); err != nil {
			return nil, err
		}
	case abi.KindEvent:
		env.Topic = b.Topic
		if env.Event, err = value(codec, "event", b.Event); err != nil {
			return nil, err
		}
	default:
		return nil, abi.Errorf(abi.CodeBadRequest, "NuroPb tag %q cannot be delivered to a service (want request, command or event)", b.Tag)
	}
	if msg.Expiration > 0 {
		env.SetDeadline(now.Add(msg.Expiration))
	}
	if err := env.Validate(); err != nil {
		return nil, err
	}
	return env, nil
}

// isNull reports an absent or JSON null field.
func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || bytes.Equal(t, []byte("null"))
}

// object converts a keyword-arguments object; null or absent is no params.
func object(codec *abi.Codec, field string, raw json.RawMessage) (abi.RawValue, error) {
	if isNull(raw) {
		return nil, nil
	}
	if bytes.TrimSpace(raw)[0] != '{' {
		return nil, abi.Errorf(abi.CodeBadRequest, "NuroPb %s must be a JSON object of keyword arguments", field)
	}
	return value(codec, field, raw)
}

func value(codec *abi.Codec, field string, raw json.RawMessage) (abi.RawValue, error) {
	if isNull(raw) {
		return nil, nil
	}
	v, err := codec.JSONToCBOR(raw)
	if err != nil {
		e := abi.AsError(err)
		return nil, &abi.Error{Code: e.Code, Message: "NuroPb " + field + ": " + e.Message}
	}
	return v, nil
}

// contextMap converts the context object through CBOR so that its numbers
// arrive as the integers and floats the host's claim checks expect.
func contextMap(codec *abi.Codec, raw json.RawMessage) (map[string]any, error) {
	c, err := object(codec, "context", raw)
	if err != nil || c == nil {
		return nil, err
	}
	var m map[string]any
	if err := codec.Unmarshal(c, &m); err != nil {
		return nil, abi.Errorf(abi.CodeBadRequest, "NuroPb context: %s", abi.AsError(err).Message)
	}
	return m, nil
}
