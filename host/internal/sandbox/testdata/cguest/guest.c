// A test guest for the sandbox, in C so that hostile behaviour is easy to
// write. Build variants (-D...) break it at load on purpose. The method is
// taken from the envelope by a byte scan, not a CBOR decoder: good enough
// for envelopes the tests write.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXPORT(name) __attribute__((export_name(name)))
#define IMPORT(mod, name) __attribute__((import_module(mod), import_name(name)))

IMPORT("nuropb", "log") void host_log(int32_t level, const void *ptr, int32_t len);
IMPORT("nuropb", "call") int64_t host_call(const void *ptr, int32_t len);
IMPORT("nuropb", "send") int32_t host_send(const void *ptr, int32_t len);

#ifdef FORBIDDEN
// WasmEdge's socket extension: it creates sockets, so the sandbox refuses it.
IMPORT("wasi_snapshot_preview1", "sock_open") int32_t sock_open(int32_t af, int32_t type, int32_t *out);
#endif

#ifdef SOCKETS
// Preview1's socket calls act only on sockets the host preopened; the
// sandbox preopens none, so they must find nothing.
IMPORT("wasi_snapshot_preview1", "sock_accept") int32_t sock_accept(int32_t fd, int32_t flags, int32_t *out);
#endif

#ifdef EXEC_IMPORT
IMPORT("nuropb", "exec") int32_t host_exec(int32_t x);
#endif

#ifdef TRAP_INIT
__attribute__((constructor)) static void boom(void) { __builtin_trap(); }
#endif

static uint8_t *out;
static size_t out_len, out_cap;

static void put(const void *p, size_t n) {
	if (out_len + n > out_cap) {
		out_cap = (out_len + n) * 2;
		out = realloc(out, out_cap);
		if (!out) __builtin_trap();
	}
	memcpy(out + out_len, p, n);
	out_len += n;
}
static void put_u8(uint8_t b) { put(&b, 1); }
static void put_head(uint8_t major, uint32_t n) {
	major <<= 5;
	if (n < 24) put_u8(major | n);
	else if (n < 256) { put_u8(major | 24); put_u8(n); }
	else if (n < 65536) { put_u8(major | 25); put_u8(n >> 8); put_u8(n); }
	else { put_u8(major | 26); put_u8(n >> 24); put_u8(n >> 16); put_u8(n >> 8); put_u8(n); }
}
static void put_text(const char *s) { put_head(3, strlen(s)); put(s, strlen(s)); }

static int64_t packed(void) { return ((int64_t)(uintptr_t)out << 32) | (int64_t)out_len; }

static int64_t reply_bytes(const void *p, size_t n) {
	out_len = 0;
	put_head(5, 2);
	put_text("kind"); put_text("response");
	put_text("result"); put_head(2, n); put(p, n);
	return packed();
}

EXPORT("nuropb_abi_version") int32_t abi_version(void) {
#ifdef BAD_ABI
	return 2;
#else
	return 1;
#endif
}

EXPORT("nuropb_alloc") void *nalloc(int32_t size) { return malloc(size ? size : 1); }
EXPORT("nuropb_dealloc") void ndealloc(void *p, int32_t size) { (void)size; free(p); }

EXPORT("nuropb_describe") int64_t describe(void) {
	out_len = 0;
	put_head(5, 4);
	put_text("abi"); put_u8(1);
#ifdef BAD_MANIFEST
	put_text("service"); put_text("Not A Valid Name");
#else
	put_text("service"); put_text("cguest");
#endif
	put_text("version"); put_text("1.0.0");
	put_text("methods"); put_head(5, 1); put_text("echo"); put_head(5, 0);
	return packed();
}

// method copies the envelope's method name into buf.
static void method(const uint8_t *env, size_t n, char *buf, size_t cap) {
	buf[0] = 0;
	for (size_t i = 0; i + 8 < n; i++) {
		if (memcmp(env + i, "\x66method", 7) != 0) continue;
		uint8_t h = env[i + 7];
		size_t len, off = i + 8;
		if ((h & 0xe0) != 0x60) return;
		len = h & 0x1f;
		if (len == 24) len = env[off++];
		if (len >= cap || off + len > n) return;
		memcpy(buf, env + off, len);
		buf[len] = 0;
		return;
	}
}

