package wasmsection

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"io/fs"
)

// MaxEntrySize caps the uncompressed size of one compressed entry that
// ZipFS inflates into memory when it is opened. Stored (uncompressed)
// entries are served straight from the archive bytes and have no cap beyond
// the archive's own size.
const MaxEntrySize = 64 << 20

// ZipFS serves a zip archive (the payload of a nuropb.fs section) as a
// read-only fs.FS whose files support Seek and ReadAt, which the guest needs
// (Python's zipimport seeks in the standard library zip); archive/zip's own
// fs.FS files are not seekable. Stored entries read directly from archive,
// which must not change while the FS is in use; deflated entries are
// inflated into memory on each open.
func ZipFS(archive []byte) (fs.FS, error) {
	zr, err := zip.NewReader(bytes.NewReader(archive), int64(len(archive)))
	if err != nil {
		return nil, fmt.Errorf("wasmsection: %s section: %w", FSSection, err)
	}
	z := &zipFS{archive: archive, zr: zr, files: make(map[string]*zip.File, len(zr.File))}
	for _, f := range zr.File {
		if !f.Mode().IsRegular() || !fs.ValidPath(f.Name) {
			continue
		}
		if _, dup := z.files[f.Name]; dup {
			return nil, fmt.Errorf("wasmsection: %s section: %q appears twice in the archive", FSSection, f.Name)
		}
		switch f.Method {
		case zip.Store, zip.Deflate:
		default:
			return nil, fmt.Errorf("wasmsection: %s section: %q uses unsupported compression method %d", FSSection, f.Name, f.Method)
		}
		z.files[f.Name] = f
	}
	return z, nil
}

type zipFS struct {
	archive []byte
	zr      *zip.Reader
	files   map[string]*zip.File
}

func (z *zipFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	f, ok := z.files[name]
	if !ok {
		// Directories (explicit or implied by file paths) come from
		// archive/zip, which lists them for ReadDir.
		d, err := z.zr.Open(name)
		if err != nil {
			return nil, err
		}
		if st, err := d.Stat(); err != nil || !st.IsDir() {
			d.Close()
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
		return d, nil
	}
	var r *io.SectionReader
	switch f.Method {
	case zip.Store:
		off, err := f.DataOffset()
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		if off < 0 || uint64(off)+f.UncompressedSize64 > uint64(len(z.archive)) {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("entry runs past the archive")}
		}
		r = io.NewSectionReader(bytes.NewReader(z.archive), off, int64(f.UncompressedSize64))
	default:
		if f.UncompressedSize64 > MaxEntrySize {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%d bytes uncompressed, over the %d byte limit", f.UncompressedSize64, MaxEntrySize)}
		}
		rc, err := f.Open()
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		b, err := io.ReadAll(io.LimitReader(rc, int64(f.UncompressedSize64)+1))
		rc.Close()
		if err == nil && uint64(len(b)) != f.UncompressedSize64 {
			err = fmt.Errorf("inflated to %d bytes, header says %d", len(b), f.UncompressedSize64)
		}
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		r = io.NewSectionReader(bytes.NewReader(b), 0, int64(len(b)))
	}
	return &zipFile{SectionReader: r, info: f.FileInfo()}, nil
}

// zipFile is an open regular file: Read, Seek and ReadAt over its bytes.
type zipFile struct {
	*io.SectionReader
	info fs.FileInfo
}

func (f *zipFile) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *zipFile) Close() error               { return nil }
