/* forbiddenimport: imports wasi_snapshot_preview1.sock_accept, which the host
 * does not grant (no sockets). The host must refuse the module at load. */
#include "nuropb_guest.h"

__attribute__((import_module("wasi_snapshot_preview1"), import_name("sock_accept")))
int32_t forbidden_sock_accept(int32_t fd, int32_t flags, int32_t *new_fd);

NUROPB_STANDARD_EXPORTS(1)

EXPORT("nuropb_describe") int64_t nuropb_describe(void) { return nuropb_manifest("c-forbiddenimport"); }

EXPORT("nuropb_handle") int64_t nuropb_handle(uint8_t *in, int32_t len) {
	(void)in;
	int32_t fd = 0;
	if (len > 0 && forbidden_sock_accept(3, 0, &fd) == 0)
		return nuropb_pack(ok_reply, sizeof ok_reply);
	return nuropb_pack(ok_reply, sizeof ok_reply);
}
