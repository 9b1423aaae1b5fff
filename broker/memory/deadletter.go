package memory

import (
	"sync"

	"github.com/nuropb/nuropb/broker"
)

// deadLetters is the broker's dead-letter queue: bounded, oldest dropped
// first, like RabbitMQ's default drop-head overflow.
type deadLetters struct {
	mu   sync.Mutex
	msgs ring[broker.Message]
	max  int
}

// deadLetter records d's message with RabbitMQ's x-first-death headers. The
// headers are copied: the original map is shared with the message's other
// copies.
func (b *Broker) deadLetter(d *delivery, reason string) {
	m := d.msg
	h := make(map[string]any, len(m.Headers)+2)
	for k, v := range m.Headers {
		h[k] = v
	}
	h["x-first-death-reason"] = reason
	h["x-first-death-queue"] = d.q.name
	m.Headers = h
	m.Expiration = 0 // RabbitMQ strips it, or the message would expire again in the dead-letter queue
	b.dead.add(m)
}

func (dl *deadLetters) add(m broker.Message) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.msgs.len() >= dl.max {
		dl.msgs.popFront()
	}
	dl.msgs.pushBack(m)
}

func (dl *deadLetters) list() []broker.Message {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	out := make([]broker.Message, 0, dl.msgs.len())
	dl.msgs.each(func(m broker.Message) { out = append(out, m) })
	return out
}

func (dl *deadLetters) purge() int {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	n := dl.msgs.len()
	dl.msgs = ring[broker.Message]{}
	return n
}
