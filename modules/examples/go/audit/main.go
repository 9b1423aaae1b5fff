// Command audit is an example nuropb service in Go: it listens to every
// order.* event and reports what it has seen.
package main

import (
	"time"

	nuropb "github.com/nuropb/nuropb/guest-sdk/go"
)

var svc = nuropb.NewService("audit", "1.0.0", "Records order events.")

// Record is one event audit saw.
type Record struct {
	Seq     int       `cbor:"seq"`
	Topic   string    `cbor:"topic"`
	TraceID string    `cbor:"trace_id,omitempty"`
	Tenant  string    `cbor:"tenant,omitempty"`
	At      time.Time `cbor:"at"`
	Event   any       `cbor:"event"`
}

// SeenParams are the params of seen.
type SeenParams struct {
	Topic string `cbor:"topic" doc:"only records with this exact topic"`
	Limit int    `cbor:"limit" doc:"at most this many, the latest (default 100)"`
}

// Summary is the result of summary.
type Summary struct {
	Total   int            `cbor:"total"`
	ByTopic map[string]int `cbor:"by_topic"`
}

// The log lives in this instance's memory, so the host must run audit with
// one instance for seen to report every event.
var (
	records []Record
	total   int
	byTopic = map[string]int{}
)

const keep = 1000

func record(ctx *nuropb.Context, ev nuropb.Event) error {
	var payload any
	if err := ev.Decode(&payload); err != nil {
		return err
	}
	total++
	byTopic[ev.Topic]++
	if len(records) == keep {
		records = append(records[:0], records[1:]...)
	}
	records = append(records, Record{
		Seq: total, Topic: ev.Topic, TraceID: ctx.TraceID(), Tenant: ctx.Tenant(),
		At: time.Now().UTC(), Event: payload,
	})
	return nil
}

func seen(_ *nuropb.Context, p SeenParams) ([]Record, error) {
	if p.Limit <= 0 {
		p.Limit = 100
	}
	out := []Record{}
	for i := len(records) - 1; i >= 0 && len(out) < p.Limit; i-- {
		if p.Topic == "" || records[i].Topic == p.Topic {
			out = append(out, records[i])
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

func init() {
	svc.Subscribe("order.#", record)
	nuropb.Method(svc, "seen", "Returns the latest recorded events, oldest first.", seen)
	nuropb.Method(svc, "summary", "Counts every event seen, by topic.",
		func(*nuropb.Context, nuropb.NoParams) (Summary, error) {
			return Summary{Total: total, ByTopic: byTopic}, nil
		})
	nuropb.Register(svc)
}

func main() {}
