package wire

import (
	"bytes"
	"testing"

	"github.com/nuropb/nuropb/abi"
)

func encode(t testing.TB, e *abi.Envelope) []byte {
	b, err := abi.Default.EncodeEnvelope(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var seeds = []*abi.Envelope{
	{Kind: abi.KindRequest, ID: "1", TraceID: "t", Service: "greeter", Method: "hello", Params: abi.RawValue{0xa1, 0x64, 'n', 'a', 'm', 'e', 0x63, 'A', 'd', 'a'},
		Context: map[string]any{"user": "ada"}, Deadline: 1900000000000, Tenant: "acme", Depth: 2},
	{Kind: abi.KindEvent, Topic: "order.created", Event: abi.RawValue{0x83, 1, 2, 3}},
	{Kind: abi.KindResponse, ID: "9", Result: abi.RawValue{0xf6}},
	{Kind: abi.KindResponse, Error: &abi.Error{Code: abi.CodeHandler, Message: "no", Details: map[string]any{"k": 1}}},
	{Kind: abi.KindCommand, Service: "s", Method: "m", ServedBy: "abc"},
}

// agree checks that an envelope abi.Codec accepts is read the same by Parse,
// and that AppendEnvelope writes back what the codec reads as the same.
func agree(t *testing.T, frame []byte) {
	var w Envelope
	werr := Parse(frame, abi.DefaultLimits, &w)
	ep, err := abi.Default.DecodeEnvelope(frame)
	if err != nil {
		return
	}
	e := *ep
	if werr != nil {
		t.Fatalf("abi accepts %x, Parse refuses: %v", frame, werr)
	}
	if string(w.Kind) != string(e.Kind) || string(w.ID) != e.ID || string(w.TraceID) != e.TraceID ||
		string(w.Service) != e.Service || string(w.Method) != e.Method || string(w.Topic) != e.Topic ||
		string(w.Tenant) != e.Tenant || w.Deadline != e.Deadline || w.Depth != int64(e.Depth) ||
		!bytes.Equal(w.Params, e.Params) || !bytes.Equal(w.Event, e.Event) || !bytes.Equal(w.Result, e.Result) {
		t.Fatalf("Parse(%x) = %+v, abi reads %+v", frame, w, e)
	}
	var back abi.Envelope
	if err := abi.Default.Unmarshal(AppendEnvelope(nil, &w), &back); err != nil {
		t.Fatalf("AppendEnvelope of %x does not decode: %v", frame, err)
	}
	if back.Kind != e.Kind || back.ID != e.ID || back.Service != e.Service || back.Deadline != e.Deadline || !bytes.Equal(back.Params, e.Params) {
		t.Fatalf("round trip of %x: %+v, want %+v", frame, back, e)
	}
}

func TestParseAgreesWithCodec(t *testing.T) {
	for _, s := range seeds {
		agree(t, encode(t, s))
		var w Envelope
		if err := Parse(encode(t, s), abi.DefaultLimits, &w); err != nil || w.Validate() != nil {
			t.Fatalf("%+v: %v", s, err)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	deep := bytes.Repeat([]byte{0x81}, 40)
	for name, frame := range map[string][]byte{
		"empty":      nil,
		"not a map":  {0x80},
		"indefinite": {0xbf, 0xff},
		"truncated":  {0xa1, 0x64, 'k', 'i'},
		"dup key":    {0xa2, 0x62, 'i', 'd', 0x61, 'a', 0x62, 'i', 'd', 0x61, 'b'},
		"bad kind":   {0xa1, 0x64, 'k', 'i', 'n', 'd', 0x01},
		"too deep":   append(append([]byte{0xa1, 0x66, 'p', 'a', 'r', 'a', 'm', 's'}, deep...), 0x00),
		"trailing":   {0xa0, 0x00},
		"huge count": {0xa1, 0x66, 'p', 'a', 'r', 'a', 'm', 's', 0x9b, 0, 0, 0, 1, 0, 0, 0, 0},
	} {
		var w Envelope
		if err := Parse(frame, abi.DefaultLimits, &w); err == nil {
			t.Errorf("%s: accepted %x", name, frame)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range seeds {
		f.Add(encode(f, s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		agree(t, frame)
	})
}
