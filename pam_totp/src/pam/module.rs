//! The exported `pam_sm_*` entry points, the module arguments, the one mapping from an
//! [`Outcome`] to a PAM return code, and the flow of one login: gather the inputs,
//! let [`crate::auth`] decide, ask what it calls for, log the decision.

use super::enroll_dialog::{enroll_at_login, store_pending};
use super::ffi::*;
use super::handle::{arguments, ConvError, Handle, Items, Style};
use super::{unix_now, CODE_PROMPT};
use crate::account::{canonical_account, Membership};
use crate::auth::{
    self, Challenge, DenyReason, IgnoreReason, Login, Method, Next, Notice, Outcome,
};
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::first_factor::{
    publickey_passed_in, KeyCheck, AUTH_INFO_VAR, COMBINED_PROMPT, DEFAULT_SSH_SERVICE,
};
use crate::log::{decision_line, login_fields, quoted};
use crate::policy::{policy_for, Policy};
use crate::secret::Answer;
use crate::stack;
use crate::store::{open_for_login, Store};
use std::ffi::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The one mapping from an outcome to a PAM return code.
pub fn pam_code(outcome: &Outcome) -> c_int {
    match outcome {
        Outcome::Success(_) => PAM_SUCCESS,
        Outcome::Ignore(_) => PAM_IGNORE,
        Outcome::Denied(_) => PAM_AUTH_ERR,
        Outcome::Unavailable(_) => PAM_AUTHINFO_UNAVAIL,
        Outcome::ConversationFailed => PAM_CONV_ERR,
    }
}

impl Items {
    pub fn login<'a>(&'a self, user: &'a str) -> Login<'a> {
        Login {
            user,
            service: &self.service,
            rhost: self.rhost.as_deref(),
            tty: self.tty.as_deref(),
        }
    }
}

/// Module arguments from the PAM stack line.
pub(super) struct Options {
    pub config: PathBuf,
    pub debug: bool,
    /// `after_publickey[=SERVICE]`: stand before the password; when sshd (the service
    /// named, `sshd` by default) reports that a public key passed, decide the rest of
    /// the auth stack (the code, or nothing when none is needed); else stand aside.
    pub after_publickey: Option<String>,
    /// `forward_pass`: stand before the password; one answer carries the password and
    /// the code, and the password goes on as `PAM_AUTHTOK`.
    pub forward_pass: bool,
}

impl Options {
    fn parse(args: &[&str]) -> Result<Options, String> {
        let mut options = Options {
            config: PathBuf::from(DEFAULT_CONFIG_PATH),
            debug: false,
            after_publickey: None,
            forward_pass: false,
        };
        for arg in args {
            if let Some(path) = arg.strip_prefix("config=") {
                if !path.starts_with('/') {
                    return Err(format!(
                        "module argument config={path}: must be an absolute path"
                    ));
                }
                options.config = PathBuf::from(path);
            } else if *arg == "debug" {
                options.debug = true;
            } else if *arg == "forward_pass" {
                options.forward_pass = true;
            } else if *arg == "after_publickey" {
                options.after_publickey = Some(DEFAULT_SSH_SERVICE.to_string());
            } else if let Some(service) = arg.strip_prefix("after_publickey=") {
                if service.is_empty()
                    || service.starts_with('.')
                    || !service
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                {
                    return Err(format!(
                        "module argument after_publickey={service}: not a PAM service name"
                    ));
                }
                options.after_publickey = Some(service.to_string());
            } else {
                return Err(format!("unknown module argument {arg:?}"));
            }
        }
        if options.forward_pass && options.after_publickey.is_some() {
            return Err(
                "module arguments forward_pass and after_publickey exclude each other: \
                 use one line for each"
                    .into(),
            );
        }
        Ok(options)
    }
}

/// Runs `body` with a checked handle, turning a panic into a closed failure.
fn guarded(
    pamh: *mut pam_handle_t,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
    body: fn(&Handle, &Options) -> c_int,
) -> c_int {
    if pamh.is_null() {
        return PAM_SYSTEM_ERR;
    }
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: pamh is the non-null handle libpam passed to this call.
        let mut handle = unsafe { Handle::new(pamh, flags & PAM_SILENT != 0) };
        // SAFETY: argc/argv come straight from libpam.
        let args = unsafe { arguments(argc, argv) };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match Options::parse(&args) {
            Ok(options) => {
                handle.debug = options.debug;
                body(&handle, &options)
            }
            Err(why) => {
                handle.log(libc::LOG_ERR, &Outcome::Unavailable(why).to_string());
                PAM_AUTHINFO_UNAVAIL
            }
        }
    }));
    result.unwrap_or_else(|_| {
        // SAFETY: pamh is the non-null handle libpam passed to this call.
        let handle = unsafe { Handle::new(pamh, true) };
        handle.log(
            libc::LOG_CRIT,
            "internal error (panic caught): login refused",
        );
        PAM_SYSTEM_ERR
    })
}

