/* badmanifest: nuropb_describe returns a well-formed manifest whose service
 * name, "Bad Name!", breaks the naming rule ([a-z][a-z0-9_-]*). The host must
 * refuse the module, naming the field. */
#include "nuropb_guest.h"

NUROPB_STANDARD_EXPORTS(1)

EXPORT("nuropb_describe") int64_t nuropb_describe(void) { return nuropb_manifest("Bad Name!"); }

EXPORT("nuropb_handle") int64_t nuropb_handle(uint8_t *in, int32_t len) {
	(void)in;
	(void)len;
	return nuropb_pack(ok_reply, sizeof ok_reply);
}
