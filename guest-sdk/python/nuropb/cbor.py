"""CBOR (RFC 8949) with the nuropb host's limits.

Decoding is strict and bounded exactly like the host's codec (abi.DefaultLimits):

* a frame over ``MAX_FRAME`` (1 MiB) is refused before a byte is read;
* nesting of arrays, maps and tags deeper than ``MAX_DEPTH`` (32) is refused;
* an array or map with more than ``MAX_ELEMENTS`` (65,536) entries is refused;
* duplicate map keys, indefinite lengths, invalid UTF-8, reserved
  additional-information values and trailing bytes are refused.

The same limits apply to what is encoded, so a reply the host would refuse is
caught in the guest with a clear message.

Type mapping (both ways unless noted):

==========================  ===============================================
Python                      CBOR
==========================  ===============================================
None                        null (undefined also decodes to None)
bool                        true / false
int                         major type 0/1; beyond 64 bits tags 2/3 (bignum)
float                       float64 (float16/32 decode to float)
str                         text string
bytes                       byte string (bytearray, memoryview encode too)
list                        array (tuple encodes too)
dict                        map (keys: any hashable decoded value)
datetime.datetime           tag 0, RFC 3339 text; naive datetimes are taken
                            as UTC. Tag 1 (epoch seconds) decodes too.
datetime.date               tag 1004, RFC 3339 full-date text (RFC 8943)
decimal.Decimal             tag 4 decimal fraction [exponent, mantissa];
                            NaN and infinities cannot be encoded
dataclass instance          map of its fields (encode only)
Tag(number, value)          any other tag, kept as is for faithful echo
Simple(n)                   other simple values
==========================  ===============================================

Anything else (sets, numpy arrays, custom objects) raises EncodeError naming
the type.
"""

import struct as _struct
import sys as _sys

# datetime and decimal are imported only when a value needs them: a value
# of those types cannot exist before its module is imported, and importing
# decimal at start-up would cost every instance milliseconds.

__all__ = [
    "MAX_FRAME", "MAX_DEPTH", "MAX_ELEMENTS", "CBORError", "DecodeError", "EncodeError",
    "Tag", "Simple", "dumps", "loads",
]

MAX_FRAME = 1 << 20
MAX_DEPTH = 32
MAX_ELEMENTS = 1 << 16


class CBORError(ValueError):
    """A frame that cannot be decoded or a value that cannot be encoded.

    ``code`` is the nuropb error code the failure maps to: ``bad_request``
    for malformed input, ``resource_exhausted`` for a limit, ``internal`` for
    a value of an unsupported type.
    """

    code = "bad_request"

    def __init__(self, message, code=None):
        super().__init__(message)
        if code is not None:
            self.code = code


class DecodeError(CBORError):
    """Malformed or out-of-limits CBOR input."""


class EncodeError(CBORError):
    """A value that cannot be encoded (unsupported type, or over a limit)."""

    code = "internal"


class Tag:
    """A tagged value whose tag nuropb does not interpret."""

    __slots__ = ("tag", "value")

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __hash__(self):
        return hash((Tag, self.tag))

    def __repr__(self):
        return f"Tag({self.tag}, {self.value!r})"


class Simple:
    """A CBOR simple value other than false, true, null and undefined."""

    __slots__ = ("value",)

    def __init__(self, value):
        if not (0 <= value <= 19 or 32 <= value <= 255):
            raise ValueError(f"simple value {value} is reserved")
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Simple) and self.value == other.value

    def __hash__(self):
        return hash((Simple, self.value))

    def __repr__(self):
        return f"Simple({self.value})"


# --- decoding --------------------------------------------------------------

_F16 = _struct.Struct(">e").unpack_from
_F32 = _struct.Struct(">f").unpack_from
_F64 = _struct.Struct(">d").unpack_from
_U16 = _struct.Struct(">H").unpack_from
_U32 = _struct.Struct(">I").unpack_from
_U64 = _struct.Struct(">Q").unpack_from


