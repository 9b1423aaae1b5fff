package pack

import (
	"archive/zip"
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nuropb/nuropb/internal/wasmsection"
)

// Paths inside the nuropb.fs archive.
const (
	AppDir     = "app"                         // the service's files
	EntryFile  = "app/nuropb.entry"            // the module name the runtime imports
	StdlibPath = "usr/local/lib/python311.zip" // the standard library (and the SDK)
)

// MaxServiceBytes caps the total size of a service's files.
const MaxServiceBytes = 64 << 20

// SyntaxError is a Python source file that does not compile.
type SyntaxError struct {
	File string // the path as given to Pack (joined with the file inside a folder)
	Line int
	Col  int
	Msg  string // Python's message, e.g. "invalid syntax"
	Text string // the offending line, when known
}

func (e *SyntaxError) Error() string {
	s := fmt.Sprintf("%s:%d:%d: SyntaxError: %s", e.File, e.Line, e.Col, e.Msg)
	if t := strings.TrimSpace(e.Text); t != "" {
		s += "\n    " + t
	}
	return s
}

// Build packs servicePath with the runtime found by LoadRuntime.
func Build(servicePath string) ([]byte, error) {
	wasm, stdlib, err := LoadRuntime()
	if err != nil {
		return nil, err
	}
	return Pack(wasm, stdlib, servicePath)
}

// Pack builds one deployable .wasm from the runtime module, the stdlib zip
// and a service: a .py file (module named after the file), a folder with an
// __init__.py (a package named after the folder), or a folder with a
// service.py (its files go to /app, the entry is "service"). In a folder,
// hidden files, __pycache__, *.pyc, tests/ folders and test_*.py / *_test.py
// files are left out.
//
// Every .py file is compiled with the machine's Python (python3.11 if on
// PATH, else python3; $NUROPB_PYTHON overrides) to catch syntax errors,
// returned as *SyntaxError with file and line. When that Python is 3.11 its
// bytecode is packed too, which saves each instance compiling the source.
// The output is deterministic: the same inputs give the same bytes.
func Pack(runtimeWasm, stdlibZip []byte, servicePath string) ([]byte, error) {
	if _, fsys, err := wasmsection.Split(runtimeWasm, wasmsection.FSSection); err != nil {
		return nil, fmt.Errorf("pack: runtime module: %w", err)
	} else if fsys != nil {
		return nil, fmt.Errorf("pack: runtime module already carries a %s section (is it a packed service?)", wasmsection.FSSection)
	}
	if len(stdlibZip) < 4 || !bytes.Equal(stdlibZip[:2], []byte("PK")) {
		return nil, errors.New("pack: the stdlib zip is not a zip archive")
	}
	files, entry, err := collect(servicePath)
	if err != nil {
		return nil, err
	}
	pycs, err := compile(servicePath, files, entry)
	if err != nil {
		return nil, err
	}
	archive, err := buildArchive(files, pycs, entry, stdlibZip)
	if err != nil {
		return nil, err
	}
	return wasmsection.Append(runtimeWasm, wasmsection.FSSection, archive)
}

// srcFile is one file of the service: where it is, and where it goes under app/.
type srcFile struct {
	disk string // path on disk
	rel  string // slash path under app/
	show string // path for messages
}

// collect lists the service's files and its entry module.
func collect(servicePath string) ([]srcFile, string, error) {
	st, err := os.Stat(servicePath)
	if err != nil {
		return nil, "", fmt.Errorf("pack: %w", err)
	}
	if !st.IsDir() {
		base := filepath.Base(servicePath)
		mod, ok := strings.CutSuffix(base, ".py")
		if !ok || !isIdentifier(mod) {
			return nil, "", fmt.Errorf("pack: %s: want a .py file named like a Python module (letters, digits, _), or a folder", servicePath)
		}
		return []srcFile{{disk: servicePath, rel: base, show: servicePath}}, mod, nil
	}
	var prefix, entry string
	if _, err := os.Stat(filepath.Join(servicePath, "__init__.py")); err == nil {
		name := filepath.Base(filepath.Clean(servicePath))
		if !isIdentifier(name) {
			return nil, "", fmt.Errorf("pack: %s: a package folder must be named like a Python module (letters, digits, _)", servicePath)
		}
		prefix, entry = name+"/", name
	} else if _, err := os.Stat(filepath.Join(servicePath, "service.py")); err == nil {
		entry = "service"
	} else {
		return nil, "", fmt.Errorf("pack: %s: a service folder needs an __init__.py (a package) or a service.py", servicePath)
	}
	var files []srcFile
	total := int64(0)
	err = filepath.WalkDir(servicePath, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if p != servicePath && (strings.HasPrefix(name, ".") || name == "__pycache__" || d.IsDir() && name == "tests") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return fmt.Errorf("pack: %s is a symlink; copy the file instead", p)
		}
		if !d.Type().IsRegular() || strings.HasSuffix(name, ".pyc") || isTestFile(name) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if total += info.Size(); total > MaxServiceBytes {
			return fmt.Errorf("pack: %s: the service's files exceed %d bytes", servicePath, MaxServiceBytes)
		}
		rel, err := filepath.Rel(servicePath, p)
		if err != nil {
			return err
		}
		files = append(files, srcFile{disk: p, rel: prefix + filepath.ToSlash(rel), show: p})
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	sort.Slice(files, func(i, j int) bool { return files[i].rel < files[j].rel })
	return files, entry, nil
}

