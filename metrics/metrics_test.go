package metrics_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/host"
	"github.com/nuropb/nuropb/metrics"
)

func TestObserverAndScrape(t *testing.T) {
	m := metrics.New(metrics.Config{
		Services: func() []host.ServiceInfo {
			return []host.ServiceInfo{{Tenant: "shop", Service: "orders", Version: "2.0.0", Hash: "abc", Instances: 3, Busy: 1,
				MemoryPages: 40, MemoryLimitPages: 256, Traps: 2}}
		},
		Ready:           func() bool { return true },
		BrokerConnected: func() bool { return false },
		Broker: func() metrics.BrokerStats {
			return metrics.BrokerStats{Reconnects: 4, Confirmed: 10, Nacked: 1, Redeliveries: 5}
		},
	})
	m.Handled(host.Handled{Tenant: "shop", Service: "orders", Method: "create", Kind: abi.KindRequest, Duration: 3 * time.Millisecond})
	m.Handled(host.Handled{Tenant: "shop", Service: "orders", Method: "create", Kind: abi.KindRequest, Code: abi.CodeTimeout,
		Duration: time.Second, Redelivered: true})
	m.Handled(host.Handled{Tenant: "shop", Service: "orders", Code: abi.CodeBadRequest})
	m.Loaded(host.Loaded{Tenant: "shop", Service: "orders"})
	m.Loaded(host.Loaded{Tenant: "shop", Service: "orders", Swap: true})
	m.Refused(host.Refusal{Tenant: "shop", File: "shop/bad.wasm"})
	m.Removed("shop", "orders")

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`nuropb_calls_total{kind="request",method="create",service="orders",tenant="shop"} 2`,
		`nuropb_call_errors_total{code="timeout",kind="request",method="create",service="orders",tenant="shop"} 1`,
		`nuropb_calls_total{kind="malformed",method="",service="orders",tenant="shop"} 1`,
		`nuropb_call_duration_seconds_count{kind="request",method="create",service="orders",tenant="shop"} 2`,
		`nuropb_redeliveries_total{service="orders",tenant="shop"} 1`,
		`nuropb_module_loads_total{service="orders",tenant="shop"} 1`,
		`nuropb_module_reloads_total{service="orders",tenant="shop"} 1`,
		`nuropb_module_refusals_total{tenant="shop"} 1`,
		`nuropb_module_removals_total{service="orders",tenant="shop"} 1`,
		`nuropb_service_info{hash="abc",service="orders",tenant="shop",version="2.0.0"} 1`,
		`nuropb_service_instances{service="orders",tenant="shop"} 3`,
		`nuropb_service_busy_instances{service="orders",tenant="shop"} 1`,
		`nuropb_service_memory_bytes{service="orders",tenant="shop"} 2.62144e+06`,
		`nuropb_service_memory_limit_bytes{service="orders",tenant="shop"} 1.6777216e+07`,
		`nuropb_service_traps_total{service="orders",tenant="shop"} 2`,
		`nuropb_ready 1`,
		`nuropb_broker_connected 0`,
		`nuropb_broker_reconnects_total 4`,
		`nuropb_broker_publish_confirms_total{result="ack"} 10`,
		`nuropb_broker_publish_confirms_total{result="nack"} 1`,
		`nuropb_broker_redeliveries_total 5`,
		`process_start_time_seconds`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.Logf("%s", body)
	}
}