def loads(data, max_frame=MAX_FRAME):
    """Decode exactly one CBOR item from ``data`` (bytes-like).

    Raises DecodeError (``code`` bad_request, or resource_exhausted for an
    oversized frame).
    """
    n = len(data)
    if n > max_frame:
        raise DecodeError(f"message is {n} bytes, over the {max_frame} byte limit", "resource_exhausted")
    if n == 0:
        raise DecodeError("empty message")
    if not isinstance(data, bytes):
        data = bytes(data)
    d = _Decoder(data)
    try:
        value = d.item(0)
    except (IndexError, _struct.error):
        raise DecodeError("truncated CBOR") from None
    if d.pos != n:
        raise DecodeError(f"{n - d.pos} trailing bytes after the CBOR item")
    return value


class _Decoder:
    __slots__ = ("data", "pos", "tags")

    def __init__(self, data):
        self.data = data
        self.pos = 0
        self.tags = 0

    def arg(self, info):
        data = self.data
        pos = self.pos
        if info < 24:
            return info
        if info == 24:
            self.pos = pos + 1
            return data[pos]
        if info == 25:
            self.pos = pos + 2
            return _U16(data, pos)[0]
        if info == 26:
            self.pos = pos + 4
            return _U32(data, pos)[0]
        if info == 27:
            self.pos = pos + 8
            return _U64(data, pos)[0]
        if info == 31:
            raise DecodeError("indefinite-length items are not accepted")
        raise DecodeError(f"reserved additional information {info} at offset {pos - 1}")

    def take(self, n):
        pos = self.pos
        end = pos + n
        if end > len(self.data):
            raise DecodeError("truncated CBOR: a string runs past the end of the message")
        self.pos = end
        return self.data[pos:end]

    def item(self, depth):
        data = self.data
        ib = data[self.pos]
        self.pos += 1
        major = ib >> 5
        info = ib & 0x1F
        if major == 0:
            return self.arg(info)
        if major == 1:
            return -1 - self.arg(info)
        if major == 2:
            return self.take(self.arg(info))
        if major == 3:
            raw = self.take(self.arg(info))
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError("text string is not valid UTF-8") from None
        if major == 7:
            return self.simple(info)
        depth += 1
        # The host's decoder (fxamacker/cbor) allows at most MAX_DEPTH nested
        # arrays and maps, and MAX_DEPTH + 1 levels counting tags as levels
        # too: depth counts both, self.tags the tags only.
        if depth > MAX_DEPTH + 1:
            raise DecodeError(f"nesting deeper than {MAX_DEPTH} levels")
        if major == 6:
            tag = self.arg(info)
            self.tags += 1
            value = self.item(depth)
            self.tags -= 1
            return _untag(tag, value)
        if depth - self.tags > MAX_DEPTH:
            raise DecodeError(f"nesting deeper than {MAX_DEPTH} levels")
        if major == 4:
            n = self.arg(info)
            if n > MAX_ELEMENTS:
                raise DecodeError(f"array of {n} elements is over the limit of {MAX_ELEMENTS}")
            if n > len(data) - self.pos:
                raise DecodeError("truncated CBOR: an array runs past the end of the message")
            item = self.item
            return [item(depth) for _ in range(n)]
        else:  # major == 5
            n = self.arg(info)
            if n > MAX_ELEMENTS:
                raise DecodeError(f"map of {n} pairs is over the limit of {MAX_ELEMENTS}")
            if 2 * n > len(data) - self.pos:
                raise DecodeError("truncated CBOR: a map runs past the end of the message")
            out = {}
            item = self.item
            for _ in range(n):
                k = item(depth)
                try:
                    if k in out:
                        raise DecodeError(f"duplicate map key {k!r}")
                except TypeError:
                    raise DecodeError(f"map key of type {type(k).__name__} is not supported") from None
                out[k] = item(depth)
            return out
        raise AssertionError("unreachable")

    def simple(self, info):
        if info == 20:
            return False
        if info == 21:
            return True
        if info == 22 or info == 23:
            return None
        pos = self.pos
        if info == 25:
            self.pos = pos + 2
            return _F16(self.data, pos)[0]
        if info == 26:
            self.pos = pos + 4
            return _F32(self.data, pos)[0]
        if info == 27:
            self.pos = pos + 8
            return _F64(self.data, pos)[0]
        if info == 24:
            v = self.data[pos]
            self.pos = pos + 1
            if v < 32:
                raise DecodeError(f"simple value {v} in two bytes is not well-formed")
            return Simple(v)
        if info < 20:
            return Simple(info)
        if info == 31:
            raise DecodeError("indefinite-length items are not accepted (unexpected break)")
        raise DecodeError(f"reserved additional information {info} in major type 7")


