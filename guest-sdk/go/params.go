package nuropb

import (
	"encoding"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/guest-sdk/go/internal/wire"
)

var limits = abi.Default.Limits()

// Validator is implemented by params types that check themselves after
// decoding. A plain error becomes bad_request with its text; an *abi.Error
// keeps its code.
type Validator interface {
	Validate() error
}

// class is a set of CBOR value classes, for checking a param's top-level type
// before the codec decodes it, so that the error names the param.
type class uint16

const (
	cInt class = 1 << iota
	cNegInt
	cBytes
	cText
	cList
	cMap
	cTag
	cBool
	cNull
	cFloat
	cOther
	cAny = 1<<iota - 1
)

func classOf(raw []byte) class {
	switch raw[0] >> 5 {
	case wire.MajorUint:
		return cInt
	case wire.MajorNegInt:
		return cNegInt
	case wire.MajorBytes:
		return cBytes
	case wire.MajorText:
		return cText
	case wire.MajorArray:
		return cList
	case wire.MajorMap:
		return cMap
	case wire.MajorTag:
		return cTag
	}
	switch raw[0] {
	case wire.True, wire.False:
		return cBool
	case wire.Null, wire.Undef:
		return cNull
	case 0xf9, 0xfa, 0xfb:
		return cFloat
	}
	return cOther
}

func (c class) String() string {
	switch c {
	case cInt, cNegInt:
		return "int"
	case cBytes:
		return "bytes"
	case cText:
		return "string"
	case cList:
		return "list"
	case cMap:
		return "map"
	case cTag:
		return "tagged value"
	case cBool:
		return "bool"
	case cNull:
		return "null"
	case cFloat:
		return "float"
	}
	return "simple value"
}

var (
	rawType         = reflect.TypeFor[abi.RawValue]()
	timeType        = reflect.TypeFor[time.Time]()
	bigIntType      = reflect.TypeFor[big.Int]()
	cborUnmarshaler = reflect.TypeFor[cbor.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// typeName maps a Go type to the manifest's type vocabulary: string, int,
// float, bool, bytes, list, map, any.
func typeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == rawType:
		return "any"
	case t == timeType:
		return "string"
	case t == bigIntType:
		return "int"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "int"
	case reflect.Float32, reflect.Float64:
		return "float"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "bytes"
		}
		return "list"
	case reflect.Map, reflect.Struct:
		return "map"
	}
	return "any"
}

// accepts returns the CBOR classes that may decode into t at the top level.
// It is deliberately loose where the codec has its own rules (tags, custom
// unmarshalers): those values go to the codec, whose error is reported.
func accepts(t reflect.Type) class {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	pt := reflect.PointerTo(t)
	if t == rawType || t == timeType || t == bigIntType || pt.Implements(cborUnmarshaler) || pt.Implements(textUnmarshaler) {
		return cAny
	}
	switch typeName(t) {
	case "string":
		return cText | cTag | cNull
	case "bool":
		return cBool | cNull
	case "int":
		if t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uintptr {
			return cInt | cTag | cNull
		}
		return cInt | cNegInt | cTag | cNull
	case "float":
		return cInt | cNegInt | cFloat | cTag | cNull
	case "bytes":
		return cBytes | cTag | cNull
	case "list":
		return cList | cTag | cNull
	case "map":
		return cMap | cTag | cNull
	}
	return cAny
}

// field is one keyword param of a struct params type.
type field struct {
	name     string
	typ      string
	rtype    reflect.Type
	required bool
	doc      string
	accepts  class
}

// schemaKind says how params arrive in the method's params type.
type schemaKind int

const (
	kindStruct schemaKind = iota // keyword params checked against fields
	kindRaw                      // abi.RawValue: the params map as it came
	kindMap                      // map[string]T or any: decoded by the codec
)

// schema is what Method learns about a params type once, at registration.
type schema struct {
	kind     schemaKind
	fields   []field
	validate bool // *P implements Validator
}

