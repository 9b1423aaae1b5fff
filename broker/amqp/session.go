package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/nuropb/nuropb/broker"
)

// directReplyTo is RabbitMQ's pseudo-queue for replies without a queue: the
// server routes a response straight to the consumer of the requesting
// channel. It must be consumed in no-ack mode on the channel that publishes
// the requests.
const directReplyTo = "amq.rabbitmq.reply-to"

// session is one connection and the channels every operation shares. It
// never recovers: when any part of it fails the whole session is torn down
// and the broker builds a new one, so no state (delivery tags, confirm
// sequence numbers, reply addresses) outlives the channel it belongs to.
type session struct {
	b    *Broker
	conn *amqp091.Connection
	born time.Time

	// rpc publishes requests and receives their replies and returns.
	rpc     *amqp091.Channel
	replyTo string // what RabbitMQ is told; it substitutes the channel's own address
	// pub is in confirm mode: commands and events.
	pub *amqp091.Channel
	// resp publishes responses to other hosts' requests; kept apart from
	// rpc so that a busy server and a busy client do not share one
	// RabbitMQ channel process.
	resp *amqp091.Channel

	died     chan struct{} // closed when the session is dead
	dieOnce  sync.Once
	dieCause error

	mu       sync.Mutex
	dead     bool
	requests map[string]chan reply // correlation id -> waiting Request

	conf confirmer

	exMu      sync.Mutex
	exchanges map[string]bool // declared on this connection

	wg sync.WaitGroup // the session's goroutines
}

// reply is what a waiting Request receives: a response or why there is none.
type reply struct {
	msg broker.Message
	err error
}

func (b *Broker) dial() (*session, error) {
	cfg := b.cfg
	props := amqp091.NewConnectionProperties()
	props.SetClientConnectionName(cfg.ConnectionName)
	conn, err := amqp091.DialConfig(cfg.URL, amqp091.Config{
		Heartbeat:       cfg.Heartbeat,
		Locale:          "en_US",
		Properties:      props,
		TLSClientConfig: cfg.TLS,
		Dial:            amqp091.DefaultDial(cfg.DialTimeout),
	})
	if err != nil {
		return nil, err
	}
	s := &session{
		b:         b,
		conn:      conn,
		born:      time.Now(),
		died:      make(chan struct{}),
		requests:  make(map[string]chan reply),
		exchanges: make(map[string]bool),
	}
	s.conf.waiting = make(map[uint64]*pendingConfirm)
	s.conf.byID = make(map[string]*pendingConfirm)
	s.conf.early = make(map[uint64]bool)
	if err := s.setup(); err != nil {
		_ = conn.Close()
		s.wg.Wait()
		return nil, err
	}
	return s, nil
}

// setup declares the shared topology and opens the shared channels. Any
// failure of the connection or of a shared channel afterwards kills the
// session (see watchClose).
func (s *session) setup() error {
	conn := s.conn
	s.watchClose(conn.NotifyClose(make(chan *amqp091.Error, 1)), "connection")
	blocked := conn.NotifyBlocked(make(chan amqp091.Blocking, 1))
	s.wg.Go(func() {
		for bl := range blocked {
			if bl.Active {
				s.b.log.Warn("rabbitmq blocks publishing", "reason", bl.Reason)
			} else {
				s.b.log.Info("rabbitmq unblocked publishing")
			}
		}
	})

	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open topology channel: %w", err)
	}
	if err := ch.ExchangeDeclare(broker.DeadLetterExchange, amqp091.ExchangeFanout, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", broker.DeadLetterExchange, err)
	}
	if _, err := ch.QueueDeclare(broker.DeadLetterQueue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare queue %s: %w", broker.DeadLetterQueue, err)
	}
	if err := ch.QueueBind(broker.DeadLetterQueue, "", broker.DeadLetterExchange, false, nil); err != nil {
		return fmt.Errorf("bind queue %s: %w", broker.DeadLetterQueue, err)
	}
	_ = ch.Close()

	if s.rpc, err = s.sharedChannel("rpc"); err != nil {
		return err
	}
	s.replyTo = directReplyTo
	replies, err := s.rpc.Consume(directReplyTo, "", true, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", directReplyTo, err)
	}
	returns := s.rpc.NotifyReturn(make(chan amqp091.Return, 16))
	s.wg.Go(func() { s.replyLoop(replies, returns) })

	if s.pub, err = s.sharedChannel("confirm"); err != nil {
		return err
	}
	if err := s.pub.Confirm(false); err != nil {
		return fmt.Errorf("confirm mode: %w", err)
	}
	// Both unbuffered and read by one goroutine: the client library hands
	// them over in wire order, and RabbitMQ sends a mandatory message's
	// basic.return before its basic.ack, so the return is recorded before
	// the confirm that completes the Send.
	confirms := s.pub.NotifyPublish(make(chan amqp091.Confirmation))
	pubReturns := s.pub.NotifyReturn(make(chan amqp091.Return))
	s.wg.Go(func() { s.conf.loop(confirms, pubReturns) })

	if s.resp, err = s.sharedChannel("response"); err != nil {
		return err
	}
	return nil
}

