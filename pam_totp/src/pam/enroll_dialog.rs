//! Enrollment inside the login (`enroll_at_login`): the QR code, the key and the URI,
//! one conversation message per line; the confirmation code(s); the recovery codes,
//! followed by a prompt (sshd shows module text only together with a following
//! prompt). The confirmed factor waits with the PAM handle for the account phase,
//! which libpam runs only after the whole auth stack passed: a login whose password
//! failed never stores a factor.

use super::handle::{Handle, Style};
use super::CODE_PROMPT;
use crate::auth::{DenyReason, Login, Method, Outcome};
use crate::config::{Config, QrStyle};
use crate::enroll::{self, NewFactor};
use crate::log::login_fields;
use crate::otp::grouped_base32;
use crate::qr::qr_lines;
use crate::recovery::HashedCode;
use crate::stack;
use crate::store::{open_for_login, EnrollMode, DEFAULT_FACTOR};
use std::cell::Cell;
use std::ffi::{c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// The name under which a pending enrollment waits for the account phase.
const PENDING: &CStr = c"pam_totp_pending_enrollment";
/// Wrong confirmation codes allowed during enrollment at login.
const ENROLL_ATTEMPTS: u32 = 3;

/// A factor confirmed during the auth phase, waiting for the account phase.
struct Pending {
    factor: NewFactor,
    recovery: Vec<HashedCode>,
    step: u64,
    stored: Cell<bool>,
}

/// Shows the new key, asks for the confirmation code(s), shows the recovery codes,
/// and keeps the factor for the account phase.
pub fn enroll_at_login(handle: &Handle, config: &Config, login: &Login<'_>) -> Outcome {
    // Without the account line the factor would never be stored, and the user would
    // keep coming in on the password alone: refuse rather than pretend.
    if stack::has_totp_account(Path::new(stack::PAM_DIR), login.service) == Some(false) {
        return Outcome::Unavailable(format!(
            "configuration error: enrollment at login needs 'account required pam_totp.so' in {}/{}",
            stack::PAM_DIR,
            login.service
        ));
    }
    let host = enroll::hostname();
    let factor = match enroll::new_factor(config, login.user, crate::store::DEFAULT_FACTOR, &host) {
        Ok(f) => f,
        Err(e) => return Outcome::Unavailable(format!("cannot generate a key: {e}")),
    };
    let key = grouped_base32(&factor.secret);
    let mut lines =
        vec!["Two-factor authentication is required for this account. Set it up now.".to_string()];
    let qr = qr_lines(&factor.uri, config.enroll.qr);
    // No colours can reach an SSH client: the drawing suits one background only, so say
    // which, and where to turn when the user's terminal has the other.
    let background = match config.enroll.qr {
        QrStyle::DarkTerminal => "dark",
        QrStyle::LightTerminal => "light",
        QrStyle::None => "",
    };
    if !qr.is_empty() {
        lines.push(format!(
            "Scan this QR code with an authenticator app (drawn for a terminal with a {background} background)."
        ));
        lines.push("If it does not scan, type the key below into your app.".to_string());
        lines.extend(qr);
    }
    let key_line = zeroize::Zeroizing::new(format!("Or enter this key: {}", key.as_str()));
    let uri_line = zeroize::Zeroizing::new(format!("URI: {}", factor.uri.as_str()));
    let shown = lines
        .iter()
        .map(String::as_str)
        .chain([key_line.as_str(), uri_line.as_str()])
        .try_for_each(|line| handle.tell(line));
    if shown.is_err() {
        return Outcome::ConversationFailed;
    }
    let mut confirmed: Option<u64> = None;
    for round in 0..config.policy.enroll_confirm_codes {
        let prompt = if round == 0 {
            CODE_PROMPT
        } else {
            "Next verification code: "
        };
        let mut step = None;
        for _ in 0..ENROLL_ATTEMPTS {
            let Ok(answer) = handle.prompt_hidden(prompt) else {
                return Outcome::ConversationFailed;
            };
            // The time the answer arrived, not the time the key was shown.
            let now = u64::try_from(super::unix_now()).unwrap_or(0);
            step = enroll::confirmation_step(&factor, &answer, now, config.totp.window, confirmed);
            if step.is_some() {
                break;
            }
            let _ = handle.converse(
                Style::Error,
                if round == 0 {
                    "That code is not right. Try again."
                } else {
                    "That code is not right: wait for the app to show the next code."
                },
            );
        }
        match step {
            Some(s) => confirmed = Some(s),
            None => return Outcome::Denied(DenyReason::EnrollmentNotConfirmed),
        }
    }
    let (codes, hashed) = match enroll::recovery_codes(config.recovery.codes) {
        Ok(c) => c,
        Err(e) => return Outcome::Unavailable(format!("cannot generate recovery codes: {e}")),
    };
    if !codes.is_empty() {
        let intro =
            "Recovery codes (each works once, if you lose your phone). They are shown only now:";
        if std::iter::once(intro)
            .chain(codes.iter().map(|c| c.as_str()))
            .try_for_each(|line| handle.tell(line))
            .is_err()
        {
            return Outcome::ConversationFailed;
        }
    }
    if handle
        .converse(Style::Visible, "Press Enter when you have saved them")
        .is_err()
    {
        return Outcome::ConversationFailed;
    }
    let pending = Box::new(Pending {
        factor,
        recovery: hashed,
        step: confirmed.unwrap_or(0),
        stored: Cell::new(false),
    });
    if handle.set_data(PENDING, pending, drop_pending).is_err() {
        return Outcome::Unavailable("cannot keep the enrollment for the account phase".into());
    }
    Outcome::Success(Method::EnrolledAtLogin)
}

/// Frees a pending enrollment at pam_end (or on replacement). One that was never
/// stored after a successful transaction means the stack lacks the account line.
unsafe extern "C" fn drop_pending(
    pamh: *mut super::ffi::pam_handle_t,
    data: *mut c_void,
    status: c_int,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if data.is_null() {
            return;
        }
        // SAFETY: data is the Box leaked by Handle::set_data in enroll_at_login,
        // handed back by libpam exactly once.
        let pending = unsafe { Box::from_raw(data.cast::<Pending>()) };
        if pending.stored.get() || status & super::ffi::PAM_DATA_REPLACE != 0 || pamh.is_null() {
            return;
        }
        // SAFETY: libpam passes its live handle to the clean-up function during pam_end.
        let handle = unsafe { Handle::new(pamh, true) };
        let user = crate::log::quoted(&pending.factor.user);
        if status & 0xff == super::ffi::PAM_SUCCESS {
            handle.log(
                libc::LOG_ERR,
                &format!(
                    "user={user} result=unavailable reason=\"configuration error: enrollment at login \
                     was not stored; add 'account required pam_totp.so' to this PAM service\""
                ),
            );
        } else {
            handle.log(
                libc::LOG_NOTICE,
                &format!("user={user} result=failure reason=\"login failed; enrollment at login discarded\""),
            );
        }
    }));
}

