//! `nuropb_alloc` / `nuropb_dealloc`.
//!
//! Every block carries its size in an 8-byte header, so `dealloc` never
//! depends on the size the host passes back. One block (the last request
//! buffer) is kept and reused: a host that allocates the input, calls
//! `nuropb_handle` and deallocates the input costs no heap traffic per call.

use std::alloc::{self, Layout};
use std::cell::Cell;

const HEADER: usize = 8;
/// The reusable block is never grown past this, so one huge request does
/// not pin its memory for the life of the instance.
const MAX_CACHED: usize = (1 << 20) + 4096;

thread_local! {
    static CACHE: Cell<(*mut u8, usize, bool)> = Cell::new((std::ptr::null_mut(), 0, false));
}

fn layout(total: usize) -> Option<Layout> {
    Layout::from_size_align(total, HEADER).ok()
}

fn raw_alloc(total: usize) -> *mut u8 {
    match layout(total) {
        // SAFETY: total >= HEADER > 0.
        Some(l) => unsafe { alloc::alloc(l) },
        None => std::ptr::null_mut(),
    }
}

/// Returns a buffer of `size` bytes, or 0 when memory is exhausted.
pub fn alloc(size: i32) -> i32 {
    if size < 0 {
        return 0;
    }
    let total = size as usize + HEADER;
    let (base, cap, in_use) = CACHE.with(|c| c.get());
    let base = if !in_use && total <= MAX_CACHED {
        let (b, c) = if cap >= total {
            (base, cap)
        } else {
            if !base.is_null() {
                free_block(base, cap);
            }
            let c = total.next_power_of_two().max(4096).min(MAX_CACHED).max(total);
            (raw_alloc(c), c)
        };
        if b.is_null() {
            CACHE.with(|x| x.set((std::ptr::null_mut(), 0, false)));
            return 0;
        }
        CACHE.with(|x| x.set((b, c, true)));
        b
    } else {
        let b = raw_alloc(total);
        if b.is_null() {
            return 0;
        }
        // SAFETY: b points at total >= 8 bytes, aligned to 8.
        unsafe { (b as *mut u64).write(total as u64) };
        b
    };
    // SAFETY: within the block.
    unsafe { base.add(HEADER) as usize as i32 }
}

fn free_block(base: *mut u8, total: usize) {
    if let Some(l) = layout(total) {
        // SAFETY: base was allocated by raw_alloc(total).
        unsafe { alloc::dealloc(base, l) }
    }
}

/// Releases a buffer from [`alloc`]. The size argument is not trusted.
pub fn dealloc(ptr: i32, _size: i32) {
    if ptr == 0 {
        return;
    }
    let base = (ptr as u32 as usize - HEADER) as *mut u8;
    let (cbase, cap, _) = CACHE.with(|c| c.get());
    if base == cbase {
        CACHE.with(|c| c.set((cbase, cap, false)));
        return;
    }
    // SAFETY: every non-cached block starts with its total size.
    let total = unsafe { (base as *const u64).read() } as usize;
    free_block(base, total);
}
