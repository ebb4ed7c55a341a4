//! The PAM glue, fenced the way a reviewer wants it: [`ffi`] declares libpam's C
//! interface (shared with `totp-admin`'s password check and the test clients),
//! [`handle`] wraps one handle in safe calls, [`module`] holds the `pam_sm_*` entry
//! points and the one mapping from an outcome to a PAM code, and [`enroll_dialog`] the
//! enrollment inside a login. Nothing outside this folder calls into libpam from the
//! module.

pub mod enroll_dialog;
pub mod ffi;
pub mod handle;
pub mod module;

pub use ffi::{ConvFn, PamConv, PamMessage, PamResponse};
pub use module::pam_code;

/// The prompt for the code (a contract: tests and expect scripts match it).
pub const CODE_PROMPT: &str = "Verification code: ";

/// The time now, in unix seconds (-1 before 1970: every code check then fails).
pub(crate) fn unix_now() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => -1,
    }
}
