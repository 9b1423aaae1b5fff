package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nuropb/nuropb/host"
)

// BrokerStats are a broker's running totals. broker/amqp reports them; the
// embedded broker has nothing to report (it neither reconnects nor confirms).
type BrokerStats struct {
	Reconnects      uint64
	Confirmed       uint64
	Nacked          uint64
	ConfirmTimeouts uint64
	Redeliveries    uint64
}

// Config says where the numbers that are read at scrape time come from.
// Every field is optional.
type Config struct {
	// Services lists the served services (*host.Host.Services): instances,
	// busy instances, guest memory, version.
	Services func() []host.ServiceInfo
	// Ready reports readiness, exported as nuropb_ready.
	Ready func() bool
	// BrokerConnected reports whether the broker is connected now.
	BrokerConnected func() bool
	// Broker returns the broker's running totals.
	Broker func() BrokerStats
}

// Metrics collects a host's metrics. Build it with New, give it to the
// host as Config.Observer, and serve Handler on /metrics.
type Metrics struct {
	reg *prometheus.Registry

	calls    *prometheus.CounterVec
	errors   *prometheus.CounterVec
	duration *prometheus.HistogramVec
	redeliv  *prometheus.CounterVec
	loads    *prometheus.CounterVec
	reloads  *prometheus.CounterVec
	refusals *prometheus.CounterVec
	removals *prometheus.CounterVec
}

var _ host.Observer = (*Metrics)(nil)

// callLabels are the labels of per-call series. method is bounded by the
// manifests ("" for an unknown method, see host.Handled), so the series
// cannot be inflated by callers.
var callLabels = []string{"tenant", "service", "method", "kind"}

