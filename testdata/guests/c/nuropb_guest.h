/*
 * Shared pieces of the hostile C guests: each guest exports the full ABI v1
 * surface (nuropb_abi_version, nuropb_alloc, nuropb_dealloc, nuropb_describe,
 * nuropb_handle) and misbehaves in exactly one way.
 *
 * The CBOR is written by hand. A manifest is
 *
 *   a4                         map, 4 pairs
 *     63 61 62 69              "abi"
 *     01                       1
 *     67 73 65 72 76 69 63 65  "service"
 *     6n <n bytes>             the service name (text, n < 24)
 *     67 76 65 72 73 69 6f 6e  "version"
 *     61 31                    "1"
 *     67 6d 65 74 68 6f 64 73  "methods"
 *     a1                       map, 1 pair
 *       63 72 75 6e            "run"
 *       a0                     {} (no description, no params)
 *
 * and the well-behaved reply is {"kind": "response", "result": null}:
 *
 *   a2 64 6b 69 6e 64 68 72 65 73 70 6f 6e 73 65 66 72 65 73 75 6c 74 f6
 */
#ifndef NUROPB_GUEST_H
#define NUROPB_GUEST_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT(name) __attribute__((export_name(name)))
#define NUROPB_IMPORT(name) __attribute__((import_module("nuropb"), import_name(name)))

static inline int64_t nuropb_pack(const void *p, uint32_t n) {
	return (int64_t)(((uint64_t)(uintptr_t)p << 32) | n);
}

static const uint8_t manifest_head[] = {0xa4, 0x63, 'a', 'b', 'i', 0x01,
	0x67, 's', 'e', 'r', 'v', 'i', 'c', 'e'};
static const uint8_t manifest_tail[] = {0x67, 'v', 'e', 'r', 's', 'i', 'o', 'n', 0x61, '1',
	0x67, 'm', 'e', 't', 'h', 'o', 'd', 's', 0xa1, 0x63, 'r', 'u', 'n', 0xa0};
static const uint8_t ok_reply[] = {0xa2, 0x64, 'k', 'i', 'n', 'd',
	0x68, 'r', 'e', 's', 'p', 'o', 'n', 's', 'e', 0x66, 'r', 'e', 's', 'u', 'l', 't', 0xf6};

static uint8_t manifest_buf[sizeof manifest_head + 1 + 23 + sizeof manifest_tail];

/* The manifest of service `name` (at most 23 bytes), as ptr<<32 | len. */
static inline int64_t nuropb_manifest(const char *name) {
	size_t n = strlen(name), off = 0;
	if (n > 23)
		n = 23;
	memcpy(manifest_buf, manifest_head, sizeof manifest_head);
	off += sizeof manifest_head;
	manifest_buf[off++] = (uint8_t)(0x60 | n);
	memcpy(manifest_buf + off, name, n);
	off += n;
	memcpy(manifest_buf + off, manifest_tail, sizeof manifest_tail);
	off += sizeof manifest_tail;
	return nuropb_pack(manifest_buf, (uint32_t)off);
}

/* Whether the input envelope contains `word` (e.g. the method name): how a
 * guest with several misbehaviours picks one without decoding CBOR. */
static inline int nuropb_input_has(const uint8_t *in, int32_t len, const char *word) {
	size_t n = strlen(word);
	for (int32_t i = 0; len > 0 && (size_t)i + n <= (size_t)len; i++)
		if (memcmp(in + i, word, n) == 0)
			return 1;
	return 0;
}

#define NUROPB_STANDARD_EXPORTS(version)                                              \
	EXPORT("nuropb_abi_version") int32_t nuropb_abi_version(void) { return version; } \
	EXPORT("nuropb_alloc") void *nuropb_alloc(int32_t size) {                         \
		return malloc(size > 0 ? (size_t)size : 1);                                   \
	}                                                                                 \
	EXPORT("nuropb_dealloc") void nuropb_dealloc(void *p, int32_t size) {             \
		(void)size;                                                                   \
		free(p);                                                                      \
	}

#endif
