//! The extension's allocator: mimalloc for every allocation the core makes (states, values,
//! records), measured faster than the system allocator on the batch path.

use libmimalloc_sys::{mi_option_set_default, mi_option_t};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
