/* hugereply: nuropb_handle returns a reply the host must refuse by size.
 *
 *   toobig (default)  a real, well-formed 2 MiB reply: a map whose "result" is
 *                     a byte string (5a 00 20 00 00 ...), over the 1 MiB limit
 *   pastmemory        ptr = 64 bytes before the end of memory, len = 1 MiB:
 *                     the reply would lie past the end of linear memory
 *   wrap              ptr = 0xffffff00, len = 0x200: ptr + len overflows 32 bits
 */
#include "nuropb_guest.h"

NUROPB_STANDARD_EXPORTS(1)

EXPORT("nuropb_describe") int64_t nuropb_describe(void) { return nuropb_manifest("c-hugereply"); }

#define BIG (2u << 20)

static const uint8_t big_head[] = {0xa2, 0x64, 'k', 'i', 'n', 'd',
	0x68, 'r', 'e', 's', 'p', 'o', 'n', 's', 'e', 0x66, 'r', 'e', 's', 'u', 'l', 't',
	0x5a, (BIG >> 24) & 0xff, (BIG >> 16) & 0xff, (BIG >> 8) & 0xff, BIG & 0xff};

EXPORT("nuropb_handle") int64_t nuropb_handle(uint8_t *in, int32_t len) {
	if (nuropb_input_has(in, len, "pastmemory")) {
		uint32_t end = (uint32_t)__builtin_wasm_memory_size(0) * 65536u;
		return (int64_t)(((uint64_t)(end - 64) << 32) | (1u << 20));
	}
	if (nuropb_input_has(in, len, "wrap"))
		return (int64_t)(((uint64_t)0xffffff00u << 32) | 0x200u);
	static uint8_t *reply;
	if (!reply) {
		reply = malloc(sizeof big_head + BIG);
		if (!reply)
			__builtin_trap();
		memcpy(reply, big_head, sizeof big_head);
		memset(reply + sizeof big_head, 'x', BIG);
	}
	return nuropb_pack(reply, sizeof big_head + BIG);
}
