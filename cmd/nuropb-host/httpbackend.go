package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/gateway"
)

// httpBackend reaches the mesh through a running host's gateway.
type httpBackend struct {
	base  string
	token string
	hc    *http.Client
}

func (h *httpBackend) close() {}

// path turns "tenant/service" into "tenant/service" URL segments and
// "service" into "service".
func (h *httpBackend) do(ctx context.Context, method, path string, body []byte, env *abi.Envelope) (json.RawMessage, error) {
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if h.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
	if env != nil {
		if env.TraceID != "" {
			req.Header.Set("X-Trace-Id", env.TraceID)
		}
		if dl, ok := env.DeadlineTime(); ok {
			req.Header.Set("X-Nuropb-Timeout", time.Until(dl).Round(time.Millisecond).String())
		}
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		return nil, abi.Errorf(abi.CodeUnavailable, "cannot reach the host at %s (is `nuropb-host run` running?): %v", h.base, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, abi.Errorf(abi.CodeUnavailable, "reading the reply: %v", err)
	}
	if resp.StatusCode >= 300 {
		var eb gateway.ErrorBody
		if json.Unmarshal(out, &eb) == nil && eb.Error != nil {
			return nil, eb.Error
		}
		return nil, abi.Errorf(abi.CodeInternal, "%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(out)))
	}
	return out, nil
}

func (h *httpBackend) params(env *abi.Envelope, raw abi.RawValue) ([]byte, error) {
	if len(raw) == 0 {
		return []byte("{}"), nil
	}
	return abi.Default.CBORToJSON(raw)
}

func (h *httpBackend) call(ctx context.Context, env *abi.Envelope) (json.RawMessage, error) {
	body, err := h.params(env, env.Params)
	if err != nil {
		return nil, err
	}
	return h.do(ctx, http.MethodPost, "/v1/call/"+env.Service+"/"+env.Method, body, env)
}

func (h *httpBackend) send(ctx context.Context, env *abi.Envelope) error {
	body, err := h.params(env, env.Params)
	if err != nil {
		return err
	}
	_, err = h.do(ctx, http.MethodPost, "/v1/send/"+env.Service+"/"+env.Method, body, env)
	return err
}

func (h *httpBackend) publish(ctx context.Context, tenant string, env *abi.Envelope) error {
	body, err := h.params(env, env.Event)
	if err != nil {
		return err
	}
	path := "/v1/publish/" + env.Topic
	if tenant != "" {
		path = fmt.Sprintf("/v1/publish/%s/%s", tenant, env.Topic)
	}
	_, err = h.do(ctx, http.MethodPost, path, body, env)
	return err
}

func (h *httpBackend) describe(ctx context.Context, service string) (json.RawMessage, error) {
	return h.do(ctx, http.MethodGet, "/v1/services/"+service, nil, nil)
}

func (h *httpBackend) services(ctx context.Context) (json.RawMessage, error) {
	return h.do(ctx, http.MethodGet, "/v1/services", nil, nil)
}
