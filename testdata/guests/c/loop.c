/* loop: nuropb_handle never returns. The host must interrupt it at the
 * deadline and discard the instance. */
#include "nuropb_guest.h"

NUROPB_STANDARD_EXPORTS(1)

EXPORT("nuropb_describe") int64_t nuropb_describe(void) { return nuropb_manifest("c-loop"); }

static volatile uint64_t spins;

EXPORT("nuropb_handle") int64_t nuropb_handle(uint8_t *in, int32_t len) {
	(void)in;
	(void)len;
	for (;;)
		spins++;
}
