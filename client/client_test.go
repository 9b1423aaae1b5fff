package client

import (
	"strings"
	"testing"
)

func TestIDs(t *testing.T) {
	c := New(nil)
	a, b := c.NewID(), c.NewID()
	if a == b || !strings.HasPrefix(a, c.idBase) || a != c.idBase+"1" || b != c.idBase+"2" {
		t.Fatalf("ids %q, %q with base %q", a, b, c.idBase)
	}
	tr := NewTraceID()
	if len(tr) != 32 || strings.Trim(tr, "0123456789abcdef") != "" || tr == NewTraceID() {
		t.Fatalf("trace id %q", tr)
	}
}
