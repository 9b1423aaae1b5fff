/* badreply: nuropb_handle returns malformed CBOR. The variant is chosen by a
 * word in the request (its method name, say); the default is "truncated".
 *
 *   truncated   a2 64 6b 69 6e 64 68 72 65 73 70   map cut off inside "response"
 *   notmap      01                                 an integer, not a map
 *   indefinite  bf 64 6b 69 6e 64 68 ... ff        indefinite-length map
 *   dupkey      a2 64 6b 69 6e 64 68 .. 64 6b 69 6e 64 68 ..  "kind" twice
 *   badutf8     a1 64 6b 69 6e 64 62 c3 28         text with invalid UTF-8
 *   trailing    <the good reply> 00                 a second item after the map
 *   empty       (zero bytes)
 */
#include "nuropb_guest.h"

NUROPB_STANDARD_EXPORTS(1)

EXPORT("nuropb_describe") int64_t nuropb_describe(void) { return nuropb_manifest("c-badreply"); }

#define RESPONSE 0x68, 'r', 'e', 's', 'p', 'o', 'n', 's', 'e'
#define KIND 0x64, 'k', 'i', 'n', 'd'

static const uint8_t truncated[] = {0xa2, KIND, 0x68, 'r', 'e', 's', 'p'};
static const uint8_t notmap[] = {0x01};
static const uint8_t indefinite[] = {0xbf, KIND, RESPONSE, 0xff};
static const uint8_t dupkey[] = {0xa2, KIND, RESPONSE, KIND, RESPONSE};
static const uint8_t badutf8[] = {0xa1, KIND, 0x62, 0xc3, 0x28};
static uint8_t trailing[sizeof ok_reply + 1];

EXPORT("nuropb_handle") int64_t nuropb_handle(uint8_t *in, int32_t len) {
	if (nuropb_input_has(in, len, "notmap"))
		return nuropb_pack(notmap, sizeof notmap);
	if (nuropb_input_has(in, len, "indefinite"))
		return nuropb_pack(indefinite, sizeof indefinite);
	if (nuropb_input_has(in, len, "dupkey"))
		return nuropb_pack(dupkey, sizeof dupkey);
	if (nuropb_input_has(in, len, "badutf8"))
		return nuropb_pack(badutf8, sizeof badutf8);
	if (nuropb_input_has(in, len, "trailing")) {
		memcpy(trailing, ok_reply, sizeof ok_reply);
		trailing[sizeof ok_reply] = 0x00;
		return nuropb_pack(trailing, sizeof trailing);
	}
	if (nuropb_input_has(in, len, "empty"))
		return nuropb_pack(ok_reply, 0);
	return nuropb_pack(truncated, sizeof truncated);
}
