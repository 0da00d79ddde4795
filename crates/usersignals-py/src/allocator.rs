//! The extension's allocator: mimalloc for every allocation the core makes (states, values,
//! records), measured faster than the system allocator on the batch path.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_option_set_default, mi_option_t, mi_realloc,
    mi_realloc_aligned, mi_zalloc, mi_zalloc_aligned,
};

#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

/// mimalloc, through its plain entry points wherever they give the alignment asked for.
/// The `mimalloc` crate's allocator calls `mi_malloc_aligned` for every allocation, whose
/// alignment checks come on top of `mi_malloc`'s fast path (about 55 instructions an
/// allocation, 1.6 M of them in a 50,000-event bench/engine.py run, nearly all aligned to 8
/// or less): `BatchSession.apply` 734.7 → 707.1 M instructions, the engine 1,683.7 →
/// 1,641.8 M (callgrind, in batches of 10,000).
struct MiMalloc;

/// Whether `mi_malloc(size)` is aligned to `align`: every mimalloc block is aligned to 8
/// (block sizes are whole words), and a block of 16 bytes or more to 16
/// (`MI_MAX_ALIGN_SIZE`, asserted of every block in mimalloc's `alloc.c`).
fn plain(size: usize, align: usize) -> bool {
    align <= 8 || (align <= 16 && size >= 16)
}

// SAFETY: each method hands the layout's size to mimalloc, by the plain entry point only
// when `plain` says its blocks are aligned to the layout's alignment (else the aligned one,
// as the `mimalloc` crate does); `mi_free` and `mi_realloc` take a block from any of them.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.size(), layout.align()) {
            mi_malloc(layout.size()) as *mut u8
        } else {
            mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.size(), layout.align()) {
            mi_zalloc(layout.size()) as *mut u8
        } else {
            mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi_free(ptr as *mut c_void);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(new_size, layout.align()) {
            mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
        }
    }
}

/// `mi_option_purge_delay`: its place in `mi_option_e` (mimalloc.h of the mimalloc v3
/// sources libmimalloc-sys 0.1.49 builds; the crate names no constant for it).
const PURGE_DELAY: mi_option_t = 15;

/// How long freed memory waits before it goes back to the OS, in ms: mimalloc v2's default.
/// v3's (1,000 ms) outlasts the time between two micro-batches, so the processor's RSS
/// crept up by about 40 MB per million events (`bench/engine.py --rss`); at 10 ms it creeps
/// far less. The price: memory returned between batches is faulted back in by the next one,
/// about 5-10 % of the engine's CPU time measured at 400,000 events (0 ms costs more). A
/// `MIMALLOC_PURGE_DELAY` in the environment still wins: this only sets the default.
const PURGE_DELAY_MS: std::os::raw::c_long = 10;

pub fn configure() {
    // SAFETY: sets one option's default; mimalloc reads options atomically, and a wrong
    // value of this one changes only when memory is returned, never what is allocated.
    unsafe { mi_option_set_default(PURGE_DELAY, PURGE_DELAY_MS) };
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use proptest::prelude::*;

    use super::ALLOCATOR;

    proptest! {
        /// Every allocation, zeroed allocation and reallocation is aligned as its layout
        /// asks, whichever entry point `plain` chose, and a zeroed one is zeros.
        #[test]
        fn blocks_are_aligned_as_asked(
            size in 1usize..5000,
            grown in 1usize..70_000,
            align_log in 0u32..8,
            zeroed in any::<bool>(),
        ) {
            let align = 1usize << align_log;
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: a layout of non-zero size; the block is written within its size,
            // reallocated with the layout it was allocated with and freed with the layout of
            // its last size.
            unsafe {
                let ptr = if zeroed { ALLOCATOR.alloc_zeroed(layout) } else { ALLOCATOR.alloc(layout) };
                prop_assert!(!ptr.is_null());
                prop_assert_eq!(ptr as usize % align, 0);
                if zeroed {
                    prop_assert!(std::slice::from_raw_parts(ptr, size).iter().all(|b| *b == 0));
                }
                ptr.write_bytes(0xA5, size);
                let moved = ALLOCATOR.realloc(ptr, layout, grown);
                prop_assert!(!moved.is_null());
                prop_assert_eq!(moved as usize % align, 0);
                let kept = size.min(grown);
                prop_assert!(std::slice::from_raw_parts(moved, kept).iter().all(|b| *b == 0xA5));
                ALLOCATOR.dealloc(moved, Layout::from_size_align(grown, align).unwrap());
            }
        }
    }
}