/// The account phase: stores a factor enrolled during this login's auth phase, for the
/// same account. `PAM_IGNORE` when there is none.
pub fn store_pending(handle: &Handle, config_path: &Path) -> c_int {
    use super::ffi::{PAM_AUTHINFO_UNAVAIL, PAM_IGNORE, PAM_SUCCESS};
    // SAFETY: only enroll_at_login keeps data under PENDING, always a Pending.
    let Some(pending) = (unsafe { handle.get_data::<Pending>(PENDING) }) else {
        return PAM_IGNORE;
    };
    if pending.stored.get() {
        return PAM_SUCCESS;
    }
    let items = handle.items();
    // The account the user now names, resolved as in the auth phase.
    let account = handle
        .user()
        .ok()
        .and_then(|typed| crate::account::canonical_account(&typed).ok().flatten());
    let name = account.map(|a| a.name).unwrap_or_default();
    let login = &items.login(&name);
    let result = if login.user != pending.factor.user {
        Err("the account changed between auth and account".to_string())
    } else {
        Config::load(config_path)
            .map_err(|e| e.to_string())
            .and_then(|config| open_for_login(&config).map_err(|e| e.to_string()))
            .and_then(|store| {
                // A factor stored meanwhile (another enrollment, root) is never
                // overwritten by this one, nor joined by it: the login proved no factor.
                enroll::activate(
                    &*store,
                    &pending.factor,
                    DEFAULT_FACTOR,
                    EnrollMode::First,
                    Some(&pending.recovery),
                    Some(pending.step),
                    super::unix_now(),
                )
                .map(|_| ())
                .map_err(|e| e.to_string())
            })
    };
    match result {
        Ok(()) => {
            pending.stored.set(true);
            handle.log(
                libc::LOG_NOTICE,
                &format!(
                    "{} result=success reason=\"enrolled at login\"",
                    login_fields(login)
                ),
            );
            PAM_SUCCESS
        }
        Err(why) => {
            handle.log(
                libc::LOG_ERR,
                &format!(
                    "{} result=unavailable reason=\"enrollment not stored: {}\"",
                    login_fields(login),
                    why.replace('"', "'")
                ),
            );
            PAM_AUTHINFO_UNAVAIL
        }
    }
}
