//! A small CBOR (RFC 8949) codec with the same decoding limits as the host's
//! `abi.DefaultLimits`.
//!
//! Decisions, so guest and host agree:
//! - Integers are `i64`. An unsigned integer above `i64::MAX` or a negative one
//!   below `i64::MIN` is refused, as the host's codec does
//!   (`IntDecConvertSigned`). Bignums arrive as [`Value::Tag`] 2 or 3 around a
//!   byte string; the integer conversions accept them when they fit, and a
//!   `u64` above `i64::MAX` is encoded as a tag 2 bignum.
//! - Map keys are text only; maps keep their wire order in a `Vec`.
//! - Floats of every width decode to `f64` and always encode as 8 bytes.
//! - `undefined` decodes to [`Value::Null`]; other simple values are refused.
//! - Depth counts arrays, maps and tags (the top-level map is level 1), as
//!   the host's decoder does.

use crate::error::Error;
use std::collections::HashSet;

/// Bounds on what [`decode`] accepts. [`Limits::DEFAULT`] mirrors the host's
/// `abi.DefaultLimits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes in one encoded frame, checked before a byte is decoded.
    pub max_frame: usize,
    /// Nesting of arrays, maps and tags.
    pub max_depth: usize,
    /// Entries in one array, and pairs in one map.
    pub max_elements: usize,
}

impl Limits {
    /// 1 MiB frames, 32 levels, 65,536 entries: the host's defaults.
    pub const DEFAULT: Limits = Limits { max_frame: 1 << 20, max_depth: 32, max_elements: 1 << 16 };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// One CBOR data item.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null` (and `undefined` on input).
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer in the `i64` range.
    Int(i64),
    /// A float of any width, held as `f64`.
    Float(f64),
    /// A UTF-8 text string.
    Text(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// An array.
    Array(Vec<Value>),
    /// A map with text keys, in wire order, without duplicates.
    Map(Vec<(String, Value)>),
    /// A tagged item, e.g. tag 2/3 bignums or tag 1 epoch times.
    Tag(u64, Box<Value>),
}

impl Value {
    /// The manifest type name of this value: `string`, `int`, `float`,
    /// `bool`, `bytes`, `list`, `map`, or `null`/`tag`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Text(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Array(_) => "list",
            Value::Map(_) => "map",
            Value::Tag(2, _) | Value::Tag(3, _) => "int",
            Value::Tag(..) => "tag",
        }
    }

    /// Whether this is `Null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The text, if this is `Text`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is `Int`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The number as `f64`, if this is `Float` or `Int`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The boolean, if this is `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The items, if this is `Array`.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The pairs, if this is `Map`.
    pub fn as_map(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value under `key`, if this is a `Map` holding it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_map()?.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A map from `(key, value)` pairs. Later duplicates are not removed:
    /// keep keys unique or the host will refuse the frame.
    pub fn map<K: Into<String>, I: IntoIterator<Item = (K, Value)>>(pairs: I) -> Value {
        Value::Map(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// Encodes this value as CBOR onto `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        encode_into(self, out)
    }

    /// Encodes this value as CBOR into a new buffer.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into(self, &mut out);
        out
    }
}

/// Encodes `v` as CBOR into a new buffer.
pub fn encode(v: &Value) -> Vec<u8> {
    v.to_cbor()
}

/// Appends the CBOR encoding of `v` to `out` (definite lengths, shortest
/// integer heads, 8-byte floats).
pub fn encode_into(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(0xf6),
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        Value::Int(i) => write_int(out, *i),
        Value::Float(f) => {
            out.push(0xfb);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        Value::Text(s) => write_text(out, s),
        Value::Bytes(b) => write_bytes(out, b),
        Value::Array(a) => {
            write_head(out, 4, a.len() as u64);
            for x in a {
                encode_into(x, out);
            }
        }
        Value::Map(m) => {
            write_head(out, 5, m.len() as u64);
            for (k, x) in m {
                write_text(out, k);
                encode_into(x, out);
            }
        }
        Value::Tag(t, x) => {
            write_head(out, 6, *t);
            encode_into(x, out);
        }
    }
}

/// Writes a CBOR head with the shortest argument encoding.
pub(crate) fn write_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if arg < 24 {
        out.push(m | arg as u8);
    } else if arg <= 0xff {
        out.extend_from_slice(&[m | 24, arg as u8]);
    } else if arg <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(arg as u16).to_be_bytes());
    } else if arg <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(arg as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

pub(crate) fn write_int(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        write_head(out, 0, i as u64);
    } else {
        write_head(out, 1, !(i as u64));
    }
}