func (s *session) sharedChannel(name string) (*amqp091.Channel, error) {
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open %s channel: %w", name, err)
	}
	s.watchClose(ch.NotifyClose(make(chan *amqp091.Error, 1)), name+" channel")
	return ch, nil
}

func (s *session) watchClose(c chan *amqp091.Error, what string) {
	s.wg.Go(func() {
		select {
		case e, ok := <-c:
			if ok && e != nil {
				s.die(fmt.Errorf("%s closed: %w", what, e))
			} else {
				s.die(fmt.Errorf("%s closed", what))
			}
		case <-s.died:
		}
	})
}

// die marks the session dead; the broker's supervisor sees it and tears
// the session down.
func (s *session) die(cause error) {
	s.dieOnce.Do(func() {
		s.dieCause = cause
		close(s.died)
	})
}

// teardown fails everything waiting on the session with err, closes the
// connection and waits for the session's goroutines.
func (s *session) teardown(err error) {
	s.die(err)
	s.mu.Lock()
	s.dead = true
	reqs := s.requests
	s.requests = nil
	s.mu.Unlock()
	for _, w := range reqs {
		w <- reply{err: err}
	}
	s.conf.fail(err)
	_ = s.conn.Close()
	s.wg.Wait()
}

// unavailable wraps why the session died as broker.ErrUnavailable.
func (s *session) unavailable() error {
	<-s.died
	return fmt.Errorf("%w: %v", broker.ErrUnavailable, s.dieCause)
}

func (s *session) addRequest(id string) (chan reply, error) {
	w := make(chan reply, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return nil, fmt.Errorf("%w: connection lost", broker.ErrUnavailable)
	}
	if _, dup := s.requests[id]; dup {
		return nil, fmt.Errorf("amqp: correlation id %q is already waiting for a reply", id)
	}
	s.requests[id] = w
	return w, nil
}

// takeRequest removes and returns the waiter for id, so that exactly one of
// reply, return, teardown or the caller giving up completes it.
func (s *session) takeRequest(id string) chan reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.requests[id]
	if ok {
		delete(s.requests, id)
	}
	return w
}

func (s *session) replyLoop(replies <-chan amqp091.Delivery, returns <-chan amqp091.Return) {
	for replies != nil || returns != nil {
		select {
		case d, ok := <-replies:
			if !ok {
				replies = nil
				continue
			}
			if w := s.takeRequest(d.CorrelationId); w != nil {
				w <- reply{msg: fromDelivery(&d)}
			} else {
				s.b.log.Debug("reply for no waiting request (late or duplicate)", "correlation_id", d.CorrelationId)
			}
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			if w := s.takeRequest(r.CorrelationId); w != nil {
				w <- reply{err: fmt.Errorf("%w: %s on %s (%d %s)", broker.ErrNoRoute, r.RoutingKey, r.Exchange, r.ReplyCode, r.ReplyText)}
			}
		}
	}
}

// ensureExchange declares an exchange once per connection before the first
// publish to it: publishing to a missing exchange is a channel error in
// AMQP, which would kill a shared channel, whereas an existing exchange with
// no binding gives the basic.return that becomes ErrNoRoute. The declare
// uses a throwaway channel so that a conflicting declaration only closes
// that channel.
func (s *session) ensureExchange(ctx context.Context, name, kind string) error {
	s.exMu.Lock()
	done := s.exchanges[name]
	s.exMu.Unlock()
	if done {
		return nil
	}
	err := s.throwaway(ctx, func(ch *amqp091.Channel) error {
		return ch.ExchangeDeclare(name, kind, true, false, false, false, nil)
	})
	if err != nil {
		return fmt.Errorf("amqp: declare %s exchange %s: %w", kind, name, err)
	}
	s.exMu.Lock()
	s.exchanges[name] = true
	s.exMu.Unlock()
	return nil
}