fn authenticate(handle: &Handle, options: &Options) -> c_int {
    let typed = match handle.user() {
        Ok(u) => u,
        Err(rc) => {
            handle.log(
                libc::LOG_ERR,
                "result=failure reason=\"cannot determine the user\"",
            );
            return rc;
        }
    };
    let items = handle.items();
    if let Some(trusted) = &options.after_publickey {
        let info = handle.getenv(c"SSH_AUTH_INFO_0");
        let check = publickey_passed_in(
            Path::new(stack::PAM_DIR),
            &items.service,
            trusted,
            info.as_deref(),
        );
        match check {
            KeyCheck::Passed => {}
            KeyCheck::NotPassed => {
                if handle.debug {
                    handle.log(
                        libc::LOG_DEBUG,
                        &format!(
                            "{} result=ignore reason=\"no public key passed before; the password is asked\"",
                            login_fields(&items.login(&typed))
                        ),
                    );
                }
                return PAM_IGNORE;
            }
            KeyCheck::Untrusted(why) => {
                handle.log(
                    libc::LOG_WARNING,
                    &format!(
                        "{} result=ignore reason=\"{} not believed ({}); the password is asked\"",
                        login_fields(&items.login(&typed)),
                        AUTH_INFO_VAR,
                        why.replace('"', "'")
                    ),
                );
                return PAM_IGNORE;
            }
        }
    }
    // forward_pass: the one prompt comes first, whoever the user is, since the
    // password module below asks nothing itself (use_first_pass).
    let combined = if options.forward_pass {
        let asked_at = unix_now();
        match handle.prompt_hidden(COMBINED_PROMPT) {
            Ok(answer) => Some((answer, asked_at)),
            Err(ConvError) => {
                let login = items.login(&typed);
                handle.log(
                    libc::LOG_NOTICE,
                    &decision_line(&login, &Outcome::ConversationFailed),
                );
                return PAM_CONV_ERR;
            }
        }
    } else {
        None
    };
    let combined_ref = combined.as_ref().map(|(a, t)| (a, *t));
    let (user, outcome, password_len) = run_login(handle, options, &items, &typed, combined_ref);
    let login = items.login(&user);
    let priority = match &outcome {
        Outcome::Success(_) | Outcome::Ignore(_) => libc::LOG_INFO,
        Outcome::Denied(_) | Outcome::ConversationFailed => libc::LOG_NOTICE,
        Outcome::Unavailable(_) => libc::LOG_ERR,
    };
    let mut line = decision_line(&login, &outcome);
    if user != typed {
        line.push_str(&format!(" login_name={}", quoted(&typed)));
    }
    if options.after_publickey.is_some() {
        line.push_str(" first_factor=\"publickey\"");
    }
    handle.log(priority, &line);
    if let Some((answer, _)) = &combined {
        let bytes = answer.as_bytes();
        let password = &bytes[..password_len.unwrap_or(bytes.len()).min(bytes.len())];
        if let Err(rc) = handle.set_authtok(password) {
            handle.log(
                libc::LOG_ERR,
                &format!(
                    "{} result=unavailable reason=\"cannot hand the password on (PAM error {rc})\"",
                    login_fields(&login)
                ),
            );
            return PAM_AUTHINFO_UNAVAIL;
        }
    }
    match outcome {
        // The key passed and this user needs no code: the key decides, as it did
        // before pam_totp was installed, and the password below is skipped.
        Outcome::Ignore(ref reason)
            if options.after_publickey.is_some() && *reason != IgnoreReason::UnknownUser =>
        {
            PAM_SUCCESS
        }
        _ => pam_code(&outcome),
    }
}

/// The answer to the combined prompt of `forward_pass`, and when it was asked.
type Combined<'a> = (&'a Answer, i64);

/// Decides the login of the account that `typed` names; returns the account's
/// canonical name (the typed name when NSS does not know it), the outcome, and with
/// `forward_pass` the length of the password part of the answer.
fn run_login(
    handle: &Handle,
    options: &Options,
    items: &Items,
    typed: &str,
    combined: Option<Combined<'_>>,
) -> (String, Outcome, Option<usize>) {
    let config = match Config::load(&options.config) {
        Ok(c) => c,
        Err(e) => return (typed.to_string(), Outcome::Unavailable(e.to_string()), None),
    };
    // Every spelling of an account meets the account's factor: the store, the policy and
    // the log all see the name NSS gives the account, never the typed string. A
    // directory that cannot answer fails closed, whatever the failmode.
    let account = match canonical_account(typed) {
        Ok(Some(a)) => a,
        Ok(None) => {
            let p = &config.policy;
            let outcome = if p.mandatory || !p.mandatory_groups.is_empty() || p.enroll_at_login {
                Outcome::Denied(DenyReason::UnknownUser)
            } else {
                Outcome::Ignore(IgnoreReason::UnknownUser)
            };
            return (typed.to_string(), outcome, None);
        }
        Err(e) => return (typed.to_string(), Outcome::Unavailable(e.to_string()), None),
    };
    let login = items.login(&account.name);
    let (outcome, password_len) = decide(handle, &config, &account, &login, combined);
    (account.name.clone(), outcome, password_len)
}

