/* trapinit: a constructor traps, so _initialize traps before any export can
 * be called. The host must report the failed start, not hang or crash. */
#include "nuropb_guest.h"

__attribute__((constructor)) static void boom(void) { __builtin_trap(); }

NUROPB_STANDARD_EXPORTS(1)

EXPORT("nuropb_describe") int64_t nuropb_describe(void) { return nuropb_manifest("c-trapinit"); }

EXPORT("nuropb_handle") int64_t nuropb_handle(uint8_t *in, int32_t len) {
	(void)in;
	(void)len;
	return nuropb_pack(ok_reply, sizeof ok_reply);
}
