package wire

import (
	"strings"

	"github.com/nuropb/nuropb/abi"
)

// Envelope is an abi.Envelope whose fields are views into a frame: text fields
// hold the string's bytes, the rest hold raw CBOR (nil when absent). Views are
// valid only while the frame is.
type Envelope struct {
	Kind, ID, TraceID, Service, Method, Topic, Tenant, ServedBy []byte
	Params, Context, Event, Result, Error                       []byte
	Deadline, Depth                                             int64
}

// Reset clears e for reuse.
func (e *Envelope) Reset() { *e = Envelope{} }

// The envelope's keys, in the order AppendEnvelope writes them.
const (
	keyKind = iota
	keyID
	keyTraceID
	keyService
	keyMethod
	keyParams
	keyContext
	keyTopic
	keyEvent
	keyDeadline
	keyTenant
	keyDepth
	keyResult
	keyError
	keyServedBy
	numKeys
)

// keyIndex maps an envelope key to its index, or -1: one length switch and
// at most one comparison, since string comparisons are loops in wasm.
func keyIndex(k []byte) int {
	if idx := exactKey(k); idx >= 0 {
		return idx
	}
	// abi.Codec matches struct keys case-insensitively when no key matches
	// exactly; do the same, off the hot path.
	for idx, name := range keyNames {
		if strings.EqualFold(string(k), name) {
			return idx
		}
	}
	return -1
}

func exactKey(k []byte) int {
	var idx int
	switch len(k) {
	case 2:
		idx = keyID
	case 4:
		idx = keyKind
	case 5:
		switch {
		case k[0] == 't':
			idx = keyTopic
		case k[0] == 'd':
			idx = keyDepth
		case k[0] == 'e' && k[1] == 'v':
			idx = keyEvent
		case k[0] == 'e':
			idx = keyError
		default:
			return -1
		}
	case 6:
		switch k[0] {
		case 'm':
			idx = keyMethod
		case 'p':
			idx = keyParams
		case 't':
			idx = keyTenant
		case 'r':
			idx = keyResult
		default:
			return -1
		}
	case 7:
		switch k[0] {
		case 's':
			idx = keyService
		case 'c':
			idx = keyContext
		default:
			return -1
		}
	case 8:
		switch k[0] {
		case 't':
			idx = keyTraceID
		case 'd':
			idx = keyDeadline
		default:
			return -1
		}
	case 9:
		idx = keyServedBy
	default:
		return -1
	}
	if string(k) != keyNames[idx] {
		return -1
	}
	return idx
}

var keyNames = [numKeys]string{
	keyKind: "kind", keyID: "id", keyTraceID: "trace_id", keyService: "service", keyMethod: "method",
	keyParams: "params", keyContext: "context", keyTopic: "topic", keyEvent: "event", keyDeadline: "deadline",
	keyTenant: "tenant", keyDepth: "depth", keyResult: "result", keyError: "error", keyServedBy: "served_by",
}

// Parse reads the envelope frame b into e under lim. It refuses what
// abi.Codec refuses: frames over the size limit, malformed or trailing data,
// indefinite lengths, nesting and element counts over the limits, duplicate
// envelope keys, and fields of the wrong type. Unknown keys are skipped.
// It does not check that the kind's fields are present (see Validate).
func Parse(b []byte, lim abi.Limits, e *Envelope) error {
	e.Reset()
	if len(b) > lim.MaxFrame {
		return abi.Errorf(abi.CodeResourceExhausted, "message is %d bytes, over the %d byte limit", len(b), lim.MaxFrame)
	}
	if len(b) == 0 {
		return abi.Errorf(abi.CodeBadRequest, "empty message")
	}
	major, _, n, i, err := Head(b, 0)
	if err != nil {
		return err
	}
	if major != MajorMap {
		return malformed("envelope is not a map")
	}
	if n > uint64(lim.MaxElements) {
		return abi.Errorf(abi.CodeBadRequest, "%d elements, over the limit of %d", n, lim.MaxElements)
	}
	var seen uint32
	for k := uint64(0); k < n; k++ {
		var idx int
		if i >= len(b) {
			return malformed("unexpected end of data")
		}
		if b[i]>>5 == MajorText {
			var key []byte
			if key, i, err = Text(b, i); err != nil {
				return err
			}
			idx = keyIndex(key)
		} else { // skipped like an unknown key, as abi.Codec does
			if i, err = Skip(b, i, 1, lim); err != nil {
				return err
			}
			idx = -1
		}
		if idx < 0 {
			if i, err = Skip(b, i, 1, lim); err != nil {
				return err
			}
			continue
		}
		if seen&(1<<idx) != 0 {
			return malformed("duplicate envelope key " + keyNames[idx])
		}
		seen |= 1 << idx
		switch idx {
		case keyDeadline, keyDepth:
			var v int64
			if v, i, err = Int(b, i); err != nil {
				return err
			}
			if idx == keyDeadline {
				e.Deadline = v
			} else {
				e.Depth = v
			}
		case keyParams, keyContext, keyEvent, keyResult, keyError:
			start := i
			if i, err = Skip(b, i, 1, lim); err != nil {
				return err
			}
			raw := b[start:i:i]
			switch idx {
			case keyParams:
				e.Params = raw
			case keyContext:
				if raw[0] != Null && raw[0]>>5 != MajorMap {
					return malformed("envelope context must be a map")
				}
				e.Context = raw
			case keyEvent:
				e.Event = raw
			case keyResult:
				e.Result = raw
			case keyError:
				if raw[0] == Null {
					raw = nil
				} else if raw[0]>>5 != MajorMap {
					return malformed("envelope error must be a map")
				}
				e.Error = raw
			}
		default:
			var s []byte
			if s, i, err = Text(b, i); err != nil {
				return err
			}
			*e.textField(idx) = s
		}
	}
	if i != len(b) {
		return malformed("trailing data after the envelope")
	}
	return nil
}

