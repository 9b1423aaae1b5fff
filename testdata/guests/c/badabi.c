/* badabi: a well-behaved guest except that nuropb_abi_version returns 2. The
 * host must refuse it at load. */
#include "nuropb_guest.h"

NUROPB_STANDARD_EXPORTS(2)

EXPORT("nuropb_describe") int64_t nuropb_describe(void) { return nuropb_manifest("c-badabi"); }

EXPORT("nuropb_handle") int64_t nuropb_handle(uint8_t *in, int32_t len) {
	(void)in;
	(void)len;
	return nuropb_pack(ok_reply, sizeof ok_reply);
}
