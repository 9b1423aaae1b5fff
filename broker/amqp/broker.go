package amqp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/nuropb/nuropb/broker"
)

// Broker is a broker.Broker on RabbitMQ. Create it with New; it is safe for
// concurrent use.
type Broker struct {
	cfg    Config
	log    *slog.Logger
	hostID string // random, makes correlation ids and consumer tags unique across hosts
	seq    atomic.Uint64

	sess    atomic.Pointer[session] // nil while disconnected
	mu      sync.Mutex
	ready   chan struct{} // closed while a session is live; replaced when it dies
	lastErr error         // why the broker is disconnected

	closed    atomic.Bool
	closing   chan struct{}
	supDone   chan struct{}
	consumers map[*consumer]struct{} // guarded by mu

	stats counters
}

// counters are what Stats reports; atomics, as they are bumped on the hot path.
type counters struct {
	reconnects, confirmed, nacked, confirmTimeouts, redeliveries atomic.Uint64
}

// Stats are a broker's running totals, for metrics.
type Stats struct {
	Reconnects      uint64 // sessions restored after the connection was lost
	Confirmed       uint64 // commands and events RabbitMQ confirmed (acked)
	Nacked          uint64 // commands and events it refused or returned unroutable
	ConfirmTimeouts uint64 // publishes with no confirm within ConfirmTimeout
	Redeliveries    uint64 // deliveries flagged redelivered (a consumer died holding them)
}

// Stats returns the broker's running totals.
func (b *Broker) Stats() Stats {
	return Stats{Reconnects: b.stats.reconnects.Load(), Confirmed: b.stats.confirmed.Load(), Nacked: b.stats.nacked.Load(),
		ConfirmTimeouts: b.stats.confirmTimeouts.Load(), Redeliveries: b.stats.redeliveries.Load()}
}

// Connected reports whether a session with RabbitMQ is live now; readiness
// checks use it, since calls fail with ErrUnavailable while it is false.
func (b *Broker) Connected() bool { return !b.closed.Load() && b.sess.Load() != nil }

var _ broker.Broker = (*Broker)(nil)

// New validates cfg, connects to RabbitMQ and declares the shared topology.
// It retries with backoff until ctx ends, so a host may start before its
// broker; a refused login or a missing vhost fails at once, since retrying
// cannot fix them.
func New(ctx context.Context, cfg Config) (*Broker, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	b := &Broker{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "broker/amqp"),
		hostID:    hex.EncodeToString(id[:]),
		ready:     make(chan struct{}),
		closing:   make(chan struct{}),
		supDone:   make(chan struct{}),
		consumers: make(map[*consumer]struct{}),
	}
	for attempt := 0; ; attempt++ {
		s, err := b.dial()
		if err == nil {
			b.setSession(s)
			break
		}
		if permanent(err) {
			return nil, fmt.Errorf("amqp: connect to %s: %w", redact(cfg.URL), err)
		}
		wait := cfg.backoff(attempt)
		b.log.Warn("cannot connect to rabbitmq, retrying", "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("amqp: connect to %s: %w (last error: %v)", redact(cfg.URL), ctx.Err(), err)
		case <-time.After(wait):
		}
	}
	go b.supervise()
	return b, nil
}

// permanent reports connection errors that retrying cannot fix.
func permanent(err error) bool {
	var ae *amqp091.Error
	if errors.As(err, &ae) {
		return ae.Code == amqp091.AccessRefused || ae.Code == amqp091.NotAllowed
	}
	return false
}

// redact hides the password of an AMQP URL in error messages.
func redact(url string) string {
	u, err := amqp091.ParseURI(url)
	if err != nil {
		return "(invalid URL)"
	}
	u.Password = "xxx"
	return u.String()
}

func (b *Broker) setSession(s *session) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s != nil {
		b.sess.Store(s)
		close(b.ready)
		return
	}
	b.sess.Store(nil)
	b.ready = make(chan struct{})
}

// supervise owns the connection: it waits for the live session to die,
// tears it down and reconnects with backoff, until Close.
func (b *Broker) supervise() {
	defer close(b.supDone)
	attempt := 0
	for {
		s := b.sess.Load()
		select {
		case <-s.died:
		case <-b.closing:
			b.setSession(nil)
			s.teardown(fmt.Errorf("%w", broker.ErrClosed))
			return
		}
		b.mu.Lock()
		b.lastErr = s.dieCause
		b.mu.Unlock()
		b.setSession(nil)
		s.teardown(s.unavailable())
		b.log.Warn("rabbitmq connection lost, reconnecting", "error", s.dieCause)
		// A session that lived long resets the backoff; one that died young
		// (a flapping broker) keeps growing it, so hosts do not hammer it.
		if time.Since(s.born) > b.cfg.ReconnectMax {
			attempt = 0
		}
		for {
			wait := b.cfg.backoff(attempt)
			attempt++
			select {
			case <-b.closing:
				return
			case <-time.After(wait):
			}
			ns, err := b.dial()
			if err == nil {
				b.setSession(ns)
				b.stats.reconnects.Add(1)
				b.log.Info("rabbitmq connection restored")
				break
			}
			b.mu.Lock()
			b.lastErr = err
			b.mu.Unlock()
			b.log.Warn("reconnect to rabbitmq failed", "error", err, "attempt", attempt)
		}
	}
}

