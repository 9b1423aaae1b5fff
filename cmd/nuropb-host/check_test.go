package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nuropb/nuropb/abi"
)

// TestRunCheck: a bad host.toml fails `run --check` with exit 1 and an error
// naming the file and the key; a good one prints the resolved settings.
func TestRunCheck(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		body string
		code int
		want string
	}{
		{"[http.websocket]\nmax_in_flight = 0\n", exitError, "http.websocket.max_in_flight"},
		{"[metrics]\nenabeld = true\n", exitError, "unknown key metrics.enabeld"},
		{"[log]\nlevel = \"loud\"\n", exitError, "log.level"},
		{"drain_timeout = \"soon\"\n", exitError, "drain_timeout"},
		{"modules_dir = \"" + dir + "/nonexistent\"\n", exitError, "modules_dir"},
		{"broker = \"memory\"\nmodules_dir = \"" + dir + "\"\n[metrics]\nenabled = true\npath = \"/m\"\n", exitOK, "configuration ok"},
	}
	for i, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			path := filepath.Join(dir, "host"+string(rune('a'+i))+".toml")
			if err := os.WriteFile(path, []byte(tt.body), 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			code := Main([]string{"run", "--config", path, "--check"}, &stdout, &stderr)
			out := stdout.String() + stderr.String()
			if code != tt.code || !strings.Contains(out, tt.want) {
				t.Fatalf("exit %d, output %q; want exit %d and %q", code, out, tt.code, tt.want)
			}
			if tt.code != exitOK && !strings.Contains(out, path) {
				t.Fatalf("error does not name the file %s: %q", path, out)
			}
		})
	}
}

func TestVersionShowsABI(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := Main([]string{"version"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if want := "abi v" + string(rune('0'+abi.Version)); !strings.Contains(stdout.String(), want) {
		t.Fatalf("version output %q lacks %q", stdout.String(), want)
	}
}
