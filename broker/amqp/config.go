package amqp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// Config says how to reach RabbitMQ and how to behave when it goes away.
// The zero value of every field but URL means "use the default"; New
// validates the whole Config in one place and never changes it afterwards.
type Config struct {
	// URL is the AMQP URI, e.g. "amqp://guest:guest@127.0.0.1:5672/nuropb".
	// Required: a host must not silently talk to a broker it was not told of.
	URL string
	// TLS is used for amqps:// URLs; nil uses the URL's defaults.
	TLS *tls.Config
	// ConnectionName is shown by rabbitmqctl and the management UI.
	// Default "nuropb-<hostname>-<pid>".
	ConnectionName string
	// Heartbeat is the AMQP heartbeat interval; a dead peer is noticed after
	// about twice this. Default 10s.
	Heartbeat time.Duration
	// DialTimeout bounds one TCP connect and AMQP handshake. Default 10s.
	DialTimeout time.Duration
	// ReconnectMin and ReconnectMax bound the backoff between connection
	// attempts: it doubles from ReconnectMin up to ReconnectMax, and each
	// wait is drawn at random from its upper half so that many hosts losing
	// the same broker do not return in lockstep. Defaults 200ms and 30s.
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	// ConfirmTimeout caps how long Send and Publish wait for the broker's
	// publisher confirm (the caller's context may end sooner). Default 10s.
	ConfirmTimeout time.Duration
	// HandlerTimeout caps how long a delivery may stay unsettled. It must be
	// below RabbitMQ's consumer_timeout (30 minutes unless changed), or the
	// server closes the consumer's channel. Default 15m.
	HandlerTimeout time.Duration
	// CloseTimeout bounds how long Close waits for running handlers before
	// cancelling their contexts. Default 30s.
	CloseTimeout time.Duration
	// Logger receives connection events; default slog.Default().
	Logger *slog.Logger
}

// Defaults, exported so that callers can print or document them.
const (
	DefaultHeartbeat      = 10 * time.Second
	DefaultDialTimeout    = 10 * time.Second
	DefaultReconnectMin   = 200 * time.Millisecond
	DefaultReconnectMax   = 30 * time.Second
	DefaultConfirmTimeout = 10 * time.Second
	DefaultHandlerTimeout = 15 * time.Minute
	DefaultCloseTimeout   = 30 * time.Second
)

// validate fills in defaults and checks every field, so the rest of the
// package can trust its Config.
func (c Config) validate() (Config, error) {
	if c.URL == "" {
		return c, errors.New("amqp: Config.URL is required")
	}
	if _, err := amqp091.ParseURI(c.URL); err != nil {
		return c, fmt.Errorf("amqp: Config.URL: %w", err)
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"Heartbeat", &c.Heartbeat, DefaultHeartbeat},
		{"DialTimeout", &c.DialTimeout, DefaultDialTimeout},
		{"ReconnectMin", &c.ReconnectMin, DefaultReconnectMin},
		{"ReconnectMax", &c.ReconnectMax, DefaultReconnectMax},
		{"ConfirmTimeout", &c.ConfirmTimeout, DefaultConfirmTimeout},
		{"HandlerTimeout", &c.HandlerTimeout, DefaultHandlerTimeout},
		{"CloseTimeout", &c.CloseTimeout, DefaultCloseTimeout},
	}
	for _, d := range durations {
		if *d.v < 0 {
			return c, fmt.Errorf("amqp: Config.%s is negative (%s)", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.Heartbeat < time.Second {
		return c, fmt.Errorf("amqp: Config.Heartbeat %s is below 1s (AMQP counts it in seconds)", c.Heartbeat)
	}
	if c.ReconnectMin > c.ReconnectMax {
		return c, fmt.Errorf("amqp: Config.ReconnectMin %s exceeds ReconnectMax %s", c.ReconnectMin, c.ReconnectMax)
	}
	if c.ConnectionName == "" {
		host, _ := os.Hostname()
		c.ConnectionName = "nuropb-" + host + "-" + strconv.Itoa(os.Getpid())
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// backoff is the wait before connection attempt number attempt (0-based):
// capped exponential growth, drawn from the upper half ("equal jitter") so
// that the wait never collapses to zero yet hosts spread out.
func (c Config) backoff(attempt int) time.Duration {
	d := c.ReconnectMax
	if attempt < 30 {
		if e := c.ReconnectMin << attempt; e > 0 && e < d {
			d = e
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}
