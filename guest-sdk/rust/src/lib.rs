//! Write nuropb services in Rust.
//!
//! A service is a WASI preview1 reactor module that speaks nuropb ABI v1.
//! This crate provides everything between the ABI and your handlers: the
//! five exports (via [`export_service!`]), a bounded CBOR codec ([`Value`],
//! with the host's limits), typed params and results without serde
//! ([`record!`], [`FromValue`], [`IntoValue`]), the manifest, dispatch by
//! method name and topic, and a [`Context`] to call other services, send
//! commands, publish events and log.
//!
//! ```
//! use nuropb::{Context, Error, Service};
//!
//! nuropb::record! {
//!     /// Params of `hello`.
//!     pub struct HelloParams {
//!         /// Who to greet.
//!         pub name: String,
//!     }
//! }
//!
//! fn build() -> Service {
//!     let mut svc = Service::new("hello", "1.0.0");
//!     svc.method("hello", "Says hello", |ctx: &mut Context, p: HelloParams| -> Result<String, Error> {
//!         if p.name.is_empty() {
//!             return Err(Error::bad_request("name is empty"));
//!         }
//!         ctx.info("greeting");
//!         Ok(format!("hello, {}", p.name))
//!     });
//!     svc
//! }
//!
//! nuropb::export_service!(build);
//! # fn main() {}
//! ```
//!
//! Handlers return `Result<_, nuropb::Error>`; the error's code travels to
//! the caller. Missing or mistyped params are answered with `bad_request`
//! naming the field, an unknown method with `method_not_found`. Build with
//! `panic=abort`: a panic traps the instance, and the host discards it and
//! answers `trapped`.

#![warn(missing_docs)]

mod alloc;
mod cbor;
mod context;
mod convert;
mod envelope;
mod error;
mod host;
mod service;

pub use cbor::{decode, decode_with, encode, encode_into, Limits, Value};
pub use context::{log, now_ms, Context, Level};
pub use convert::{type_error, Bytes, FromValue, IntoValue, ParamSpec, Params};
pub use envelope::{Envelope, Kind};
pub use error::{Error, ErrorCode};
pub use service::{topic_matches, MethodRef, Service};

/// The ABI version this crate implements; `nuropb_abi_version` returns it.
pub const ABI_VERSION: i32 = 1;

/// Support code for the macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::convert::__private::*;
    use crate::service::Service;
    use std::cell::RefCell;

    thread_local! {
        static SERVICE: RefCell<Option<Service>> = RefCell::new(None);
        static MANIFEST: RefCell<Vec<u8>> = RefCell::new(Vec::new());
        static REPLY: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
    }

    /// Builds the service once per instance.
    fn with_service<T>(build: fn() -> Service, f: impl FnOnce(&mut Service) -> T) -> T {
        SERVICE.with(|s| {
            let mut s = s.borrow_mut();
            if s.is_none() {
                install_panic_hook();
                *s = Some(build());
            }
            f(s.as_mut().expect("built above"))
        })
    }

    #[cfg(target_arch = "wasm32")]
    fn install_panic_hook() {
        // The trap itself tells the host nothing; log why first.
        std::panic::set_hook(Box::new(|info| {
            crate::context::log(crate::Level::Error, &format!("panic: {}", info));
        }));
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn install_panic_hook() {}

    fn pack(ptr: *const u8, len: usize) -> i64 {
        ((ptr as usize as u64) << 32 | len as u64) as i64
    }

    /// `nuropb_abi_version`.
    pub fn abi_version() -> i32 {
        crate::ABI_VERSION
    }

    /// `nuropb_alloc`.
    pub fn alloc(size: i32) -> i32 {
        crate::alloc::alloc(size)
    }

    /// `nuropb_dealloc`.
    pub fn dealloc(ptr: i32, size: i32) {
        crate::alloc::dealloc(ptr, size)
    }

    /// `nuropb_describe`: the manifest, encoded once.
    pub fn describe(build: fn() -> Service) -> i64 {
        MANIFEST.with(|m| {
            let mut m = m.borrow_mut();
            if m.is_empty() {
                *m = with_service(build, |s| s.manifest());
            }
            pack(m.as_ptr(), m.len())
        })
    }

    /// `nuropb_handle`: the reply lives in a buffer reused across calls.
    pub fn handle(build: fn() -> Service, ptr: i32, len: i32) -> i64 {
        let input: &[u8] = if ptr == 0 || len <= 0 {
            &[]
        } else {
            // SAFETY: the host wrote len bytes at ptr, into a buffer it got
            // from nuropb_alloc, and does not touch it during the call.
            unsafe { std::slice::from_raw_parts(ptr as u32 as usize as *const u8, len as usize) }
        };
        REPLY.with(|r| {
            let mut out = r.borrow_mut();
            if out.capacity() > 4 << 20 {
                *out = Vec::with_capacity(1024);
            }
            with_service(build, |s| s.handle(input, &mut out));
            pack(out.as_ptr(), out.len())
        })
    }
}

/// Defines the ABI v1 exports (`nuropb_abi_version`, `nuropb_alloc`,
/// `nuropb_dealloc`, `nuropb_describe`, `nuropb_handle`) for the service
/// that `build` (a `fn() -> Service`) returns. Use it once, at the crate
/// root of a `cdylib`.
#[macro_export]
macro_rules! export_service {
    ($build:path) => {
        /// ABI v1: the ABI version.
        #[no_mangle]
        pub extern "C" fn nuropb_abi_version() -> i32 {
            $crate::__private::abi_version()
        }
        /// ABI v1: a buffer for the host to write into.
        #[no_mangle]
        pub extern "C" fn nuropb_alloc(size: i32) -> i32 {
            $crate::__private::alloc(size)
        }
        /// ABI v1: releases a buffer from `nuropb_alloc`.
        #[no_mangle]
        pub extern "C" fn nuropb_dealloc(ptr: i32, size: i32) {
            $crate::__private::dealloc(ptr, size)
        }
        /// ABI v1: the manifest as `ptr<<32 | len`.
        #[no_mangle]
        pub extern "C" fn nuropb_describe() -> i64 {
            $crate::__private::describe($build)
        }
        /// ABI v1: one envelope in, the reply out, as `ptr<<32 | len`.
        #[no_mangle]
        pub extern "C" fn nuropb_handle(ptr: i32, len: i32) -> i64 {
            $crate::__private::handle($build, ptr, len)
        }
    };
}