func (s *session) markExchange(name string) {
	s.exMu.Lock()
	s.exchanges[name] = true
	s.exMu.Unlock()
}

// throwaway runs f on a fresh channel, closed afterwards, and stops waiting
// when ctx ends (closing the channel, which unblocks f). Operations whose
// failure is a channel error (declares, deletes) run here so that they
// cannot close a shared channel.
func (s *session) throwaway(ctx context.Context, f func(*amqp091.Channel) error) error {
	ch, err := s.conn.Channel()
	if err != nil {
		return s.wrapConnErr(err)
	}
	done := make(chan error, 1)
	go func() { done <- f(ch) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = ch.Close()
		<-done
		return ctx.Err()
	}
	_ = ch.Close()
	return err
}

// wrapConnErr turns the client library's "connection or channel closed"
// into broker.ErrUnavailable, leaving protocol errors as they are.
func (s *session) wrapConnErr(err error) error {
	if errors.Is(err, amqp091.ErrClosed) {
		select {
		case <-s.died:
			return s.unavailable()
		default:
		}
		return fmt.Errorf("%w: %v", broker.ErrUnavailable, err)
	}
	return err
}

// confirmer matches publisher confirms (and returns) to waiting Sends and
// Publishes.
type confirmer struct {
	mu      sync.Mutex
	dead    error
	waiting map[uint64]*pendingConfirm // by delivery tag
	byID    map[string]*pendingConfirm // by message id, for basic.return
	early   map[uint64]bool            // confirms that beat their publisher to the map
}

type pendingConfirm struct {
	id       string
	returned error
	done     chan error // buffered 1
}

// expect registers a publish before it is sent, so a basic.return, which
// arrives before the publisher knows its delivery tag, can find it.
func (c *confirmer) expect(id string) (*pendingConfirm, error) {
	p := &pendingConfirm{id: id, done: make(chan error, 1)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead != nil {
		return nil, c.dead
	}
	c.byID[id] = p
	return p, nil
}

// sent records the delivery tag the publish got. The confirm may already
// have come; then it is settled here.
func (c *confirmer) sent(p *pendingConfirm, tag uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead != nil {
		return // fail already completed p
	}
	if ack, ok := c.early[tag]; ok {
		delete(c.early, tag)
		c.settle(p, ack)
		return
	}
	c.waiting[tag] = p
}

// forget drops p when its publisher stops waiting. Its tag, if any, stays
// in waiting until the confirm comes or the session ends, so that a late
// confirm is not mistaken for an early one.
func (c *confirmer) forget(p *pendingConfirm) {
	c.mu.Lock()
	delete(c.byID, p.id)
	c.mu.Unlock()
}

func (c *confirmer) settle(p *pendingConfirm, ack bool) {
	delete(c.byID, p.id)
	switch {
	case !ack:
		p.done <- fmt.Errorf("%w: rabbitmq refused the message (basic.nack)", broker.ErrUnavailable)
	case p.returned != nil:
		p.done <- p.returned
	default:
		p.done <- nil
	}
}

func (c *confirmer) loop(confirms <-chan amqp091.Confirmation, returns <-chan amqp091.Return) {
	for confirms != nil || returns != nil {
		select {
		case cf, ok := <-confirms:
			if !ok {
				confirms = nil
				continue
			}
			c.mu.Lock()
			if p, ok := c.waiting[cf.DeliveryTag]; ok {
				delete(c.waiting, cf.DeliveryTag)
				if _, live := c.byID[p.id]; live {
					c.settle(p, cf.Ack)
				}
			} else if c.dead == nil {
				c.early[cf.DeliveryTag] = cf.Ack
			}
			c.mu.Unlock()
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			c.mu.Lock()
			if p, ok := c.byID[r.MessageId]; ok {
				p.returned = fmt.Errorf("%w: %s on %s (%d %s)", broker.ErrNoRoute, r.RoutingKey, r.Exchange, r.ReplyCode, r.ReplyText)
			}
			c.mu.Unlock()
		}
	}
}

// fail completes every waiting publish with err; later ones fail at once.
func (c *confirmer) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dead = err
	for _, p := range c.byID {
		p.done <- err
	}
	clear(c.byID)
	clear(c.waiting)
	clear(c.early)
}
