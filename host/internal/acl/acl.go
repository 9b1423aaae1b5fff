package acl

import (
	"fmt"
	"strings"

	"github.com/nuropb/nuropb/abi"
)

// CallGrant allows calls and commands to one service of another tenant, or
// to all of them when Service is "*".
type CallGrant struct {
	Tenant  string
	Service string
}

// TopicGrant allows publishing or subscribing on the topics of Tenant that
// match Pattern.
type TopicGrant struct {
	Tenant  string
	Pattern string
}

// ParseCallGrant parses "tenant/service" or "tenant/*".
func ParseCallGrant(s string) (CallGrant, error) {
	t, svc, ok := strings.Cut(s, "/")
	if !ok || !abi.ValidName(t) || (svc != "*" && !abi.ValidName(svc)) {
		return CallGrant{}, fmt.Errorf("%q is not \"tenant/service\" or \"tenant/*\"", s)
	}
	return CallGrant{Tenant: t, Service: svc}, nil
}

// ParseTopicGrant parses "tenant/pattern", the pattern using '*' for one
// word and '#' for any number of words.
func ParseTopicGrant(s string) (TopicGrant, error) {
	t, p, ok := strings.Cut(s, "/")
	if !ok || !abi.ValidName(t) || !abi.ValidPattern(p) {
		return TopicGrant{}, fmt.Errorf("%q is not \"tenant/pattern\" (pattern: dot-separated words, * or #)", s)
	}
	return TopicGrant{Tenant: t, Pattern: p}, nil
}

// Policy is one tenant's grants. The zero value grants nothing beyond the
// tenant itself.
type Policy struct {
	tenant    string
	call      []CallGrant
	publish   []TopicGrant
	subscribe []TopicGrant
}

// NewPolicy parses a tenant's grants (as validated by host.Config).
func NewPolicy(tenant string, call, publish, subscribe []string) (*Policy, error) {
	p := &Policy{tenant: tenant}
	for _, s := range call {
		g, err := ParseCallGrant(s)
		if err != nil {
			return nil, err
		}
		p.call = append(p.call, g)
	}
	for _, s := range publish {
		g, err := ParseTopicGrant(s)
		if err != nil {
			return nil, err
		}
		p.publish = append(p.publish, g)
	}
	for _, s := range subscribe {
		g, err := ParseTopicGrant(s)
		if err != nil {
			return nil, err
		}
		p.subscribe = append(p.subscribe, g)
	}
	return p, nil
}

// CanCall reports whether the policy's tenant may call service in tenant.
func (p *Policy) CanCall(tenant, service string) bool {
	if tenant == p.tenant {
		return true
	}
	for _, g := range p.call {
		if g.Tenant == tenant && (g.Service == "*" || g.Service == service) {
			return true
		}
	}
	return false
}

// CanPublish reports whether the policy's tenant may publish topic in tenant.
func (p *Policy) CanPublish(tenant, topic string) bool {
	if tenant == p.tenant {
		return true
	}
	for _, g := range p.publish {
		if g.Tenant == tenant && Match(g.Pattern, topic) {
			return true
		}
	}
	return false
}

// Binding is one subscription pattern on one tenant's topics.
type Binding struct {
	Tenant  string
	Pattern string
}

// Bindings returns where a service of the policy's tenant with the given
// subscription patterns listens: every pattern on its own tenant, and on each
// other tenant every pattern that a Subscribe grant fully covers. A pattern
// only partly covered is not bound there at all, because the broker cannot
// bind an intersection and a wider binding would leak topics.
func (p *Policy) Bindings(patterns []string) []Binding {
	var out []Binding
	for _, pat := range patterns {
		out = append(out, Binding{Tenant: p.tenant, Pattern: pat})
	}
	seen := map[Binding]bool{}
	for _, g := range p.subscribe {
		if g.Tenant == p.tenant {
			continue
		}
		for _, pat := range patterns {
			b := Binding{Tenant: g.Tenant, Pattern: pat}
			if !seen[b] && Covers(g.Pattern, pat) {
				seen[b] = true
				out = append(out, b)
			}
		}
	}
	return out
}

// Match reports whether topic matches pattern ('*' one word, '#' zero or more).
func Match(pattern, topic string) bool {
	return match(strings.Split(pattern, "."), strings.Split(topic, "."))
}

func match(p, t []string) bool {
	for len(p) > 0 {
		switch p[0] {
		case "#":
			for i := 0; i <= len(t); i++ {
				if match(p[1:], t[i:]) {
					return true
				}
			}
			return false
		case "*":
			if len(t) == 0 {
				return false
			}
		default:
			if len(t) == 0 || t[0] != p[0] {
				return false
			}
		}
		p, t = p[1:], t[1:]
	}
	return len(t) == 0
}

// Covers reports whether every topic matching specific also matches general.
// It may answer false for exotic pairs that are in fact covered (it is
// conservative); it never answers true wrongly.
func Covers(general, specific string) bool {
	return covers(strings.Split(general, "."), strings.Split(specific, "."))
}

func covers(g, s []string) bool {
	if len(g) == 0 {
		return len(s) == 0
	}
	if g[0] == "#" {
		// '#' matches nothing here, or swallows s's first token whatever it is.
		return covers(g[1:], s) || (len(s) > 0 && covers(g, s[1:]))
	}
	if len(s) == 0 || s[0] == "#" {
		// A one-word token cannot cover '#' (which may be zero or many words).
		return false
	}
	if g[0] == "*" || g[0] == s[0] {
		return covers(g[1:], s[1:])
	}
	return false
}
