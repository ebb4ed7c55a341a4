//! The password check before a first enrollment: the user re-enters their login
//! password through PAM service `totp-admin` (like `chsh`), so that someone at an
//! unlocked terminal cannot bind their own phone to the account. Every call into
//! libpam lives in this file.
//!
//! The caller runs it through [`crate::caller::as_caller`]: with the real uid the
//! user's, being root by setuid satisfies no module (pam_rootok), and the account
//! phase runs after the password, so pam_faillock counts a wrong password and refuses
//! a locked account as it does at login.

use crate::error::{Error, Result};
use crate::output::escaped;
use crate::terminal;
use pam_totp::pam::ffi::{
    pam_acct_mgmt, pam_authenticate, pam_end, pam_handle_t, pam_set_item, pam_start, pam_strerror,
    PamConv, PamMessage, PamResponse, PAM_BUF_ERR, PAM_CONV_ERR, PAM_ERROR_MSG, PAM_MAX_NUM_MSG,
    PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON, PAM_RUSER, PAM_SUCCESS, PAM_TEXT_INFO, PAM_TTY,
};
use std::ffi::{c_int, c_void, CStr, CString};

/// The PAM service file (`/etc/pam.d/totp-admin`): the password stack, never pam_totp.
pub const SERVICE: &str = "totp-admin";

/// Whether `user` has a password that can be typed: `Some(false)` when /etc/shadow
/// holds the account with an empty or locked (`!`, `*`) hash, as for accounts that log
/// in with SSH keys only; `None` when the account is not there (a directory decides).
pub fn has_usable_password(user: &str) -> Option<bool> {
    let shadow = std::fs::read_to_string("/etc/shadow").ok()?;
    shadow.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == user).then(|| crate::accounts::usable_hash(fields.next().unwrap_or("")))
    })
}

/// What a user without a password is told instead of a password prompt.
pub fn no_password_advice(user: &str, enroll_at_login: bool) -> String {
    let at_login = if enroll_at_login {
        "log in over SSH again: you will be asked to set it up during the login, after your key"
    } else {
        "ask your administrator to turn on enroll_at_login, then set it up at your next SSH login"
    };
    format!(
        "{user} has no password to confirm a first enrollment with. To enroll, {at_login}; \
         or ask root to run: totp-admin enroll --user {user}"
    )
}

/// Asks for `user`'s password through PAM: pam_authenticate, then pam_acct_mgmt. The
/// requesting user (PAM_RUSER) is `user` too; PAM_TTY is `tty` (`pts/3`, or `none`
/// without a terminal, which is sent as `totp-admin` like sshd sends `ssh`).
pub fn check_password(user: &str, tty: &str) -> Result<()> {
    let service = CString::new(SERVICE).expect("constant without NUL");
    let c_user = CString::new(user).map_err(|_| Error::failed("user name contains a NUL byte"))?;
    let c_tty = CString::new(pam_tty(tty)).map_err(|_| Error::failed("tty contains a NUL byte"))?;
    let conv = PamConv {
        conv: Some(conversation),
        appdata_ptr: std::ptr::null_mut(),
    };
    let mut pamh: *mut pam_handle_t = std::ptr::null_mut();
    // SAFETY: service, user and conv are valid and outlive the handle (pam_end below).
    let rc = unsafe { pam_start(service.as_ptr(), c_user.as_ptr(), &conv, &mut pamh) };
    if rc != PAM_SUCCESS || pamh.is_null() {
        return Err(Error::failed(format!(
            "cannot start PAM service {SERVICE} (error {rc})"
        )));
    }
    // SAFETY: pamh is live; libpam copies the strings.
    let items_rc = unsafe {
        [
            pam_set_item(pamh, PAM_RUSER, c_user.as_ptr().cast()),
            pam_set_item(pamh, PAM_TTY, c_tty.as_ptr().cast()),
        ]
    };
    if let Some(rc) = items_rc.into_iter().find(|rc| *rc != PAM_SUCCESS) {
        // SAFETY: pamh is live and not used afterwards.
        unsafe { pam_end(pamh, rc) };
        return Err(Error::failed(format!(
            "cannot set up PAM service {SERVICE} (error {rc})"
        )));
    }
    // SAFETY: pamh is live.
    let mut rc = unsafe { pam_authenticate(pamh, 0) };
    if rc == PAM_SUCCESS {
        // SAFETY: pamh is live.
        rc = unsafe { pam_acct_mgmt(pamh, 0) };
    }
    let reason = if rc == PAM_SUCCESS {
        String::new()
    } else {
        // SAFETY: pamh is live; pam_strerror returns a static string or NULL.
        let text = unsafe { pam_strerror(pamh, rc) };
        if text.is_null() {
            format!("error {rc}")
        } else {
            // SAFETY: a non-null pam_strerror result is a NUL-terminated string.
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        }
    };
    // SAFETY: pamh is live and not used afterwards.
    unsafe { pam_end(pamh, rc) };
    if rc == PAM_SUCCESS {
        Ok(())
    } else {
        Err(Error::refused(format!("password not accepted ({reason})")))
    }
}

