package amqp

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/broker/amqp/amqptest"
	"github.com/nuropb/nuropb/internal/rawamqp"
)

// BenchmarkRoundTrip measures request/reply round trips per second at 1, 8
// and 64 requests in flight, for this broker and for a minimal loop written straight on amqp091-go, on the same RabbitMQ in the
// same run, so the ratio is what matters. Client and server are separate
// connections, as two hosts would be; the server has prefetch 64, replies
// then acks.
//
//	go test -run '^$' -bench RoundTrip -benchtime 3s ./broker/amqp/
func BenchmarkRoundTrip(b *testing.B) {
	url, _ := amqptest.Vhost(b)
	body := make([]byte, 64)
	modes := []struct {
		name  string
		setup func(b *testing.B, url string) func(context.Context) error
	}{
		{"nuropb", func(b *testing.B, url string) func(context.Context) error {
			return nuropbRoundTrip(b, url, body)
		}},
		{"raw-amqp091", func(b *testing.B, url string) func(context.Context) error {
			return rawRoundTrip(b, url, body)
		}},
	}
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			rt := m.setup(b, url)
			for _, inflight := range []int{1, 8, 64} {
				b.Run(fmt.Sprintf("inflight=%d", inflight), func(b *testing.B) {
					var next atomic.Int64
					var wg sync.WaitGroup
					var failed atomic.Value
					ctx := context.Background()
					rabbit0, self0 := cpuTimes()
					b.ResetTimer()
					for range inflight {
						wg.Go(func() {
							for next.Add(1) <= int64(b.N) {
								if err := rt(ctx); err != nil {
									failed.Store(err)
									return
								}
							}
						})
					}
					wg.Wait()
					b.StopTimer()
					if err := failed.Load(); err != nil {
						b.Fatal(err)
					}
					rabbit1, self1 := cpuTimes()
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rt/s")
					// CPU per round trip barely depends on what else runs on
					// the machine, unlike rt/s on a shared 2-core box.
					if rabbit1 > 0 {
						b.ReportMetric(float64(rabbit1-rabbit0)/float64(time.Microsecond)/float64(b.N), "rabbit-µs/rt")
					}
					b.ReportMetric(float64(self1-self0)/float64(time.Microsecond)/float64(b.N), "go-µs/rt")
				})
			}
		})
	}
}

// cpuTimes returns the CPU time (user+system) used so far by RabbitMQ's
// Erlang VM (0 if it is not visible in /proc) and by this process.
func cpuTimes() (rabbit, self time.Duration) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		comm, err := os.ReadFile("/proc/" + d.Name() + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "beam.smp" {
			continue
		}
		stat, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the ")" that closes the command name; utime and
		// stime are the 14th and 15th fields of the whole line, in ticks.
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) > 12 {
			ut, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			rabbit += time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
		}
	}
	return rabbit, self
}

func nuropbRoundTrip(b *testing.B, url string, body []byte) func(context.Context) error {
	quiet := slog.New(slog.NewTextHandler(b.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	open := func() *Broker {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		br, err := New(ctx, Config{URL: url, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = br.Close() })
		return br
	}
	server, client := open(), open()
	to := broker.Route{Service: "bench"}
	c, err := server.Serve(context.Background(), broker.ServiceSpec{Route: to, Prefetch: 64}, func(ctx context.Context, d broker.Delivery) {
		m := d.Message()
		_ = server.Reply(ctx, m.ReplyTo, broker.Message{Body: m.Body, CorrelationID: m.CorrelationID, ContentType: m.ContentType})
		_ = d.Ack()
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Stop(context.Background()) })
	msg := broker.Message{Body: body, ContentType: broker.ContentTypeCBOR, Type: "request"}
	return func(ctx context.Context) error {
		_, err := client.Request(ctx, to, msg)
		return err
	}
}

// rawRoundTrip is the broker's ceiling: internal/rawamqp's minimal loop
// straight on amqp091-go, with the same prefetch as the nuropb server.
func rawRoundTrip(b *testing.B, url string, body []byte) func(context.Context) error {
	l, err := rawamqp.New(url, 64, body)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	return l.RoundTrip
}
