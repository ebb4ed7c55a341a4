//! The audit trail: every change goes to syslog (facility authpriv, ident `totp-admin`)
//! with who made it, to whom and from which terminal. Never a key or a code.

use crate::caller::Caller;
use pam_totp::log::quoted;
use std::ffi::CString;

/// Opens the log for this process. `totp-admin` is a process of its own, so
/// `openlog` is fine here (unlike inside the PAM module).
pub fn open() {
    // SAFETY: the ident is a static NUL-terminated string that lives for the whole
    // process, as openlog requires.
    unsafe { libc::openlog(c"totp-admin".as_ptr(), libc::LOG_PID, libc::LOG_AUTHPRIV) };
}

/// `action=enroll user="alice" by="alice" uid=1000 tty="pts/1" result=done detail`
pub fn line(caller: &Caller, action: &str, target: &str, result: &str, detail: &str) -> String {
    let mut text = format!(
        "action={action} user={} by={} uid={} tty={}",
        quoted(target),
        quoted(caller.name()),
        caller.account.uid,
        quoted(&caller.tty)
    );
    if let Some(login_uid) = caller.login_uid.filter(|l| *l != caller.account.uid) {
        text.push_str(&format!(" loginuid={login_uid}"));
    }
    text.push_str(&format!(" result={result}"));
    if !detail.is_empty() {
        text.push_str(&format!(" detail={}", quoted(detail)));
    }
    text
}

/// Logs a change that was made.
pub fn done(caller: &Caller, action: &str, target: &str, detail: &str) {
    write(
        libc::LOG_NOTICE,
        &line(caller, action, target, "done", detail),
    );
}

/// Logs a change that was refused or failed.
pub fn refused(caller: &Caller, action: &str, target: &str, detail: &str) {
    write(
        libc::LOG_WARNING,
        &line(caller, action, target, "refused", detail),
    );
}

fn write(priority: libc::c_int, text: &str) {
    // quoted() escapes every control byte, so there is no NUL; keep the guard anyway.
    let Ok(text) = CString::new(text.replace('\0', " ")) else {
        return;
    };
    // SAFETY: a constant "%s" format with one valid NUL-terminated string argument.
    unsafe { libc::syslog(libc::LOG_AUTHPRIV | priority, c"%s".as_ptr(), text.as_ptr()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use pam_totp::account::Account;

    #[test]
    fn fields_are_quoted() {
        let caller = Caller {
            account: Account {
                name: "root".into(),
                uid: 0,
                gid: 0,
                home: "/root".into(),
            },
            tty: "pts/1".into(),
            login_uid: Some(1000),
        };
        assert_eq!(
            line(&caller, "reset", "bob\nx", "done", "logout"),
            "action=reset user=\"bob\\x0ax\" by=\"root\" uid=0 tty=\"pts/1\" loginuid=1000 result=done detail=\"logout\""
        );
    }
}
