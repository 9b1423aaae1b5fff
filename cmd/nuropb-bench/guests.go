package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/nuropb/nuropb/guest-sdk/python/pack"
)

// allLangs are the guest languages, each with a conformance guest that has
// an echo method and records events on conformance.#.
var allLangs = []string{"go", "rust", "python"}

// langTitle is how a language is named in the table.
var langTitle = map[string]string{"go": "Go", "rust": "Rust", "python": "Python"}

// guest returns lang's conformance guest, built from the repository's source
// on first use and cached under <cache>/bench-guests by a hash of its
// sources and toolchain, so repeated runs do not rebuild it.
func (b *bench) guest(lang string) ([]byte, error) {
	if g, ok := b.guests[lang]; ok {
		return g, nil
	}
	var (
		srcs  []string
		extra string
		build func(out string) error
	)
	switch lang {
	case "go":
		srcs = []string{"guest-sdk/go", "abi"}
		extra = runtime.Version()
		build = func(out string) error {
			// The flags of scripts/build-go-modules.sh, for this one package:
			// the script also builds every example, which costs a minute here.
			cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-ldflags=-s -w", "-o", out, "./guest-sdk/go/internal/conformance")
			cmd.Dir = b.root
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
			return runCmd(cmd)
		}
	case "rust":
		srcs = []string{"guest-sdk/rust", "testdata/guests/rust", "scripts/build-rust-modules.sh"}
		extra = toolVersion("/usr/bin/rustc", "--version")
		build = func(out string) error {
			tmp, err := os.MkdirTemp("", "nuropb-bench-rust-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			cmd := exec.Command("scripts/build-rust-modules.sh", "--testdata", tmp)
			cmd.Dir = b.root
			if err := runCmd(cmd); err != nil {
				return err
			}
			return os.Rename(filepath.Join(tmp, "conformance.wasm"), out)
		}
	case "python":
		// Packing is a zip of the service next to the cached runtime: cheap,
		// and the runtime's own hash is in the packed bytes.
		wasm, err := pack.Build(filepath.Join(b.root, "testdata/guests/python/conformance"))
		if err != nil {
			return nil, fmt.Errorf("python conformance guest (the runtime comes from make setup): %w", err)
		}
		b.guests[lang] = wasm
		return wasm, nil
	default:
		return nil, fmt.Errorf("no conformance guest for %q", lang)
	}
	key, err := hashTree(b.root, srcs, extra)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(b.opts.cacheDir, "bench-guests")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, lang+"-conformance-"+key+".wasm")
	if wasm, err := os.ReadFile(path); err == nil {
		b.guests[lang] = wasm
		return wasm, nil
	}
	t0 := time.Now()
	tmp := path + ".tmp"
	if err := build(tmp); err != nil {
		return nil, fmt.Errorf("building the %s conformance guest: %w", lang, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, err
	}
	b.progress("built the %s conformance guest in %s", langTitle[lang], time.Since(t0).Round(100*time.Millisecond))
	wasm, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b.guests[lang] = wasm
	return wasm, nil
}

func runCmd(cmd *exec.Cmd) error {
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return nil
}

func toolVersion(tool string, args ...string) string {
	out, _ := exec.Command(tool, args...).Output()
	return strings.TrimSpace(string(out))
}

// hashTree hashes the files under the repo-relative paths, and extra.
func hashTree(root string, paths []string, extra string) (string, error) {
	h := sha256.New()
	for _, p := range paths {
		err := filepath.WalkDir(filepath.Join(root, p), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasSuffix(path, "_test.go") {
				return err
			}
			data, err := os.ReadFile(path)
			h.Write([]byte(path))
			h.Write(data)
			return err
		})
		if err != nil {
			return "", err
		}
	}
	h.Write([]byte(extra))
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}
