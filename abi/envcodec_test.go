package abi

import (
	"bytes"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// envelopeSamples are envelopes of every shape the direct path handles, and
// some it hands back to the reflective one.
func envelopeSamples(t testing.TB) []*Envelope {
	params, err := Default.JSONToCBOR([]byte(`{"name":"Ada","n":3,"l":[1,2.5,"x",null,true]}`))
	if err != nil {
		t.Fatal(err)
	}
	return []*Envelope{
		{},
		{Kind: KindRequest, Service: "a", Method: "b", ID: "1"},
		{Kind: KindRequest, ID: "c1", TraceID: "t1", Service: "greeter", Method: "hello", Params: params,
			Context: map[string]any{"token": "x"}, Deadline: 1700000000123, Tenant: "acme", Depth: 2, ServedBy: "abc"},
		{Kind: KindResponse, ID: "c1", Result: RawValue{0xa0}, Error: &Error{Code: CodeHandler, Message: "no",
			Details: map[string]any{"field": "x"}}},
		{Kind: KindEvent, Topic: "a.b", Event: RawValue{0x83, 0x01, 0x02, 0x03}, Deadline: -5, Depth: -1},
		{Kind: "odd", ID: string(bytes.Repeat([]byte("i"), 300)), Deadline: 1 << 40, Depth: 1 << 20},
		{Kind: KindCommand, Params: RawValue{0xc1, 0x01}}, // a tag: reflective path
		{Kind: KindRequest, Params: RawValue{0xff}},       // not well-formed: an encode error
		{Kind: KindRequest, Context: map[string]any{}},
		{Kind: KindResponse, Result: bytes.Repeat([]byte{0x40}, 1)},
	}
}

func TestEnvelopeCodecMatches(t *testing.T) {
	for i, env := range envelopeSamples(t) {
		want, werr := Default.enc.Marshal(env)
		got, gerr := Default.Marshal(env)
		if (werr != nil) != (gerr != nil) || (werr == nil && !bytes.Equal(got, want)) {
			t.Fatalf("sample %d: encode gives %x, %v; reflective %x, %v", i, got, gerr, want, werr)
		}
		if werr != nil {
			continue
		}
		checkDecodeMatches(t, Default, want)
	}
	// Shapes only the reflective decoder handles, or refuses.
	for _, b := range [][]byte{
		{0xa1, 0x64, 'k', 'i', 'n', 'd', 0xf6},                                      // null kind
		{0xa1, 0x63, 'f', 'o', 'o', 0x01},                                           // unknown key
		{0xa2, 0x62, 'i', 'd', 0x61, 'a', 0x62, 'i', 'd', 0x61, 'b'},                // duplicate key
		{0xa1, 0x62, 'i', 'd', 0x41, 'a'},                                           // bytes for text
		{0xa1, 0x62, 'i', 'd', 0x61, 0xff},                                          // invalid UTF-8
		{0xa1, 0x65, 'd', 'e', 'p', 't', 'h', 0x1b, 0xff, 0, 0, 0, 0, 0, 0, 0},      // int overflow
		{0xa1, 0x65, 'd', 'e', 'p', 't', 'h', 0xf9, 0x3c, 0x00},                     // float for int
		{0xa1, 0x66, 'p', 'a', 'r', 'a', 'm', 's', 0xf6},                            // null raw
		{0xa1, 0x66, 'p', 'a', 'r', 'a', 'm', 's', 0xc0, 0x61, 'x'},                 // tagged raw
		{0xa1, 0x65, 'e', 'r', 'r', 'o', 'r', 0xa1, 0x64, 'c', 'o', 'd', 'e', 0x01}, // wrong error field
		{0xa1, 0x67, 'c', 'o', 'n', 't', 'e', 'x', 't', 0xa1, 0x01, 0x02},           // int key in context
		{0xa1, 0x62, 'i', 'd', 0x61, 'a', 0x00},                                     // trailing byte
		{0xa2, 0x62, 'i', 'd', 0x61, 'a'},                                           // truncated
		{0x80},                                                                      // not a map
		{0xa1, 0x64, 'K', 'i', 'n', 'd', 0x61, 'a'},                                 // case differs
		{0xa1, 0x64, 'k', 'i', 'n', 'd', 0x67, 'r', 'e', 'q', 'u', 'e', 's', 't'},   // interned kind
		{0xa1, 0x68, 'd', 'e', 'a', 'd', 'l', 'i', 'n', 'e', 0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, // min int64
	} {
		checkDecodeMatches(t, Default, b)
	}
}

// checkDecodeMatches decodes b on the direct and the reflective path and
// fails unless both give the same envelope or both refuse it.
func checkDecodeMatches(t testing.TB, c *Codec, b []byte) {
	t.Helper()
	var want Envelope
	werr := c.dec.Unmarshal(b, &want)
	if werr == nil {
		werr = c.checkDepth(b)
	}
	if len(b) == 0 || len(b) > c.limits.MaxFrame {
		return
	}
	got, ok := (*Envelope)(nil), false
	if c.dec.Wellformed(b) == nil && c.checkDepth(b) == nil {
		got, ok = c.decodeEnvelope(b)
	}
	if ok && werr != nil {
		t.Fatalf("%x: direct path accepts what the reflective one refuses (%v): %+v", b, werr, got)
	}
	if ok && !reflect.DeepEqual(*got, want) {
		t.Fatalf("%x: direct path gives %+v, reflective %+v", b, *got, want)
	}
	// And through the public API, whichever path it takes.
	var viaAPI Envelope
	aerr := c.Unmarshal(b, &viaAPI)
	if (aerr != nil) != (werr != nil) || (aerr == nil && !reflect.DeepEqual(viaAPI, want)) {
		t.Fatalf("%x: Unmarshal gives %+v, %v; reflective %+v, %v", b, viaAPI, aerr, want, werr)
	}
}

func TestUnmarshalMergesIntoNonZero(t *testing.T) {
	b, _ := Default.EncodeEnvelope(&Envelope{Kind: KindResponse, ID: "x"})
	e := Envelope{Method: "kept"}
	if err := Default.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	if e.Method != "kept" || e.ID != "x" {
		t.Fatalf("decoding into a non-zero envelope must merge, as the reflective decoder does: %+v", e)
	}
}

func TestRawValuesDoNotShareCapacity(t *testing.T) {
	b, _ := Default.EncodeEnvelope(&Envelope{Kind: KindResponse, Params: RawValue{0x01}, Result: RawValue{0x02}})
	e, err := Default.DecodeEnvelope(b)
	if err != nil {
		t.Fatal(err)
	}
	_ = append(e.Params, 0x09)
	if !bytes.Equal(e.Result, RawValue{0x02}) {
		t.Fatalf("appending to params changed result: %x", e.Result)
	}
}

func FuzzEnvelopeCodecMatches(f *testing.F) {
	for _, env := range envelopeSamples(f) {
		if b, err := Default.enc.Marshal(env); err == nil {
			f.Add(b)
		}
	}
	small := MustCodec(Limits{MaxFrame: 4096, MaxDepth: 8, MaxElements: 64})
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecodeMatches(t, Default, b)
		checkDecodeMatches(t, small, b)
		env, err := Default.DecodeEnvelope(b)
		if err != nil {
			return
		}
		want, werr := Default.enc.Marshal(env)
		got, gerr := Default.Marshal(env)
		if (werr != nil) != (gerr != nil) || (werr == nil && len(env.Context) < 2 && !bytes.Equal(got, want)) {
			t.Fatalf("encode gives %x, %v; reflective %x, %v", got, gerr, want, werr)
		}
	})
}

