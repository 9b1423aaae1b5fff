//! Conversions between Rust types and [`Value`], without serde.
//!
//! [`FromValue`] turns params into typed values and says which manifest type
//! a param has; [`IntoValue`] turns results into values. The
//! [`record!`](crate::record) macro derives both, plus [`Params`], for a
//! struct with named fields.

use crate::cbor::Value;
use crate::error::Error;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

/// A type that can be built from a decoded [`Value`].
pub trait FromValue: Sized {
    /// Converts `v`, failing with a `bad_request` error that says what was
    /// expected and what arrived.
    fn from_value(v: Value) -> Result<Self, Error>;

    /// The manifest type name: `string`, `int`, `float`, `bool`, `bytes`,
    /// `list`, `map` or `any`.
    fn type_name() -> &'static str {
        "any"
    }

    /// The value to use when a field is absent; `None` makes the field
    /// required. Only `Option<T>` provides one.
    fn missing() -> Option<Self> {
        None
    }
}

/// A type that can be turned into a [`Value`] (a result, a param, an event).
pub trait IntoValue {
    /// Converts `self`.
    fn into_value(self) -> Value;

    /// The manifest type name of the result.
    fn type_name() -> &'static str
    where
        Self: Sized,
    {
        "any"
    }
}

/// The params of a method: a [`FromValue`] that can also describe its
/// keyword parameters for the manifest.
pub trait Params: FromValue {
    /// The parameters, for the manifest. Empty means "not described".
    fn param_specs() -> Vec<ParamSpec> {
        Vec::new()
    }
}

/// One keyword parameter in the manifest (`abi.Param`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// The key in the params map.
    pub name: &'static str,
    /// `string`, `int`, `float`, `bool`, `bytes`, `list`, `map` or `any`.
    pub ty: &'static str,
    /// Whether the caller must pass it.
    pub required: bool,
    /// From the field's doc comment.
    pub description: String,
}

/// A byte string (CBOR major type 2). `Vec<u8>` converts as a list of ints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

/// The error for a value of the wrong type.
pub fn type_error(want: &str, got: &Value) -> Error {
    Error::bad_request(format!("expected {}, got {}", want, got.type_name()))
}

impl FromValue for Value {
    fn from_value(v: Value) -> Result<Self, Error> {
        Ok(v)
    }
}
impl IntoValue for Value {
    fn into_value(self) -> Value {
        self
    }
}
impl Params for Value {}

impl FromValue for () {
    fn from_value(v: Value) -> Result<Self, Error> {
        match v {
            Value::Null => Ok(()),
            Value::Map(m) if m.is_empty() => Ok(()),
            Value::Map(m) => Err(Error::bad_request("this method takes no params").at_field(&m[0].0)),
            other => Err(type_error("no params", &other)),
        }
    }
}
impl IntoValue for () {
    fn into_value(self) -> Value {
        Value::Null
    }
}
impl Params for () {}

impl FromValue for bool {
    fn from_value(v: Value) -> Result<Self, Error> {
        match v {
            Value::Bool(b) => Ok(b),
            other => Err(type_error("bool", &other)),
        }
    }
    fn type_name() -> &'static str {
        "bool"
    }
}
impl IntoValue for bool {
    fn into_value(self) -> Value {
        Value::Bool(self)
    }
    fn type_name() -> &'static str {
        "bool"
    }
}

/// Reads an integer, including a tag 2/3 bignum, as i128.
fn int_of(v: &Value) -> Option<i128> {
    match v {
        Value::Int(i) => Some(*i as i128),
        Value::Tag(t @ (2 | 3), inner) => match &**inner {
            Value::Bytes(b) => {
                let digits: &[u8] = {
                    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
                    &b[start..]
                };
                if digits.len() > 8 {
                    return None;
                }
                let n = digits.iter().fold(0u64, |a, &x| a << 8 | x as u64) as i128;
                Some(if *t == 2 { n } else { -1 - n })
            }
            _ => None,
        },
        _ => None,
    }
}

