//! The `nuropb` imports, and what stands in for them outside WebAssembly.

#[cfg(target_arch = "wasm32")]
mod imp {
    #[link(wasm_import_module = "nuropb")]
    extern "C" {
        #[link_name = "log"]
        fn nuropb_log(level: i32, ptr: i32, len: i32);
        #[link_name = "call"]
        fn nuropb_call(ptr: i32, len: i32) -> i64;
        #[link_name = "send"]
        fn nuropb_send(ptr: i32, len: i32) -> i32;
    }

    pub fn log(level: i32, msg: &[u8]) {
        // SAFETY: the host only reads msg.len() bytes at msg's address.
        unsafe { nuropb_log(level, msg.as_ptr() as i32, msg.len() as i32) }
    }

    /// Returns the reply frame, owned by the guest allocator, as (ptr, len).
    pub fn call(req: &[u8]) -> (u32, u32) {
        // SAFETY: as for log; the reply is a buffer from nuropb_alloc.
        let packed = unsafe { nuropb_call(req.as_ptr() as i32, req.len() as i32) } as u64;
        ((packed >> 32) as u32, packed as u32)
    }

    pub fn send(msg: &[u8]) -> i32 {
        // SAFETY: as for log.
        unsafe { nuropb_send(msg.as_ptr() as i32, msg.len() as i32) }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    //! Natively there is no host: logs go to stderr, calls and sends fail
    //! with `unavailable` (tests can install a fake host).
    use std::cell::RefCell;

    /// A stand-in for the host in native tests: gets the request or send
    /// frame and returns the reply frame (for send, an empty reply means 0).
    pub type FakeHost = Box<dyn FnMut(&[u8]) -> Vec<u8>>;

    thread_local! {
        pub static FAKE: RefCell<Option<FakeHost>> = RefCell::new(None);
        static REPLY: RefCell<Vec<u8>> = RefCell::new(Vec::new());
    }

    pub fn log(level: i32, msg: &[u8]) {
        eprintln!("nuropb log {}: {}", level, String::from_utf8_lossy(msg));
    }

    pub fn call(req: &[u8]) -> (u32, u32) {
        let reply = FAKE.with(|f| f.borrow_mut().as_mut().map(|h| h(req)));
        match reply {
            Some(r) => REPLY.with(|b| {
                *b.borrow_mut() = r;
                (1, b.borrow().len() as u32)
            }),
            None => (0, 0),
        }
    }

    pub fn send(msg: &[u8]) -> i32 {
        match FAKE.with(|f| f.borrow_mut().as_mut().map(|h| h(msg))) {
            Some(r) if r.is_empty() => 0,
            Some(r) => r[0] as i32,
            None => 8, // unavailable
        }
    }

    /// Borrows the reply stored by `call`.
    pub fn with_reply<T>(f: impl FnOnce(&[u8]) -> T) -> T {
        REPLY.with(|b| f(&b.borrow()))
    }
}

pub(crate) use imp::*;

/// Runs `f` over the reply frame of a call and then releases it.
pub(crate) fn with_call_reply<T>(req: &[u8], f: impl FnOnce(Option<&[u8]>) -> T) -> T {
    let (ptr, len) = call(req);
    if ptr == 0 || len == 0 {
        return f(None);
    }
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: the host wrote len bytes into a buffer it got from
        // nuropb_alloc(len) and hands its ownership to us.
        let out = f(Some(unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, len as usize) }));
        crate::alloc::dealloc(ptr as i32, len as i32);
        out
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        with_reply(|b| f(Some(b)))
    }
}