func BenchmarkEnvelopeCodec(b *testing.B) {
	env := &Envelope{Kind: KindRequest, ID: "0123456789abcdef-1a", TraceID: "0123456789abcdef0123456789abcdef",
		Service: "conformance", Method: "echo", Params: RawValue{0xa0}, Deadline: 1700000000123, Tenant: "default",
		ServedBy: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}
	enc, _ := Default.enc.Marshal(env)
	b.Run("encode/reflective", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = Default.enc.Marshal(env)
		}
	})
	b.Run("encode/direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = Default.EncodeEnvelope(env)
		}
	})
	b.Run("decode/reflective", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var e Envelope
			_ = Default.dec.Unmarshal(enc, &e)
		}
	})
	b.Run("decode/direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = Default.DecodeEnvelope(enc)
		}
	})
}

func TestValidNameMatchesItsPattern(t *testing.T) {
	re := regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	long := strings.Repeat("a", 63)
	for _, s := range []string{"", "a", "A", "a1", "1a", "a-b_c", "a.b", "a b", "é", "aé", long, long + "a", "a\n", "-a", "z9", "a/b"} {
		if ValidName(s) != re.MatchString(s) {
			t.Errorf("ValidName(%q) = %v, the pattern says %v", s, ValidName(s), re.MatchString(s))
		}
	}
}
