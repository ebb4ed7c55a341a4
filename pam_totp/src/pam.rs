//! The PAM glue: the exported `pam_sm_*` entry points, PAM items, the conversation,
//! `pam_syslog`, and the one place where an [`Outcome`] becomes a PAM return code.
//! Every unsafe call into libpam lives in this file.

use crate::account::Membership;
use crate::auth::{self, Login, Method, Next, Notice, Outcome};
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::enroll::{self, NewFactor};
use crate::log::{decision_line, login_fields};
use crate::otp::grouped_base32;
use crate::policy::{policy_for, Policy};
use crate::qr::qr_lines;
use crate::recovery::HashedCode;
use crate::secret::Answer;
use crate::stack;
use crate::store::{open_for_login, EnrollMode, DEFAULT_FACTOR};
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// libpam's opaque handle.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct pam_handle_t {
    _private: [u8; 0],
}

/// `struct pam_message`, shared with the PAM applications of this project
/// (`totp-admin`'s password check, the test clients).
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

/// A conversation function.
pub type ConvFn =
    extern "C" fn(c_int, *mut *const PamMessage, *mut *mut PamResponse, *mut c_void) -> c_int;

/// `struct pam_conv`.
#[repr(C)]
pub struct PamConv {
    pub conv: Option<ConvFn>,
    pub appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
extern "C" {
    fn pam_get_item(pamh: *const pam_handle_t, item_type: c_int, item: *mut *const c_void)
        -> c_int;
    fn pam_get_user(
        pamh: *mut pam_handle_t,
        user: *mut *const c_char,
        prompt: *const c_char,
    ) -> c_int;
    fn pam_syslog(pamh: *const pam_handle_t, priority: c_int, fmt: *const c_char, ...);
    fn pam_set_data(
        pamh: *mut pam_handle_t,
        name: *const c_char,
        data: *mut c_void,
        cleanup: Option<CleanupFn>,
    ) -> c_int;
    fn pam_get_data(
        pamh: *const pam_handle_t,
        name: *const c_char,
        data: *mut *const c_void,
    ) -> c_int;
}

type CleanupFn = extern "C" fn(*mut pam_handle_t, *mut c_void, c_int);

pub const PAM_SUCCESS: c_int = 0;
pub const PAM_SYSTEM_ERR: c_int = 4;
pub const PAM_AUTH_ERR: c_int = 7;
pub const PAM_AUTHINFO_UNAVAIL: c_int = 9;
pub const PAM_USER_UNKNOWN: c_int = 10;
pub const PAM_CONV_ERR: c_int = 19;
pub const PAM_IGNORE: c_int = 25;

const PAM_SERVICE: c_int = 1;
const PAM_TTY: c_int = 3;
const PAM_RHOST: c_int = 4;
const PAM_CONV: c_int = 5;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;
const PAM_SILENT: c_int = 0x8000;
const PAM_DATA_REPLACE: c_int = 0x2000_0000;

/// The name under which a pending enrollment waits for the account phase.
const PENDING: &CStr = c"pam_totp_pending_enrollment";
/// Wrong confirmation codes allowed during enrollment at login.
const ENROLL_ATTEMPTS: u32 = 3;

/// The prompt for the code (a contract: tests and expect scripts match it).
pub const CODE_PROMPT: &str = "Verification code: ";

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

/// The PAM items that say where a login comes from.
struct Items {
    service: String,
    rhost: Option<String>,
    tty: Option<String>,
}

impl Items {
    fn login<'a>(&'a self, user: &'a str) -> Login<'a> {
        Login {
            user,
            service: &self.service,
            rhost: self.rhost.as_deref(),
            tty: self.tty.as_deref(),
        }
    }
}

/// A borrowed, non-null PAM handle for the duration of one call.
pub struct Handle {
    pamh: *mut pam_handle_t,
    silent: bool,
    debug: bool,
}

impl Handle {
    fn item(&self, item_type: c_int) -> Option<String> {
        let mut ptr: *const c_void = std::ptr::null();
        // SAFETY: pamh is non-null and valid for this call; ptr is a valid out-pointer.
        let rc = unsafe { pam_get_item(self.pamh, item_type, &mut ptr) };
        if rc != PAM_SUCCESS || ptr.is_null() {
            return None;
        }
        // SAFETY: string items are NUL-terminated C strings owned by libpam.
        let text = unsafe { CStr::from_ptr(ptr.cast()) };
        Some(text.to_string_lossy().into_owned())
    }

    fn items(&self) -> Items {
        Items {
            service: self.item(PAM_SERVICE).unwrap_or_default(),
            rhost: self.item(PAM_RHOST),
            tty: self.item(PAM_TTY),
        }
    }

