//! SQLite's memory, wiped when it is freed.
//!
//! A login reads the user's rows through SQLite: its page cache, its lookaside slots and
//! the values of a statement hold copies of sealed keys, recovery-code hashes and
//! throttle rows, and SQLite frees them without clearing them. The keys are sealed, so
//! none of that opens a key; the blocks are still cleared with `explicit_bzero` before
//! they go back to malloc, so nothing of the store stays behind in the host process
//! (sshd, login) after `pam_end`. The bundled SQLite is the module's own copy, so its
//! allocator can be replaced without touching the host's.

use rusqlite::ffi;
use std::ffi::{c_int, c_void};

unsafe extern "C" fn wiping_malloc(n: c_int) -> *mut c_void {
    // SAFETY: malloc has no preconditions; SQLite never asks for a negative size.
    unsafe { libc::malloc(usize::try_from(n).unwrap_or(0).max(1)) }
}

unsafe extern "C" fn wiping_free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: p is a live block from wiping_malloc (SQLite's contract); all of its
    // usable bytes are writable until it is freed, and explicit_bzero's stores are not
    // removed as dead even though the block is freed next.
    unsafe {
        libc::explicit_bzero(p, libc::malloc_usable_size(p));
        libc::free(p);
    }
}

unsafe extern "C" fn wiping_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    // A new block and a copy, so the old block is wiped like any other.
    // SAFETY: as for wiping_malloc.
    let new = unsafe { wiping_malloc(n) };
    if new.is_null() || p.is_null() {
        return new;
    }
    // SAFETY: p is a live block of at least malloc_usable_size(p) bytes and new has
    // room for n; the two do not overlap.
    unsafe {
        let len = libc::malloc_usable_size(p).min(usize::try_from(n).unwrap_or(0));
        std::ptr::copy_nonoverlapping(p.cast::<u8>(), new.cast::<u8>(), len);
        wiping_free(p);
    }
    new
}

unsafe extern "C" fn wiping_size(p: *mut c_void) -> c_int {
    // SAFETY: p is a live block from wiping_malloc.
    let size = unsafe { libc::malloc_usable_size(p) };
    c_int::try_from(size).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn wiping_roundup(n: c_int) -> c_int {
    (n.saturating_add(7)) & !7
}

unsafe extern "C" fn wiping_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn wiping_shutdown(_: *mut c_void) {}

/// Gives SQLite the wiping allocator, once, before its first use. When SQLite was
/// already initialised (a program that used rusqlite before this crate) it keeps its
/// own allocator: then freed blocks are not wiped, which is all that is lost.
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let methods = ffi::sqlite3_mem_methods {
            xMalloc: Some(wiping_malloc),
            xFree: Some(wiping_free),
            xRealloc: Some(wiping_realloc),
            xSize: Some(wiping_size),
            xRoundup: Some(wiping_roundup),
            xInit: Some(wiping_init),
            xShutdown: Some(wiping_shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: SQLITE_CONFIG_MALLOC takes a pointer to a sqlite3_mem_methods, which
        // SQLite copies during the call; the functions it names are this file's and live
        // as long as the module.
        let _ = unsafe {
            ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_MALLOC,
                &methods as *const ffi::sqlite3_mem_methods,
            )
        };
    });
}

#[cfg(test)]
mod tests {
    /// A block freed through the allocator is zero before it goes back to malloc, and a
    /// reallocated block keeps its bytes.
    #[test]
    fn freed_blocks_are_wiped_and_realloc_copies() {
        // SAFETY: blocks from the allocator's own functions, used within their sizes.
        unsafe {
            let p = super::wiping_malloc(100).cast::<u8>();
            std::ptr::write_bytes(p, 0xa5, 100);
            let q = super::wiping_realloc(p.cast(), 300).cast::<u8>();
            assert!((0..100).all(|i| *q.add(i) == 0xa5));
            assert!(super::wiping_size(q.cast()) >= 300);
            super::wiping_free(q.cast());
        }
    }
}