static volatile int sink;
static char *volatile hoard;
__attribute__((noinline)) static int deep(int n) {
	volatile char pad[64];
	pad[n & 63] = (char)n;
	return deep(n + 1) + pad[3];
}

#ifndef NO_HANDLE
EXPORT("nuropb_handle") int64_t handle(const uint8_t *env, int32_t n) {
	char m[64];
	method(env, n, m, sizeof m);
	if (!strcmp(m, "echo")) return reply_bytes(env, n);
	if (!strcmp(m, "spin")) { for (;;) sink++; }
	if (!strcmp(m, "trap")) __builtin_trap();
	if (!strcmp(m, "exit")) exit(3);
	if (!strcmp(m, "membomb")) {
		for (;;) {
			char *p = malloc(1 << 20);
			if (!p) __builtin_trap();
			memset(p, 1, 1 << 20);
			hoard = p;
		}
	}
	if (!strcmp(m, "stack")) return deep(0);
	if (!strcmp(m, "flood")) {
		for (int i = 0; i < 50000; i++) printf("line %d of a flood\n", i);
		fflush(stdout);
		return reply_bytes("ok", 2);
	}
	if (!strcmp(m, "print")) {
		printf("hello from stdout\npartial");
		fflush(stdout);
		fprintf(stderr, "hello from stderr\n");
		return reply_bytes("ok", 2);
	}
	if (!strcmp(m, "longline")) {
		for (int i = 0; i < 10000; i++) putchar('x');
		putchar('\n');
		fflush(stdout);
		return reply_bytes("ok", 2);
	}
	if (!strcmp(m, "log")) { host_log(4, "guest says hi", 13); return reply_bytes("ok", 2); }
	if (!strcmp(m, "badlog")) { host_log(0, (void *)0x7ffffff0, 1000); return reply_bytes("ok", 2); }
	if (!strcmp(m, "badreply")) { out_len = 0; put("\xa2\x64kind", 6); return packed(); }
	if (!strcmp(m, "notmap")) { out_len = 0; put("\x01", 1); return packed(); }
	if (!strcmp(m, "hugereply")) return ((int64_t)(uintptr_t)out << 32) | 0x7fffffff;
	if (!strcmp(m, "oobreply")) return ((int64_t)0x7fff0000 << 32) | 16;
	if (!strcmp(m, "sleep")) { usleep(200 * 1000); return reply_bytes("slept", 5); }
	if (!strcmp(m, "call")) {
		int64_t r = host_call(env, n);
		uint8_t *p = (uint8_t *)(uintptr_t)(uint32_t)(r >> 32);
		size_t len = (uint32_t)r;
		int64_t res = reply_bytes(p, len);
		free(p);
		return res;
	}
	if (!strcmp(m, "send")) {
		int32_t st = host_send(env, n);
		char b[8];
		b[0] = '0' + st;
		return reply_bytes(b, 1);
	}
	if (!strcmp(m, "readfile")) {
		FILE *f = fopen("/data/hello.txt", "r");
		if (!f) return reply_bytes("nofile", 6);
		char b[256];
		size_t k = fread(b, 1, sizeof b, f);
		fclose(f);
		return reply_bytes(b, k);
	}
	if (!strcmp(m, "writefile")) {
		FILE *f = fopen("/data/new.txt", "w");
		if (!f) return reply_bytes("refused", 7);
		fclose(f);
		return reply_bytes("written", 7);
	}
#ifdef EXEC_IMPORT
	if (!strcmp(m, "exec")) return host_exec(1);
#endif
#ifdef FORBIDDEN
	if (!strcmp(m, "open")) { int32_t fd; return sock_open(1, 1, &fd); }
#endif
#ifdef SOCKETS
	if (!strcmp(m, "accept")) {
		for (int32_t fd = 0; fd < 16; fd++) {
			int32_t got;
			if (sock_accept(fd, 0, &got) == 0) return reply_bytes("accepted", 8);
		}
		return reply_bytes("nosocket", 8);
	}
#endif
	return reply_bytes("unknown", 7);
}
#endif