    fn user(&self) -> Result<String, c_int> {
        let mut ptr: *const c_char = std::ptr::null();
        // SAFETY: pamh is valid; a null prompt asks libpam to use its default.
        let rc = unsafe { pam_get_user(self.pamh, &mut ptr, std::ptr::null()) };
        if rc != PAM_SUCCESS {
            return Err(rc);
        }
        if ptr.is_null() {
            return Err(PAM_USER_UNKNOWN);
        }
        // SAFETY: on success the user is a NUL-terminated string owned by libpam.
        let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
        match std::str::from_utf8(bytes) {
            Ok(u) if !u.is_empty() && u.len() <= 256 => Ok(u.to_string()),
            _ => Err(PAM_USER_UNKNOWN),
        }
    }

    /// Logs through `pam_syslog` (authpriv), never `openlog`: the host owns its log
    /// identity. The text is passed as an argument to a constant `%s` format.
    pub fn log(&self, priority: c_int, text: &str) {
        let Ok(line) = CString::new(text.replace('\0', "?")) else {
            return;
        };
        // SAFETY: pamh is valid; the format is a constant "%s" and its one argument a
        // NUL-terminated string that lives across the call.
        unsafe { pam_syslog(self.pamh, priority, c"%s".as_ptr(), line.as_ptr()) };
    }

    /// One message through the application's conversation function. Returns the
    /// answer for a prompt, `Ok(None)` for a message that expects none.
    fn converse(&self, style: c_int, text: &str) -> Result<Option<Answer>, ()> {
        let mut conv_ptr: *const c_void = std::ptr::null();
        // SAFETY: pamh is valid; conv_ptr is a valid out-pointer.
        let rc = unsafe { pam_get_item(self.pamh, PAM_CONV, &mut conv_ptr) };
        if rc != PAM_SUCCESS || conv_ptr.is_null() {
            return Err(());
        }
        // SAFETY: the PAM_CONV item is a `struct pam_conv` owned by libpam.
        let conv = unsafe { &*(conv_ptr as *const PamConv) };
        let Some(conv_fn) = conv.conv else {
            return Err(());
        };
        let text = CString::new(text.replace('\0', "")).map_err(|_| ())?;
        let message = PamMessage {
            msg_style: style,
            msg: text.as_ptr(),
        };
        let mut message_ptr: *const PamMessage = &message;
        let mut response: *mut PamResponse = std::ptr::null_mut();
        let rc = conv_fn(1, &mut message_ptr, &mut response, conv.appdata_ptr);
        // SAFETY: the application allocated the response (if any) with malloc and
        // hands its ownership to us; take_response wipes and frees it.
        let answer = unsafe { take_response(response) };
        if rc != PAM_SUCCESS {
            return Err(());
        }
        match style {
            PAM_PROMPT_ECHO_OFF | PAM_PROMPT_ECHO_ON => answer.map(Some).ok_or(()),
            _ => Ok(None),
        }
    }

    fn prompt_hidden(&self, text: &str) -> Result<Answer, ()> {
        self.converse(PAM_PROMPT_ECHO_OFF, text)?.ok_or(())
    }

    /// Informational lines that must reach the user (enrollment), even with PAM_SILENT.
    fn tell(&self, text: &str) -> Result<(), ()> {
        self.converse(PAM_TEXT_INFO, text).map(|_| ())
    }

    fn show(&self, notice: &Notice) {
        if self.silent {
            return;
        }
        let _ = match notice {
            Notice::Info(t) => self.converse(PAM_TEXT_INFO, t),
            Notice::Error(t) => self.converse(PAM_ERROR_MSG, t),
        };
    }
}

/// Copies the answer out of a conversation response, wipes the application's copy
/// and frees it.
///
/// # Safety
/// `response` is null or a malloc'd `pam_response` whose `resp` is null or a malloc'd
/// NUL-terminated string, as the PAM conversation contract requires.
unsafe fn take_response(response: *mut PamResponse) -> Option<Answer> {
    if response.is_null() {
        return None;
    }
    // SAFETY: response is non-null and points to one pam_response (caller's contract).
    let resp = unsafe { (*response).resp };
    let answer = if resp.is_null() {
        None
    } else {
        // SAFETY: resp is a NUL-terminated string (caller's contract).
        let len = unsafe { libc::strlen(resp) };
        // SAFETY: resp points to len readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(resp.cast::<u8>(), len) }.to_vec();
        // SAFETY: resp points to len writable bytes, wiped before they are freed.
        unsafe { libc::explicit_bzero(resp.cast(), len) };
        // SAFETY: resp was allocated with malloc and is not used again.
        unsafe { libc::free(resp.cast()) };
        Some(Answer::new(bytes))
    };
    // SAFETY: response was allocated with malloc and is not used again.
    unsafe { libc::free(response.cast()) };
    answer
}

/// Module arguments from the PAM stack line.
struct Options {
    config: PathBuf,
    debug: bool,
}

impl Options {
    fn parse(args: &[&str]) -> Result<Options, String> {
        let mut options = Options {
            config: PathBuf::from(DEFAULT_CONFIG_PATH),
            debug: false,
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
            } else {
                return Err(format!("unknown module argument {arg:?}"));
            }
        }
        Ok(options)
    }
}

