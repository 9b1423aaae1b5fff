/* noexports: a valid WASI reactor with every ABI v1 export except
 * nuropb_handle. The host must refuse it at load, naming the missing export. */
#include "nuropb_guest.h"

NUROPB_STANDARD_EXPORTS(1)

EXPORT("nuropb_describe") int64_t nuropb_describe(void) { return nuropb_manifest("c-noexports"); }