fn decide(
    handle: &Handle,
    config: &Config,
    account: &crate::account::Account,
    login: &Login<'_>,
    combined: Option<Combined<'_>>,
) -> (Outcome, Option<usize>) {
    let failmode = config.policy.failmode;
    let mut membership = Membership::new(account);
    let policy = match policy_for(&config.policy, login.rhost, &mut |g| {
        membership.is_member(g)
    }) {
        Ok(p) => p,
        Err(e) => return (Outcome::Unavailable(e.to_string()), None),
    };
    if handle.debug {
        handle.log(
            libc::LOG_DEBUG,
            &format!("policy {}: {}", policy.0.as_str(), policy.1),
        );
    }
    if policy.0 == Policy::Exempt {
        // Decided from the configuration alone: the store is not opened.
        return (Outcome::Ignore(IgnoreReason::Exempt(policy.1)), None);
    }
    // failmode = "open" covers a store that cannot be used before the prompt, and
    // nothing after it: a failure once an answer arrived is never a way in.
    let store = match open_for_login(config) {
        Ok(s) => s,
        Err(e) => return (auth::unavailable(failmode, e.to_string()), None),
    };
    let now = unix_now();
    let next = match auth::start_login(config, &*store, login, policy.clone(), now) {
        Ok(n) => n,
        Err(e) => return (auth::unavailable(failmode, e.to_string()), None),
    };
    match next {
        Next::Done(outcome, notice) => {
            if let Some(n) = notice {
                show(handle, &n);
            }
            (outcome, None)
        }
        // The code's own prompt is skipped; one answer carrying the password and the
        // code is checked as always.
        Next::Remembered(_) if combined.is_none() => {
            (Outcome::Success(Method::RememberedSource), None)
        }
        Next::Remembered(challenge) => {
            ask_code(handle, config, &*store, login, &challenge, combined)
        }
        Next::AskCode(challenge, notice) => {
            if let Some(n) = notice {
                show(handle, &n);
            }
            ask_code(handle, config, &*store, login, &challenge, combined)
        }
        // One answer cannot carry an enrollment (a QR code, a confirmation, the
        // recovery codes): refused, as without enroll_at_login.
        Next::EnrollNow if combined.is_some() => {
            handle.show(
                Style::Error,
                "Two-factor authentication is required for this account, but none is set up. \
                 Set it up over SSH or with: totp-admin enroll",
            );
            (Outcome::Denied(DenyReason::NotEnrolled(policy.1)), None)
        }
        Next::EnrollNow => (enroll_at_login(handle, config, login), None),
    }
}

/// Tells the user why their answer was refused (a wrong code, a used one, a lockout).
fn tell(handle: &Handle, outcome: &Outcome) {
    if let Some(n) = auth::notice_after_answer(outcome) {
        show(handle, &n);
    }
}

/// Asks for the code (or, with `forward_pass`, checks the answer that came with the
/// password) and checks it.
fn ask_code(
    handle: &Handle,
    config: &Config,
    store: &dyn Store,
    login: &Login<'_>,
    challenge: &Challenge,
    combined: Option<Combined<'_>>,
) -> (Outcome, Option<usize>) {
    if let Some((answer, asked_at)) = combined {
        let answered_at = unix_now();
        return match auth::check_combined(
            config,
            store,
            login,
            challenge,
            answer,
            asked_at,
            answered_at,
        ) {
            Ok((outcome, len)) => {
                tell(handle, &outcome);
                (outcome, Some(len))
            }
            Err(e) => (Outcome::Unavailable(e.to_string()), None),
        };
    }
    let asked_at = unix_now();
    let answer = match handle.prompt_hidden(CODE_PROMPT) {
        Ok(a) => a,
        Err(ConvError) => return (Outcome::ConversationFailed, None),
    };
    // The code is checked against the time the answer arrived.
    let answered_at = unix_now();
    let outcome = auth::check_answer(
        config,
        store,
        login,
        challenge,
        &answer,
        asked_at,
        answered_at,
    )
    .unwrap_or_else(|e| Outcome::Unavailable(e.to_string()));
    tell(handle, &outcome);
    (outcome, None)
}

fn show(handle: &Handle, notice: &Notice) {
    match notice {
        Notice::Info(t) => handle.show(Style::Info, t),
        Notice::Error(t) => handle.show(Style::Error, t),
    }
}

