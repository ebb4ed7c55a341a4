//! Enrolling a new factor: the secret, the otpauth URI that apps scan, the
//! confirmation codes, and the write that makes it active. Shared by `totp-admin
//! enroll` and enrollment at login.

use crate::config::Config;
use crate::otp::{self, OtpParams};
use crate::recovery::{self, HashedCode};
use crate::secret::{Answer, SecretKey};
use crate::store::{EnrollMode, Enrollment, Store, StoreError};
use std::fmt;
use zeroize::Zeroizing;

/// Bytes of a new key: 160 bits, as RFC 4226 recommends.
pub const KEY_BYTES: usize = 20;

/// A factor being set up, not yet confirmed or stored.
pub struct NewFactor {
    pub user: String,
    pub secret: SecretKey,
    pub params: OtpParams,
    /// `otpauth://totp/...`: contains the secret, so it is wiped like one.
    pub uri: Zeroizing<String>,
}

impl fmt::Debug for NewFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewFactor")
            .field("user", &self.user)
            .field("params", &self.params)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// This machine's name, for the issuer and the account label.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its whole length; gethostname NUL-terminates within it
    // or truncates, and we stop at the first NUL or the end.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Percent-encoding for one URI component (RFC 3986 unreserved characters pass).
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Key URI Format that authenticator apps read:
/// `otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=...&algorithm=...&digits=...&period=...`.
pub fn otpauth_uri(
    issuer: &str,
    account: &str,
    secret: &SecretKey,
    params: &OtpParams,
) -> Zeroizing<String> {
    let issuer = encode_component(issuer);
    Zeroizing::new(format!(
        "otpauth://totp/{issuer}:{}?secret={}&issuer={issuer}&algorithm={}&digits={}&period={}",
        encode_component(account),
        otp::encode_base32(secret).as_str(),
        params.algorithm.as_str(),
        params.digits,
        params.period
    ))
}

/// A new random factor named `factor` for `user` with the configured parameters.
pub fn new_factor(
    config: &Config,
    user: &str,
    factor: &str,
    host: &str,
) -> std::io::Result<NewFactor> {
    let secret = SecretKey::generate(KEY_BYTES)?;
    Ok(factor_from_secret(config, user, factor, host, secret))
}

/// The account name an authenticator app shows: `user@host`, and for any factor but
/// the first the factor's name after a slash (`alice@bastion/yubikey`), so that two
/// factors of one user are told apart in the app.
pub fn account_label(user: &str, factor: &str, host: &str) -> String {
    if factor == crate::store::DEFAULT_FACTOR {
        format!("{user}@{host}")
    } else {
        format!("{user}@{host}/{factor}")
    }
}

/// A factor named `factor` for `user` from a known key (migration, automation).
pub fn factor_from_secret(
    config: &Config,
    user: &str,
    factor: &str,
    host: &str,
    secret: SecretKey,
) -> NewFactor {
    let params = config.totp.params();
    let issuer = if config.totp.issuer.is_empty() {
        host
    } else {
        &config.totp.issuer
    };
    let uri = otpauth_uri(issuer, &account_label(user, factor, host), &secret, &params);
    NewFactor {
        user: user.to_string(),
        secret,
        params,
        uri,
    }
}

/// The step a confirmation code matches, if it is a current code (within the window)
/// for a step later than `after` (so two confirmation codes are two different codes).
pub fn confirmation_step(
    factor: &NewFactor,
    answer: &Answer,
    unix_time: u64,
    window: u64,
    after: Option<u64>,
) -> Option<u64> {
    let typed = answer.without_spaces();
    let code = otp::parse_code(typed.as_bytes(), factor.params.digits)?;
    let step = otp::verify_code(&factor.secret, &factor.params, code, unix_time, window)?;
    match after {
        Some(previous) if step <= previous => None,
        _ => Some(step),
    }
}

/// The longest factor name.
pub const MAX_FACTOR_NAME: usize = 32;

/// Checks a factor name (`phone`, `yubikey`, `spare-2`): 1 to [`MAX_FACTOR_NAME`]
/// letters, digits, `.`, `_` or `-`, not starting with `-` or `.`. Names are typed in
/// commands and printed in tables and logs: nothing else is needed, nothing else
/// allowed.
pub fn check_factor_name(name: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if name.is_empty()
        || name.len() > MAX_FACTOR_NAME
        || !name.bytes().all(allowed)
        || name.starts_with(['-', '.'])
    {
        return Err(format!(
            "factor name {name:?} is not allowed: use 1 to {MAX_FACTOR_NAME} letters, digits, \
             '.', '_' or '-', not starting with '-' or '.' (e.g. phone, yubikey, spare-2)"
        ));
    }
    Ok(())
}

