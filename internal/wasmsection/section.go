package wasmsection

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// FSSection is the name of the custom section holding a module's read-only
// file system, a zip archive mounted at "/" in the guest.
const FSSection = "nuropb.fs"

// ErrMalformed is wrapped by every error about bytes that are not a
// well-formed sequence of WebAssembly sections.
var ErrMalformed = errors.New("malformed wasm binary")

var header = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

// Section is one section of a module, located by offsets into its bytes.
type Section struct {
	ID    byte   // 0 for custom sections
	Name  string // custom sections only
	Start int    // offset of the section's id byte
	Data  int    // offset of the payload (after the name, for custom sections)
	End   int    // offset just past the payload
}

// Parse lists the sections of wasm, checking the header and that every
// section's size lies within the bytes. It does not validate the contents
// of non-custom sections; compiling the module does.
func Parse(wasm []byte) ([]Section, error) {
	if len(wasm) < len(header) || !bytes.Equal(wasm[:len(header)], header) {
		return nil, fmt.Errorf("%w: no wasm version 1 header", ErrMalformed)
	}
	var out []Section
	for pos := len(header); pos < len(wasm); {
		s := Section{ID: wasm[pos], Start: pos}
		size, n, err := uleb32(wasm[pos+1:])
		if err != nil {
			return nil, fmt.Errorf("%w: section %d at offset %d: size: %v", ErrMalformed, len(out), pos, err)
		}
		body := pos + 1 + n
		if uint64(size) > uint64(len(wasm)-body) {
			return nil, fmt.Errorf("%w: section %d at offset %d: %d bytes past the end", ErrMalformed, len(out), pos, uint64(body)+uint64(size)-uint64(len(wasm)))
		}
		s.End = body + int(size)
		s.Data = body
		if s.ID == 0 {
			nameLen, m, err := uleb32(wasm[body:s.End])
			if err != nil || uint64(nameLen) > uint64(s.End-body-m) {
				return nil, fmt.Errorf("%w: custom section at offset %d: bad name", ErrMalformed, pos)
			}
			s.Name = string(wasm[body+m : body+m+int(nameLen)])
			s.Data = body + m + int(nameLen)
		}
		out = append(out, s)
		pos = s.End
	}
	return out, nil
}

// Custom returns the payloads of every custom section named name, in order.
// They alias wasm.
func Custom(wasm []byte, name string) ([][]byte, error) {
	secs, err := Parse(wasm)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, s := range secs {
		if s.ID == 0 && s.Name == name {
			out = append(out, wasm[s.Data:s.End:s.End])
		}
	}
	return out, nil
}

// Strip returns wasm without its custom sections named name. When there are
// none it returns wasm itself; otherwise a new slice.
func Strip(wasm []byte, name string) ([]byte, error) {
	secs, err := Parse(wasm)
	if err != nil {
		return nil, err
	}
	return strip(wasm, secs, name), nil
}

func strip(wasm []byte, secs []Section, name string) []byte {
	cut := 0
	for _, s := range secs {
		if s.ID == 0 && s.Name == name {
			cut += s.End - s.Start
		}
	}
	if cut == 0 {
		return wasm
	}
	out := make([]byte, 0, len(wasm)-cut)
	out = append(out, wasm[:len(header)]...)
	for _, s := range secs {
		if !(s.ID == 0 && s.Name == name) {
			out = append(out, wasm[s.Start:s.End]...)
		}
	}
	return out
}

// Append returns a copy of wasm with a custom section name holding payload
// added at the end. Appending at the end means Strip gives back exactly the
// original bytes, so modules that differ only in this section share one
// content hash once stripped.
func Append(wasm []byte, name string, payload []byte) ([]byte, error) {
	if _, err := Parse(wasm); err != nil {
		return nil, err
	}
	if uint64(len(name))+uint64(len(payload))+5 > 1<<32-1 {
		return nil, fmt.Errorf("wasmsection: custom section %q of %d bytes is too large", name, len(payload))
	}
	var nameLen []byte
	nameLen = binary.AppendUvarint(nameLen, uint64(len(name)))
	size := len(nameLen) + len(name) + len(payload)
	out := make([]byte, 0, len(wasm)+1+5+size)
	out = append(out, wasm...)
	out = append(out, 0)
	out = binary.AppendUvarint(out, uint64(size))
	out = append(out, nameLen...)
	out = append(out, name...)
	out = append(out, payload...)
	return out, nil
}

// Split separates wasm into the module without the custom section name and
// that section's payload (nil when absent). More than one section of that
// name is an error, so that what runs cannot depend on which one a reader
// picks. The payload aliases wasm.
func Split(wasm []byte, name string) (module, payload []byte, err error) {
	secs, err := Parse(wasm)
	if err != nil {
		return nil, nil, err
	}
	found := 0
	for _, s := range secs {
		if s.ID == 0 && s.Name == name {
			found++
			payload = wasm[s.Data:s.End:s.End]
		}
	}
	if found > 1 {
		return nil, nil, fmt.Errorf("%w: %d custom sections named %q, want at most one", ErrMalformed, found, name)
	}
	return strip(wasm, secs, name), payload, nil
}

// uleb32 decodes an unsigned LEB128 value of at most 32 bits (5 bytes).
func uleb32(b []byte) (v uint32, n int, err error) {
	var shift uint
	for i := 0; i < 5; i++ {
		if i >= len(b) {
			return 0, 0, errors.New("truncated LEB128")
		}
		c := b[i]
		if i == 4 && c > 0x0f {
			return 0, 0, errors.New("LEB128 overflows 32 bits")
		}
		v |= uint32(c&0x7f) << shift
		if c&0x80 == 0 {
			return v, i + 1, nil
		}
		shift += 7
	}
	return 0, 0, errors.New("LEB128 longer than 5 bytes")
}
