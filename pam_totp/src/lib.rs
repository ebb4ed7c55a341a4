//! pam_totp: time-based one-time passwords (RFC 6238) as a second factor for Linux
//! logins.
//!
//! This crate is both the PAM module (`pam_totp.so`, built from the `cdylib`) and the
//! library that `totp-admin` and the tests use. A login flows through it like this:
//! [`pam`] reads the PAM items and module arguments, [`config`] loads and checks the
//! configuration, [`policy`] decides whether the user is exempt, mandatory or optional
//! (with group membership from [`account`]), [`auth`] decides what to ask and checks the
//! answer against [`otp`] codes or [`recovery`] codes, using the [`store`] for the
//! factor, the replay step and the [`throttle`] counters; [`log`] writes the decision.
//! Only [`pam`] talks to libpam, and it alone maps an outcome to a PAM return code.

pub mod account;
pub mod auth;
pub mod config;
pub mod enroll;
pub mod first_factor;
pub mod gauth;
pub mod log;
pub mod otp;
pub mod pam;
pub mod policy;
pub mod qr;
pub mod recovery;
pub mod secret;
pub mod stack;
pub mod store;
#[cfg(feature = "postgresql")]
pub mod store_pg;
pub mod throttle;