fn account(handle: &Handle, options: &Options) -> c_int {
    store_pending(handle, &options.config)
}

#[no_mangle]
pub extern "C" fn pam_sm_authenticate(
    pamh: *mut pam_handle_t,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    guarded(pamh, flags, argc, argv, authenticate)
}

/// The module sets no credentials; it must still succeed so the stack does not fail.
#[no_mangle]
pub extern "C" fn pam_sm_setcred(
    _pamh: *mut pam_handle_t,
    _flags: c_int,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    PAM_SUCCESS
}

#[no_mangle]
pub extern "C" fn pam_sm_acct_mgmt(
    pamh: *mut pam_handle_t,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    guarded(pamh, flags, argc, argv, account)
}

#[no_mangle]
pub extern "C" fn pam_sm_open_session(
    _pamh: *mut pam_handle_t,
    _flags: c_int,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    PAM_IGNORE
}

#[no_mangle]
pub extern "C" fn pam_sm_close_session(
    _pamh: *mut pam_handle_t,
    _flags: c_int,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    PAM_IGNORE
}

#[no_mangle]
pub extern "C" fn pam_sm_chauthtok(
    _pamh: *mut pam_handle_t,
    _flags: c_int,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    PAM_IGNORE
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Method;

    #[test]
    fn return_codes() {
        assert_eq!(pam_code(&Outcome::Success(Method::Code)), PAM_SUCCESS);
        assert_eq!(
            pam_code(&Outcome::Ignore(IgnoreReason::NotEnrolled)),
            PAM_IGNORE
        );
        assert_eq!(
            pam_code(&Outcome::Denied(DenyReason::WrongCode)),
            PAM_AUTH_ERR
        );
        assert_eq!(
            pam_code(&Outcome::Unavailable("x".into())),
            PAM_AUTHINFO_UNAVAIL
        );
        assert_eq!(pam_code(&Outcome::ConversationFailed), PAM_CONV_ERR);
    }

    #[test]
    fn options() {
        let o = Options::parse(&["config=/etc/x.toml", "debug"]).unwrap();
        assert_eq!(o.config, PathBuf::from("/etc/x.toml"));
        assert!(o.debug);
        assert!(Options::parse(&["config=relative.toml"]).is_err());
        assert!(Options::parse(&["nullok"]).is_err());
        assert!(!o.forward_pass && o.after_publickey.is_none());
        assert_eq!(
            Options::parse(&[]).unwrap().config,
            PathBuf::from(DEFAULT_CONFIG_PATH)
        );
    }

    #[test]
    fn first_factor_options() {
        let o = Options::parse(&["forward_pass"]).unwrap();
        assert!(o.forward_pass);
        assert_eq!(o.after_publickey, None);
        let o = Options::parse(&["after_publickey", "debug"]).unwrap();
        assert_eq!(o.after_publickey.as_deref(), Some("sshd"));
        assert!(!o.forward_pass);
        let o = Options::parse(&["after_publickey=sshd-bastion"]).unwrap();
        assert_eq!(o.after_publickey.as_deref(), Some("sshd-bastion"));
        for bad in [
            "after_publickey=",
            "after_publickey=../su",
            "after_publickey=a b",
            "after_publickey=.x",
            "forward_pass=1",
            "forwardpass",
        ] {
            assert!(Options::parse(&[bad]).is_err(), "{bad}");
        }
        let both = Options::parse(&["forward_pass", "after_publickey"]);
        assert!(both.is_err_and(|e| e.contains("exclude each other")));
    }

    /// A panic inside the module is caught at the entry point: the login is refused and
    /// the host process goes on.
    #[test]
    fn a_panic_fails_closed() {
        fn boom(_: &Handle, _: &Options) -> c_int {
            panic!("deliberate panic in a test")
        }
        let conv = PamConv {
            conv: None,
            appdata_ptr: std::ptr::null_mut(),
        };
        let mut pamh = std::ptr::null_mut();
        // SAFETY: valid strings and conv that outlive the handle.
        let rc = unsafe {
            pam_start(
                c"pam_totp-unit-test".as_ptr(),
                c"nobody".as_ptr(),
                &conv,
                &mut pamh,
            )
        };
        assert_eq!(rc, PAM_SUCCESS);
        let rc = guarded(pamh, 0, 0, std::ptr::null(), boom);
        assert_eq!(rc, PAM_SYSTEM_ERR);
        // SAFETY: pamh is live and not used afterwards.
        unsafe { pam_end(pamh, rc) };
    }

    #[test]
    fn null_handle_is_refused() {
        let rc = pam_sm_authenticate(std::ptr::null_mut(), 0, 0, std::ptr::null());
        assert_eq!(rc, PAM_SYSTEM_ERR);
    }
}
