// Package buildinfo reads facts about the running binary's build: the
// versions of the modules it links, for caches keyed by version and for
// `nuropb-host version`.
package buildinfo

import "runtime/debug"

// WazeroVersion is the version of the linked wazero module, or "dev" when
// the binary carries no module information (as in some test builds).
func WazeroVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/tetratelabs/wazero" {
				if d.Replace != nil {
					d = d.Replace
				}
				if d.Version != "" && d.Version != "(devel)" {
					return d.Version
				}
			}
		}
	}
	return "dev"
}