def _untag(tag, value):
    if tag == 2 or tag == 3:
        if not isinstance(value, bytes):
            raise DecodeError(f"tag {tag} (bignum) wants a byte string")
        n = int.from_bytes(value, "big")
        return n if tag == 2 else -1 - n
    if tag == 0:
        import datetime as _dt
        if not isinstance(value, str):
            raise DecodeError("tag 0 (date/time) wants a text string")
        try:
            t = _dt.datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
        except ValueError:
            raise DecodeError(f"tag 0: {value!r} is not an RFC 3339 date/time") from None
        if t.tzinfo is None:
            raise DecodeError(f"tag 0: {value!r} has no time zone offset")
        return t
    if tag == 1:
        import datetime as _dt
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DecodeError("tag 1 (epoch date/time) wants a number")
        try:
            return _dt.datetime.fromtimestamp(value, _dt.timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise DecodeError(f"tag 1: {value!r} is out of range") from None
    if tag == 4:
        import decimal as _decimal
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in value)):
            raise DecodeError("tag 4 (decimal fraction) wants [exponent, mantissa] integers")
        exp, mant = value
        if not -(10 ** 9) < exp < 10 ** 9:
            raise DecodeError(f"tag 4: exponent {exp} is out of range")
        try:
            return _decimal.Decimal((0 if mant >= 0 else 1, tuple(int(c) for c in str(abs(mant))), exp))
        except (ValueError, _decimal.InvalidOperation):
            raise DecodeError("tag 4: not a representable decimal") from None
    if tag == 1004:
        import datetime as _dt
        if not isinstance(value, str):
            raise DecodeError("tag 1004 (full-date) wants a text string")
        try:
            return _dt.date.fromisoformat(value)
        except ValueError:
            raise DecodeError(f"tag 1004: {value!r} is not an RFC 3339 full-date") from None
    return Tag(tag, value)


# --- encoding --------------------------------------------------------------

_PACK_U8 = _struct.Struct(">BB").pack
_PACK_U16 = _struct.Struct(">BH").pack
_PACK_U32 = _struct.Struct(">BI").pack
_PACK_U64 = _struct.Struct(">BQ").pack
_PACK_F64 = _struct.Struct(">Bd").pack


def _head(major, n):
    mt = major << 5
    if n < 24:
        return bytes((mt | n,))
    if n < 0x100:
        return _PACK_U8(mt | 24, n)
    if n < 0x10000:
        return _PACK_U16(mt | 25, n)
    if n < 0x100000000:
        return _PACK_U32(mt | 26, n)
    return _PACK_U64(mt | 27, n)


def dumps(value, max_frame=MAX_FRAME):
    """Encode ``value`` as CBOR. Raises EncodeError naming an unsupported type
    (``code`` internal) or a limit (``code`` resource_exhausted)."""
    out = []
    _encode(value, out.append, 0)
    b = b"".join(out)
    if len(b) > max_frame:
        raise EncodeError(f"encoded message is {len(b)} bytes, over the {max_frame} byte limit",
                          "resource_exhausted")
    return b