macro_rules! int_impls {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: Value) -> Result<Self, Error> {
                match int_of(&v) {
                    Some(i) => <$t>::try_from(i).map_err(|_| Error::bad_request(format!(
                        "{} is out of range for {}", i, stringify!($t)))),
                    None => Err(type_error("int", &v)),
                }
            }
            fn type_name() -> &'static str { "int" }
        }
        impl IntoValue for $t {
            fn into_value(self) -> Value {
                let i = self as i128;
                if i >= i64::MIN as i128 && i <= i64::MAX as i128 {
                    Value::Int(i as i64)
                } else {
                    // Only u64/usize above i64::MAX get here: a positive bignum.
                    let b = (i as u64).to_be_bytes().to_vec();
                    Value::Tag(2, Box::new(Value::Bytes(b)))
                }
            }
            fn type_name() -> &'static str { "int" }
        }
    )*};
}
int_impls!(i8, i16, i32, i64, u8, u16, u32, u64, isize, usize);

impl FromValue for f64 {
    fn from_value(v: Value) -> Result<Self, Error> {
        match v {
            Value::Float(f) => Ok(f),
            Value::Int(i) => Ok(i as f64),
            other => Err(type_error("float", &other)),
        }
    }
    fn type_name() -> &'static str {
        "float"
    }
}
impl IntoValue for f64 {
    fn into_value(self) -> Value {
        Value::Float(self)
    }
    fn type_name() -> &'static str {
        "float"
    }
}
impl FromValue for f32 {
    fn from_value(v: Value) -> Result<Self, Error> {
        f64::from_value(v).map(|f| f as f32)
    }
    fn type_name() -> &'static str {
        "float"
    }
}
impl IntoValue for f32 {
    fn into_value(self) -> Value {
        Value::Float(self as f64)
    }
    fn type_name() -> &'static str {
        "float"
    }
}

impl FromValue for String {
    fn from_value(v: Value) -> Result<Self, Error> {
        match v {
            Value::Text(s) => Ok(s),
            other => Err(type_error("string", &other)),
        }
    }
    fn type_name() -> &'static str {
        "string"
    }
}
impl IntoValue for String {
    fn into_value(self) -> Value {
        Value::Text(self)
    }
    fn type_name() -> &'static str {
        "string"
    }
}
impl IntoValue for &str {
    fn into_value(self) -> Value {
        Value::Text(self.to_owned())
    }
    fn type_name() -> &'static str {
        "string"
    }
}

impl FromValue for Bytes {
    fn from_value(v: Value) -> Result<Self, Error> {
        match v {
            Value::Bytes(b) => Ok(Bytes(b)),
            other => Err(type_error("bytes", &other)),
        }
    }
    fn type_name() -> &'static str {
        "bytes"
    }
}
impl IntoValue for Bytes {
    fn into_value(self) -> Value {
        Value::Bytes(self.0)
    }
    fn type_name() -> &'static str {
        "bytes"
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value) -> Result<Self, Error> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
    fn type_name() -> &'static str {
        T::type_name()
    }
    fn missing() -> Option<Self> {
        Some(None)
    }
}
impl<T: IntoValue> IntoValue for Option<T> {
    fn into_value(self) -> Value {
        match self {
            Some(v) => v.into_value(),
            None => Value::Null,
        }
    }
    fn type_name() -> &'static str {
        T::type_name()
    }
}

impl<T: FromValue> FromValue for Vec<T> {
    fn from_value(v: Value) -> Result<Self, Error> {
        match v {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, x)| T::from_value(x).map_err(|e| e.at_index(i)))
                .collect(),
            other => Err(type_error("list", &other)),
        }
    }
    fn type_name() -> &'static str {
        "list"
    }
}
impl<T: IntoValue> IntoValue for Vec<T> {
    fn into_value(self) -> Value {
        Value::Array(self.into_iter().map(IntoValue::into_value).collect())
    }
    fn type_name() -> &'static str {
        "list"
    }
}

fn map_pairs(v: Value) -> Result<Vec<(String, Value)>, Error> {
    match v {
        Value::Map(m) => Ok(m),
        other => Err(type_error("map", &other)),
    }
}

