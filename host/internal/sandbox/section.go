package sandbox

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
)

// fsSectionName is the custom section in which a guest carries a zip archive
// of files to mount read-only at / (Python services: interpreter stdlib and
// the service's own sources).
const fsSectionName = "nuropb.fs"

// extractSection finds the custom section called name in a WebAssembly
// binary and returns the binary without it and the section's payload. found
// is false when there is no such section, or when the binary is not
// well-formed enough to walk: the compiler then reports the real problem.
// Two sections of that name are an error.
//
// This is the minimal parser the sandbox needs; internal/wasmsection did not
// exist when it was written.
func extractSection(wasm []byte, name string) (stripped, payload []byte, found bool, err error) {
	const headerLen = 8
	if len(wasm) < headerLen || !bytes.Equal(wasm[:4], []byte("\x00asm")) {
		return wasm, nil, false, nil
	}
	start, end := -1, -1
	for off := headerLen; off < len(wasm); {
		secStart := off
		id := wasm[off]
		off++
		size, n := readU32(wasm[off:])
		if n == 0 || uint64(off+n)+uint64(size) > uint64(len(wasm)) {
			return wasm, nil, false, nil
		}
		off += n
		body := wasm[off : off+int(size)]
		off += int(size)
		if id != 0 {
			continue
		}
		nameLen, m := readU32(body)
		if m == 0 || uint64(m)+uint64(nameLen) > uint64(len(body)) {
			return wasm, nil, false, nil
		}
		if string(body[m:m+int(nameLen)]) != name {
			continue
		}
		if start >= 0 {
			return wasm, nil, false, fmt.Errorf("more than one %q custom section", name)
		}
		start, end = secStart, off
		payload = body[m+int(nameLen):]
	}
	if start < 0 {
		return wasm, nil, false, nil
	}
	stripped = make([]byte, 0, len(wasm)-(end-start))
	stripped = append(append(stripped, wasm[:start]...), wasm[end:]...)
	return stripped, payload, true, nil
}

// readU32 decodes an unsigned LEB128 number of at most 5 bytes; n is 0 when
// b does not start with one.
func readU32(b []byte) (v uint32, n int) {
	var shift uint
	for i := 0; i < 5 && i < len(b); i++ {
		c := b[i]
		if i == 4 && c > 0x0f {
			return 0, 0
		}
		v |= uint32(c&0x7f) << shift
		if c&0x80 == 0 {
			return v, i + 1
		}
		shift += 7
	}
	return 0, 0
}

// zipFS opens the payload of a nuropb.fs section as a read-only file system.
// The archive is read in place: the payload slice must not change afterwards.
func zipFS(payload []byte) (fs.FS, error) {
	zr, err := zip.NewReader(bytes.NewReader(payload), int64(len(payload)))
	if err != nil {
		return nil, fmt.Errorf("%s section is not a zip archive: %w", fsSectionName, err)
	}
	for _, f := range zr.File {
		if !fs.ValidPath(f.Name) && !fs.ValidPath(trimDirSlash(f.Name)) {
			return nil, fmt.Errorf("%s section: invalid path %q in archive", fsSectionName, f.Name)
		}
	}
	if _, err := fs.Stat(zr, "."); err != nil {
		return nil, errors.Join(fmt.Errorf("%s section: unreadable archive", fsSectionName), err)
	}
	return zr, nil
}

func trimDirSlash(s string) string {
	if len(s) > 1 && s[len(s)-1] == '/' {
		return s[:len(s)-1]
	}
	return s
}
