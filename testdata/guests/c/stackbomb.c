/* stackbomb: nuropb_handle recurses without end until the engine's call
 * stack overflows (a trap the host must survive). */
#include "nuropb_guest.h"

NUROPB_STANDARD_EXPORTS(1)

EXPORT("nuropb_describe") int64_t nuropb_describe(void) { return nuropb_manifest("c-stackbomb"); }

/* Never equal to a depth reached: keeps the recursion defined behaviour
 * and stops the compiler from turning it into a loop. */
static volatile int32_t stop_at = -1;
static volatile int32_t sink;

__attribute__((noinline)) static int32_t dive(int32_t n) {
	if (n == stop_at)
		return 0;
	int32_t r = dive(n + 1);
	sink = r;
	return r + n;
}

EXPORT("nuropb_handle") int64_t nuropb_handle(uint8_t *in, int32_t len) {
	(void)in;
	(void)len;
	sink = dive(0);
	return nuropb_pack(ok_reply, sizeof ok_reply);
}
