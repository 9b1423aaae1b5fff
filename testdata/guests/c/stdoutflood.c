/* stdoutflood: every nuropb_handle writes 4 MiB to stdout and 4 MiB to stderr
 * through WASI fd_write, in 64-byte lines, then replies normally. The host
 * must size- and rate-limit what it turns into log lines. */
#include "nuropb_guest.h"
#include <unistd.h>

NUROPB_STANDARD_EXPORTS(1)

EXPORT("nuropb_describe") int64_t nuropb_describe(void) { return nuropb_manifest("c-stdoutflood"); }

#define FLOOD_BYTES (4 << 20)
#define LINE 64

static char chunk[65536];

EXPORT("nuropb_handle") int64_t nuropb_handle(uint8_t *in, int32_t len) {
	(void)in;
	(void)len;
	for (int i = 0; i < (int)sizeof chunk; i += LINE) {
		memset(chunk + i, 'x', LINE - 1);
		memcpy(chunk + i, "flood ", 6);
		chunk[i + LINE - 1] = '\n';
	}
	for (int fd = 1; fd <= 2; fd++)
		for (int done = 0; done < FLOOD_BYTES;) {
			ssize_t n = write(fd, chunk, sizeof chunk);
			if (n <= 0)
				break;
			done += (int)n;
		}
	return nuropb_pack(ok_reply, sizeof ok_reply);
}
