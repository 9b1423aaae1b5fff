package broker

// DefaultTenant is the tenant of modules placed directly in the modules
// folder. Its names are NuroPb's, unprefixed, so NuroPb clients interoperate.
const DefaultTenant = "default"

// RPCExchange is the direct exchange carrying a tenant's requests and commands.
func RPCExchange(tenant string) string { return exchange(tenant, "rpc") }

// EventsExchange is the topic exchange carrying a tenant's events.
func EventsExchange(tenant string) string { return exchange(tenant, "events") }

// DeadLetterExchange is the fanout exchange that receives rejected and
// expired messages of every tenant.
const DeadLetterExchange = "nuropb-dl-exchange"

// DeadLetterQueue is the durable queue bound to DeadLetterExchange.
const DeadLetterQueue = "nuropb-dl-queue"

// ServiceQueue is the durable shared queue of a service. Tenants other than
// the default get their own exchanges, so the same service name in two
// tenants never shares a queue or a binding.
func ServiceQueue(r Route) string {
	if r.Tenant == "" || r.Tenant == DefaultTenant {
		return "nuropb-" + r.Service + "-sq"
	}
	return "nuropb-" + r.Tenant + "." + r.Service + "-sq"
}

func exchange(tenant, kind string) string {
	if tenant == "" || tenant == DefaultTenant {
		return "nuropb-" + kind + "-exchange"
	}
	return "nuropb-" + tenant + "." + kind + "-exchange"
}
