package memory

import (
	"strings"
	"testing"
)

func TestMatchTopic(t *testing.T) {
	cases := []struct {
		pattern, topic string
		want           bool
	}{
		{"order.created", "order.created", true},
		{"order.created", "order.updated", false},
		{"order.created", "order.created.eu", false},
		{"order.*", "order.created", true},
		{"order.*", "order", false},
		{"order.*", "order.created.eu", false},
		{"*.created", "user.created", true},
		{"*.created", "created", false},
		{"*.*", "a.b", true},
		{"*", "a", true},
		{"*", "", false},
		{"*", "a.b", false},
		{"order.#", "order", true},
		{"order.#", "order.created", true},
		{"order.#", "order.created.eu", true},
		{"order.#", "orders.created", false},
		{"#", "", true},
		{"#", "a", true},
		{"#", "a.b.c", true},
		{"#.eu", "eu", true},
		{"#.eu", "invoice.eu", true},
		{"#.eu", "order.created.eu", true},
		{"#.eu", "order.created.us", false},
		{"#.eu", "eu.us", false},
		{"a.#.z", "a.z", true},
		{"a.#.z", "a.b.z", true},
		{"a.#.z", "a.b.c.z", true},
		{"a.#.z", "a.b.c", false},
		{"a.#.b.#.c", "a.x.b.y.c", true},
		{"a.#.b.#.c", "a.b.c", true},
		{"a.#.b.#.c", "a.c.b", false},
		{"#.*", "", false},
		{"#.*", "a", true},
		{"#.*.#", "a.b.c", true},
		{"*.#", "a", true},
		{"#.#", "", true},
		{"", "", true},
		{"", "a", false},
		{"a", "", false},
		{"a..b", "a..b", true},       // empty words are words
		{"a.*.b", "a..b", true},      // and '*' matches one
		{"a.", "a", false},           // "a." is two words
		{"x#", "xy", false},          // wildcards are whole words only
		{"or*", "order", false},      // likewise
		{"a.b", "a.*", false},        // a topic's '*' is a literal word
		{"a.*", "a.*", true},         // which '*' matches
		{"#.a.#.a", "a.a.a.a", true}, // needs backtracking past the first fit
	}
	for _, c := range cases {
		if got := matchTopic(c.pattern, c.topic); got != c.want {
			t.Errorf("matchTopic(%q, %q) = %v, want %v", c.pattern, c.topic, got, c.want)
		}
	}
}

// refMatch is the definition, written recursively: slow (exponential on
// many '#') and obviously right.
func refMatch(p, t []string) bool {
	if len(p) == 0 {
		return len(t) == 0
	}
	switch p[0] {
	case "#":
		return refMatch(p[1:], t) || (len(t) > 0 && refMatch(p, t[1:]))
	case "*":
		return len(t) > 0 && refMatch(p[1:], t[1:])
	default:
		return len(t) > 0 && t[0] == p[0] && refMatch(p[1:], t[1:])
	}
}

func FuzzMatchTopic(f *testing.F) {
	for _, s := range [][2]string{{"order.#", "order"}, {"#.eu", "a.b.eu"}, {"a.#.b.#.c", "a.b.b.c.c"},
		{"*.*", "a.b"}, {"#", ""}, {"#.*.#", "x"}, {"a..b", "a..b"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, topic string) {
		p, tp := splitWords(pattern, nil), splitWords(topic, nil)
		if len(p) > 12 || len(tp) > 12 {
			t.Skip() // the reference is exponential
		}
		if got, want := matchWords(p, tp), refMatch(p, tp); got != want {
			t.Fatalf("matchTopic(%q, %q) = %v, reference says %v", pattern, topic, got, want)
		}
		if strings.Join(tp, ".") != topic {
			t.Fatalf("splitWords(%q) = %q does not rejoin", topic, tp)
		}
	})
}
