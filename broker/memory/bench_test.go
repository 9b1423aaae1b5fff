package memory_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/broker/memory"
)

// BenchmarkRoundTrip measures one Request/Reply through the broker, with the
// given number of requests in flight; ns/op is per round trip, and cpu-ns/op
// the CPU time it took on all cores (the figure to hold against the host's
// budget on a busy machine). The handler does what the host's does around
// the guest: reply, then ack.
//
// With deadline=true each request carries a context deadline and an
// expiration, as the host's do; the context alone costs about as much as
// the broker, so deadline=false isolates the broker.
func BenchmarkRoundTrip(b *testing.B) {
	for _, deadline := range []bool{false, true} {
		for _, inflight := range []int{1, 64} {
			b.Run(fmt.Sprintf("deadline=%v/inflight=%d", deadline, inflight), func(b *testing.B) {
				benchRoundTrip(b, inflight, deadline)
			})
		}
	}
}

func benchRoundTrip(b *testing.B, inflight int, deadline bool) {
	br, err := memory.New(memory.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	route := broker.Route{Service: "echo"}
	_, err = br.Serve(context.Background(), broker.ServiceSpec{Route: route, Prefetch: inflight},
		func(ctx context.Context, d broker.Delivery) {
			m := d.Message()
			_ = br.Reply(ctx, m.ReplyTo, broker.Message{Body: m.Body, CorrelationID: m.CorrelationID})
			_ = d.Ack()
		})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte("ping")
	var left atomic.Int64
	left.Store(int64(b.N))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	var wg sync.WaitGroup
	for i := range inflight {
		wg.Go(func() {
			msg := broker.Message{Body: body, Type: "request", CorrelationID: fmt.Sprint("c", i)}
			if deadline {
				msg.Expiration = 5 * time.Second
			}
			for left.Add(-1) >= 0 {
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				if deadline {
					ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
				}
				if _, err := br.Request(ctx, route, msg); err != nil {
					b.Error(err)
				}
				cancel()
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}