/// Recovery codes to show once, and their hashes to store.
pub fn recovery_codes(count: u32) -> std::io::Result<(Vec<Zeroizing<String>>, Vec<HashedCode>)> {
    let codes = recovery::generate(count)?;
    let hashed = codes
        .iter()
        .map(|c| recovery::hash_new(c))
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok((codes, hashed))
}

/// Stores a confirmed factor named `name` (with `mode` saying what may be there
/// already) and, when given, a new set of recovery codes, in one transaction.
/// `confirmed_step` (the last confirmation code's step) is recorded as used, so the code
/// typed to confirm cannot log anyone in again. Returns the new factor's id.
pub fn activate(
    store: &dyn Store,
    factor: &NewFactor,
    name: &str,
    mode: EnrollMode,
    recovery: Option<&[HashedCode]>,
    confirmed_step: Option<u64>,
    now: i64,
) -> Result<i64, StoreError> {
    store.enroll(
        &factor.user,
        &Enrollment {
            name,
            secret: &factor.secret,
            params: factor.params,
            mode,
            recovery_codes: recovery,
            confirmed_step: confirmed_step.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
        },
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::Algorithm;
    use crate::store::{SqliteStore, StepOutcome, DEFAULT_FACTOR};

    fn factor() -> NewFactor {
        let mut config = Config::default();
        config.totp.issuer = "Example Corp".into();
        factor_from_secret(
            &config,
            "alice",
            DEFAULT_FACTOR,
            "bastion",
            SecretKey::from_bytes(b"12345678901234567890".to_vec()),
        )
    }

    #[test]
    fn factor_names() {
        for ok in [
            "default",
            "phone",
            "yubikey",
            "spare-2",
            "A.b_c",
            &"x".repeat(32),
        ] {
            assert!(check_factor_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "ph/one",
            "é",
            "a\nb",
            &"x".repeat(33),
        ] {
            assert!(check_factor_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uri_format() {
        let f = factor();
        assert_eq!(
            f.uri.as_str(),
            "otpauth://totp/Example%20Corp:alice%40bastion?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Example%20Corp&algorithm=SHA1&digits=6&period=30"
        );
        assert!(!format!("{f:?}").contains("GEZD"));
    }

    #[test]
    fn issuer_defaults_to_the_host() {
        let f = factor_from_secret(
            &Config::default(),
            "bob",
            DEFAULT_FACTOR,
            "web1",
            SecretKey::generate(20).unwrap(),
        );
        assert!(
            f.uri.starts_with("otpauth://totp/web1:bob%40web1?secret="),
            "{}",
            f.uri.as_str()
        );
        // Another factor of bob's is told apart in the app.
        let phone = factor_from_secret(
            &Config::default(),
            "bob",
            "phone",
            "web1",
            SecretKey::generate(20).unwrap(),
        );
        assert!(
            phone
                .uri
                .starts_with("otpauth://totp/web1:bob%40web1%2Fphone?secret="),
            "{}",
            phone.uri.as_str()
        );
    }

    #[test]
    fn confirmation_needs_a_later_step_the_second_time() {
        let f = factor();
        let now = 1_700_000_000u64;
        let step = otp::step_at(now, 30);
        let code = otp::code_for_step(&f.secret, &f.params, step);
        let answer = Answer::from(code.as_str());
        assert_eq!(confirmation_step(&f, &answer, now, 1, None), Some(step));
        assert_eq!(confirmation_step(&f, &answer, now, 1, Some(step)), None);
        let next = Answer::from(otp::code_for_step(&f.secret, &f.params, step + 1).as_str());
        assert_eq!(
            confirmation_step(&f, &next, now + 30, 1, Some(step)),
            Some(step + 1)
        );
        assert_eq!(
            confirmation_step(&f, &Answer::from("abc"), now, 1, None),
            None
        );
    }

    #[test]
    fn activation_marks_the_confirmation_step_used() {
        let store = SqliteStore::in_memory().unwrap();
        let f = factor();
        let (codes, hashed) = recovery_codes(3).unwrap();
        assert_eq!(codes.len(), 3);
        let id = activate(
            &store,
            &f,
            DEFAULT_FACTOR,
            EnrollMode::New,
            Some(&hashed),
            Some(100),
            5,
        )
        .unwrap();
        assert_eq!(
            store.accept_step("alice", id, 100, 6).unwrap(),
            StepOutcome::Replayed
        );
        assert_eq!(
            store.accept_step("alice", id, 101, 6).unwrap(),
            StepOutcome::Accepted
        );
        assert_eq!(store.recovery_codes_left("alice").unwrap(), 3);
        let listed = store.list().unwrap();
        assert_eq!(listed[0].factors[0].algorithm, Algorithm::Sha1);
    }
}
