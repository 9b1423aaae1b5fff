package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nuropb/nuropb/host"
	"github.com/nuropb/nuropb/internal/wasmsection"
)

// coldStart measures, in a fresh host process on the embedded broker, the
// time from host.New to Start returning with every module served, for
// coldModules tenant folders each holding the Rust conformance guest:
// with an empty compilation cache folder (cold) and with the folder a
// previous start filled. Identical files share one compilation in a host,
// so cold and cached differ by one compile; compileStart measures distinct
// modules.
func coldStart(ctx context.Context, b *bench) error {
	return startRows(ctx, b, "coldstart", false, b.opts.runs)
}

// compileStart is coldStart with every copy made distinct (a nonce custom
// section), which is what 100 different services cost: one compile each.
// One run: it is slow on a loaded machine, and compile time is steady.
func compileStart(ctx context.Context, b *bench) error {
	return startRows(ctx, b, "compile", true, 1)
}

func startRows(ctx context.Context, b *bench, section string, distinct bool, runs int) error {
	wasm, err := b.guest("rust")
	if err != nil {
		return err
	}
	n := b.opts.coldModules
	dir, err := tenantFolders(n, wasm, distinct)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	kind := "tenants, identical copies of the module"
	if distinct {
		kind = "tenants, distinct modules"
	}
	cold := b.newRow(section, fmt.Sprintf("%d %s, empty compilation cache", n, kind), "ms")
	cached := b.newRow(section, fmt.Sprintf("%d %s, compilation cache filled", n, kind), "ms")
	warmCache := ""
	for run := range runs {
		cacheDir, err := os.MkdirTemp("", "nuropb-bench-cache-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(cacheDir)
		if warmCache == "" {
			warmCache = cacheDir // filled by this cold start, reused by every cached one
		}
		coldMS, err := startOnce(ctx, b, dir, cacheDir, n)
		if err != nil {
			return err
		}
		cachedMS, err := startOnce(ctx, b, dir, warmCache, n)
		if err != nil {
			return err
		}
		cold.add(coldMS)
		cached.add(cachedMS)
		b.progress("%d %s run %d: cold %s, cached %s", n, kind, run+1, format(coldMS, "ms"), format(cachedMS, "ms"))
	}
	return nil
}

// startOnce starts a host process on dir and returns its start time in ms,
// after checking that the last tenant answers.
func startOnce(ctx context.Context, b *bench, dir, cacheDir string, n int) (float64, error) {
	ch, err := startChild(ctx, b, childConfig{Broker: "memory", ModulesDir: dir, CacheDir: cacheDir,
		Probe: tenantName(n-1) + "/conformance"}, nil)
	if err != nil {
		return 0, err
	}
	defer ch.stop()
	if ch.ready.Services != n {
		return 0, fmt.Errorf("%d services served, want %d", ch.ready.Services, n)
	}
	return ch.ready.StartMS, nil
}

func tenantName(i int) string { return fmt.Sprintf("t%04d", i) }

// tenantFolders writes n tenant folders each holding wasm as
// conformance.wasm (made distinct per tenant when asked) and returns the
// modules folder.
func tenantFolders(n int, wasm []byte, distinct bool) (string, error) {
	dir, err := os.MkdirTemp("", "nuropb-bench-tenants-")
	if err != nil {
		return "", err
	}
	for i := range n {
		data := wasm
		if distinct {
			var nonce [16]byte
			_, _ = rand.Read(nonce[:])
			if data, err = wasmsection.Append(wasm, "nuropb-bench.nonce", nonce[:]); err != nil {
				return "", err
			}
		}
		sub := filepath.Join(dir, tenantName(i))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(sub, "conformance.wasm"), data, 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// density measures resident memory in fresh host processes: idleModules
// idle Rust modules (one tenant each, one instance each), and per language
// the memory one more instance costs, from two processes that differ only
// in how many instances the one module pre-starts.
func density(ctx context.Context, b *bench) error {
	wasm, err := b.guest("rust")
	if err != nil {
		return err
	}
	n := b.opts.idleModules
	dir, err := tenantFolders(n, wasm, false)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	total := b.newRow("density", fmt.Sprintf("%s idle Rust modules (1 instance each): process RSS", thousands(int64(n))), "MiB")
	if n == 1000 {
		total.withTarget("< 512 MiB", func(m float64) bool { return m < 512 })
	}
	empty := b.newRow("density", "same process before the host was built", "MiB")
	perModule := b.newRow("density", "RSS per idle module (delta / modules)", "KiB")
	one := host.Limits{MinInstances: 1, MaxInstances: 1}
	for run := range b.opts.runs {
		ch, err := startChild(ctx, b, childConfig{Broker: "memory", ModulesDir: dir, Limits: one}, nil)
		if err != nil {
			return err
		}
		rep := ch.ready
		ch.stop()
		if rep.Services != n {
			return fmt.Errorf("%d services served, want %d", rep.Services, n)
		}
		total.add(mib(rep.RSS))
		empty.add(mib(rep.RSSBefore))
		perModule.add(float64(rep.RSS-rep.RSSBefore) / 1024 / float64(n))
		b.progress("%d modules run %d: RSS %s (started in %s)", n, run+1, format(mib(rep.RSS), "MiB"), format(rep.StartMS, "ms"))
	}

	for _, l := range b.opts.langs {
		wasm, err := b.guest(l)
		if err != nil {
			return err
		}
		extra := b.opts.perInstance[l]
		r := b.newRow("density", fmt.Sprintf("%s: RSS per instance (%d extra instances)", langTitle[l], extra), "KiB")
		files := map[string][]byte{"conformance.wasm": wasm}
		for run := range b.opts.runs {
			var rss [2]int64
			for i, k := range []int{1, 1 + extra} {
				ch, err := startChild(ctx, b, childConfig{Broker: "memory", Limits: host.Limits{MinInstances: k, MaxInstances: k}}, files)
				if err != nil {
					return err
				}
				rep := ch.ready
				ch.stop()
				if rep.Instances != k {
					return fmt.Errorf("%s: %d instances, want %d", l, rep.Instances, k)
				}
				rss[i] = rep.RSS
			}
			per := float64(rss[1]-rss[0]) / 1024 / float64(extra)
			r.add(per)
			b.progress("%s run %d: %s per instance", langTitle[l], run+1, format(per, "KiB"))
		}
	}
	return nil
}

func mib(bytes int64) float64 { return float64(bytes) / (1 << 20) }