func (e *Envelope) textField(idx int) *[]byte {
	switch idx {
	case keyKind:
		return &e.Kind
	case keyID:
		return &e.ID
	case keyTraceID:
		return &e.TraceID
	case keyService:
		return &e.Service
	case keyMethod:
		return &e.Method
	case keyTopic:
		return &e.Topic
	case keyTenant:
		return &e.Tenant
	default:
		return &e.ServedBy
	}
}

// Validate checks that the fields e's kind needs are present, as
// abi.Envelope.Validate does.
func (e *Envelope) Validate() error {
	switch abi.Kind(e.Kind) {
	case abi.KindRequest, abi.KindCommand:
		if len(e.Service) == 0 || len(e.Method) == 0 {
			return abi.Errorf(abi.CodeBadRequest, "%s envelope needs service and method", e.Kind)
		}
	case abi.KindEvent:
		if len(e.Topic) == 0 {
			return abi.Errorf(abi.CodeBadRequest, "event envelope needs a topic")
		}
	case abi.KindResponse:
	default:
		return abi.Errorf(abi.CodeBadRequest, "unknown envelope kind %q", e.Kind)
	}
	return nil
}

// AppendEnvelope appends e as a CBOR map of its non-empty fields. Raw fields
// are copied as they are: callers put only well-formed CBOR in them.
func AppendEnvelope(dst []byte, e *Envelope) []byte {
	texts := [...]struct {
		key string
		val []byte
	}{
		{"kind", e.Kind}, {"id", e.ID}, {"trace_id", e.TraceID}, {"service", e.Service},
		{"method", e.Method}, {"topic", e.Topic}, {"tenant", e.Tenant}, {"served_by", e.ServedBy},
	}
	raws := [...]struct {
		key string
		val []byte
	}{
		{"params", e.Params}, {"context", e.Context}, {"event", e.Event}, {"result", e.Result}, {"error", e.Error},
	}
	n := 0
	for _, f := range texts {
		if len(f.val) > 0 {
			n++
		}
	}
	for _, f := range raws {
		if len(f.val) > 0 {
			n++
		}
	}
	if e.Deadline != 0 {
		n++
	}
	if e.Depth != 0 {
		n++
	}
	dst = AppendHead(dst, MajorMap, uint64(n))
	for _, f := range texts {
		if len(f.val) > 0 {
			dst = AppendTextBytes(AppendText(dst, f.key), f.val)
		}
	}
	for _, f := range raws {
		if len(f.val) > 0 {
			dst = append(AppendText(dst, f.key), f.val...)
		}
	}
	if e.Deadline != 0 {
		dst = AppendInt(AppendText(dst, "deadline"), e.Deadline)
	}
	if e.Depth != 0 {
		dst = AppendInt(AppendText(dst, "depth"), e.Depth)
	}
	return dst
}

// AppendError appends err as the CBOR map of an envelope's error field.
func AppendError(dst []byte, err *abi.Error) []byte {
	n := uint64(2)
	var details []byte
	if len(err.Details) > 0 {
		if b, merr := abi.Default.Marshal(err.Details); merr == nil {
			details = b
			n++
		}
	}
	dst = AppendHead(dst, MajorMap, n)
	dst = AppendText(AppendText(dst, "code"), string(err.Code))
	dst = AppendText(AppendText(dst, "message"), err.Message)
	if details != nil {
		dst = append(AppendText(dst, "details"), details...)
	}
	return dst
}

// MapIter walks the pairs of a CBOR map whose well-formedness is already
// checked (e.g. a field Parse returned).
type MapIter struct {
	b          []byte
	i, left    int
	key, value []byte
	err        error
}

// NewMapIter starts walking the map raw. A null or empty raw is an empty map;
// anything else that is not a map is an error from Err.
func NewMapIter(raw []byte, lim abi.Limits) MapIter {
	it := MapIter{b: raw}
	if len(raw) == 0 || raw[0] == Null {
		return it
	}
	major, _, n, next, err := Head(raw, 0)
	if err == nil && major != MajorMap {
		err = abi.Errorf(abi.CodeBadRequest, "want a map")
	}
	if err == nil && n > uint64(lim.MaxElements) {
		err = abi.Errorf(abi.CodeBadRequest, "%d elements, over the limit of %d", n, lim.MaxElements)
	}
	it.i, it.left, it.err = next, int(n), err
	return it
}

// Next advances to the next pair and reports whether there is one. Keys that
// are not text strings stop the walk with an error.
func (it *MapIter) Next(lim abi.Limits) bool {
	if it.err != nil || it.left == 0 {
		return false
	}
	it.left--
	key, next, err := Text(it.b, it.i)
	if err != nil {
		it.err = abi.Errorf(abi.CodeBadRequest, "map keys must be text")
		return false
	}
	end, err := Skip(it.b, next, 1, lim)
	if err != nil {
		it.err = err
		return false
	}
	it.key, it.value, it.i = key, it.b[next:end], end
	return true
}

// Key is the current pair's key.
func (it *MapIter) Key() []byte { return it.key }

// Value is the current pair's raw value.
func (it *MapIter) Value() []byte { return it.value }

// Err is the error that stopped the walk, if any.
func (it *MapIter) Err() error { return it.err }