// isTestFile reports unit-test modules, which are not packed.
func isTestFile(name string) bool {
	return strings.HasSuffix(name, ".py") && (strings.HasPrefix(name, "test_") || strings.HasSuffix(name, "_test.py"))
}

func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

//go:embed check.py
var checkScript string

// checkResult is what check.py prints.
type checkResult struct {
	Version     string       `json:"version"`
	Pyc         bool         `json:"pyc"`
	SyntaxError *SyntaxError `json:"syntax_error"`
	Shadows     []string     `json:"shadows"`
}

// compile runs the machine's Python over the .py files: syntax check, stdlib
// shadowing check, and 3.11 bytecode. It returns app-relative pyc paths to
// their bytes (none when the machine's Python is not 3.11).
func compile(servicePath string, files []srcFile, entry string) (map[string][]byte, error) {
	py, err := findPython()
	if err != nil {
		return nil, err
	}
	out, err := os.MkdirTemp("", "nuropb-pack-")
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	defer os.RemoveAll(out)
	type job struct {
		Disk, Rel, Show, Pyc string
	}
	var jobs []job
	top := map[string]bool{}
	for i, f := range files {
		if !strings.HasSuffix(f.rel, ".py") {
			continue
		}
		jobs = append(jobs, job{Disk: f.disk, Rel: "/" + AppDir + "/" + f.rel, Show: f.show, Pyc: filepath.Join(out, fmt.Sprintf("%d.pyc", i))})
		if !strings.Contains(f.rel, "/") {
			top[strings.TrimSuffix(f.rel, ".py")] = true
		}
	}
	top[strings.SplitN(entry, ".", 2)[0]] = true
	var names []string
	for n := range top {
		names = append(names, n)
	}
	sort.Strings(names)
	in, _ := json.Marshal(map[string]any{"files": jobs, "modules": names})
	cmd := exec.Command(py, "-I", "-c", checkScript)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("pack: checking %s with %s: %v: %s", servicePath, py, err, strings.TrimSpace(stderr.String()))
	}
	var res checkResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return nil, fmt.Errorf("pack: checking %s with %s: unreadable output: %v", servicePath, py, err)
	}
	if res.SyntaxError != nil {
		return nil, res.SyntaxError
	}
	if len(res.Shadows) > 0 {
		return nil, fmt.Errorf("pack: %s: module name(s) %s would hide the standard library (or the nuropb SDK) of the same name; rename them",
			servicePath, strings.Join(res.Shadows, ", "))
	}
	pycs := map[string][]byte{}
	if !res.Pyc {
		return pycs, nil
	}
	for i, f := range files {
		if !strings.HasSuffix(f.rel, ".py") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(out, fmt.Sprintf("%d.pyc", i)))
		if err != nil {
			return nil, fmt.Errorf("pack: bytecode of %s: %w", f.show, err)
		}
		dir, base := path.Split(f.rel)
		pycs[dir+"__pycache__/"+strings.TrimSuffix(base, ".py")+".cpython-311.pyc"] = b
	}
	return pycs, nil
}

func findPython() (string, error) {
	if p := os.Getenv("NUROPB_PYTHON"); p != "" {
		return p, nil
	}
	for _, n := range []string{"python3.11", "python3"} {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", errors.New("pack: no python3 on PATH to check the service's syntax (install python3.11, or set NUROPB_PYTHON)")
}

// zipTime is the modification time of every archive entry, for
// reproducible output.
var zipTime = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

func buildArchive(files []srcFile, pycs map[string][]byte, entry string, stdlib []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	// Stored, not deflated: the host serves stored entries straight from the
	// module bytes, and the stdlib zip is compressed inside already.
	add := func(name string, b []byte) error {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store, Modified: zipTime})
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	entries := map[string][]byte{EntryFile: []byte(entry + "\n"), StdlibPath: stdlib}
	for _, f := range files {
		b, err := os.ReadFile(f.disk)
		if err != nil {
			return nil, fmt.Errorf("pack: %w", err)
		}
		entries[AppDir+"/"+f.rel] = b
	}
	for rel, b := range pycs {
		entries[AppDir+"/"+rel] = b
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := add(n, entries[n]); err != nil {
			return nil, fmt.Errorf("pack: archive: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("pack: archive: %w", err)
	}
	return buf.Bytes(), nil
}