pub(crate) fn write_text(out: &mut Vec<u8>, s: &str) {
    write_head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_head(out, 2, b.len() as u64);
    out.extend_from_slice(b);
}

/// Decodes exactly one CBOR item from `b` under `Limits::DEFAULT`. Failures
/// are `bad_request` errors (`resource_exhausted` for an oversized frame).
pub fn decode(b: &[u8]) -> Result<Value, Error> {
    decode_with(b, Limits::DEFAULT)
}

/// Decodes exactly one CBOR item from `b` under `limits`.
pub fn decode_with(b: &[u8], limits: Limits) -> Result<Value, Error> {
    let mut d = Decoder::new(b, limits)?;
    let v = d.value(0)?;
    d.finish()?;
    Ok(v)
}

/// A bounded, borrowing CBOR reader. The envelope decoder drives it directly
/// so that text fields are borrowed from the input instead of copied.
pub(crate) struct Decoder<'a> {
    b: &'a [u8],
    pos: usize,
    limits: Limits,
}

/// A CBOR head: major type and argument.
pub(crate) struct Head {
    pub major: u8,
    pub arg: u64,
    /// Additional information bits (needed to tell float widths apart).
    pub info: u8,
}

fn malformed(msg: &str) -> Error {
    Error::bad_request(format!("malformed CBOR: {}", msg))
}

impl<'a> Decoder<'a> {
    /// Checks the frame size before anything is decoded.
    pub fn new(b: &'a [u8], limits: Limits) -> Result<Self, Error> {
        if b.len() > limits.max_frame {
            return Err(Error::resource_exhausted(format!(
                "message is {} bytes, over the {} byte limit",
                b.len(),
                limits.max_frame
            )));
        }
        if b.is_empty() {
            return Err(Error::bad_request("empty message"));
        }
        Ok(Decoder { b, pos: 0, limits })
    }