/// The PAM_TTY item: the terminal's path, or the tool's name without one.
fn pam_tty(tty: &str) -> String {
    if tty == "none" || tty.is_empty() {
        SERVICE.to_string()
    } else {
        format!("/dev/{tty}")
    }
}

/// Answers libpam's prompts from the terminal. Messages are shown; a prompt that
/// cannot be answered ends the conversation with PAM_CONV_ERR.
///
/// # Safety
/// Called by libpam only: `msgs` points to `n` valid message pointers and `resp` to an
/// out-pointer, as the conversation contract says.
unsafe extern "C" fn conversation(
    n: c_int,
    msgs: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    _appdata: *mut c_void,
) -> c_int {
    if !(1..=PAM_MAX_NUM_MSG).contains(&n) || msgs.is_null() || resp.is_null() {
        return PAM_CONV_ERR;
    }
    let count = n as usize;
    // SAFETY: calloc of `count` zeroed responses; ownership passes to libpam on success.
    let out =
        unsafe { libc::calloc(count, std::mem::size_of::<PamResponse>()) }.cast::<PamResponse>();
    if out.is_null() {
        return PAM_BUF_ERR;
    }
    for i in 0..count {
        // SAFETY: Linux-PAM passes an array of n valid message pointers.
        let message = unsafe { &**msgs.add(i) };
        let text = if message.msg.is_null() {
            String::new()
        } else {
            // SAFETY: a message's text is a NUL-terminated string.
            let raw = unsafe { CStr::from_ptr(message.msg) }.to_string_lossy();
            // A module's text may span lines; anything else a terminal acts on is shown
            // escaped.
            raw.split('\n').map(escaped).collect::<Vec<_>>().join("\n")
        };
        let answer = match message.msg_style {
            PAM_PROMPT_ECHO_OFF => terminal::ask(&text, false).ok(),
            PAM_PROMPT_ECHO_ON => terminal::ask(&text, true).ok(),
            PAM_ERROR_MSG => {
                eprintln!("{text}");
                continue;
            }
            PAM_TEXT_INFO => {
                let _ = terminal::say(&text);
                continue;
            }
            _ => None,
        };
        let Some(answer) = answer else {
            // SAFETY: frees what this call allocated; libpam gets nothing back.
            unsafe { free_responses(out, count) };
            return PAM_CONV_ERR;
        };
        let bytes = answer.as_bytes();
        if bytes.contains(&0) {
            // SAFETY: as above.
            unsafe { free_responses(out, count) };
            return PAM_CONV_ERR;
        }
        // SAFETY: a buffer of len + 1 bytes for the answer and its NUL; libpam frees it
        // (and the modules that read it wipe their own copies).
        let copy = unsafe { libc::malloc(bytes.len() + 1) }.cast::<u8>();
        if copy.is_null() {
            // SAFETY: as above.
            unsafe { free_responses(out, count) };
            return PAM_BUF_ERR;
        }
        // SAFETY: copy has room for len + 1 bytes; out has room for count entries.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), copy, bytes.len());
            *copy.add(bytes.len()) = 0;
            (*out.add(i)).resp = copy.cast();
        }
    }
    // SAFETY: resp is libpam's out-pointer, checked non-null above.
    unsafe { *resp = out };
    PAM_SUCCESS
}

/// Wipes and frees the answers given so far and the array.
///
/// # Safety
/// `out` must be a calloc'd array of `count` responses whose non-null `resp` fields
/// were malloc'd NUL-terminated strings.
unsafe fn free_responses(out: *mut PamResponse, count: usize) {
    for i in 0..count {
        // SAFETY: i < count, within the array (the caller's contract).
        let r = unsafe { &mut *out.add(i) };
        if !r.resp.is_null() {
            // SAFETY: resp is a NUL-terminated malloc'd string (the caller's contract).
            unsafe {
                let len = libc::strlen(r.resp);
                std::ptr::write_bytes(r.resp, 0, len);
                libc::free(r.resp.cast());
            }
            r.resp = std::ptr::null_mut();
        }
    }
    // SAFETY: out was allocated with calloc (the caller's contract).
    unsafe { libc::free(out.cast()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tty_item() {
        assert_eq!(pam_tty("pts/3"), "/dev/pts/3");
        assert_eq!(pam_tty("none"), "totp-admin");
    }
}
