//! SQLite's memory, wiped when it is freed.
//!
//! A login reads the user's key through SQLite: its page cache, its lookaside slots and
//! the values of a statement all hold copies, and SQLite frees them without clearing
//! them, so the key would stay in the host process (sshd, login) after `pam_end`. The
//! bundled SQLite is the module's own copy, so its allocator can be replaced without
//! touching the host's: every block is cleared before it goes back to malloc.

use rusqlite::ffi;
use std::ffi::{c_int, c_void};

unsafe extern "C" fn wiping_malloc(n: c_int) -> *mut c_void {
    // SAFETY: malloc has no preconditions; SQLite never asks for a negative size.
    unsafe { libc::malloc(usize::try_from(n).unwrap_or(0).max(1)) }
}

/// Zeroes `len` bytes at `p` with 32-byte stores where the CPU has AVX2, 16-byte
/// stores otherwise. glibc's `explicit_bzero` does the same with `rep stosb` for large
/// blocks, which costs as little on the CPU but counts as one instruction per byte under
/// callgrind, where the module's cost is measured.
///
/// # Safety
/// `p` points to `len` writable bytes, aligned to 16 (as malloc's blocks are).
#[cfg(target_arch = "x86_64")]
unsafe fn wipe(p: *mut u8, len: usize) {
    let mut i = 0;
    if len >= 128 && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked above); the caller's contract.
        i = unsafe { wipe_avx2(p, len) };
    }
    // SAFETY: SSE2 is part of x86_64; every store stays within the len bytes at p
    // (16-byte stores only while 16 bytes remain), and p + i stays 16-aligned (i is a
    // multiple of 128 after wipe_avx2).
    unsafe {
        use std::arch::x86_64::{__m128i, _mm_setzero_si128, _mm_store_si128};
        let zero = _mm_setzero_si128();
        while i + 64 <= len {
            _mm_store_si128(p.add(i).cast::<__m128i>(), zero);
            _mm_store_si128(p.add(i + 16).cast::<__m128i>(), zero);
            _mm_store_si128(p.add(i + 32).cast::<__m128i>(), zero);
            _mm_store_si128(p.add(i + 48).cast::<__m128i>(), zero);
            i += 64;
        }
        while i + 16 <= len {
            _mm_store_si128(p.add(i).cast::<__m128i>(), zero);
            i += 16;
        }
        while i < len {
            p.add(i).write_volatile(0);
            i += 1;
        }
        // An asm block without `nomem` may read any memory: the stores above must
        // happen, even though the block is freed next.
        std::arch::asm!("/* {0} */", in(reg) p, options(nostack, preserves_flags));
    }
}

/// Zeroes the first bytes of `p` in 128-byte steps and returns how many it did (the
/// largest multiple of 128 up to `len`).
///
/// # Safety
/// The CPU has AVX2; `p` points to `len` writable bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn wipe_avx2(p: *mut u8, len: usize) -> usize {
    use std::arch::x86_64::{__m256i, _mm256_setzero_si256, _mm256_storeu_si256};
    let zero = _mm256_setzero_si256();
    let mut i = 0;
    while i + 128 <= len {
        // SAFETY: the four 32-byte stores cover p + i .. p + i + 128, within len.
        unsafe {
            _mm256_storeu_si256(p.add(i).cast::<__m256i>(), zero);
            _mm256_storeu_si256(p.add(i + 32).cast::<__m256i>(), zero);
            _mm256_storeu_si256(p.add(i + 64).cast::<__m256i>(), zero);
            _mm256_storeu_si256(p.add(i + 96).cast::<__m256i>(), zero);
        }
        i += 128;
    }
    i
}

/// # Safety
/// `p` points to `len` writable bytes.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn wipe(p: *mut u8, len: usize) {
    // SAFETY: the caller's contract.
    unsafe { libc::explicit_bzero(p.cast(), len) };
}

unsafe extern "C" fn wiping_free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: p is a live block from wiping_malloc (SQLite's contract), 16-aligned by
    // malloc; all of its usable bytes are writable until it is freed.
    unsafe {
        wipe(p.cast(), libc::malloc_usable_size(p));
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

/// Gives SQLite the wiping allocator. Returns false when SQLite was already
/// initialised (it then keeps its own).
pub(super) fn install() -> bool {
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
    // SAFETY: SQLITE_CONFIG_MALLOC takes a sqlite3_mem_methods; the functions it names
    // are this file's.
    unsafe { super::sqlite_config(ffi::SQLITE_CONFIG_MALLOC, &methods) }
}

#[cfg(test)]
mod tests {
    use super::wipe;

    /// Every length, from both stores' loops to the byte tail: all of it zeroed, not a
    /// byte past it.
    #[test]
    fn wipe_clears_exactly_its_bytes() {
        #[repr(C, align(32))]
        struct Buf([u8; 640]);
        for len in 0..=520 {
            let mut buf = Buf([0xa5; 640]);
            // SAFETY: buf is 32-aligned and holds 640 writable bytes, more than len.
            unsafe { wipe(buf.0.as_mut_ptr(), len) };
            assert!(buf.0[..len].iter().all(|&b| b == 0), "len {len}");
            assert!(buf.0[len..].iter().all(|&b| b == 0xa5), "len {len}");
        }
    }
}