    /// Refuses trailing bytes.
    pub fn finish(&self) -> Result<(), Error> {
        if self.pos != self.b.len() {
            return Err(malformed(&format!("{} trailing bytes", self.b.len() - self.pos)));
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.b.len() - self.pos {
            return Err(malformed("unexpected end of data"));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn head(&mut self) -> Result<Head, Error> {
        let first = self.take(1)?[0];
        let major = first >> 5;
        let info = first & 0x1f;
        let arg = match info {
            0..=23 => info as u64,
            24..=27 => {
                let n = 1usize << (info - 24);
                let mut a = 0u64;
                for &x in self.take(n)? {
                    a = a << 8 | x as u64;
                }
                a
            }
            31 => return Err(malformed("indefinite-length items are not accepted")),
            _ => return Err(malformed("reserved additional information value")),
        };
        Ok(Head { major, arg, info })
    }

    fn len_checked(&self, arg: u64) -> Result<usize, Error> {
        if arg > (self.b.len() - self.pos) as u64 {
            return Err(malformed("unexpected end of data"));
        }
        Ok(arg as usize)
    }

    fn count_checked(&self, arg: u64, what: &str) -> Result<usize, Error> {
        if arg > self.limits.max_elements as u64 {
            return Err(Error::bad_request(format!(
                "{} of {} entries is over the limit of {}",
                what, arg, self.limits.max_elements
            )));
        }
        // Every entry takes at least one byte: a cheap bound before allocating.
        if arg > (self.b.len() - self.pos) as u64 {
            return Err(malformed("unexpected end of data"));
        }
        Ok(arg as usize)
    }

    fn enter(&self, depth: usize) -> Result<usize, Error> {
        let d = depth + 1;
        if d > self.limits.max_depth {
            return Err(Error::bad_request(format!(
                "nesting depth is over the limit of {}",
                self.limits.max_depth
            )));
        }
        Ok(d)
    }

    /// Reads a text string, borrowing it.
    pub fn text(&mut self) -> Result<&'a str, Error> {
        let h = self.head()?;
        if h.major != 3 {
            return Err(Error::bad_request(format!("expected text, got {}", major_name(h.major))));
        }
        self.text_body(h.arg)
    }

    fn text_body(&mut self, arg: u64) -> Result<&'a str, Error> {
        let n = self.len_checked(arg)?;
        let s = self.take(n)?;
        std::str::from_utf8(s).map_err(|_| malformed("invalid UTF-8 in a text string"))
    }

    /// Reads a map head at `depth` (the level of the enclosing item) and
    /// returns its pair count and the map's own level.
    pub fn map_head(&mut self, depth: usize) -> Result<(usize, usize), Error> {
        let h = self.head()?;
        if h.major != 5 {
            return Err(Error::bad_request(format!("expected a map, got {}", major_name(h.major))));
        }
        let d = self.enter(depth)?;
        Ok((self.count_checked(h.arg, "a map")?, d))
    }

    /// Reads any item nested under `depth` levels.
    pub fn value(&mut self, depth: usize) -> Result<Value, Error> {
        let h = self.head()?;
        match h.major {
            0 => {
                if h.arg > i64::MAX as u64 {
                    return Err(Error::bad_request(format!("integer {} is out of the int64 range", h.arg)));
                }
                Ok(Value::Int(h.arg as i64))
            }
            1 => {
                if h.arg > i64::MAX as u64 {
                    return Err(Error::bad_request("negative integer is out of the int64 range"));
                }
                Ok(Value::Int(-1 - h.arg as i64))
            }
            2 => {
                let n = self.len_checked(h.arg)?;
                Ok(Value::Bytes(self.take(n)?.to_vec()))
            }
            3 => Ok(Value::Text(self.text_body(h.arg)?.to_owned())),
            4 => {
                let d = self.enter(depth)?;
                let n = self.count_checked(h.arg, "an array")?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(d)?);
                }
                Ok(Value::Array(items))
            }
            5 => {
                let d = self.enter(depth)?;
                let n = self.count_checked(h.arg, "a map")?;
                let mut pairs: Vec<(String, Value)> = Vec::with_capacity(n);
                // Small maps are checked for duplicates by scanning; larger
                // ones with a set, so a 65,536-pair map stays linear.
                let mut seen: Option<HashSet<&'a str>> = if n > 16 { Some(HashSet::with_capacity(n)) } else { None };
                for _ in 0..n {
                    let kh = self.head()?;
                    if kh.major != 3 {
                        return Err(Error::bad_request(format!(
                            "map keys must be text, got {}",
                            major_name(kh.major)
                        )));
                    }
                    let k = self.text_body(kh.arg)?;
                    let dup = match seen.as_mut() {
                        Some(set) => !set.insert(k),
                        None => pairs.iter().any(|(x, _)| x == k),
                    };
                    if dup {
                        return Err(Error::bad_request(format!("duplicate map key {:?}", k)));
                    }
                    let v = self.value(d)?;
                    pairs.push((k.to_owned(), v));
                }
                Ok(Value::Map(pairs))
            }
            6 => {
                let d = self.enter(depth)?;
                let inner = self.value(d)?;
                if (h.arg == 2 || h.arg == 3) && !matches!(inner, Value::Bytes(_)) {
                    return Err(malformed("a bignum tag must hold a byte string"));
                }
                Ok(Value::Tag(h.arg, Box::new(inner)))
            }
            _ => match h.info {
                20 => Ok(Value::Bool(false)),
                21 => Ok(Value::Bool(true)),
                22 | 23 => Ok(Value::Null),
                25 => Ok(Value::Float(f16_to_f64(h.arg as u16))),
                26 => Ok(Value::Float(f32::from_bits(h.arg as u32) as f64)),
                27 => Ok(Value::Float(f64::from_bits(h.arg))),
                _ => Err(malformed("unsupported simple value")),
            },
        }
    }
}

