// Package metrics exposes a host's work to Prometheus: calls, errors and
// latency per tenant/service/method, module loads, reloads and refusals,
// instances and guest memory, and broker health. It implements
// host.Observer, so the host itself never imports a metrics library.
package metrics
