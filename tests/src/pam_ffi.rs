//! The handful of libpam client calls the test programs need, declared by hand.

pub use pam_totp::pam::{ConvFn, PamConv, PamMessage, PamResponse};
use std::ffi::{c_char, c_int, c_void};

#[link(name = "pam")]
extern "C" {
    pub fn pam_start(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        pamh: *mut *mut c_void,
    ) -> c_int;
    pub fn pam_set_item(pamh: *mut c_void, item_type: c_int, item: *const c_void) -> c_int;
    pub fn pam_authenticate(pamh: *mut c_void, flags: c_int) -> c_int;
    pub fn pam_acct_mgmt(pamh: *mut c_void, flags: c_int) -> c_int;
    pub fn pam_setcred(pamh: *mut c_void, flags: c_int) -> c_int;
    pub fn pam_end(pamh: *mut c_void, status: c_int) -> c_int;
}

pub const PAM_TTY: c_int = 3;
pub const PAM_RHOST: c_int = 4;
pub const PAM_PROMPT_ECHO_OFF: c_int = 1;
pub const PAM_PROMPT_ECHO_ON: c_int = 2;

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
