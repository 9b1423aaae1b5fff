package amqp

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	const url = "amqp://guest:guest@127.0.0.1:5672/"
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"defaults", Config{URL: url}, ""},
		{"no url", Config{}, "URL is required"},
		{"bad url", Config{URL: "http://x"}, "Config.URL"},
		{"negative", Config{URL: url, ConfirmTimeout: -time.Second}, "ConfirmTimeout is negative"},
		{"min above max", Config{URL: url, ReconnectMin: time.Minute, ReconnectMax: time.Second}, "exceeds ReconnectMax"},
		{"sub-second heartbeat", Config{URL: url, Heartbeat: time.Millisecond}, "Heartbeat"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				if got.HandlerTimeout != DefaultHandlerTimeout || got.Logger == nil || got.ConnectionName == "" {
					t.Fatalf("defaults not filled: %+v", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("validate error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestBackoffIsCappedAndJittered(t *testing.T) {
	cfg, err := Config{URL: "amqp://localhost/", ReconnectMin: 100 * time.Millisecond, ReconnectMax: 2 * time.Second}.validate()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[time.Duration]bool{}
	for attempt := range 100 {
		d := cfg.backoff(attempt)
		ceil := cfg.ReconnectMax
		if e := cfg.ReconnectMin << min(attempt, 29); attempt < 30 && e < ceil {
			ceil = e
		}
		if d < ceil/2 || d > ceil {
			t.Fatalf("attempt %d: backoff %s outside [%s, %s]", attempt, d, ceil/2, ceil)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("backoff shows no jitter: %d distinct values", len(seen))
	}
}

func TestRedactHidesPassword(t *testing.T) {
	if got := redact("amqp://user:secret@host:5672/vh"); strings.Contains(got, "secret") {
		t.Fatalf("redact leaked the password: %s", got)
	}
}
