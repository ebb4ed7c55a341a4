//! What the reliability tests (tests/tests/reliability.rs) and their driver
//! (`pam-stress`) agree on: the names and keys of many enrolled users, a store holding
//! them, and a PAM service that libpam reads from the sandbox's /etc/pam.d.

use crate::store_support::{enrolled, write_factors, Enrolled};
use pam_totp::otp::{code_at, Algorithm, OtpParams};
use pam_totp::secret::SecretKey;
use std::path::Path;

/// The parameters every user here is enrolled with.
pub const PARAMS: OtpParams = OtpParams {
    algorithm: Algorithm::Sha1,
    digits: 6,
    period: 30,
};

/// User `index` of the users named `prefix`: `load17`.
pub fn user(prefix: &str, index: usize) -> String {
    format!("{prefix}{index}")
}

/// User `index`'s key: 20 bytes, different for every user and prefix.
pub fn secret(prefix: &str, index: usize) -> SecretKey {
    let mut bytes = format!("{prefix}-{index:016}").into_bytes();
    bytes.resize(20.max(bytes.len()), b'.');
    SecretKey::from_bytes(bytes)
}

/// Enrolls `count` users `prefix0..prefix{count-1}` into the store at `path`
/// (created with its host key `key` when missing), each with their own key, in one
/// transaction: a store with 80,000 users is made in about a second.
pub fn enroll_many(path: &Path, key: &Path, prefix: &str, count: usize) {
    enroll_many_with(path, key, prefix, count, |_| None);
}

/// [`enroll_many`], but user `i` gets the factor `own(i)` when it gives one (a random
/// key that a test looks for, say), written in its place among the others.
pub fn enroll_many_with(
    path: &Path,
    key: &Path,
    prefix: &str,
    count: usize,
    mut own: impl FnMut(usize) -> Option<Enrolled>,
) {
    write_factors(
        path,
        key,
        (0..count).map(|i| {
            let factor = own(i).unwrap_or_else(|| enrolled(secret(prefix, i), PARAMS, 1));
            (user(prefix, i), factor)
        }),
    );
}

/// `PRAGMA integrity_check` of the store at `path`, as SQLite words it ("ok").
pub fn integrity(path: &Path) -> String {
    let conn = crate::store_support::connect(path).expect("open the store");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

/// A code that no step within two of `t` has: the window (1 step either side by
/// default) and a step of margin for the clock moving on before the answer is checked.
pub fn code_not_near(key: &SecretKey, params: &OtpParams, t: u64) -> String {
    let start = t.saturating_sub(2 * params.period);
    let near: Vec<String> = (0..5)
        .map(|k| code_at(key, params, start + k * params.period).to_string())
        .collect();
    let mut wrong = near[2].clone();
    // Shifting every digit gives 9 other codes; at most 4 of them are nearby codes.
    for _ in 0..9 {
        wrong = wrong
            .bytes()
            .map(|b| if b == b'9' { '0' } else { (b + 1) as char })
            .collect();
        if !near.contains(&wrong) {
            break;
        }
    }
    wrong
}
