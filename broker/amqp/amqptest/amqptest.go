package amqptest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// BaseURLEnv names the environment variable that overrides BaseURL.
const BaseURLEnv = "NUROPB_TEST_AMQP_URL"

// BaseURL is the broker the tests use unless BaseURLEnv says otherwise. Its
// vhost part is replaced by Vhost.
const BaseURL = "amqp://guest:guest@127.0.0.1:5672/"

// Vhost creates a vhost named "nuropb-test-<random>", grants the URL's user
// every permission on it, registers its deletion with t.Cleanup and returns
// the AMQP URL of the vhost.
func Vhost(t testing.TB) (amqpURL, vhost string) {
	t.Helper()
	base := os.Getenv(BaseURLEnv)
	if base == "" {
		base = BaseURL
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("amqptest: %s=%q: %v", BaseURLEnv, base, err)
	}
	Require(t, u.Host)
	var b [6]byte
	_, _ = rand.Read(b[:])
	vhost = "nuropb-test-" + hex.EncodeToString(b[:])
	user := u.User.Username()
	if user == "" {
		user = "guest"
	}
	Ctl(t, "add_vhost", vhost)
	t.Cleanup(func() {
		// Best effort: a vhost left behind is harmless and visibly named.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "rabbitmqctl", "-q", "delete_vhost", vhost).CombinedOutput(); err != nil {
			t.Logf("amqptest: delete_vhost %s: %v: %s", vhost, err, out)
		}
	})
	Ctl(t, "set_permissions", "-p", vhost, user, ".*", ".*", ".*")
	u.Path = "/" + vhost
	return u.String(), vhost
}

// CloseConnections closes, from the server side, every client connection to
// vhost, as an operator or a failing node would.
func CloseConnections(t testing.TB, vhost string) {
	t.Helper()
	Ctl(t, "close_all_connections", "--vhost", vhost, "amqptest: simulated connection loss")
}

// Ctl runs rabbitmqctl with args and fails the test if it fails.
func Ctl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-q"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("amqptest: rabbitmqctl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Require skips the test (fails it when CI=true) unless RabbitMQ answers on
// hostport and rabbitmqctl is installed.
func Require(t testing.TB, hostport string) {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("amqptest: RabbitMQ is required in CI: "+format, args...)
		}
		t.Skipf("amqptest: skipping, RabbitMQ not available: "+format, args...)
	}
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		unavailable("rabbitmqctl not found: %v", err)
	}
	c, err := net.DialTimeout("tcp", hostport, 2*time.Second)
	if err != nil {
		unavailable("%v (start it with `rabbitmq-server -detached`)", err)
		return
	}
	_ = c.Close()
}
