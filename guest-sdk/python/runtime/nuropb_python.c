// nuropb_python.c embeds CPython 3.11 in a WASI reactor that speaks nuropb's
// ABI v1. It is the only C in the Python runtime: everything a service sees
// (CBOR, dispatch, the manifest, the context) is the Python SDK in
// nuropb/_runtime.py, shipped in python311.zip.
//
// Lifecycle: _initialize (crt1-reactor) runs the constructor below, which
// starts the interpreter once per instance and calls nuropb._runtime.boot()
// to import the service. If anything fails there, the instance stays alive
// and reports the failure instead of trapping:
//   - the traceback is logged at error level through the log import;
//   - nuropb_describe returns the CBOR map {"error": {"code": "internal",
//     "message": <traceback>}} in place of a manifest;
//   - nuropb_handle returns a response envelope with that same error.
//
// Buffers: nuropb_alloc/nuropb_dealloc are malloc/free. The host owns the
// buffer it passes to nuropb_handle (it deallocates it afterwards); the guest
// owns, and frees, the reply buffer the host allocates during a call import.
// A reply returned by nuropb_describe/nuropb_handle is the storage of a
// Python bytes object kept alive until the next call into the instance.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NUROPB_EXPORT(name) __attribute__((export_name(name)))
#define NUROPB_IMPORT(name) __attribute__((import_module("nuropb"), import_name(name)))

NUROPB_IMPORT("log") extern void host_log(int32_t level, uint32_t ptr, uint32_t len);
NUROPB_IMPORT("call") extern uint64_t host_call(uint32_t ptr, uint32_t len);
NUROPB_IMPORT("send") extern int32_t host_send(uint32_t ptr, uint32_t len);

enum { LOG_ERROR = 8 };

static int ready;               // 1 once the service imported cleanly
static PyObject *rt_handle;     // nuropb._runtime.handle(bytes) -> bytes
static PyObject *manifest;      // bytes: the CBOR manifest
static char *fail_manifest;     // {"error": ...}, what describe returns when start-up failed
static size_t fail_manifest_len;
static PyObject *last_reply;    // keeps the latest reply's storage alive
static char *fail_reply;        // the response envelope handle returns when start-up failed
static size_t fail_reply_len;

static uint64_t pack_ptr_len(const void *p, size_t n) {
    return ((uint64_t)(uintptr_t)p << 32) | (uint64_t)(uint32_t)n;
}

// --- a minimal CBOR writer, for replies built without Python ---------------

typedef struct {
    char *buf;
    size_t len, cap;
} cbuf;

static void cb_put(cbuf *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 256);
        while (cap < b->len + n) cap *= 2;
        char *nb = realloc(b->buf, cap);
        if (!nb) return;  // out of memory: the reply is truncated, the host reports it malformed
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, p, n);
    b->len += n;
}

static void cb_head(cbuf *b, unsigned major, uint64_t v) {
    unsigned char h[9];
    size_t n;
    if (v < 24) {
        h[0] = (unsigned char)(major << 5 | v);
        n = 1;
    } else if (v <= 0xff) {
        h[0] = (unsigned char)(major << 5 | 24);
        h[1] = (unsigned char)v;
        n = 2;
    } else if (v <= 0xffff) {
        h[0] = (unsigned char)(major << 5 | 25);
        h[1] = (unsigned char)(v >> 8);
        h[2] = (unsigned char)v;
        n = 3;
    } else {
        h[0] = (unsigned char)(major << 5 | 26);
        for (int i = 0; i < 4; i++) h[1 + i] = (unsigned char)(v >> (24 - 8 * i));
        n = 5;
    }
    cb_put(b, h, n);
}

static void cb_text(cbuf *b, const char *s, size_t n) {
    cb_head(b, 3, n);
    cb_put(b, s, n);
}

static void cb_cstr(cbuf *b, const char *s) { cb_text(b, s, strlen(s)); }

// error_map writes {"code": code, "message": msg}, msg cut to 64 KiB.
static void cb_error_map(cbuf *b, const char *code, const char *msg, size_t n) {
    if (n > 65536) n = 65536;
    cb_head(b, 5, 2);
    cb_cstr(b, "code");
    cb_cstr(b, code);
    cb_cstr(b, "message");
    cb_text(b, msg, n);
}

// set_failure records why the service cannot run, logs it, and builds the
// describe and handle replies that report it (in C: Python may be unusable).
static void set_failure(const char *msg, size_t n) {
    host_log(LOG_ERROR, (uint32_t)(uintptr_t)msg, (uint32_t)n);

    cbuf d = {0};
    cb_head(&d, 5, 1);
    cb_cstr(&d, "error");
    cb_error_map(&d, "internal", msg, n);

    cbuf h = {0};
    cb_head(&h, 5, 2);
    cb_cstr(&h, "kind");
    cb_cstr(&h, "response");
    cb_cstr(&h, "error");
    cb_error_map(&h, "internal", msg, n);

    ready = 0;
    free(fail_manifest);
    free(fail_reply);
    fail_manifest = d.buf;
    fail_manifest_len = d.len;
    fail_reply = h.buf;
    fail_reply_len = h.len;
}