// live returns the current session or says why there is none.
func (b *Broker) live() (*session, error) {
	if b.closed.Load() {
		return nil, broker.ErrClosed
	}
	if s := b.sess.Load(); s != nil {
		return s, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return nil, fmt.Errorf("%w: reconnecting to rabbitmq (%v)", broker.ErrUnavailable, b.lastErr)
}

// waitLive waits for a live session; consumers use it to resume after a
// reconnect.
func (b *Broker) waitLive(ctx context.Context) (*session, error) {
	for {
		if b.closed.Load() {
			return nil, broker.ErrClosed
		}
		if s := b.sess.Load(); s != nil {
			select {
			case <-s.died:
			default:
				return s, nil
			}
		}
		b.mu.Lock()
		ready := b.ready
		b.mu.Unlock()
		select {
		case <-ready:
			// A session that died already is still "ready" until the
			// supervisor replaces it; don't spin on it.
			if s := b.sess.Load(); s != nil {
				select {
				case <-s.died:
					select {
					case <-time.After(10 * time.Millisecond):
					case <-ctx.Done():
						return nil, ctx.Err()
					}
				default:
				}
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-b.closing:
			return nil, broker.ErrClosed
		}
	}
}

// nextID makes a correlation or message id unique across hosts and cheap
// enough for the hot path.
func (b *Broker) nextID() string {
	return b.hostID + "." + strconv.FormatUint(b.seq.Add(1), 36)
}

// Request publishes msg to the route's service (mandatory) and waits for the
// reply until ctx ends. The correlation id is msg.CorrelationID when set
// (NuroPb interop) or a fresh one; the pending entry is removed on every
// path, so abandoned requests leave nothing behind.
func (b *Broker) Request(ctx context.Context, to broker.Route, msg broker.Message) (broker.Message, error) {
	s, err := b.live()
	if err != nil {
		return broker.Message{}, err
	}
	ex := broker.RPCExchange(to.Tenant)
	if err := s.ensureExchange(ctx, ex, amqp091.ExchangeDirect); err != nil {
		return broker.Message{}, err
	}
	id := msg.CorrelationID
	if id == "" {
		id = b.nextID()
	}
	w, err := s.addRequest(id)
	if err != nil {
		return broker.Message{}, err
	}
	p := toPublishing(msg)
	p.CorrelationId = id
	p.ReplyTo = s.replyTo
	if err := s.rpc.PublishWithContext(ctx, ex, to.Service, true, false, p); err != nil {
		s.takeRequest(id)
		return broker.Message{}, s.wrapConnErr(err)
	}
	select {
	case r := <-w:
		return r.msg, r.err
	case <-ctx.Done():
		if s.takeRequest(id) == nil {
			// The reply (or the failure) won the race; it is the truth.
			r := <-w
			return r.msg, r.err
		}
		return broker.Message{}, ctx.Err()
	}
}

// Send publishes a command to the route's service, persistent and
// mandatory, and returns once RabbitMQ has confirmed it (ErrNoRoute if no
// queue took it).
func (b *Broker) Send(ctx context.Context, to broker.Route, msg broker.Message) error {
	s, err := b.live()
	if err != nil {
		return err
	}
	ex := broker.RPCExchange(to.Tenant)
	if err := s.ensureExchange(ctx, ex, amqp091.ExchangeDirect); err != nil {
		return err
	}
	return b.confirmed(ctx, s, ex, to.Service, true, msg)
}

// Publish publishes an event on the tenant's events exchange, persistent,
// and returns once RabbitMQ has confirmed it. A topic without subscribers
// is not an error.
func (b *Broker) Publish(ctx context.Context, tenant, topic string, msg broker.Message) error {
	s, err := b.live()
	if err != nil {
		return err
	}
	ex := broker.EventsExchange(tenant)
	if err := s.ensureExchange(ctx, ex, amqp091.ExchangeTopic); err != nil {
		return err
	}
	return b.confirmed(ctx, s, ex, topic, false, msg)
}

func (b *Broker) confirmed(ctx context.Context, s *session, ex, key string, mandatory bool, msg broker.Message) error {
	p := toPublishing(msg)
	p.DeliveryMode = amqp091.Persistent
	p.MessageId = b.nextID()
	pc, err := s.conf.expect(p.MessageId)
	if err != nil {
		return err
	}
	dc, err := s.pub.PublishWithDeferredConfirmWithContext(ctx, ex, key, mandatory, false, p)
	if err != nil {
		s.conf.forget(pc)
		return s.wrapConnErr(err)
	}
	s.conf.sent(pc, dc.DeliveryTag)
	timer := time.NewTimer(b.cfg.ConfirmTimeout)
	defer timer.Stop()
	select {
	case err := <-pc.done:
		if err == nil {
			b.stats.confirmed.Add(1)
		} else {
			b.stats.nacked.Add(1)
		}
		return err
	case <-ctx.Done():
		s.conf.forget(pc)
		return ctx.Err()
	case <-timer.C:
		b.stats.confirmTimeouts.Add(1)
		s.conf.forget(pc)
		return fmt.Errorf("%w: no publisher confirm within %s (the message may still be delivered)", broker.ErrUnavailable, b.cfg.ConfirmTimeout)
	}
}

// Reply sends a response to a request's ReplyTo through the default
// exchange. It is neither mandatory nor confirmed: a caller that went away
// loses nothing, and a confirm would double the cost of every request.
func (b *Broker) Reply(ctx context.Context, replyTo string, msg broker.Message) error {
	if replyTo == "" {
		return errors.New("amqp: Reply needs the request's ReplyTo")
	}
	s, err := b.live()
	if err != nil {
		return err
	}
	p := toPublishing(msg)
	if err := s.resp.PublishWithContext(ctx, "", replyTo, false, false, p); err != nil {
		return s.wrapConnErr(err)
	}
	return nil
}

// Retire deletes the route's queue if it has no consumer and no message.
// RabbitMQ answers a queue.delete whose if-unused/if-empty condition fails
// with PRECONDITION_FAILED, which closes the channel: it runs on a
// throwaway channel, and that answer means "still in use", so nil.
func (b *Broker) Retire(ctx context.Context, to broker.Route) error {
	s, err := b.live()
	if err != nil {
		return err
	}
	q := broker.ServiceQueue(to)
	err = s.throwaway(ctx, func(ch *amqp091.Channel) error {
		_, err := ch.QueueDelete(q, true, true, false)
		return err
	})
	var ae *amqp091.Error
	if errors.As(err, &ae) && (ae.Code == amqp091.PreconditionFailed || ae.Code == amqp091.NotFound) {
		b.log.Debug("service queue kept", "queue", q, "reason", ae.Reason)
		return nil
	}
	if err != nil {
		return fmt.Errorf("amqp: retire queue %s: %w", q, s.wrapConnErr(err))
	}
	return nil
}

// Close stops every consumer (waiting up to Config.CloseTimeout for their
// handlers), fails waiting requests with broker.ErrClosed and closes the
// connection. Later calls return broker.ErrClosed.
func (b *Broker) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	b.mu.Lock()
	cs := make([]*consumer, 0, len(b.consumers))
	for c := range b.consumers {
		cs = append(cs, c)
	}
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.CloseTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			if err := c.Stop(ctx); err != nil {
				b.log.Warn("consumer did not stop cleanly", "queue", c.queue, "error", err)
			}
		})
	}
	wg.Wait()
	close(b.closing)
	<-b.supDone
	return nil
}

