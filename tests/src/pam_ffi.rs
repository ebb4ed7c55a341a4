//! The libpam client calls the test programs need: the project's one set of libpam
//! declarations (`pam_totp::pam::ffi`), and helpers for conversation answers.

pub use pam_totp::pam::ffi::*;
use std::ffi::c_char;

/// A malloc'd copy of `bytes` with a terminating NUL, for a conversation response
/// (libpam frees it).
pub fn malloc_answer(bytes: &[u8]) -> *mut c_char {
    // SAFETY: malloc of len + 1 bytes; checked for null below.
    let copy = unsafe { libc::malloc(bytes.len() + 1) } as *mut u8;
    if copy.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: copy has room for len + 1 bytes and does not overlap bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), copy, bytes.len());
        *copy.add(bytes.len()) = 0;
    }
    copy.cast()
}

/// A calloc'd array of `n` empty responses (libpam frees it).
pub fn alloc_responses(n: usize) -> *mut PamResponse {
    // SAFETY: calloc of n zeroed responses; the caller checks for null.
    unsafe { libc::calloc(n, std::mem::size_of::<PamResponse>()) as *mut PamResponse }
}