// New returns Metrics registered on a fresh registry (with the Go runtime
// and process collectors), so two hosts in one test process do not clash.
func New(cfg Config) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nuropb_calls_total",
			Help: "Deliveries a service handled: requests answered, commands and events run."}, callLabels),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nuropb_call_errors_total",
			Help: "Handled deliveries that ended in an error, by error code."}, append(callLabels[:4:4], "code")),
		// Buckets from 0.5 ms: a warm call into a small guest takes tens of
		// microseconds to a few milliseconds; the top buckets catch deadlines.
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nuropb_call_duration_seconds",
			Help:    "Time from decoding a delivery to its reply or ack.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, callLabels),
		redeliv: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nuropb_redeliveries_total",
			Help: "Deliveries a service received that the broker had delivered before (a consumer died holding them)."},
			[]string{"tenant", "service"}),
		loads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nuropb_module_loads_total",
			Help: "Module versions that started serving a new service."}, []string{"tenant", "service"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nuropb_module_reloads_total",
			Help: "Module versions hot-swapped in for a running service."}, []string{"tenant", "service"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nuropb_module_refusals_total",
			Help: "Module files refused (compile, validate or describe failed); the previous version keeps serving."},
			[]string{"tenant"}),
		removals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nuropb_module_removals_total",
			Help: "Services retired because their module file was removed."}, []string{"tenant", "service"}),
	}
	m.reg.MustRegister(m.calls, m.errors, m.duration, m.redeliv, m.loads, m.reloads, m.refusals, m.removals,
		&scraped{cfg: cfg},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is where the metrics are registered, for adding more or for tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text (or OpenMetrics) format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Handled implements host.Observer.
func (m *Metrics) Handled(ev host.Handled) {
	kind := string(ev.Kind)
	if kind == "" {
		kind = "malformed"
	}
	m.calls.WithLabelValues(ev.Tenant, ev.Service, ev.Method, kind).Inc()
	m.duration.WithLabelValues(ev.Tenant, ev.Service, ev.Method, kind).Observe(ev.Duration.Seconds())
	if ev.Code != "" {
		m.errors.WithLabelValues(ev.Tenant, ev.Service, ev.Method, kind, string(ev.Code)).Inc()
	}
	if ev.Redelivered {
		m.redeliv.WithLabelValues(ev.Tenant, ev.Service).Inc()
	}
}

// Loaded implements host.Observer.
func (m *Metrics) Loaded(ev host.Loaded) {
	if ev.Swap {
		m.reloads.WithLabelValues(ev.Tenant, ev.Service).Inc()
		return
	}
	m.loads.WithLabelValues(ev.Tenant, ev.Service).Inc()
}

// Refused implements host.Observer.
func (m *Metrics) Refused(r host.Refusal) { m.refusals.WithLabelValues(r.Tenant).Inc() }

// Removed implements host.Observer.
func (m *Metrics) Removed(tenant, service string) { m.removals.WithLabelValues(tenant, service).Inc() }

// scraped reads the numbers that are state, not events, at scrape time:
// nothing is kept between scrapes, so a removed service simply disappears.
type scraped struct{ cfg Config }

var (
	descInfo = prometheus.NewDesc("nuropb_service_info",
		"The serving version of each service (always 1).", []string{"tenant", "service", "version", "hash"}, nil)
	descInstances = prometheus.NewDesc("nuropb_service_instances",
		"Live instances of the serving version.", []string{"tenant", "service"}, nil)
	descBusy = prometheus.NewDesc("nuropb_service_busy_instances",
		"Instances of the serving version in a call now.", []string{"tenant", "service"}, nil)
	descMemory = prometheus.NewDesc("nuropb_service_memory_bytes",
		"Guest linear memory of all live instances of the serving version.", []string{"tenant", "service"}, nil)
	descMemoryLimit = prometheus.NewDesc("nuropb_service_memory_limit_bytes",
		"The cap on one instance's linear memory.", []string{"tenant", "service"}, nil)
	descTraps = prometheus.NewDesc("nuropb_service_traps_total",
		"Instances of the serving version discarded after a trap or a deadline.", []string{"tenant", "service"}, nil)
	descDeadLetters = prometheus.NewDesc("nuropb_service_dead_letters_total",
		"Commands, events and malformed messages the service dead-lettered.", []string{"tenant", "service"}, nil)
	descExpired = prometheus.NewDesc("nuropb_service_expired_total",
		"Requests dropped because their deadline had passed when they arrived.", []string{"tenant", "service"}, nil)
	descReady = prometheus.NewDesc("nuropb_ready",
		"1 when the host is ready: broker connected and every module file attempted.", nil, nil)
	descConnected = prometheus.NewDesc("nuropb_broker_connected",
		"1 while the broker connection is up.", nil, nil)
	descReconnects = prometheus.NewDesc("nuropb_broker_reconnects_total",
		"Broker connections restored after a loss.", nil, nil)
	descConfirms = prometheus.NewDesc("nuropb_broker_publish_confirms_total",
		"Publisher confirms of commands and events, by result (ack, nack, timeout).", []string{"result"}, nil)
	descBrokerRedeliv = prometheus.NewDesc("nuropb_broker_redeliveries_total",
		"Deliveries the broker flagged as redelivered, all queues.", nil, nil)
)

func (s *scraped) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInfo, descInstances, descBusy, descMemory, descMemoryLimit, descTraps,
		descDeadLetters, descExpired, descReady, descConnected, descReconnects, descConfirms, descBrokerRedeliv} {
		ch <- d
	}
}

func (s *scraped) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	if s.cfg.Services != nil {
		for _, si := range s.cfg.Services() {
			gauge(descInfo, 1, si.Tenant, si.Service, si.Version, si.Hash)
			gauge(descInstances, float64(si.Instances), si.Tenant, si.Service)
			gauge(descBusy, float64(si.Busy), si.Tenant, si.Service)
			gauge(descMemory, float64(si.MemoryPages)*65536, si.Tenant, si.Service)
			gauge(descMemoryLimit, float64(si.MemoryLimitPages)*65536, si.Tenant, si.Service)
			counter(descTraps, si.Traps, si.Tenant, si.Service)
			counter(descDeadLetters, si.DeadLetters, si.Tenant, si.Service)
			counter(descExpired, si.Expired, si.Tenant, si.Service)
		}
	}
	if s.cfg.Ready != nil {
		gauge(descReady, b2f(s.cfg.Ready()))
	}
	if s.cfg.BrokerConnected != nil {
		gauge(descConnected, b2f(s.cfg.BrokerConnected()))
	}
	if s.cfg.Broker != nil {
		st := s.cfg.Broker()
		counter(descReconnects, st.Reconnects)
		counter(descConfirms, st.Confirmed, "ack")
		counter(descConfirms, st.Nacked, "nack")
		counter(descConfirms, st.ConfirmTimeouts, "timeout")
		counter(descBrokerRedeliv, st.Redeliveries)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
