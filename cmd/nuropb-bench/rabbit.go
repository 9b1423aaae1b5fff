package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"strings"
	"time"
)

// amqpReachable reports why the RabbitMQ rows cannot run, or nil: the
// broker must answer on its port and rabbitmqctl (for a fresh vhost) must
// be installed, as for broker/amqp's tests.
func amqpReachable(base string) error {
	u, err := url.Parse(base)
	if err != nil {
		return fmt.Errorf("AMQP URL %q: %w", base, err)
	}
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		return fmt.Errorf("rabbitmqctl not found: %w", err)
	}
	c, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// newVhost creates a vhost "nuropb-bench-<random>" on the broker of base,
// grants base's user everything on it, and returns its URL and a function
// that deletes it. A fresh vhost means no queue or binding left by another
// run (or another engineer's tests) is measured.
func newVhost(ctx context.Context, base string) (string, func(), error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", nil, err
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	vhost := "nuropb-bench-" + hex.EncodeToString(rnd[:])
	user := u.User.Username()
	if user == "" {
		user = "guest"
	}
	if err := rabbitmqctl(ctx, "add_vhost", vhost); err != nil {
		return "", nil, err
	}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = rabbitmqctl(ctx, "delete_vhost", vhost)
	}
	if err := rabbitmqctl(ctx, "set_permissions", "-p", vhost, user, ".*", ".*", ".*"); err != nil {
		drop()
		return "", nil, err
	}
	u.Path = "/" + vhost
	return u.String(), drop, nil
}

func rabbitmqctl(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-q"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("rabbitmqctl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}