// pending_exception_text formats the current Python exception with its
// traceback and clears it. The result is malloc'd, NUL-terminated.
static char *pending_exception_text(const char *prefix) {
    PyObject *type = NULL, *exc = NULL, *tbo = NULL;
    PyErr_Fetch(&type, &exc, &tbo);
    PyErr_NormalizeException(&type, &exc, &tbo);
    if (exc && tbo) PyException_SetTraceback(exc, tbo);
    Py_XDECREF(type);
    Py_XDECREF(tbo);
    PyObject *text = NULL;
    if (exc) {
        PyObject *tb = PyImport_ImportModule("traceback");
        if (tb) {
            PyObject *lines = PyObject_CallMethod(tb, "format_exception", "O", exc);
            if (lines) {
                PyObject *empty = PyUnicode_FromString("");
                if (empty) text = PyUnicode_Join(empty, lines);
                Py_XDECREF(empty);
                Py_DECREF(lines);
            }
            Py_DECREF(tb);
        }
        if (!text) {
            PyErr_Clear();
            text = PyObject_Repr(exc);
        }
        Py_DECREF(exc);
    }
    PyErr_Clear();
    const char *s = text ? PyUnicode_AsUTF8(text) : NULL;
    if (!s) {
        PyErr_Clear();
        s = "(no exception text)";
    }
    size_t n = strlen(prefix) + strlen(s) + 1;
    char *out = malloc(n);
    if (out) snprintf(out, n, "%s%s", prefix, s);
    Py_XDECREF(text);
    return out;
}

static void fail_with_exception(const char *prefix) {
    char *msg = pending_exception_text(prefix);
    if (msg) {
        set_failure(msg, strlen(msg));
        free(msg);
    } else {
        set_failure(prefix, strlen(prefix));
    }
}

// --- the _nuropb_host builtin module: the host imports, for Python ----------

static PyObject *py_log(PyObject *self, PyObject *args) {
    int level;
    const char *s;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "is#:log", &level, &s, &n)) return NULL;
    host_log(level, (uint32_t)(uintptr_t)s, (uint32_t)n);
    Py_RETURN_NONE;
}

static PyObject *py_call(PyObject *self, PyObject *arg) {
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0) return NULL;
    uint64_t r = host_call((uint32_t)(uintptr_t)in.buf, (uint32_t)in.len);
    PyBuffer_Release(&in);
    char *p = (char *)(uintptr_t)(uint32_t)(r >> 32);
    uint32_t n = (uint32_t)r;
    if (!p) {
        PyErr_SetString(PyExc_RuntimeError, "the host's call import returned no reply");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(p, n);
    free(p);
    return out;
}

static PyObject *py_send(PyObject *self, PyObject *arg) {
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0) return NULL;
    int32_t status = host_send((uint32_t)(uintptr_t)in.buf, (uint32_t)in.len);
    PyBuffer_Release(&in);
    return PyLong_FromLong(status);
}

