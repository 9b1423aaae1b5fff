package host

import (
	"slices"
	"sort"
	"time"
)

// ServiceInfo describes one service this host serves, for the CLI, the
// gateway and metrics.
type ServiceInfo struct {
	Tenant        string    `json:"tenant"`
	Service       string    `json:"service"`
	Version       string    `json:"version"`
	Description   string    `json:"description"`
	Methods       []string  `json:"methods"` // callable from outside the tenant (hidden ones left out), sorted
	Subscriptions []string  `json:"subscriptions"`
	File          string    `json:"file"` // relative to ModulesDir
	Hash          string    `json:"hash"` // hex SHA-256 of the serving file
	LoadedAt      time.Time `json:"loaded_at"`

	Instances int    `json:"instances"` // live instances of the serving version
	Busy      int    `json:"busy"`      // instances in a call
	Calls     uint64 `json:"calls"`     // calls completed by the serving version
	Traps     uint64 `json:"traps"`     // instances of the serving version discarded after a trap or timeout
	// MemoryPages is the linear memory of its live instances, in 64 KiB pages.
	MemoryPages uint64 `json:"memory_pages"`
	// MemoryLimitPages is the cap on one instance's memory (Limits.MemoryPages).
	MemoryLimitPages uint32 `json:"memory_limit_pages"`

	Requests    uint64 `json:"requests"`     // requests answered since the service started (all versions)
	Failures    uint64 `json:"failures"`     // of which answered with an error
	Expired     uint64 `json:"expired"`      // requests dropped because their deadline had passed on arrival
	DeadLetters uint64 `json:"dead_letters"` // commands, events and malformed messages dead-lettered
}

// Services lists the services being served, sorted by tenant then service.
func (h *Host) Services() []ServiceInfo {
	h.mu.Lock()
	svcs := make([]*service, 0, len(h.services))
	for _, s := range h.services {
		svcs = append(svcs, s)
	}
	h.mu.Unlock()
	out := make([]ServiceInfo, 0, len(svcs))
	for _, s := range svcs {
		v := s.current.Load()
		if v == nil {
			continue
		}
		st := v.mod.Stats()
		out = append(out, ServiceInfo{
			Tenant: v.tenant, Service: v.man.Service, Version: v.man.Version, Description: v.man.Description,
			Methods: publicMethods(v.man), Subscriptions: slices.Clone(v.man.Subscriptions),
			File: v.file, Hash: v.hash, LoadedAt: v.loadedAt,
			Instances: st.Instances, Busy: st.Busy, Calls: st.Calls, Traps: st.Traps,
			MemoryPages: st.MemoryPages, MemoryLimitPages: v.limits.MemoryPages,
			Requests: s.requests.Load(), Failures: s.failures.Load(), Expired: s.expired.Load(), DeadLetters: s.deadLetters.Load(),
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Tenant != out[j].Tenant {
			return out[i].Tenant < out[j].Tenant
		}
		return out[i].Service < out[j].Service
	})
	return out
}

// Refusals returns the most recent refused module files, oldest first.
func (h *Host) Refusals() []Refusal {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.refusals)
}