def _encode(v, w, depth):
    t = type(v)
    if t is str:
        try:
            b = v.encode("utf-8")
        except UnicodeEncodeError:
            raise EncodeError("text with a lone surrogate cannot be encoded as UTF-8") from None
        w(_head(3, len(b)))
        w(b)
    elif t is int:
        if v >= 0:
            if v < 0x10000000000000000:
                w(_head(0, v))
            else:
                b = v.to_bytes((v.bit_length() + 7) // 8, "big")
                w(b"\xc2")
                w(_head(2, len(b)))
                w(b)
        else:
            n = -1 - v
            if n < 0x10000000000000000:
                w(_head(1, n))
            else:
                b = n.to_bytes((n.bit_length() + 7) // 8, "big")
                w(b"\xc3")
                w(_head(2, len(b)))
                w(b)
    elif v is None:
        w(b"\xf6")
    elif v is True:
        w(b"\xf5")
    elif v is False:
        w(b"\xf4")
    elif t is float:
        w(_PACK_F64(0xFB, v))
    elif t is dict:
        depth += 1
        if depth > MAX_DEPTH:
            raise EncodeError(f"nesting deeper than {MAX_DEPTH} levels (a cycle?)", "resource_exhausted")
        if len(v) > MAX_ELEMENTS:
            raise EncodeError(f"map of {len(v)} pairs is over the limit of {MAX_ELEMENTS}", "resource_exhausted")
        w(_head(5, len(v)))
        for k, x in v.items():
            _encode(k, w, depth)
            _encode(x, w, depth)
    elif t is list or t is tuple:
        depth += 1
        if depth > MAX_DEPTH:
            raise EncodeError(f"nesting deeper than {MAX_DEPTH} levels (a cycle?)", "resource_exhausted")
        if len(v) > MAX_ELEMENTS:
            raise EncodeError(f"array of {len(v)} elements is over the limit of {MAX_ELEMENTS}",
                              "resource_exhausted")
        w(_head(4, len(v)))
        for x in v:
            _encode(x, w, depth)
    elif t is bytes or t is bytearray or t is memoryview:
        b = bytes(v)
        w(_head(2, len(b)))
        w(b)
    else:
        _encode_other(v, w, depth)


def _encode_other(v, w, depth):
    # Subclasses and the types that need a tag; kept off the fast path.
    if isinstance(v, bool):
        w(b"\xf5" if v else b"\xf4")
    elif isinstance(v, int):
        _encode(int(v), w, depth)
    elif isinstance(v, float):
        _encode(float(v), w, depth)
    elif isinstance(v, str):
        _encode(str(v), w, depth)
    elif (_dt := _sys.modules.get("datetime")) is not None and isinstance(v, _dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=_dt.timezone.utc)
        s = v.isoformat()
        if s.endswith("+00:00"):
            s = s[:-6] + "Z"
        _tagged(0, s, w, depth)
    elif _dt is not None and isinstance(v, _dt.date):
        _tagged(1004, v.isoformat(), w, depth)
    elif (_decimal := _sys.modules.get("decimal")) is not None and isinstance(v, _decimal.Decimal):
        if not v.is_finite():
            raise EncodeError(f"Decimal {v} cannot be encoded (tag 4 has no NaN or infinity)")
        sign, digits, exp = v.as_tuple()
        mant = int("".join(map(str, digits)) or "0")
        _tagged(4, [exp, -mant if sign else mant], w, depth)
    elif isinstance(v, Tag):
        _tagged(v.tag, v.value, w, depth)
    elif isinstance(v, Simple):
        w(_head(7, v.value) if v.value < 24 else _PACK_U8(0xF8, v.value))
    elif isinstance(v, dict):
        _encode(dict(v), w, depth)
    elif isinstance(v, (list, tuple)):
        _encode(list(v), w, depth)
    elif hasattr(type(v), "__dataclass_fields__") and not isinstance(v, type):
        import dataclasses
        _encode({f.name: getattr(v, f.name) for f in dataclasses.fields(v)}, w, depth)
    else:
        raise EncodeError(f"cannot encode a value of type {_type_name(v)}")


def _type_name(v):
    t = type(v)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _tagged(tag, value, w, depth):
    depth += 1
    if depth > MAX_DEPTH:
        raise EncodeError(f"nesting deeper than {MAX_DEPTH} levels", "resource_exhausted")
    w(_head(6, tag))
    _encode(value, w, depth)
