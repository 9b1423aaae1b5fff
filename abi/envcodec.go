package abi

import (
	"math"
	"strings"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// Envelopes are encoded and decoded on every hop (client, host, guest reply,
// response), so the codec has a hand-written path for them: the reflective
// one costs ~1-2 µs and ~10 allocations per envelope on the project machine,
// the direct one a fraction of that (BenchmarkEnvelopeCodec). The direct path
// produces exactly the bytes and the values the reflective one does: it
// handles the common shapes only, and gives anything else (unknown keys,
// tags, nulls, byte strings where text is expected, out-of-range integers,
// any error) back to the reflective path, so error messages and edge cases
// stay those of fxamacker/cbor. TestEnvelopeCodecMatches and
// FuzzEnvelopeCodecMatches hold it to that.

// Envelope keys in struct order, which is the order fxamacker/cbor encodes
// them in.
const (
	fKind = iota
	fID
	fTraceID
	fService
	fMethod
	fParams
	fContext
	fTopic
	fEvent
	fDeadline
	fTenant
	fDepth
	fResult
	fError
	fServedBy
	numFields
)

var envKeys = [numFields]string{"kind", "id", "trace_id", "service", "method", "params", "context", "topic",
	"event", "deadline", "tenant", "depth", "result", "error", "served_by"}

// rawCheck is the well-formedness check fxamacker/cbor applies to a
// RawMessage it encodes (default nesting and element limits, no indefinite
// lengths), except that it forbids tags: a raw value with tags takes the
// reflective path, which also checks the built-in tags' content.
var rawCheck = func() cbor.DecMode {
	dm, err := cbor.DecOptions{IndefLength: cbor.IndefLengthForbidden, TagsMd: cbor.TagsForbidden}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// appendHead appends a CBOR head of major type major and argument n.
func appendHead(b []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= math.MaxUint8:
		return append(b, m|24, byte(n))
	case n <= math.MaxUint16:
		return append(b, m|25, byte(n>>8), byte(n))
	case n <= math.MaxUint32:
		return append(b, m|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, m|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// headLen is the size of a CBOR head with argument n.
func headLen(n uint64) int {
	switch {
	case n < 24:
		return 1
	case n <= math.MaxUint8:
		return 2
	case n <= math.MaxUint16:
		return 3
	case n <= math.MaxUint32:
		return 5
	}
	return 9
}

// textLen is the encoded size of s, and 0 for "" (omitted).
func textLen(s string) int {
	if s == "" {
		return 0
	}
	return headLen(uint64(len(s))) + len(s)
}

func appendText(b []byte, s string) []byte {
	return append(appendHead(b, 3, uint64(len(s))), s...)
}

func appendInt(b []byte, n int64) []byte {
	if n < 0 {
		return appendHead(b, 1, uint64(-(n + 1)))
	}
	return appendHead(b, 0, uint64(n))
}

// encodeEnvelope encodes e as fxamacker/cbor would, or reports false when e
// needs the reflective encoder (a raw value with tags or not well-formed).
func (c *Codec) encodeEnvelope(e *Envelope) ([]byte, bool) {
	var present [numFields]bool
	present[fKind] = true // no omitempty
	present[fID] = e.ID != ""
	present[fTraceID] = e.TraceID != ""
	present[fService] = e.Service != ""
	present[fMethod] = e.Method != ""
	present[fParams] = len(e.Params) > 0
	present[fContext] = len(e.Context) > 0
	present[fTopic] = e.Topic != ""
	present[fEvent] = len(e.Event) > 0
	present[fDeadline] = e.Deadline != 0
	present[fTenant] = e.Tenant != ""
	present[fDepth] = e.Depth != 0
	present[fResult] = len(e.Result) > 0
	present[fError] = e.Error != nil
	present[fServedBy] = e.ServedBy != ""
	n, size := 0, 0
	for i, p := range present {
		if p {
			n++
			size += 1 + len(envKeys[i])
		}
	}
	size += headLen(uint64(n)) + textLen(string(e.Kind)) + textLen(e.ID) + textLen(e.TraceID) + textLen(e.Service) +
		textLen(e.Method) + len(e.Params) + textLen(e.Topic) + len(e.Event) + 9 + textLen(e.Tenant) + 9 +
		len(e.Result) + textLen(e.ServedBy)
	for _, raw := range [...]RawValue{e.Params, e.Event, e.Result} {
		if len(raw) > 0 && rawCheck.Wellformed(raw) != nil {
			return nil, false
		}
	}
	b := appendHead(make([]byte, 0, size), 5, uint64(n))
	for i, p := range present {
		if !p {
			continue
		}
		b = appendText(b, envKeys[i])
		switch i {
		case fKind:
			b = appendText(b, string(e.Kind))
		case fID:
			b = appendText(b, e.ID)
		case fTraceID:
			b = appendText(b, e.TraceID)
		case fService:
			b = appendText(b, e.Service)
		case fMethod:
			b = appendText(b, e.Method)
		case fParams:
			b = append(b, e.Params...)
		case fContext, fError:
			var sub []byte
			var err error
			if i == fContext {
				sub, err = c.enc.Marshal(e.Context)
			} else {
				sub, err = c.enc.Marshal(e.Error)
			}
			if err != nil {
				return nil, false
			}
			b = append(b, sub...)
		case fTopic:
			b = appendText(b, e.Topic)
		case fEvent:
			b = append(b, e.Event...)
		case fDeadline:
			b = appendInt(b, e.Deadline)
		case fTenant:
			b = appendText(b, e.Tenant)
		case fDepth:
			b = appendInt(b, int64(e.Depth))
		case fResult:
			b = append(b, e.Result...)
		case fServedBy:
			b = appendText(b, e.ServedBy)
		}
	}
	return b, true
}

// head reads the CBOR head at b[i:]: major type, argument, offset after it.
// ok is false for indefinite lengths, reserved values and truncation.
func head(b []byte, i int) (major byte, arg uint64, next int, ok bool) {
	if i >= len(b) {
		return 0, 0, 0, false
	}
	major, info := b[i]>>5, b[i]&0x1f
	i++
	switch {
	case info < 24:
		return major, uint64(info), i, true
	case info <= 27:
		n := 1 << (info - 24)
		if i+n > len(b) {
			return 0, 0, 0, false
		}
		for k := range n {
			arg = arg<<8 | uint64(b[i+k])
		}
		return major, arg, i + n, true
	}
	return 0, 0, 0, false
}

// kinds interns the kinds, so decoding one allocates nothing.
var kinds = [...]Kind{KindRequest, KindCommand, KindEvent, KindResponse}

// decodeEnvelope decodes b, already checked against MaxFrame and found
// well-formed within the codec's limits, into a new Envelope, or reports
// false when b needs the reflective decoder (including every error case).
func (c *Codec) decodeEnvelope(b []byte) (*Envelope, bool) {
	major, n, i, ok := head(b, 0)
	if !ok || major != 5 {
		return nil, false
	}
	e := &Envelope{}
	var seen [numFields]bool
	var rawFrom, rawTo [3]int // params, event, result
	var strFrom, strTo [numFields]int
	for range n {
		major, klen, k, ok := head(b, i)
		if !ok || major != 3 || klen > uint64(len(b)-k) {
			return nil, false
		}
		key := b[k : k+int(klen)]
		i = k + int(klen)
		f := -1
		for j, name := range envKeys {
			if string(key) == name {
				f = j
				break
			}
		}
		if f < 0 || seen[f] {
			return nil, false
		}
		seen[f] = true
		major, arg, v, ok := head(b, i)
		if !ok {
			return nil, false
		}
		var end int
		switch major {
		case 0, 1:
			end = v
		case 2, 3:
			if arg > uint64(len(b)-v) {
				return nil, false
			}
			end = v + int(arg)
		default:
			_, end = walk(b, i)
		}
		switch f {
		case fKind, fID, fTraceID, fService, fMethod, fTopic, fTenant, fServedBy:
			if major != 3 || !utf8.Valid(b[v:end]) {
				return nil, false
			}
			strFrom[f], strTo[f] = v, end
			if f == fKind {
				for _, k := range kinds {
					if string(b[v:end]) == string(k) {
						e.Kind = k
						strTo[f] = v
					}
				}
			}
		case fDeadline, fDepth:
			if (major != 0 && major != 1) || arg > math.MaxInt64 {
				return nil, false
			}
			x := int64(arg)
			if major == 1 {
				x = -1 - x
			}
			if f == fDeadline {
				e.Deadline = x
			} else {
				e.Depth = int(x)
			}
		case fParams, fEvent, fResult:
			// Nulls decode to nil, tags are checked: the reflective path.
			if major == 6 || b[i] == 0xf6 || b[i] == 0xf7 {
				return nil, false
			}
			r := 0
			if f == fEvent {
				r = 1
			} else if f == fResult {
				r = 2
			}
			rawFrom[r], rawTo[r] = i, end
		case fContext:
			if major != 5 || c.dec.Unmarshal(b[i:end], &e.Context) != nil {
				return nil, false
			}
		case fError:
			if major != 5 || c.dec.Unmarshal(b[i:end], &e.Error) != nil {
				return nil, false
			}
		}
		i = end
	}
	if i != len(b) {
		return nil, false
	}
	// Strings share one allocation.
	var sb strings.Builder
	total := 0
	for f := range strFrom {
		total += strTo[f] - strFrom[f]
	}
	sb.Grow(total)
	for f := range strFrom {
		sb.Write(b[strFrom[f]:strTo[f]])
	}
	all, at := sb.String(), 0
	for f, dst := range [...]*string{fID: &e.ID, fTraceID: &e.TraceID, fService: &e.Service, fMethod: &e.Method,
		fTopic: &e.Topic, fTenant: &e.Tenant, fServedBy: &e.ServedBy} {
		n := strTo[f] - strFrom[f]
		if dst != nil {
			*dst = all[at : at+n]
		} else if f == fKind && n > 0 {
			e.Kind = Kind(all[at : at+n])
		}
		at += n
	}
	// Raw values share one copy (each capped at its own length, so an
	// append to one never writes into another).
	total = 0
	for r := range rawFrom {
		total += rawTo[r] - rawFrom[r]
	}
	if total > 0 {
		own := make([]byte, 0, total)
		for r, dst := range [...]*RawValue{&e.Params, &e.Event, &e.Result} {
			if rawTo[r] > rawFrom[r] {
				at := len(own)
				own = append(own, b[rawFrom[r]:rawTo[r]]...)
				*dst = own[at:len(own):len(own)]
			}
		}
	}
	return e, true
}
