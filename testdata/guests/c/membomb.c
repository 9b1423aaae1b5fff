/* membomb: nuropb_handle grows linear memory 1 MiB at a time, touching every
 * page, until memory.grow fails; it keeps retrying a while, then traps. The
 * host's page limit must stop it without hurting other instances. */
#include "nuropb_guest.h"

NUROPB_STANDARD_EXPORTS(1)

EXPORT("nuropb_describe") int64_t nuropb_describe(void) { return nuropb_manifest("c-membomb"); }

#define PAGE 65536
#define PAGES_PER_STEP 16

EXPORT("nuropb_handle") int64_t nuropb_handle(uint8_t *in, int32_t len) {
	(void)in;
	(void)len;
	int failures = 0;
	for (;;) {
		long old = __builtin_wasm_memory_grow(0, PAGES_PER_STEP);
		if (old < 0) {
			if (++failures > 1000)
				__builtin_trap();
			continue;
		}
		volatile uint8_t *p = (uint8_t *)(uintptr_t)(old * PAGE);
		for (long i = 0; i < PAGES_PER_STEP * PAGE; i += 4096)
			p[i] = 1;
	}
}
