// Command orders is an example nuropb service in Go: it takes orders,
// validates and totals them, asks greeter for a confirmation message and
// publishes order.created for whoever listens (audit does). Its stats method
// leaves the statistics to the Python stats service.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"

	nuropb "github.com/nuropb/nuropb/guest-sdk/go"
)

var svc = nuropb.NewService("orders", "1.0.0", "Takes and totals orders.",
	nuropb.Calls("greeter", "stats"), nuropb.Publishes("order.created"))

// Item is one order line. Money is in integer cents: floats do not add up.
type Item struct {
	SKU        string `cbor:"sku"`
	Qty        int    `cbor:"qty"`
	PriceCents int64  `cbor:"price_cents"`
}

// CreateParams are the params of create.
type CreateParams struct {
	Customer string `cbor:"customer" nuropb:"required" doc:"the customer's name"`
	Items    []Item `cbor:"items" nuropb:"required" doc:"order lines: {sku, qty, price_cents}, 1 to 100 of them"`
}

const maxItems = 100

// Validate checks every line, naming the first bad one.
func (p CreateParams) Validate() error {
	if p.Customer == "" {
		return fmt.Errorf("customer must not be empty")
	}
	if len(p.Items) == 0 || len(p.Items) > maxItems {
		return fmt.Errorf("an order needs 1 to %d items, got %d", maxItems, len(p.Items))
	}
	for i, it := range p.Items {
		switch {
		case it.SKU == "":
			return fmt.Errorf("items[%d]: sku must not be empty", i)
		case it.Qty < 1 || it.Qty > 1000:
			return fmt.Errorf("items[%d] (%s): qty must be 1 to 1000, got %d", i, it.SKU, it.Qty)
		case it.PriceCents < 0 || it.PriceCents > 100_000_000:
			return fmt.Errorf("items[%d] (%s): price_cents must be 0 to 100000000, got %d", i, it.SKU, it.PriceCents)
		}
	}
	return nil
}

// Order is a created order, as stored, returned by get and published.
type Order struct {
	ID         string `cbor:"id"`
	Customer   string `cbor:"customer"`
	Items      []Item `cbor:"items"`
	TotalCents int64  `cbor:"total_cents"`
	TraceID    string `cbor:"trace_id,omitempty"`
}

// Created is create's result.
type Created struct {
	ID         string `cbor:"id"`
	TotalCents int64  `cbor:"total_cents"`
	Message    string `cbor:"message"`
}

// GetParams are the params of get.
type GetParams struct {
	ID string `cbor:"id" nuropb:"required" doc:"an order id from create"`
}

// orders lives in this instance's memory: a demo store, not a database.
var orders = map[string]Order{}

const maxStored = 10_000

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "ord_" + hex.EncodeToString(b[:])
}

func create(ctx *nuropb.Context, p CreateParams) (Created, error) {
	var total int64
	for _, it := range p.Items {
		total += int64(it.Qty) * it.PriceCents
	}
	var greeting string
	if err := ctx.Call("greeter", "hello", map[string]any{"name": p.Customer}, &greeting); err != nil {
		return Created{}, fmt.Errorf("confirmation from greeter: %v", err)
	}
	o := Order{ID: newID(), Customer: p.Customer, Items: p.Items, TotalCents: total, TraceID: ctx.TraceID()}
	if len(orders) >= maxStored {
		clear(orders)
	}
	orders[o.ID] = o
	if err := ctx.Publish("order.created", o); err != nil {
		ctx.Logf(nuropb.LevelWarn, "order %s created but order.created not published: %v", o.ID, err)
	}
	msg := fmt.Sprintf("%s Your order %s comes to %d.%02d.", greeting, o.ID, total/100, total%100)
	return Created{ID: o.ID, TotalCents: total, Message: msg}, nil
}

func get(_ *nuropb.Context, p GetParams) (Order, error) {
	o, ok := orders[p.ID]
	if !ok {
		return Order{}, fmt.Errorf("no order %q in this instance", p.ID)
	}
	return o, nil
}

func list(*nuropb.Context, nuropb.NoParams) ([]string, error) {
	ids := make([]string, 0, len(orders))
	for id := range orders {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

// Stats is the stats method's result. The figures come from the Python
// stats service's summarize: Go has no statistics package in its standard
// library, Python has a good one, and the mesh lets each service be written
// in the language that suits it.
type Stats struct {
	Count        int                `cbor:"count"`
	TotalCents   int64              `cbor:"total_cents"`
	OrderTotals  map[string]float64 `cbor:"order_totals_cents,omitempty"` // mean, median, stdev, min, max
	QuartileCuts []float64          `cbor:"quartiles_cents,omitempty"`
}

// summary is the part of stats.summarize's result this service uses.
type summary struct {
	Mean      float64   `cbor:"mean"`
	Median    float64   `cbor:"median"`
	Stdev     float64   `cbor:"stdev"`
	Min       float64   `cbor:"min"`
	Max       float64   `cbor:"max"`
	Quantiles []float64 `cbor:"quantiles"`
}

func orderStats(ctx *nuropb.Context, _ nuropb.NoParams) (Stats, error) {
	if len(orders) == 0 {
		return Stats{}, nil
	}
	totals := make([]int64, 0, len(orders))
	var sum int64
	for _, o := range orders {
		totals = append(totals, o.TotalCents)
		sum += o.TotalCents
	}
	var s summary
	if err := ctx.Call("stats", "summarize", map[string]any{"values": totals, "quantiles": 4}, &s); err != nil {
		return Stats{}, fmt.Errorf("statistics from stats: %v", err)
	}
	return Stats{
		Count:      len(totals),
		TotalCents: sum,
		OrderTotals: map[string]float64{
			"mean": s.Mean, "median": s.Median, "stdev": s.Stdev, "min": s.Min, "max": s.Max,
		},
		QuartileCuts: s.Quantiles,
	}, nil
}

func init() {
	nuropb.Method(svc, "create", "Creates an order, totals it and returns its id with a confirmation message.", create)
	nuropb.Method(svc, "get", "Returns an order this instance created.", get)
	nuropb.Method(svc, "list", "Lists the ids of orders this instance created.", list)
	nuropb.Method(svc, "stats", "Statistics of the totals of the orders this instance created, from the Python stats service.", orderStats)
	nuropb.Register(svc)
}

func main() {}
