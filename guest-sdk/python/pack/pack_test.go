package pack

import (
	"archive/zip"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nuropb/nuropb/internal/wasmsection"
)

// fakeRuntime is an empty module and a one-file zip: enough for Pack,
// which never looks inside them.
func fakeRuntime(t *testing.T) (wasm, stdlib []byte) {
	t.Helper()
	if _, err := findPython(); err != nil {
		t.Skip(err)
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("os.pyc")
	w.Write([]byte("x"))
	zw.Close()
	return []byte("\x00asm\x01\x00\x00\x00"), buf.Bytes()
}

func write(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, src := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func archiveOf(t *testing.T, packed []byte) map[string]string {
	t.Helper()
	module, payload, err := wasmsection.Split(packed, wasmsection.FSSection)
	if err != nil || payload == nil || string(module) != "\x00asm\x01\x00\x00\x00" {
		t.Fatalf("split: %v, payload %d bytes, module %q", err, len(payload), module)
	}
	zr, err := zip.NewReader(bytes.NewReader(payload), int64(len(payload)))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range zr.File {
		if f.Method != zip.Store {
			t.Errorf("%s is not stored", f.Name)
		}
		rc, _ := f.Open()
		b, _ := io.ReadAll(rc)
		out[f.Name] = string(b)
	}
	return out
}

func names(m map[string]string) string {
	var n []string
	for k := range m {
		if !strings.Contains(k, "__pycache__") {
			n = append(n, k)
		}
	}
	sort.Strings(n)
	return strings.Join(n, " ")
}

func TestPackLayouts(t *testing.T) {
	wasm, stdlib := fakeRuntime(t)
	dir := t.TempDir()
	write(t, dir, map[string]string{
		"single.py":                "import nuropb\n",
		"pkg/__init__.py":          "from .impl import X\n",
		"pkg/impl.py":              "X = 1\n",
		"pkg/data/table.json":      "{}",
		"pkg/__pycache__/junk.pyc": "junk",
		"pkg/.hidden":              "h",
		"pkg/test_impl.py":         "x",
		"flat/service.py":          "import helper\n",
		"flat/helper.py":           "",
		"flat/tests/test_x.py":     "",
		"flat/README.md":           "doc",
	})
	for _, c := range []struct{ path, entry, files string }{
		{"single.py", "single", "app/nuropb.entry app/single.py usr/local/lib/python311.zip"},
		{"pkg", "pkg", "app/nuropb.entry app/pkg/__init__.py app/pkg/data/table.json app/pkg/impl.py usr/local/lib/python311.zip"},
		{"flat", "service", "app/README.md app/helper.py app/nuropb.entry app/service.py usr/local/lib/python311.zip"},
	} {
		packed, err := Pack(wasm, stdlib, filepath.Join(dir, c.path))
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		a := archiveOf(t, packed)
		if got := names(a); got != c.files {
			t.Errorf("%s: files\n got %s\nwant %s", c.path, got, c.files)
		}
		if a[EntryFile] != c.entry+"\n" || a[StdlibPath] != string(stdlib) {
			t.Errorf("%s: entry %q", c.path, a[EntryFile])
		}
		again, _ := Pack(wasm, stdlib, filepath.Join(dir, c.path))
		if !bytes.Equal(packed, again) {
			t.Errorf("%s: output is not deterministic", c.path)
		}
	}
}

func TestPackBytecodeWith311(t *testing.T) {
	wasm, stdlib := fakeRuntime(t)
	py, _ := findPython()
	out, _ := exec.Command(py, "-c", "import sys; print('%d.%d' % sys.version_info[:2])").Output()
	dir := t.TempDir()
	write(t, dir, map[string]string{"svc.py": "x = 1\n"})
	packed, err := Pack(wasm, stdlib, filepath.Join(dir, "svc.py"))
	if err != nil {
		t.Fatal(err)
	}
	pyc, ok := archiveOf(t, packed)["app/__pycache__/svc.cpython-311.pyc"]
	if strings.TrimSpace(string(out)) != "3.11" {
		if ok {
			t.Error("bytecode packed from a Python that is not 3.11")
		}
		return
	}
	// Unchecked-hash pyc: flags word 0b01 after the magic.
	if !ok || len(pyc) < 16 || pyc[4] != 1 {
		t.Errorf("want an unchecked-hash 3.11 pyc, got %d bytes", len(pyc))
	}
}

func TestPackErrors(t *testing.T) {
	wasm, stdlib := fakeRuntime(t)
	dir := t.TempDir()
	write(t, dir, map[string]string{
		"bad.py":             "def f(:\n",
		"json.py":            "x = 1\n",
		"my-svc.py":          "",
		"nofolder/x.py":      "",
		"badpkg/__init__.py": "",
		"badpkg/deep.py":     "x = (\n",
	})
	var se *SyntaxError
	_, err := Pack(wasm, stdlib, filepath.Join(dir, "bad.py"))
	if !errors.As(err, &se) || se.Line != 1 || !strings.HasPrefix(err.Error(), filepath.Join(dir, "bad.py")+":1:") {
		t.Errorf("syntax error: %v", err)
	}
	_, err = Pack(wasm, stdlib, filepath.Join(dir, "badpkg"))
	if !errors.As(err, &se) || !strings.HasSuffix(se.File, "deep.py") {
		t.Errorf("syntax error in a package: %v", err)
	}
	for path, want := range map[string]string{
		"json.py":   "hide the standard library",
		"my-svc.py": "named like a Python module",
		"nofolder":  "needs an __init__.py",
		"missing":   "no such file",
	} {
		if _, err := Pack(wasm, stdlib, filepath.Join(dir, path)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", path, err, want)
		}
	}
	packed, _ := Pack(wasm, stdlib, filepath.Join(dir, "my-svc.py"))
	if packed != nil {
		t.Error("packed output despite an error")
	}
	p, _ := wasmsection.Append(wasm, wasmsection.FSSection, []byte("x"))
	if _, err := Pack(p, stdlib, filepath.Join(dir, "json.py")); err == nil || !strings.Contains(err.Error(), "already carries") {
		t.Errorf("packed runtime: %v", err)
	}
}

func TestRecipeHashMatchesScript(t *testing.T) {
	root := repoRoot()
	if root == "" {
		t.Skip("not in a clone")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	out, err := exec.Command("bash", filepath.Join(root, buildScript), "--print-dir").Output()
	if err != nil {
		t.Fatal(err)
	}
	h, err := RecipeHash(root)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(strings.TrimSpace(string(out)), "/python-"+h) {
		t.Fatalf("script puts the runtime in %s, RecipeHash says %s", out, h)
	}
}
