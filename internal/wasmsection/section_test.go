package wasmsection

import (
	"archive/zip"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"testing"
	"testing/fstest"
)

// minimal is a valid empty module with one custom section ("name").
var minimal = []byte{0, 'a', 's', 'm', 1, 0, 0, 0, 0, 5, 4, 'n', 'a', 'm', 'e'}

func TestAppendSplitRoundTrip(t *testing.T) {
	payload := bytes.Repeat([]byte("zip"), 100)
	packed, err := Append(minimal, FSSection, payload)
	if err != nil {
		t.Fatal(err)
	}
	module, got, err := Split(packed, FSSection)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(module, minimal) || !bytes.Equal(got, payload) {
		t.Fatalf("split: module %x payload %d bytes", module, len(got))
	}
	secs, _ := Parse(packed)
	if len(secs) != 2 || secs[0].Name != "name" || secs[1].Name != FSSection {
		t.Fatalf("sections: %+v", secs)
	}
	// Absent section: the module comes back as it is, payload nil.
	module, got, err = Split(minimal, FSSection)
	if err != nil || got != nil || !bytes.Equal(module, minimal) {
		t.Fatalf("split without section: %x %v %v", module, got, err)
	}
	twice, _ := Append(packed, FSSection, nil)
	if _, _, err := Split(twice, FSSection); !errors.Is(err, ErrMalformed) {
		t.Fatalf("two sections: %v", err)
	}
	if all, _ := Custom(twice, FSSection); len(all) != 2 || len(all[1]) != 0 {
		t.Fatalf("custom: %v", all)
	}
	if s, _ := Strip(twice, FSSection); !bytes.Equal(s, minimal) {
		t.Fatalf("strip: %x", s)
	}
}

func TestMalformed(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":          nil,
		"bad magic":      []byte("\x00asn\x01\x00\x00\x00"),
		"version 2":      []byte("\x00asm\x02\x00\x00\x00"),
		"size past end":  append(append([]byte{}, minimal[:8]...), 1, 10, 0),
		"truncated leb":  append(append([]byte{}, minimal[:8]...), 1, 0x80),
		"leb too long":   append(append([]byte{}, minimal[:8]...), 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0),
		"name past data": append(append([]byte{}, minimal[:8]...), 0, 2, 5, 'a'),
	} {
		if _, err := Parse(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

func FuzzSplit(f *testing.F) {
	f.Add(minimal)
	p, _ := Append(minimal, FSSection, []byte("payload"))
	f.Add(p)
	f.Add([]byte("\x00asm\x01\x00\x00\x00\x00\x01\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		module, payload, err := Split(b, FSSection)
		if err != nil {
			return
		}
		if len(module) > len(b) {
			t.Fatalf("stripped module grew")
		}
		if payload == nil {
			return
		}
		again, err := Append(module, FSSection, payload)
		if err != nil {
			t.Fatal(err)
		}
		m2, p2, err := Split(again, FSSection)
		if err != nil || !bytes.Equal(m2, module) || !bytes.Equal(p2, payload) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func TestZipFS(t *testing.T) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.CreateHeader(&zip.FileHeader{Name: "usr/local/lib/python311.zip", Method: zip.Store})
	w.Write([]byte("stored bytes"))
	w, _ = zw.CreateHeader(&zip.FileHeader{Name: "app/svc.py", Method: zip.Deflate})
	w.Write(bytes.Repeat([]byte("x = 1\n"), 100))
	zw.Close()
	fsys, err := ZipFS(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if err := fstest.TestFS(fsys, "usr/local/lib/python311.zip", "app/svc.py"); err != nil {
		t.Fatal(err)
	}
	f, _ := fsys.Open("usr/local/lib/python311.zip")
	s, ok := f.(io.ReadSeeker)
	if !ok {
		t.Fatal("files must be seekable")
	}
	s.Seek(7, io.SeekStart)
	rest, _ := io.ReadAll(s)
	if string(rest) != "bytes" {
		t.Fatalf("after seek: %q", rest)
	}
	b := make([]byte, 6)
	if n, _ := f.(io.ReaderAt).ReadAt(b, 0); n != 6 || string(b) != "stored" {
		t.Fatalf("ReadAt: %q", b)
	}
	if _, err := fsys.Open("../etc/passwd"); err == nil {
		t.Fatal("invalid path opened")
	}
	if _, err := fsys.Open("app/nope.py"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := ZipFS([]byte("not a zip")); err == nil {
		t.Fatal("not a zip accepted")
	}
}
