package acl

import "testing"

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pat, topic string
		want       bool
	}{
		{"order.created", "order.created", true},
		{"order.*", "order.created", true},
		{"order.*", "order.created.eu", false},
		{"order.#", "order", true},
		{"order.#", "order.created.eu", true},
		{"#", "anything.at.all", true},
		{"*.created", "order.created", true},
		{"*.created", "created", false},
		{"#.eu", "order.created.eu", true},
		{"#.eu", "order.created.us", false},
		{"order.*", "invoice.created", false},
	} {
		if got := Match(c.pat, c.topic); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pat, c.topic, got, c.want)
		}
	}
}

func TestCovers(t *testing.T) {
	for _, c := range []struct {
		g, s string
		want bool
	}{
		{"#", "order.*", true},
		{"#", "#", true},
		{"order.#", "order.*", true},
		{"order.#", "order.created", true},
		{"order.*", "order.created", true},
		{"order.*", "order.#", false},
		{"order.*", "*.created", false},
		{"*.created", "order.created", true},
		{"order.created", "order.*", false},
		{"order.#", "#", false},
		{"#.eu", "order.#.eu", true},
		{"a.b", "a.b", true},
	} {
		if got := Covers(c.g, c.s); got != c.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", c.g, c.s, got, c.want)
		}
	}
}

func TestPolicy(t *testing.T) {
	p, err := NewPolicy("shop", []string{"billing/invoices", "crm/*"}, []string{"audit/shop.#"}, []string{"billing/invoice.*"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		tenant, svc string
		want        bool
	}{
		{"shop", "anything", true},
		{"billing", "invoices", true},
		{"billing", "payroll", false},
		{"crm", "contacts", true},
		{"hr", "people", false},
	} {
		if got := p.CanCall(c.tenant, c.svc); got != c.want {
			t.Errorf("CanCall(%q, %q) = %v, want %v", c.tenant, c.svc, got, c.want)
		}
	}
	if !p.CanPublish("audit", "shop.order.created") || p.CanPublish("audit", "hr.fired") || p.CanPublish("crm", "x") {
		t.Error("CanPublish does not follow the grants")
	}
	got := p.Bindings([]string{"order.*", "invoice.paid", "#"})
	want := []Binding{{"shop", "order.*"}, {"shop", "invoice.paid"}, {"shop", "#"}, {"billing", "invoice.paid"}}
	if len(got) != len(want) {
		t.Fatalf("Bindings = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Bindings = %v, want %v", got, want)
		}
	}
	var zero Policy
	if zero.CanCall("other", "x") || zero.CanPublish("other", "x") {
		t.Error("the zero Policy grants something")
	}
}

func TestParseGrants(t *testing.T) {
	for _, s := range []string{"shop", "shop/", "/svc", "Shop/svc", "shop/sv c", "shop/a/b"} {
		if _, err := ParseCallGrant(s); err == nil {
			t.Errorf("ParseCallGrant(%q) accepted", s)
		}
	}
	for _, s := range []string{"shop", "shop/", "shop/a..b", "shop/a b"} {
		if _, err := ParseTopicGrant(s); err == nil {
			t.Errorf("ParseTopicGrant(%q) accepted", s)
		}
	}
	if _, err := ParseTopicGrant("shop/order.#"); err != nil {
		t.Error(err)
	}
}
