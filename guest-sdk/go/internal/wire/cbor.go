package wire

import (
	"encoding/binary"
	"math"

	"github.com/nuropb/nuropb/abi"
)

// CBOR major types.
const (
	MajorUint   = 0
	MajorNegInt = 1
	MajorBytes  = 2
	MajorText   = 3
	MajorArray  = 4
	MajorMap    = 5
	MajorTag    = 6
	MajorSimple = 7
)

// Encoded simple values.
const (
	False = 0xf4
	True  = 0xf5
	Null  = 0xf6
	Undef = 0xf7
)

func malformed(what string) error {
	return abi.Errorf(abi.CodeBadRequest, "malformed CBOR: %s", what)
}

// Head reads the initial byte and argument of the item at b[i:]. For major
// type 7 the argument is the simple value or the float's bits. Indefinite
// lengths and reserved encodings are refused.
func Head(b []byte, i int) (major byte, info byte, arg uint64, next int, err error) {
	if i >= len(b) {
		return 0, 0, 0, i, malformed("unexpected end of data")
	}
	major, info = b[i]>>5, b[i]&0x1f
	i++
	switch {
	case info < 24:
		return major, info, uint64(info), i, nil
	case info <= 27:
		n := 1 << (info - 24)
		if len(b)-i < n {
			return 0, 0, 0, i, malformed("unexpected end of data")
		}
		switch n {
		case 1:
			arg = uint64(b[i])
		case 2:
			arg = uint64(binary.BigEndian.Uint16(b[i:]))
		case 4:
			arg = uint64(binary.BigEndian.Uint32(b[i:]))
		default:
			arg = binary.BigEndian.Uint64(b[i:])
		}
		return major, info, arg, i + n, nil
	case info == 31:
		return 0, 0, 0, i, malformed("indefinite length is not allowed")
	default:
		return 0, 0, 0, i, malformed("reserved additional information")
	}
}

// Skip checks the item at b[i:] for well-formedness within lim and returns the
// offset just after it. depth is the nesting level of the item itself.
//
// Text is not checked for valid UTF-8 here or in Text: frames come from the
// host, whose codec already refused invalid text, and whatever reaches a
// handler is decoded by abi.Codec, which checks again. Per-byte loops are
// what a Go guest pays most for when the host interrupts guests at loop
// back-edges (wazero's WithCloseOnContextDone).
func Skip(b []byte, i, depth int, lim abi.Limits) (int, error) {
	major, info, arg, next, err := Head(b, i)
	if err != nil {
		return next, err
	}
	switch major {
	case MajorUint, MajorNegInt:
		return next, nil
	case MajorBytes, MajorText:
		if arg > uint64(len(b)-next) {
			return next, malformed("string runs past the end of data")
		}
		return next + int(arg), nil
	case MajorArray, MajorMap:
		if depth >= lim.MaxDepth {
			return next, abi.Errorf(abi.CodeBadRequest, "nesting depth is over the limit of %d", lim.MaxDepth)
		}
		if arg > uint64(lim.MaxElements) {
			return next, abi.Errorf(abi.CodeBadRequest, "%d elements, over the limit of %d", arg, lim.MaxElements)
		}
		n := int(arg)
		if major == MajorMap {
			n *= 2
		}
		if n > len(b)-next {
			return next, malformed("container runs past the end of data")
		}
		for k := 0; k < n; k++ {
			if next, err = Skip(b, next, depth+1, lim); err != nil {
				return next, err
			}
		}
		return next, nil
	case MajorTag:
		if depth >= lim.MaxDepth {
			return next, abi.Errorf(abi.CodeBadRequest, "nesting depth is over the limit of %d", lim.MaxDepth)
		}
		return Skip(b, next, depth+1, lim)
	default: // simple values and floats
		if info == 24 && arg < 32 {
			return next, malformed("invalid simple value")
		}
		return next, nil
	}
}

// Int reads a CBOR integer (major 0 or 1) at b[i:].
func Int(b []byte, i int) (int64, int, error) {
	major, _, arg, next, err := Head(b, i)
	if err != nil {
		return 0, next, err
	}
	switch {
	case major == MajorUint && arg <= math.MaxInt64:
		return int64(arg), next, nil
	case major == MajorNegInt && arg <= math.MaxInt64:
		return -1 - int64(arg), next, nil
	case major == MajorSimple && b[i] == Null:
		return 0, next, nil
	}
	return 0, next, malformed("want an integer")
}

// Text reads a text string (or null, as empty) at b[i:] and returns a view of it.
func Text(b []byte, i int) ([]byte, int, error) {
	major, _, arg, next, err := Head(b, i)
	if err != nil {
		return nil, next, err
	}
	if major == MajorSimple && b[i] == Null {
		return nil, next, nil
	}
	if major != MajorText {
		return nil, next, malformed("want a text string")
	}
	if arg > uint64(len(b)-next) {
		return nil, next, malformed("string runs past the end of data")
	}
	end := next + int(arg)
	return b[next:end], end, nil
}

// AppendHead appends an initial byte and argument.
func AppendHead(dst []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(dst, m|byte(n))
	case n <= math.MaxUint8:
		return append(dst, m|24, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, m|25), uint16(n))
	case n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(dst, m|26), uint32(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, m|27), n)
	}
}

// AppendText appends s as a text string.
func AppendText(dst []byte, s string) []byte {
	return append(AppendHead(dst, MajorText, uint64(len(s))), s...)
}

// AppendTextBytes appends s as a text string.
func AppendTextBytes(dst []byte, s []byte) []byte {
	return append(AppendHead(dst, MajorText, uint64(len(s))), s...)
}

// AppendBytes appends b as a byte string.
func AppendBytes(dst []byte, b []byte) []byte {
	return append(AppendHead(dst, MajorBytes, uint64(len(b))), b...)
}

// AppendInt appends v as an integer.
func AppendInt(dst []byte, v int64) []byte {
	if v < 0 {
		return AppendHead(dst, MajorNegInt, uint64(-1-v))
	}
	return AppendHead(dst, MajorUint, uint64(v))
}

// AppendUint appends v as an unsigned integer.
func AppendUint(dst []byte, v uint64) []byte { return AppendHead(dst, MajorUint, v) }

// AppendBool appends v.
func AppendBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, True)
	}
	return append(dst, False)
}

// AppendFloat appends v as a 64-bit float.
func AppendFloat(dst []byte, v float64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, 0xfb), math.Float64bits(v))
}
