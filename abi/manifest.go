package abi

import (
	"regexp"
)

// Manifest is what a guest's nuropb_describe returns: the service it provides
// and how to call it. The host refuses a module whose manifest is invalid.
type Manifest struct {
	ABI           int               `cbor:"abi" json:"abi"`
	Service       string            `cbor:"service" json:"service"`
	Version       string            `cbor:"version" json:"version"`
	Description   string            `cbor:"description,omitempty" json:"description,omitempty"`
	Methods       map[string]Method `cbor:"methods" json:"methods"`
	Subscriptions []string          `cbor:"subscriptions,omitempty" json:"subscriptions,omitempty"` // topic patterns with * and #
	Requires      Requires          `cbor:"requires,omitempty" json:"requires,omitempty"`
}

// Method describes one callable method.
type Method struct {
	Description  string  `cbor:"description,omitempty" json:"description,omitempty"`
	Params       []Param `cbor:"params,omitempty" json:"params,omitempty"`
	Result       string  `cbor:"result,omitempty" json:"result,omitempty"` // type name of the result
	Hidden       bool    `cbor:"hidden,omitempty" json:"hidden,omitempty"` // not callable from outside the service's tenant, not listed
	RequiresAuth bool    `cbor:"requires_auth,omitempty" json:"requires_auth,omitempty"`
}

// Param describes one keyword parameter of a method.
type Param struct {
	Name        string `cbor:"name" json:"name"`
	Type        string `cbor:"type" json:"type"` // string, int, float, bool, bytes, list, map, any
	Required    bool   `cbor:"required,omitempty" json:"required,omitempty"`
	Description string `cbor:"description,omitempty" json:"description,omitempty"`
}

// Requires declares what a service intends to reach; informational in ABI v1.
type Requires struct {
	Calls     []string `cbor:"calls,omitempty" json:"calls,omitempty"`
	Publishes []string `cbor:"publishes,omitempty" json:"publishes,omitempty"`
}

var (
	topicRE = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
	patRE   = regexp.MustCompile(`^([A-Za-z0-9_-]+|\*|#)(\.([A-Za-z0-9_-]+|\*|#))*$`)
	methRE  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,62}$`)
)

// ValidName reports whether s may name a service or a tenant: lower case
// letters, digits, '_' and '-', starting with a letter, at most 63 bytes.
// Every client call checks two names; a loop is ~20x cheaper than a regexp.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// ValidTopic reports whether s is a concrete topic: dot-separated words.
func ValidTopic(s string) bool { return len(s) <= 255 && topicRE.MatchString(s) }

// ValidPattern reports whether s is a topic pattern: words, '*' (one word)
// or '#' (zero or more words), dot-separated.
func ValidPattern(s string) bool { return len(s) <= 255 && patRE.MatchString(s) }

// Validate checks the manifest, naming the first problem found.
func (m *Manifest) Validate() error {
	if m.ABI != Version {
		return Errorf(CodeBadRequest, "manifest abi is %d, want %d", m.ABI, Version)
	}
	if !ValidName(m.Service) {
		return Errorf(CodeBadRequest, "manifest service name %q is not valid (want [a-z][a-z0-9_-]*)", m.Service)
	}
	if m.Version == "" {
		return Errorf(CodeBadRequest, "manifest of %q has no version", m.Service)
	}
	if len(m.Methods) == 0 && len(m.Subscriptions) == 0 {
		return Errorf(CodeBadRequest, "manifest of %q has no methods and no subscriptions", m.Service)
	}
	for name := range m.Methods {
		if !methRE.MatchString(name) {
			return Errorf(CodeBadRequest, "manifest of %q: method name %q is not valid", m.Service, name)
		}
	}
	for _, p := range m.Subscriptions {
		if !ValidPattern(p) {
			return Errorf(CodeBadRequest, "manifest of %q: subscription %q is not a valid topic pattern", m.Service, p)
		}
	}
	return nil
}
