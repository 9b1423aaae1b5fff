package memory

import "strings"

// Topic patterns follow AMQP's topic exchange: a topic is words separated by
// '.', and in a pattern '*' stands for exactly one word and '#' for zero or
// more. The empty string has no words, so only "#" (or "") matches it.

// splitWords appends the words of s to dst. Callers pass a stack buffer so
// that a publish does not allocate to route an ordinary topic.
func splitWords(s string, dst []string) []string {
	if s == "" {
		return dst
	}
	for {
		i := strings.IndexByte(s, '.')
		if i < 0 {
			return append(dst, s)
		}
		dst = append(dst, s[:i])
		s = s[i+1:]
	}
}

// matchWords reports whether topic matches pattern, both split into words.
// It is the classic wildcard match with one backtrack point: on a mismatch
// the most recent '#' swallows one more word and matching resumes after it.
// Keeping only the latest '#' is enough because whatever an earlier '#'
// could absorb, the later one can absorb too; so the cost is
// O(len(pattern)*len(topic)) at worst, with no recursion for a hostile
// pattern to exploit.
func matchWords(pattern, topic []string) bool {
	p, t := 0, 0
	hash, mark := -1, 0 // position of the last '#' in pattern, and where in topic its words end
	for t < len(topic) {
		switch {
		case p < len(pattern) && pattern[p] == "#":
			hash, mark = p, t
			p++
		case p < len(pattern) && (pattern[p] == "*" || pattern[p] == topic[t]):
			p++
			t++
		case hash >= 0:
			mark++
			p, t = hash+1, mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == "#" {
		p++
	}
	return p == len(pattern)
}

// matchTopic is matchWords on unsplit strings, for tests and one-off use.
func matchTopic(pattern, topic string) bool {
	var pb, tb [16]string
	return matchWords(splitWords(pattern, pb[:0]), splitWords(topic, tb[:0]))
}