// toPublishing maps a broker.Message onto AMQP properties.
func toPublishing(m broker.Message) amqp091.Publishing {
	p := amqp091.Publishing{
		Body:          m.Body,
		ContentType:   m.ContentType,
		Type:          m.Type,
		CorrelationId: m.CorrelationID,
		ReplyTo:       m.ReplyTo,
		Headers:       amqp091.Table(m.Headers),
	}
	if m.Expiration > 0 {
		// AMQP wants whole milliseconds as a string; round up so a short
		// positive ttl never becomes "0" (expire unless delivered at once).
		p.Expiration = strconv.FormatInt(int64((m.Expiration+time.Millisecond-1)/time.Millisecond), 10)
	}
	if m.Persistent {
		p.DeliveryMode = amqp091.Persistent
	}
	return p
}

// fromDelivery maps AMQP properties back. A malformed expiration is
// dropped rather than refused: the host decides what to do with a message.
func fromDelivery(d *amqp091.Delivery) broker.Message {
	m := broker.Message{
		Body:          d.Body,
		ContentType:   d.ContentType,
		Type:          d.Type,
		CorrelationID: d.CorrelationId,
		ReplyTo:       d.ReplyTo,
		Persistent:    d.DeliveryMode == amqp091.Persistent,
	}
	if len(d.Headers) > 0 {
		m.Headers = map[string]any(d.Headers)
	}
	if d.Expiration != "" {
		if ms, err := strconv.ParseInt(d.Expiration, 10, 64); err == nil && ms > 0 && ms < math.MaxInt64/int64(time.Millisecond) {
			m.Expiration = time.Duration(ms) * time.Millisecond
		}
	}
	return m
}