fn major_name(m: u8) -> &'static str {
    match m {
        0 | 1 => "an integer",
        2 => "bytes",
        3 => "text",
        4 => "an array",
        5 => "a map",
        6 => "a tag",
        _ => "a simple value or float",
    }
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    let mag = match exp {
        0 => frac * 2f64.powi(-24),
        31 => {
            if frac == 0.0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        }
        _ => (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    };
    sign * mag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn rfc8949_examples() {
        let cases: Vec<(&str, Value)> = vec![
            ("00", Value::Int(0)),
            ("17", Value::Int(23)),
            ("1818", Value::Int(24)),
            ("1903e8", Value::Int(1000)),
            ("1b7fffffffffffffff", Value::Int(i64::MAX)),
            ("20", Value::Int(-1)),
            ("3903e7", Value::Int(-1000)),
            ("3b7fffffffffffffff", Value::Int(i64::MIN)),
            ("f4", Value::Bool(false)),
            ("f5", Value::Bool(true)),
            ("f6", Value::Null),
            ("fb3ff199999999999a", Value::Float(1.1)),
            ("40", Value::Bytes(vec![])),
            ("4401020304", Value::Bytes(vec![1, 2, 3, 4])),
            ("6449455446", Value::Text("IETF".into())),
            ("62c3bc", Value::Text("\u{fc}".into())),
            ("83010203", Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(3)])),
            ("a26161016162820203", Value::map(vec![
                ("a", Value::Int(1)),
                ("b", Value::Array(vec![Value::Int(2), Value::Int(3)])),
            ])),
            ("c249010000000000000000", Value::Tag(2, Box::new(Value::Bytes(hex("010000000000000000"))))),
        ];
        for (h, want) in cases {
            let b = hex(h);
            let got = decode(&b).unwrap_or_else(|e| panic!("{}: {}", h, e));
            assert_eq!(got, want, "{}", h);
            assert_eq!(encode(&got), b, "re-encode {}", h);
        }
        // Narrow floats decode to f64.
        assert_eq!(decode(&hex("f93c00")).unwrap(), Value::Float(1.0));
        assert_eq!(decode(&hex("f9c400")).unwrap(), Value::Float(-4.0));
        assert_eq!(decode(&hex("f90001")).unwrap(), Value::Float(5.960464477539063e-8));
        assert_eq!(decode(&hex("f97c00")).unwrap(), Value::Float(f64::INFINITY));
        assert_eq!(decode(&hex("fa47c35000")).unwrap(), Value::Float(100000.0));
        assert_eq!(decode(&hex("f7")).unwrap(), Value::Null);
    }

    fn bad(h: &str) -> Error {
        decode(&hex(h)).expect_err(h)
    }

    #[test]
    fn refuses_malformed_and_unbounded() {
        for h in [
            "", "5f42010243030405ff", "7f657374726561646d696e67ff", "9fff", "bf6346756ef563416d7421ff",
            "1b8000000000000000", "3b8000000000000000", "62c328", "a2616101616102", "a10102",
            "0001", "18", "1c", "f818", "c201", "83", "4401",
        ] {
            if h.is_empty() {
                assert_eq!(decode(&[]).unwrap_err().code(), &ErrorCode::BadRequest);
                continue;
            }
            assert_eq!(bad(h).code(), &ErrorCode::BadRequest, "{}", h);
        }
        assert!(bad("a2616101616102").message().contains("duplicate"));
        assert!(bad("9fff").message().contains("indefinite"));
    }

    #[test]
    fn limits() {
        // 32 levels pass, 33 fail.
        let mut ok = vec![0x81u8; 31];
        ok.push(0x80);
        assert!(decode(&ok).is_ok());
        let mut deep = vec![0x81u8; 32];
        deep.push(0x80);
        assert!(bad(&deep.iter().map(|b| format!("{:02x}", b)).collect::<String>()).message().contains("depth"));
        // Tags count as a level.
        let mut tagged = vec![0xc1u8; 32];
        tagged.push(0x00);
        assert!(decode(&tagged).is_ok());
        tagged.insert(0, 0xc1);
        assert!(decode(&tagged).is_err());

        // 65,536 elements pass, 65,537 fail.
        let mut arr = vec![0x9a, 0x00, 0x01, 0x00, 0x00];
        arr.extend(std::iter::repeat(0u8).take(65536));
        assert!(decode(&arr).is_ok());
        let mut arr = vec![0x9a, 0x00, 0x01, 0x00, 0x01];
        arr.extend(std::iter::repeat(0u8).take(65537));
        assert!(decode(&arr).unwrap_err().message().contains("over the limit"));

        // Big map with a late duplicate.
        let mut m = Vec::new();
        write_head(&mut m, 5, 1000);
        for i in 0..999 {
            write_text(&mut m, &format!("k{}", i));
            m.push(0);
        }
        write_text(&mut m, "k7");
        m.push(0);
        assert!(decode(&m).unwrap_err().message().contains("duplicate"));

        // Frame size is checked before decoding.
        let mut big = vec![0x5a, 0x00, 0x10, 0x00, 0x00];
        big.extend(std::iter::repeat(0u8).take(1 << 20));
        let e = decode(&big).unwrap_err();
        assert_eq!(e.code(), &ErrorCode::ResourceExhausted);

        // A huge declared length does not allocate.
        assert!(decode(&hex("9bffffffffffffffff")).is_err());
        assert!(decode(&hex("5bffffffffffffffff")).is_err());
    }

    #[test]
    fn round_trip_every_type() {
        let v = Value::map(vec![
            ("null", Value::Null),
            ("t", Value::Bool(true)),
            ("neg", Value::Int(-123456789012)),
            ("f", Value::Float(-0.5)),
            ("s", Value::Text("h\u{e9}llo".into())),
            ("b", Value::Bytes(vec![0, 255])),
            ("a", Value::Array(vec![Value::Null, Value::Map(vec![])])),
            ("tag", Value::Tag(1, Box::new(Value::Int(1700000000)))),
        ]);
        assert_eq!(decode(&encode(&v)).unwrap(), v);
    }
}