/// The module arguments as strings; a non-UTF-8 argument is kept lossily so that the
/// parser refuses it by name.
///
/// # Safety
/// `argv` is null or points to `argc` NUL-terminated strings, as libpam passes them.
unsafe fn arguments(argc: c_int, argv: *const *const c_char) -> Vec<String> {
    if argv.is_null() || argc <= 0 {
        return Vec::new();
    }
    (0..argc as usize)
        .filter_map(|i| {
            // SAFETY: i < argc, so argv[i] is within the array (caller's contract).
            let p = unsafe { *argv.add(i) };
            // SAFETY: a non-null argv[i] is a NUL-terminated string.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        })
        .collect()
}

fn unix_now() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => -1,
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
        let mut handle = Handle {
            pamh,
            silent: flags & PAM_SILENT != 0,
            debug: false,
        };
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
        let handle = Handle {
            pamh,
            silent: true,
            debug: false,
        };
        handle.log(
            libc::LOG_CRIT,
            "internal error (panic caught): login refused",
        );
        PAM_SYSTEM_ERR
    })
}

fn authenticate(handle: &Handle, options: &Options) -> c_int {
    let user = match handle.user() {
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
    let login = items.login(&user);
    let outcome = run_login(handle, options, &login, unix_now());
    let priority = match &outcome {
        Outcome::Success(_) | Outcome::Ignore(_) => libc::LOG_INFO,
        Outcome::Denied(_) | Outcome::ConversationFailed => libc::LOG_NOTICE,
        Outcome::Unavailable(_) => libc::LOG_ERR,
    };
    handle.log(priority, &decision_line(&login, &outcome));
    pam_code(&outcome)
}

fn run_login(handle: &Handle, options: &Options, login: &Login<'_>, now: i64) -> Outcome {
    let config = match Config::load(&options.config) {
        Ok(c) => c,
        Err(e) => return Outcome::Unavailable(e.to_string()),
    };
    let failmode = config.policy.failmode;
    let mut membership = Membership::new(login.user);
    let policy = match policy_for(&config.policy, login.rhost, &mut |g| {
        membership.is_member(g)
    }) {
        Ok(p) => p,
        Err(e) => return auth::unavailable(failmode, e.to_string()),
    };
    if handle.debug {
        handle.log(
            libc::LOG_DEBUG,
            &format!("policy {}: {}", policy.0.as_str(), policy.1),
        );
    }
    if policy.0 == Policy::Exempt {
        // Decided from the configuration alone: the store is not opened.
        return Outcome::Ignore(auth::IgnoreReason::Exempt(policy.1));
    }
    let store = match open_for_login(&config) {
        Ok(s) => s,
        Err(e) => return auth::unavailable(failmode, e.to_string()),
    };
    let next = match auth::start_login(&config, &*store, login, policy.clone(), now) {
        Ok(n) => n,
        Err(e) => return auth::unavailable(failmode, e.to_string()),
    };
    match next {
        Next::Done(outcome, notice) => {
            if let Some(n) = notice {
                handle.show(&n);
            }
            outcome
        }
        Next::AskCode(challenge, notice) => {
            if let Some(n) = notice {
                handle.show(&n);
            }
            let Ok(answer) = handle.prompt_hidden(CODE_PROMPT) else {
                return Outcome::ConversationFailed;
            };
            auth::check_answer(&config, &*store, login, &challenge, &answer, now)
                .unwrap_or_else(|e| auth::unavailable(failmode, e.to_string()))
        }
        Next::EnrollNow => enroll_at_login(handle, &config, login),
    }
}

/// A factor confirmed during the auth phase, waiting for the account phase to store
/// it: a login whose password failed never reaches the account phase, so it never
/// stores a factor.
struct Pending {
    factor: NewFactor,
    recovery: Vec<HashedCode>,
    step: u64,
    stored: Cell<bool>,
}

/// Enrollment inside the login: the QR code, key and URI, one message per line; the
/// confirmation code(s); the recovery codes followed by a prompt (sshd shows module text
/// only together with a following prompt). The factor is kept with pam_set_data.
fn enroll_at_login(handle: &Handle, config: &Config, login: &Login<'_>) -> Outcome {
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
    let factor = match enroll::new_factor(config, login.user, &host) {
        Ok(f) => f,
        Err(e) => return Outcome::Unavailable(format!("cannot generate a key: {e}")),
    };
    let key = grouped_base32(&factor.secret);
    let mut lines = vec![
        "Two-factor authentication is required for this account. Set it up now.".to_string(),
        "Scan this QR code with an authenticator app:".to_string(),
    ];
    lines.extend(qr_lines(&factor.uri, config.enroll.qr));
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
            let now = u64::try_from(unix_now()).unwrap_or(0);
            step = enroll::confirmation_step(&factor, &answer, now, config.totp.window, confirmed);
            if step.is_some() {
                break;
            }
            let _ = handle.converse(
                PAM_ERROR_MSG,
                if round == 0 {
                    "That code is not right. Try again."
                } else {
                    "That code is not right: wait for the app to show the next code."
                },
            );
        }
        match step {
            Some(s) => confirmed = Some(s),
            None => return Outcome::Denied(auth::DenyReason::EnrollmentNotConfirmed),
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
        .converse(PAM_PROMPT_ECHO_ON, "Press Enter when you have saved them")
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
    let raw = Box::into_raw(pending);
    // SAFETY: pamh is valid; raw is a leaked Box that libpam hands back to
    // drop_pending exactly once (on replacement or at pam_end).
    let rc = unsafe {
        pam_set_data(
            handle.pamh,
            PENDING.as_ptr(),
            raw.cast(),
            Some(drop_pending),
        )
    };
    if rc != PAM_SUCCESS {
        // SAFETY: libpam did not take ownership, so the Box is still ours.
        drop(unsafe { Box::from_raw(raw) });
        return Outcome::Unavailable("cannot keep the enrollment for the account phase".into());
    }
    Outcome::Success(Method::EnrolledAtLogin)
}

/// Frees a pending enrollment at pam_end (or on replacement). One that was never
/// stored after a successful transaction means the stack lacks the account line.
extern "C" fn drop_pending(pamh: *mut pam_handle_t, data: *mut c_void, status: c_int) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if data.is_null() {
            return;
        }
        // SAFETY: data is the Box leaked by enroll_at_login, handed back exactly once.
        let pending = unsafe { Box::from_raw(data.cast::<Pending>()) };
        if pending.stored.get() || status & PAM_DATA_REPLACE != 0 || pamh.is_null() {
            return;
        }
        let handle = Handle {
            pamh,
            silent: true,
            debug: false,
        };
        let user = crate::log::quoted(&pending.factor.user);
        if status & 0xff == PAM_SUCCESS {
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

/// The account phase stores a factor enrolled during this login's auth phase, which
/// libpam runs only after the whole auth stack passed.
fn account(handle: &Handle, options: &Options) -> c_int {
    let mut data: *const c_void = std::ptr::null();
    // SAFETY: pamh is valid; data is a valid out-pointer.
    let rc = unsafe { pam_get_data(handle.pamh, PENDING.as_ptr(), &mut data) };
    if rc != PAM_SUCCESS || data.is_null() {
        return PAM_IGNORE;
    }
    // SAFETY: the data under PENDING is always a Pending set by enroll_at_login, alive
    // until pam_end.
    let pending = unsafe { &*data.cast::<Pending>() };
    if pending.stored.get() {
        return PAM_SUCCESS;
    }
    let user = handle.user().unwrap_or_default();
    let items = handle.items();
    let login = items.login(&pending.factor.user);
    let result = if user != pending.factor.user {
        Err("the user changed between auth and account".to_string())
    } else {
        Config::load(&options.config)
            .map_err(|e| e.to_string())
            .and_then(|config| open_for_login(&config).map_err(|e| e.to_string()))
            .and_then(|store| {
                enroll::activate(
                    &*store,
                    &pending.factor,
                    DEFAULT_FACTOR,
                    EnrollMode::New,
                    Some(&pending.recovery),
                    Some(pending.step),
                    unix_now(),
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
                    login_fields(&login)
                ),
            );
            PAM_SUCCESS
        }
        Err(why) => {
            handle.log(
                libc::LOG_ERR,
                &format!(
                    "{} result=unavailable reason=\"enrollment not stored: {why}\"",
                    login_fields(&login)
                ),
            );
            PAM_AUTHINFO_UNAVAIL
        }
    }
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
    use crate::auth::{DenyReason, IgnoreReason, Method};

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
        assert_eq!(
            Options::parse(&[]).unwrap().config,
            PathBuf::from(DEFAULT_CONFIG_PATH)
        );
    }

    /// A panic inside the module is caught at the entry point: the login is refused and
    /// the host process goes on.
    #[test]
    fn a_panic_fails_closed() {
        extern "C" {
            fn pam_start(
                service: *const c_char,
                user: *const c_char,
                conv: *const PamConv,
                pamh: *mut *mut pam_handle_t,
            ) -> c_int;
            fn pam_end(pamh: *mut pam_handle_t, status: c_int) -> c_int;
        }
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