impl<T: FromValue, S: BuildHasher + Default> FromValue for HashMap<String, T, S> {
    fn from_value(v: Value) -> Result<Self, Error> {
        let pairs = map_pairs(v)?;
        let mut m = HashMap::with_capacity_and_hasher(pairs.len(), S::default());
        for (k, x) in pairs {
            let x = T::from_value(x).map_err(|e| e.at_key(&k))?;
            m.insert(k, x);
        }
        Ok(m)
    }
    fn type_name() -> &'static str {
        "map"
    }
}
impl<T: IntoValue, S> IntoValue for HashMap<String, T, S> {
    fn into_value(self) -> Value {
        Value::Map(self.into_iter().map(|(k, v)| (k, v.into_value())).collect())
    }
    fn type_name() -> &'static str {
        "map"
    }
}
impl<T: FromValue, S: BuildHasher + Default> Params for HashMap<String, T, S> {}

impl<T: FromValue> FromValue for BTreeMap<String, T> {
    fn from_value(v: Value) -> Result<Self, Error> {
        let mut m = BTreeMap::new();
        for (k, x) in map_pairs(v)? {
            let x = T::from_value(x).map_err(|e| e.at_key(&k))?;
            m.insert(k, x);
        }
        Ok(m)
    }
    fn type_name() -> &'static str {
        "map"
    }
}
impl<T: IntoValue> IntoValue for BTreeMap<String, T> {
    fn into_value(self) -> Value {
        Value::Map(self.into_iter().map(|(k, v)| (k, v.into_value())).collect())
    }
    fn type_name() -> &'static str {
        "map"
    }
}
impl<T: FromValue> Params for BTreeMap<String, T> {}

macro_rules! value_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(x: $t) -> Value { x.into_value() }
        }
    )*};
}
value_from!(bool, i32, i64, u32, u64, usize, f64, String, &str, Bytes);

/// Support code for the macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    /// Params of a struct: a map, or nothing at all.
    pub fn params_map(v: Value) -> Result<Vec<(String, Value)>, Error> {
        match v {
            Value::Null => Ok(Vec::new()),
            Value::Map(m) => Ok(m),
            other => Err(type_error("a map of params", &other)),
        }
    }

    /// Converts one field, naming it in the error.
    pub fn field<T: FromValue>(name: &str, v: Option<Value>) -> Result<T, Error> {
        match v {
            Some(v) => T::from_value(v).map_err(|e| e.at_field(name)),
            None => T::missing().ok_or_else(|| Error::bad_request("is required but missing").at_field(name)),
        }
    }

    /// The error for a key the struct does not have.
    pub fn unknown_field(name: &str) -> Error {
        Error::bad_request("is not a known param").at_field(name)
    }

    /// Joins doc comment lines into one description.
    pub fn doc(lines: &[&str]) -> String {
        let mut s = String::new();
        for l in lines {
            let l = l.trim();
            if l.is_empty() {
                continue;
            }
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(l);
        }
        s
    }
}