static PyMethodDef host_methods[] = {
    {"log", py_log, METH_VARARGS, "log(level: int, message: str) -> None: a host log line."},
    {"call", py_call, METH_O, "call(request: bytes) -> bytes: a request envelope in, the response envelope out."},
    {"send", py_send, METH_O, "send(envelope: bytes) -> int: a command or event; 0 or an error status."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef host_module = {
    PyModuleDef_HEAD_INIT, "_nuropb_host", "The nuropb host imports (ABI v1).", -1, host_methods,
};

static PyObject *init_host_module(void) { return PyModule_Create(&host_module); }

// --- interpreter start-up ----------------------------------------------------

static void status_failure(const char *what, PyStatus st) {
    char msg[512];
    snprintf(msg, sizeof msg, "nuropb python runtime: %s: %s%s%s", what, st.func ? st.func : "",
             st.func ? ": " : "", st.err_msg ? st.err_msg : "failed");
    set_failure(msg, strlen(msg));
}

__attribute__((constructor)) static void nuropb_start(void) {
    if (PyImport_AppendInittab("_nuropb_host", init_host_module) < 0) {
        const char *m = "nuropb python runtime: cannot register _nuropb_host";
        set_failure(m, strlen(m));
        return;
    }
    PyConfig cfg;
    PyConfig_InitIsolatedConfig(&cfg);
    cfg.site_import = 0;
    cfg.buffered_stdio = 0;  // a reactor never exits: buffered output would never appear
    cfg.install_signal_handlers = 0;
    cfg.write_bytecode = 0;  // the filesystem is read-only
    cfg.pathconfig_warnings = 0;
    cfg.user_site_directory = 0;
    cfg.parse_argv = 0;
    cfg.faulthandler = 0;
    PyStatus st = PyConfig_SetString(&cfg, &cfg.program_name, L"nuropb-python");
    if (!PyStatus_Exception(st)) st = PyConfig_SetString(&cfg, &cfg.home, L"/usr/local");
    if (!PyStatus_Exception(st)) {
        cfg.module_search_paths_set = 1;
        st = PyWideStringList_Append(&cfg.module_search_paths, L"/app");
    }
    if (!PyStatus_Exception(st)) st = PyWideStringList_Append(&cfg.module_search_paths, L"/usr/local/lib/python311.zip");
    if (!PyStatus_Exception(st)) st = Py_InitializeFromConfig(&cfg);
    PyConfig_Clear(&cfg);
    if (PyStatus_Exception(st)) {
        status_failure("interpreter start-up failed", st);
        return;
    }

    PyObject *rt = PyImport_ImportModule("nuropb._runtime");
    if (!rt) {
        fail_with_exception("nuropb python runtime: cannot import the SDK (nuropb._runtime):\n");
        return;
    }
    rt_handle = PyObject_GetAttrString(rt, "handle");
    PyObject *booted = rt_handle ? PyObject_CallMethod(rt, "boot", NULL) : NULL;
    Py_DECREF(rt);
    if (!booted) {
        fail_with_exception("nuropb python runtime: nuropb._runtime.boot raised:\n");
        return;
    }
    // boot returns (True, manifest_bytes) or (False, error_text).
    PyObject *ok = NULL, *val = NULL;
    if (!PyArg_ParseTuple(booted, "OO", &ok, &val) || (PyObject_IsTrue(ok) && !PyBytes_Check(val))) {
        Py_DECREF(booted);
        fail_with_exception("nuropb python runtime: boot returned a malformed value: ");
        return;
    }
    if (!PyObject_IsTrue(ok)) {
        const char *s = PyUnicode_Check(val) ? PyUnicode_AsUTF8(val) : NULL;
        if (!s) {
            PyErr_Clear();
            s = "nuropb python runtime: the service failed to start";
        }
        set_failure(s, strlen(s));
        Py_DECREF(booted);
        return;
    }
    Py_INCREF(val);
    manifest = val;
    Py_DECREF(booted);
    ready = 1;
}

// --- ABI v1 exports ----------------------------------------------------------

NUROPB_EXPORT("nuropb_abi_version") int32_t nuropb_abi_version(void) { return 1; }

NUROPB_EXPORT("nuropb_alloc") uint32_t nuropb_alloc(uint32_t size) {
    return (uint32_t)(uintptr_t)malloc(size ? size : 1);
}

NUROPB_EXPORT("nuropb_dealloc") void nuropb_dealloc(uint32_t ptr, uint32_t size) {
    (void)size;
    free((void *)(uintptr_t)ptr);
}

NUROPB_EXPORT("nuropb_describe") uint64_t nuropb_describe(void) {
    if (ready) return pack_ptr_len(PyBytes_AS_STRING(manifest), (size_t)PyBytes_GET_SIZE(manifest));
    return pack_ptr_len(fail_manifest, fail_manifest_len);
}

NUROPB_EXPORT("nuropb_handle") uint64_t nuropb_handle(uint32_t ptr, uint32_t len) {
    if (!ready) return pack_ptr_len(fail_reply, fail_reply_len);
    Py_CLEAR(last_reply);
    PyObject *in = PyBytes_FromStringAndSize((const char *)(uintptr_t)ptr, (Py_ssize_t)len);
    PyObject *out = in ? PyObject_CallOneArg(rt_handle, in) : NULL;
    Py_XDECREF(in);
    if (out && PyBytes_Check(out)) {
        last_reply = out;
        return pack_ptr_len(PyBytes_AS_STRING(out), (size_t)PyBytes_GET_SIZE(out));
    }
    // The SDK catches every exception of a handler, so this is a fault in
    // the SDK itself or memory exhaustion: answer with an error, not a trap.
    Py_XDECREF(out);
    const char *code = PyErr_ExceptionMatches(PyExc_MemoryError) ? "resource_exhausted" : "internal";
    char *msg = out ? strdup("nuropb._runtime.handle returned a non-bytes value")
                    : pending_exception_text("nuropb python runtime: ");
    cbuf b = {0};
    cb_head(&b, 5, 2);
    cb_cstr(&b, "kind");
    cb_cstr(&b, "response");
    cb_cstr(&b, "error");
    cb_error_map(&b, code, msg ? msg : "out of memory", msg ? strlen(msg) : 13);
    free(msg);
    PyObject *reply = PyBytes_FromStringAndSize(b.buf, (Py_ssize_t)b.len);
    if (!reply) {
        PyErr_Clear();
        // Leak b.buf rather than return freed memory; this path is exceptional.
        return pack_ptr_len(b.buf, b.len);
    }
    free(b.buf);
    last_reply = reply;
    return pack_ptr_len(PyBytes_AS_STRING(reply), (size_t)PyBytes_GET_SIZE(reply));
}
