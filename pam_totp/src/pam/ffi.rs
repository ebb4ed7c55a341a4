//! libpam's C interface: the types, constants and functions this project uses, on the
//! module side (`pam_get_item`, `pam_syslog`, ...) and on the application side
//! (`pam_start`, `pam_authenticate`, ...: `totp-admin`'s password check and the test
//! clients). Declarations only; the safe wrappers are in [`super::handle`] and in the
//! applications themselves.

use std::ffi::{c_char, c_int, c_void};

/// libpam's opaque handle.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct pam_handle_t {
    _private: [u8; 0],
}

/// `struct pam_message`.
#[repr(C)]
pub struct PamMessage {
    pub msg_style: c_int,
    pub msg: *const c_char,
}

/// `struct pam_response`.
#[repr(C)]
pub struct PamResponse {
    pub resp: *mut c_char,
    pub resp_retcode: c_int,
}

/// A conversation function. Unsafe to call: libpam and the application trust each
/// other with raw arrays whose sizes are only stated in `num_msg`.
pub type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int;

/// `struct pam_conv`.
#[repr(C)]
pub struct PamConv {
    pub conv: Option<ConvFn>,
    pub appdata_ptr: *mut c_void,
}

/// A `pam_set_data` clean-up function.
pub type CleanupFn = unsafe extern "C" fn(*mut pam_handle_t, *mut c_void, c_int);

#[link(name = "pam")]
extern "C" {
    // The module side.
    pub fn pam_get_item(
        pamh: *const pam_handle_t,
        item_type: c_int,
        item: *mut *const c_void,
    ) -> c_int;
    pub fn pam_get_user(
        pamh: *mut pam_handle_t,
        user: *mut *const c_char,
        prompt: *const c_char,
    ) -> c_int;
    pub fn pam_syslog(pamh: *const pam_handle_t, priority: c_int, fmt: *const c_char, ...);
    pub fn pam_set_data(
        pamh: *mut pam_handle_t,
        name: *const c_char,
        data: *mut c_void,
        cleanup: Option<CleanupFn>,
    ) -> c_int;
    pub fn pam_get_data(
        pamh: *const pam_handle_t,
        name: *const c_char,
        data: *mut *const c_void,
    ) -> c_int;
    pub fn pam_getenv(pamh: *mut pam_handle_t, name: *const c_char) -> *const c_char;

    // The application side.
    pub fn pam_start(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        pamh: *mut *mut pam_handle_t,
    ) -> c_int;
    pub fn pam_set_item(pamh: *mut pam_handle_t, item_type: c_int, item: *const c_void) -> c_int;
    pub fn pam_authenticate(pamh: *mut pam_handle_t, flags: c_int) -> c_int;
    pub fn pam_acct_mgmt(pamh: *mut pam_handle_t, flags: c_int) -> c_int;
    pub fn pam_setcred(pamh: *mut pam_handle_t, flags: c_int) -> c_int;
    pub fn pam_strerror(pamh: *mut pam_handle_t, errnum: c_int) -> *const c_char;
    pub fn pam_end(pamh: *mut pam_handle_t, status: c_int) -> c_int;
}

// Return codes (Linux-PAM's numbering).
pub const PAM_SUCCESS: c_int = 0;
pub const PAM_SYSTEM_ERR: c_int = 4;
pub const PAM_BUF_ERR: c_int = 5;
pub const PAM_AUTH_ERR: c_int = 7;
pub const PAM_AUTHINFO_UNAVAIL: c_int = 9;
pub const PAM_USER_UNKNOWN: c_int = 10;
pub const PAM_CONV_ERR: c_int = 19;
pub const PAM_IGNORE: c_int = 25;

// Items.
pub const PAM_SERVICE: c_int = 1;
pub const PAM_USER: c_int = 2;
pub const PAM_TTY: c_int = 3;
pub const PAM_RHOST: c_int = 4;
pub const PAM_CONV: c_int = 5;
pub const PAM_AUTHTOK: c_int = 6;
pub const PAM_RUSER: c_int = 8;

// Message styles.
pub const PAM_PROMPT_ECHO_OFF: c_int = 1;
pub const PAM_PROMPT_ECHO_ON: c_int = 2;
pub const PAM_ERROR_MSG: c_int = 3;
pub const PAM_TEXT_INFO: c_int = 4;
/// The most messages one conversation call may carry.
pub const PAM_MAX_NUM_MSG: c_int = 32;

// Flags.
pub const PAM_SILENT: c_int = 0x8000;
pub const PAM_DATA_REPLACE: c_int = 0x2000_0000;
