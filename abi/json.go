package abi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strconv"
)

// JSONToCBOR converts a JSON document to CBOR for callers that speak JSON (the
// CLI, the HTTP door, NuroPb interop). Integral numbers become CBOR integers
// (big ones bignums) so that typed guest params receive ints, not floats.
func (c *Codec) JSONToCBOR(doc []byte) (RawValue, error) {
	if len(bytes.TrimSpace(doc)) == 0 {
		return nil, nil
	}
	if len(doc) > c.limits.MaxFrame {
		return nil, Errorf(CodeResourceExhausted, "JSON document is %d bytes, over the %d byte limit", len(doc), c.limits.MaxFrame)
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, Errorf(CodeBadRequest, "malformed JSON: %v", err)
	}
	if dec.More() {
		return nil, Errorf(CodeBadRequest, "malformed JSON: trailing data after the value")
	}
	v, err := fromJSONValue(v, 0, c.limits)
	if err != nil {
		return nil, err
	}
	return c.Marshal(v)
}

func fromJSONValue(v any, depth int, l Limits) (any, error) {
	if depth > l.MaxDepth {
		return nil, Errorf(CodeBadRequest, "JSON nesting is over the limit of %d", l.MaxDepth)
	}
	switch t := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(t), 10, 64); err == nil {
			return i, nil
		}
		if bi, ok := new(big.Int).SetString(string(t), 10); ok {
			return bi, nil
		}
		f, err := t.Float64()
		if err != nil {
			return nil, Errorf(CodeBadRequest, "number %s: %v", t, err)
		}
		return f, nil
	case []any:
		if len(t) > l.MaxElements {
			return nil, Errorf(CodeBadRequest, "JSON array has %d elements, over the limit of %d", len(t), l.MaxElements)
		}
		for i := range t {
			var err error
			if t[i], err = fromJSONValue(t[i], depth+1, l); err != nil {
				return nil, err
			}
		}
		return t, nil
	case map[string]any:
		if len(t) > l.MaxElements {
			return nil, Errorf(CodeBadRequest, "JSON object has %d keys, over the limit of %d", len(t), l.MaxElements)
		}
		for k, e := range t {
			var err error
			if t[k], err = fromJSONValue(e, depth+1, l); err != nil {
				return nil, err
			}
		}
		return t, nil
	default:
		return v, nil
	}
}

// CBORToJSON converts a CBOR value to JSON for display and for JSON callers.
// Byte strings become base64 text, bignums decimal numbers, NaN and
// infinities null, and map keys that are not text their decimal or %v form.
func (c *Codec) CBORToJSON(raw RawValue) ([]byte, error) {
	if len(raw) == 0 {
		return []byte("null"), nil
	}
	var v any
	if err := c.dec.Unmarshal(raw, &v); err != nil {
		return nil, Errorf(CodeBadRequest, "malformed CBOR: %v", err)
	}
	return json.Marshal(toJSONValue(v))
}

// ToJSONValue converts a decoded CBOR value into one encoding/json can encode
// with the same mapping as CBORToJSON.
func ToJSONValue(v any) any { return toJSONValue(v) }

func toJSONValue(v any) any {
	switch t := v.(type) {
	case []byte:
		return base64.StdEncoding.EncodeToString(t)
	case big.Int:
		return json.Number(t.String())
	case *big.Int:
		return json.Number(t.String())
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return nil
		}
		return t
	case float32:
		return toJSONValue(float64(t))
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = toJSONValue(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = toJSONValue(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[fmt.Sprint(toJSONValue(k))] = toJSONValue(e)
		}
		return out
	default:
		return v
	}
}