/// Defines a struct with named fields and derives [`FromValue`],
/// [`IntoValue`] and [`Params`] for it, so it can be a method's typed params,
/// its result, or a nested field of either.
///
/// Field doc comments become the param descriptions in the manifest.
/// `Option<T>` fields are optional; every other field is required. Unknown
/// keys are refused with `bad_request`, naming the key.
///
/// ```
/// nuropb::record! {
///     /// Params of `hello`.
///     #[derive(Debug, Clone)]
///     pub struct HelloParams {
///         /// Who to greet.
///         pub name: String,
///         /// How many times (default 1).
///         pub times: Option<u32>,
///     }
/// }
/// ```
#[macro_export]
macro_rules! record {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $fdoc:expr])*
                $fvis:vis $fname:ident : $fty:ty
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $(
                $(#[doc = $fdoc])*
                $fvis $fname: $fty,
            )*
        }

        impl $crate::FromValue for $name {
            fn from_value(v: $crate::Value) -> ::std::result::Result<Self, $crate::Error> {
                $( let mut $fname: ::std::option::Option<$crate::Value> = ::std::option::Option::None; )*
                for (key, val) in $crate::__private::params_map(v)? {
                    $(
                        if key == stringify!($fname) {
                            $fname = ::std::option::Option::Some(val);
                            continue;
                        }
                    )*
                    let _ = val;
                    return ::std::result::Result::Err($crate::__private::unknown_field(&key));
                }
                ::std::result::Result::Ok($name {
                    $( $fname: $crate::__private::field(stringify!($fname), $fname)?, )*
                })
            }
            fn type_name() -> &'static str { "map" }
        }

        impl $crate::IntoValue for $name {
            fn into_value(self) -> $crate::Value {
                $crate::Value::Map(::std::vec![
                    $( (::std::string::String::from(stringify!($fname)), $crate::IntoValue::into_value(self.$fname)), )*
                ])
            }
            fn type_name() -> &'static str { "map" }
        }

        impl $crate::Params for $name {
            fn param_specs() -> ::std::vec::Vec<$crate::ParamSpec> {
                ::std::vec![
                    $( $crate::ParamSpec {
                        name: stringify!($fname),
                        ty: <$fty as $crate::FromValue>::type_name(),
                        required: <$fty as $crate::FromValue>::missing().is_none(),
                        description: $crate::__private::doc(&[$($fdoc),*]),
                    }, )*
                ]
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::{ErrorCode, FromValue, IntoValue, Params, Value};
    use std::collections::{BTreeMap, HashMap};

    crate::record! {
        /// An item.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Item {
            /// Stock keeping unit.
            pub sku: String,
            /// How many.
            pub qty: u32,
        }
    }

    crate::record! {
        #[derive(Debug, PartialEq)]
        struct Order {
            items: Vec<Item>,
            note: Option<String>,
            tags: HashMap<String, i64>,
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn struct_round_trip_and_errors() {
        let v = Value::map(vec![
            ("items", Value::Array(vec![Value::map(vec![("sku", text("a")), ("qty", Value::Int(2))])])),
            ("tags", Value::Map(vec![])),
        ]);
        let o = Order::from_value(v).unwrap();
        assert_eq!(o.items, vec![Item { sku: "a".into(), qty: 2 }]);
        assert_eq!(o.note, None);

        let bad = Value::map(vec![
            ("items", Value::Array(vec![
                Value::map(vec![("sku", text("a")), ("qty", Value::Int(2))]),
                Value::map(vec![("sku", text("b")), ("qty", text("x"))]),
            ])),
            ("tags", Value::Map(vec![])),
        ]);
        let e = Order::from_value(bad).unwrap_err();
        assert_eq!(e.code(), &ErrorCode::BadRequest);
        assert_eq!(e.field(), "items[1].qty");
        assert_eq!(e.message(), "param `items[1].qty`: expected int, got string");

        let e = Order::from_value(Value::map(vec![("tags", Value::Map(vec![]))])).unwrap_err();
        assert_eq!(e.message(), "param `items`: is required but missing");
        let e = Item::from_value(Value::map(vec![("sku", text("a")), ("qty", Value::Int(1)), ("x", Value::Null)]))
            .unwrap_err();
        assert_eq!(e.field(), "x");
        let e = Item::from_value(Value::map(vec![("sku", text("a")), ("qty", Value::Int(-1))])).unwrap_err();
        assert!(e.message().contains("out of range for u32"), "{}", e);
        assert!(Item::from_value(Value::Array(vec![])).is_err());

        let specs = Item::param_specs();
        assert_eq!(specs[0].name, "sku");
        assert_eq!(specs[0].ty, "string");
        assert!(specs[0].required);
        assert_eq!(specs[0].description, "Stock keeping unit.");
        assert_eq!(specs[1].ty, "int");
        assert!(!Order::param_specs()[1].required);

        let back = Item { sku: "z".into(), qty: 9 }.into_value();
        assert_eq!(back, Value::map(vec![("sku", text("z")), ("qty", Value::Int(9))]));
    }

    #[test]
    fn primitives() {
        assert_eq!(u64::MAX.into_value().to_cbor(), vec![0xc2, 0x48, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(u64::from_value(u64::MAX.into_value()).unwrap(), u64::MAX);
        assert!(i64::from_value(u64::MAX.into_value()).is_err());
        assert_eq!(f64::from_value(Value::Int(3)).unwrap(), 3.0);
        assert!(String::from_value(Value::Int(3)).is_err());
        let m: BTreeMap<String, bool> = FromValue::from_value(Value::map(vec![("k", Value::Bool(true))])).unwrap();
        assert_eq!(m["k"], true);
        assert_eq!(<()>::from_value(Value::Null).unwrap(), ());
        assert!(<()>::from_value(Value::map(vec![("k", Value::Null)])).is_err());
    }
}
