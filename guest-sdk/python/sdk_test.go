package python

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/nuropb/nuropb/abi"
)

// python3 returns the machine's python3, skipping (failing under CI=true)
// when there is none.
func python3(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3 is needed for the Python SDK's unit tests")
		}
		t.Skip("no python3 on PATH")
	}
	return p
}

// TestPythonSDKUnitTests runs the SDK's own tests (tests/) and the stats
// example's with the machine's python3, so `go test ./...` covers them.
func TestPythonSDKUnitTests(t *testing.T) {
	py := python3(t)
	for _, run := range []struct{ dir, pythonpath string }{
		{".", "."},
		{statsDir, "../../../../guest-sdk/python"},
	} {
		cmd := exec.Command(py, "-m", "unittest", "discover", "-t", ".", "-s", ".", "-p", "test_*.py")
		if run.dir == "." {
			cmd.Args = []string{py, "-m", "unittest", "discover", "-t", ".", "-s", "tests"}
		}
		cmd.Dir = run.dir
		cmd.Env = append(os.Environ(), "PYTHONPATH="+run.pythonpath, "PYTHONDONTWRITEBYTECODE=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("python3 -m unittest in %s: %v\n%s", run.dir, err, out)
			continue
		}
		t.Logf("%s: %s", run.dir, lastLine(string(out)))
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-3):], " ")
}

// TestCBORLimitsAgreeWithHost feeds the same frames to the host's codec
// (abi.Default) and to the SDK's, and wants the same verdict on each.
func TestCBORLimitsAgreeWithHost(t *testing.T) {
	py := python3(t)
	nest := func(head []byte, n int) []byte {
		return append(bytes.Repeat(head, n), 0)
	}
	arrayOf := func(n int) []byte {
		b := []byte{0x9a, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
		return append(b, make([]byte, n)...)
	}
	mapOf := func(n int) []byte {
		b := []byte{0xba, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
		for i := 0; i < n; i++ {
			b = append(b, 0x68)
			b = append(b, fmt.Sprintf("%08x", i)...)
			b = append(b, 0)
		}
		return b
	}
	frame := func(n int) []byte { // a byte string making a frame of n bytes
		return append([]byte{0x5a, byte((n - 5) >> 24), byte((n - 5) >> 16), byte((n - 5) >> 8), byte(n - 5)}, make([]byte, n-5)...)
	}
	cases := map[string][]byte{
		"depth 32 arrays":    nest([]byte{0x81}, 32),
		"depth 33 arrays":    nest([]byte{0x81}, 33),
		"depth 32 maps":      nest([]byte{0xa1, 0x60}, 32),
		"depth 33 maps":      nest([]byte{0xa1, 0x60}, 33),
		"31 arrays, 2 tags":  append(bytes.Repeat([]byte{0x81}, 31), 0xd8, 0x20, 0xd8, 0x20, 0x00),
		"32 arrays, 1 tag":   append(bytes.Repeat([]byte{0x81}, 32), 0xd8, 0x20, 0x00),
		"32 arrays, 2 tags":  append(bytes.Repeat([]byte{0x81}, 32), 0xd8, 0x20, 0xd8, 0x20, 0x00),
		"1 tag, 32 arrays":   append([]byte{0xd8, 0x20}, nest([]byte{0x81}, 32)...),
		"1 tag, 31 arrays":   append([]byte{0xd8, 0x20}, nest([]byte{0x81}, 31)...),
		"16 tags, 17 arrays": append(bytes.Repeat([]byte{0xd8, 0x20}, 16), nest([]byte{0x81}, 17)...),
		"33 tags":            nest([]byte{0xd8, 0x20}, 33),
		"34 tags":            nest([]byte{0xd8, 0x20}, 34),
		"65536 elements":     arrayOf(1 << 16),
		"65537 elements":     arrayOf(1<<16 + 1),
		"65536 pairs":        mapOf(1 << 16),
		"65537 pairs":        mapOf(1<<16 + 1),
		"1 MiB frame":        frame(1 << 20),
		"1 MiB + 1 frame":    frame(1<<20 + 1),
		"duplicate keys":     {0xa2, 0x61, 0x61, 0x01, 0x61, 0x61, 0x02},
		"indefinite array":   {0x9f, 0x01, 0xff},
		"indefinite text":    {0x7f, 0x61, 0x61, 0xff},
		"invalid utf-8":      {0x62, 0xc3, 0x28},
		"trailing bytes":     {0x00, 0x00},
		"bignum":             {0xc2, 0x49, 1, 0, 0, 0, 0, 0, 0, 0, 0},
		"half float":         {0xf9, 0x3c, 0x00},
		"empty":              {},
	}
	names := make([]string, 0, len(cases))
	hexes := make([]string, 0, len(cases))
	for n, b := range cases {
		names = append(names, n)
		hexes = append(hexes, hex.EncodeToString(b))
	}
	in, _ := json.Marshal(hexes)
	script := `
import json, sys
from nuropb import cbor
out = []
for h in json.load(sys.stdin):
    try:
        cbor.loads(bytes.fromhex(h)); out.append("ok")
    except cbor.CBORError as e:
        out.append(e.code + ": " + str(e))
json.dump(out, sys.stdout)
`
	cmd := exec.Command(py, "-c", script)
	cmd.Env = append(os.Environ(), "PYTHONPATH=.")
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3: %v", err)
	}
	var verdicts []string
	if err := json.Unmarshal(out, &verdicts); err != nil {
		t.Fatal(err)
	}
	for i, n := range names {
		hostErr := abi.Default.Valid(cases[n])
		pyOK := verdicts[i] == "ok"
		if (hostErr == nil) != pyOK {
			t.Errorf("%s: host says %v, Python SDK says %s", n, hostErr, verdicts[i])
			continue
		}
		if hostErr != nil && !strings.HasPrefix(verdicts[i], string(abi.CodeOf(hostErr))+":") {
			t.Errorf("%s: host code %s, Python SDK %s", n, abi.CodeOf(hostErr), verdicts[i])
		}
	}
}