func schemaOf(t reflect.Type) (*schema, error) {
	s := &schema{validate: reflect.PointerTo(t).Implements(reflect.TypeFor[Validator]()) || t.Implements(reflect.TypeFor[Validator]())}
	switch {
	case t == rawType:
		s.kind = kindRaw
	case t.Kind() == reflect.Interface:
		s.kind = kindMap
	case t.Kind() == reflect.Map:
		if t.Key().Kind() != reflect.String {
			return nil, fmt.Errorf("params type %v: map keys must be strings (params are keyword arguments)", t)
		}
		s.kind = kindMap
	case t.Kind() == reflect.Struct:
		if err := s.addFields(t, nil); err != nil {
			return nil, err
		}
		if len(s.fields) > 64 {
			return nil, fmt.Errorf("params type %v has %d params, more than 64", t, len(s.fields))
		}
	default:
		return nil, fmt.Errorf("params type %v is not a struct, a map with string keys, abi.RawValue or any (params are keyword arguments)", t)
	}
	return s, nil
}

// addFields collects t's keyword params as the codec sees them: the cbor tag's
// name (or the json tag's, or the field name), embedded structs flattened,
// "-" and unexported fields skipped.
func (s *schema) addFields(t reflect.Type, seen []reflect.Type) error {
	for _, st := range seen {
		if st == t {
			return nil
		}
	}
	seen = append(seen, t)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, hasTag := f.Tag.Lookup("cbor")
		if !hasTag {
			tag = f.Tag.Get("json")
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" && opts == "" {
			continue
		}
		if strings.Contains(","+opts+",", ",toarray,") || strings.Contains(","+opts+",", ",keyasint,") {
			return fmt.Errorf("params type %v: field %s uses %q, but params are a map with text keys", t, f.Name, opts)
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if err := s.addFields(ft, seen); err != nil {
					return err
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		nt := f.Tag.Get("nuropb")
		required := false
		for _, o := range strings.Split(nt, ",") {
			switch strings.TrimSpace(o) {
			case "required":
				required = true
			case "":
			default:
				return fmt.Errorf("params type %v: field %s: unknown nuropb tag option %q (known: required)", t, f.Name, o)
			}
		}
		for _, have := range s.fields {
			if have.name == name {
				return fmt.Errorf("params type %v: two fields are named %q", t, name)
			}
		}
		s.fields = append(s.fields, field{
			name:     name,
			typ:      typeName(f.Type),
			rtype:    f.Type,
			required: required,
			doc:      f.Tag.Get("doc"),
			accepts:  accepts(f.Type),
		})
	}
	return nil
}

func (s *schema) manifestParams() []abi.Param {
	if len(s.fields) == 0 {
		return nil
	}
	ps := make([]abi.Param, len(s.fields))
	for i, f := range s.fields {
		ps[i] = abi.Param{Name: f.name, Type: f.typ, Required: f.required, Description: f.doc}
	}
	return ps
}

// lookup finds the field for a params key the way the codec does: keys
// match exactly (abi's codec is case-sensitive).
func (s *schema) lookup(key []byte) int {
	for i := range s.fields {
		if s.fields[i].name == string(key) {
			return i
		}
	}
	return -1
}

func badParams(format string, args ...any) error {
	return abi.Errorf(abi.CodeBadRequest, format, args...)
}

// decode checks raw (the envelope's params, possibly absent) against s and
// decodes it into p, a pointer to the params type.
func (s *schema) decode(raw []byte, p any) error {
	absent := len(raw) == 0 || raw[0] == wire.Null
	if !absent && raw[0]>>5 != wire.MajorMap {
		return badParams("params must be a map of keyword params, got %s", classOf(raw))
	}
	switch s.kind {
	case kindRaw:
		if !absent {
			*(p.(*abi.RawValue)) = append(abi.RawValue(nil), raw...)
		}
		return s.check(p)
	case kindMap:
		if !absent {
			if err := abi.Default.Unmarshal(raw, p); err != nil {
				return badParams("params: %s", abi.AsError(err).Message)
			}
		}
		return s.check(p)
	}
	var present uint64
	it := wire.NewMapIter(raw, limits)
	for it.Next(limits) {
		i := s.lookup(it.Key())
		if i < 0 {
			return badParams("unknown param %q%s", it.Key(), s.known())
		}
		f := &s.fields[i]
		c := classOf(it.Value())
		if c&f.accepts == 0 {
			return badParams("param %q: want %s, got %s", f.name, f.typ, c)
		}
		if c != cNull {
			present |= 1 << i
		}
	}
	if err := it.Err(); err != nil {
		return badParams("params: %s", abi.AsError(err).Message)
	}
	for i := range s.fields {
		if s.fields[i].required && present&(1<<i) == 0 {
			return badParams("missing required param %q", s.fields[i].name)
		}
	}
	if present != 0 {
		if err := abi.Default.Unmarshal(raw, p); err != nil {
			if where := mismatch(raw, reflect.TypeOf(p).Elem(), ""); where != "" {
				return badParams("param %s", where)
			}
			return badParams("params: %s", decodeMessage(err))
		}
	}
	return s.check(p)
}

// mismatch walks raw alongside t to name the first value whose type cannot
// decode into t's, as path: "items[0].qty: want int, got string". It runs only
// after the codec failed, to explain where; "" means it found nothing.
func mismatch(raw []byte, t reflect.Type, path string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	c := classOf(raw)
	if c&accepts(t) == 0 {
		return fmt.Sprintf("%s: want %s, got %s", strings.TrimPrefix(path, "."), typeName(t), c)
	}
	if accepts(t) == cAny {
		return ""
	}
	switch {
	case c == cList && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
		_, _, n, i, err := wire.Head(raw, 0)
		for k := 0; err == nil && uint64(k) < n; k++ {
			var end int
			if end, err = wire.Skip(raw, i, 1, limits); err == nil {
				if w := mismatch(raw[i:end], t.Elem(), fmt.Sprintf("%s[%d]", path, k)); w != "" {
					return w
				}
				i = end
			}
		}
	case c == cMap && t.Kind() == reflect.Map:
		it := wire.NewMapIter(raw, limits)
		for it.Next(limits) {
			if w := mismatch(it.Value(), t.Elem(), fmt.Sprintf("%s[%q]", path, it.Key())); w != "" {
				return w
			}
		}
	case c == cMap && t.Kind() == reflect.Struct:
		s, err := schemaOf(t)
		if err != nil {
			return ""
		}
		it := wire.NewMapIter(raw, limits)
		for it.Next(limits) {
			i := s.lookup(it.Key())
			if i < 0 {
				continue
			}
			if w := mismatch(it.Value(), s.fields[i].rtype, path+"."+s.fields[i].name); w != "" {
				return w
			}
		}
	}
	return ""
}

// check runs the params type's own Validate, if it has one.
func (s *schema) check(p any) error {
	if !s.validate {
		return nil
	}
	v, ok := p.(Validator)
	if !ok {
		v, ok = reflect.ValueOf(p).Elem().Interface().(Validator)
	}
	if !ok {
		return nil
	}
	if err := v.Validate(); err != nil {
		var e *abi.Error
		if errors.As(err, &e) {
			return e
		}
		return badParams("%s", err.Error())
	}
	return nil
}

func (s *schema) known() string {
	if len(s.fields) == 0 {
		return " (the method takes no params)"
	}
	names := make([]string, len(s.fields))
	for i, f := range s.fields {
		names[i] = f.name
	}
	return " (known: " + strings.Join(names, ", ") + ")"
}

// decodeMessage shortens the codec's message for a params decode failure.
func decodeMessage(err error) string {
	return strings.TrimPrefix(strings.TrimPrefix(abi.AsError(err).Message, "malformed CBOR: "), "cbor: ")
}

// appendResult appends r encoded as CBOR to dst: common types directly,
// everything else through abi.Default.
func appendResult[R any](dst []byte, r R) ([]byte, error) {
	switch v := any(r).(type) {
	case string:
		return wire.AppendText(dst, v), nil
	case bool:
		return wire.AppendBool(dst, v), nil
	case int:
		return wire.AppendInt(dst, int64(v)), nil
	case int64:
		return wire.AppendInt(dst, v), nil
	case nil:
		return append(dst, wire.Null), nil
	case NoParams:
		return append(dst, 0xa0), nil
	case abi.RawValue:
		if len(v) == 0 {
			return append(dst, wire.Null), nil
		}
		if end, err := wire.Skip(v, 0, 0, limits); err != nil || end != len(v) {
			return dst, abi.Errorf(abi.CodeInternal, "the handler returned a raw result that is not one well-formed CBOR value")
		}
		return append(dst, v...), nil
	}
	b, err := abi.Default.Marshal(r)
	if err != nil {
		e := abi.AsError(err)
		return dst, abi.Errorf(e.Code, "encode result: %s", e.Message)
	}
	return append(dst, b...), nil
}
