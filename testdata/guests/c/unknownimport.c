/* unknownimport: imports nuropb.exec, which ABI v1 does not define. The host
 * must refuse the module at load (only log, call and send exist). */
#include "nuropb_guest.h"

NUROPB_IMPORT("exec") int32_t nuropb_exec(const uint8_t *cmd, int32_t len);

NUROPB_STANDARD_EXPORTS(1)

EXPORT("nuropb_describe") int64_t nuropb_describe(void) { return nuropb_manifest("c-unknownimport"); }

EXPORT("nuropb_handle") int64_t nuropb_handle(uint8_t *in, int32_t len) {
	nuropb_exec(in, len);
	return nuropb_pack(ok_reply, sizeof ok_reply);
}
