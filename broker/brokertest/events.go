package brokertest

import (
	"context"
	"slices"
	"sort"

	"github.com/nuropb/nuropb/broker"
)

// testPublishWildcards: an event reaches every queue with a matching
// pattern, once per queue, and no other.
func testPublishWildcards(e *env) {
	patterns := map[string][]string{ // service -> its subscriptions
		"star":    {"order.*"},
		"hash":    {"order.#"},
		"all":     {"#"},
		"created": {"*.created"},
		"exact":   {"order.created"},
		"tail":    {"#.eu"},
		"twice":   {"order.*", "*.created"}, // both match order.created: still one copy
		"deep":    {"*.*.*"},
	}
	inboxes := map[string]*inbox{}
	for svc, ps := range patterns {
		in := &inbox{}
		inboxes[svc] = in
		spec := broker.ServiceSpec{Route: e.route(svc), Prefetch: 16}
		for _, p := range ps {
			spec.Topics = append(spec.Topics, broker.TopicBinding{Tenant: e.tenant, Pattern: p})
		}
		e.serve(spec, e.acker(in))
	}

	cases := []struct {
		topic string
		want  []string
	}{
		{"order.created", []string{"all", "created", "exact", "hash", "star", "twice"}},
		{"order", []string{"all", "hash"}},
		{"order.created.eu", []string{"all", "deep", "hash", "tail"}},
		{"user.created", []string{"all", "created", "twice"}},
		{"orders.created", []string{"all", "created", "twice"}},
		{"invoice.paid.eu", []string{"all", "deep", "tail"}},
		{"eu", []string{"all", "tail"}},
		{"invoice.eu", []string{"all", "tail"}},
		{"eu.order.created", []string{"all", "deep"}},
		{"order.x.y.z", []string{"all", "hash"}},
	}
	want := map[string][]string{} // service -> correlation ids it must get
	total := 0
	for _, c := range cases {
		corr := e.id(c.topic)
		msg := broker.Message{Body: []byte(c.topic), Type: "event", CorrelationID: corr, Persistent: true}
		if err := e.b.Publish(e.ctx(), e.tenant, c.topic, msg); err != nil {
			e.t.Fatalf("Publish %q: %v", c.topic, err)
		}
		for _, svc := range c.want {
			want[svc] = append(want[svc], corr)
			total++
		}
	}
	e.eventually("every matching delivery", func() bool {
		n := 0
		for _, in := range inboxes {
			n += in.len()
		}
		return n >= total
	})
	e.quiet()
	for svc, in := range inboxes {
		got := corrs(in.list())
		sort.Strings(got)
		w := slices.Clone(want[svc])
		sort.Strings(w)
		if !slices.Equal(got, w) {
			e.t.Errorf("service %s (patterns %q) got %q, want %q", svc, patterns[svc], got, w)
		}
	}
}

// testPublishNobodyListening: an event no binding matches is not an error,
// and reaches nobody.
func testPublishNobodyListening(e *env) {
	msg := broker.Message{Body: []byte("e"), Type: "event", CorrelationID: e.id("evt")}
	if err := e.b.Publish(e.ctx(), e.tenant, "nobody.cares", msg); err != nil {
		e.t.Fatalf("Publish in a tenant without bindings: %v", err)
	}
	var in inbox
	e.serve(broker.ServiceSpec{Route: e.route("picky"), Prefetch: 1,
		Topics: []broker.TopicBinding{{Tenant: e.tenant, Pattern: "only.this"}}}, e.acker(&in))
	if err := e.b.Publish(e.ctx(), e.tenant, "only.that", msg); err != nil {
		e.t.Fatalf("Publish of an unmatched topic: %v", err)
	}
	if got := e.settle(&in); len(got) != 0 {
		e.t.Fatalf("unmatched event delivered: %q", corrs(got))
	}
}

// testTenantQueues: the same service name in two tenants is two queues.
func testTenantQueues(e *env) {
	other := unique("bt")
	var here, there inbox
	e.serve(broker.ServiceSpec{Route: e.route("svc"), Prefetch: 4}, e.acker(&here))
	e.serve(broker.ServiceSpec{Route: broker.Route{Tenant: other, Service: "svc"}, Prefetch: 4}, e.acker(&there))

	a, b := e.id("a"), e.id("b")
	e.send(e.route("svc"), e.command(a))
	e.send(broker.Route{Tenant: other, Service: "svc"}, e.command(b))
	e.await(&here, 1)
	e.await(&there, 1)
	e.quiet()
	if got := corrs(here.list()); !slices.Equal(got, []string{a}) {
		e.t.Errorf("tenant %s got %q, want only %q", e.tenant, got, a)
	}
	if got := corrs(there.list()); !slices.Equal(got, []string{b}) {
		e.t.Errorf("tenant %s got %q, want only %q", other, got, b)
	}
}

// testTenantEvents: a '#' subscription hears its own tenant only.
func testTenantEvents(e *env) {
	other := unique("bt")
	var here, there inbox
	e.serve(broker.ServiceSpec{Route: e.route("audit"), Prefetch: 4,
		Topics: []broker.TopicBinding{{Tenant: e.tenant, Pattern: "#"}}}, e.acker(&here))
	e.serve(broker.ServiceSpec{Route: broker.Route{Tenant: other, Service: "audit"}, Prefetch: 4,
		Topics: []broker.TopicBinding{{Tenant: other, Pattern: "#"}}}, e.acker(&there))

	a, b := e.id("a"), e.id("b")
	publish := func(tenant, corr string) {
		msg := broker.Message{Body: []byte(corr), Type: "event", CorrelationID: corr}
		if err := e.b.Publish(context.Background(), tenant, "user.created", msg); err != nil {
			e.t.Fatalf("Publish in %s: %v", tenant, err)
		}
	}
	publish(other, b)
	publish(e.tenant, a)
	e.await(&here, 1)
	e.await(&there, 1)
	e.quiet()
	if got := corrs(here.list()); !slices.Equal(got, []string{a}) {
		e.t.Errorf("'#' in tenant %s heard %q, want only its own %q", e.tenant, got, a)
	}
	if got := corrs(there.list()); !slices.Equal(got, []string{b}) {
		e.t.Errorf("'#' in tenant %s heard %q, want only its own %q", other, got, b)
	}
}
