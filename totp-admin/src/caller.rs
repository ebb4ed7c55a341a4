//! Who runs the tool, and making the process safe to run setuid root for them.
//!
//! `totp-admin` is installed setuid root so that users can enroll into the root-owned
//! store. Everything an unprivileged caller controls is therefore hostile: the
//! environment, the open file descriptors, the umask, the arguments. [`harden`] runs
//! first in `main`; the acting user comes from the real uid through NSS, never from
//! `$USER` or an argument.

use crate::error::{Error, Result};
use pam_totp::account::{self, Account};
use std::ffi::{CStr, OsString};

/// The only search path a child process of the tool ever sees.
pub const SAFE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// What [`harden`] found out about the process.
#[derive(Debug, Clone, Copy)]
pub struct Process {
    /// The real uid at start: who ran the tool.
    pub real_uid: libc::uid_t,
    /// Whether the effective uid is root (installed setuid root, or run by root).
    pub effective_root: bool,
}

/// Makes the process safe before anything else runs. For a caller other than root:
/// the environment is replaced by a fixed one, the umask is 077, the process cannot be
/// traced, dumped or signalled by the caller (all its uids become root; the caller
/// is remembered in [`Process::real_uid`]). Standard descriptors that were closed are
/// opened on /dev/null, so a file the tool opens cannot become someone's stdout.
pub fn harden() -> Process {
    ensure_standard_fds();
    // SAFETY: getuid and geteuid cannot fail and have no preconditions.
    let (real_uid, effective_uid) = unsafe { (libc::getuid(), libc::geteuid()) };
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o077) };
    // A stopped process would hold the store's write lock and stall every login:
    // the terminal's stop keys are ignored...
    for signal in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        // SAFETY: SIG_IGN for a catchable signal; no handler code runs.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    if real_uid != 0 {
        clear_environment();
        if effective_uid == 0 {
            // ... and, with every uid root, the caller can no longer send signals
            // (kill -STOP) to the process. Files it creates belong to root:root. The
            // caller's identity was taken from the real uid above.
            // SAFETY: plain ids; with euid 0 these calls cannot be refused.
            let (gid_rc, uid_rc) = unsafe { (libc::setresgid(0, 0, 0), libc::setresuid(0, 0, 0)) };
            if gid_rc != 0 || uid_rc != 0 {
                std::process::exit(1);
            }
        }
    }
    // Secrets pass through memory: no core file, no ptrace. Set last: a change of
    // credentials resets the flag.
    // SAFETY: PR_SET_DUMPABLE with 0 takes no pointers.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    Process {
        real_uid,
        effective_root: effective_uid == 0,
    }
}

fn ensure_standard_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD on any integer is harmless; it fails with EBADF when closed.
        let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1;
        if !open {
            // SAFETY: a constant NUL-terminated path; open returns the lowest free
            // descriptor, which is `fd` since the lower ones are open.
            let got = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
            if got != fd {
                // Cannot make the descriptors safe: stop before anything is opened.
                std::process::exit(1);
            }
        }
    }
}

/// Replaces the environment with PATH and, when it looks harmless, TERM. Nothing else
/// the caller set (LD_*, TMPDIR, SQLITE_TMPDIR, HOME, LOCALDOMAIN, TZ, ...) survives.
fn clear_environment() {
    let term = std::env::var("TERM").ok().filter(|t| {
        !t.is_empty()
            && t.len() <= 64
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
    });
    let keys: Vec<OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    for key in keys {
        std::env::remove_var(key);
    }
    std::env::set_var("PATH", SAFE_PATH);
    if let Some(term) = term {
        std::env::set_var("TERM", term);
    }
}

/// The person running the tool.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: Account,
    /// The controlling terminal of standard input (`pts/3`), or `none`.
    pub tty: String,
    /// The login uid the kernel keeps across su and sudo (`/proc/self/loginuid`).
    pub login_uid: Option<libc::uid_t>,
}

impl Caller {
    /// The caller's account, from the real uid.
    pub fn identify(process: &Process) -> Result<Caller> {
        let account = account::lookup_uid(process.real_uid)?.ok_or_else(|| {
            Error::refused(format!("uid {} has no account name", process.real_uid))
        })?;
        Ok(Caller {
            account,
            tty: tty_name(),
            login_uid: login_uid(),
        })
    }

    pub fn is_root(&self) -> bool {
        self.account.uid == 0
    }

    pub fn name(&self) -> &str {
        &self.account.name
    }

    /// The user a command acts on: the caller, or `--user` when that is the caller
    /// or the caller is root.
    pub fn target_name(&self, requested: Option<&str>) -> Result<String> {
        match requested {
            None => Ok(self.account.name.clone()),
            Some(name) if name == self.account.name => Ok(name.to_string()),
            Some(name) if self.is_root() => {
                check_user_name(name)?;
                Ok(name.to_string())
            }
            Some(name) => Err(Error::refused(format!(
                "you may act only on your own account, not on {}",
                pam_totp::log::quoted(name)
            ))),
        }
    }

    /// Root only: refuses anyone else.
    pub fn require_root(&self, what: &str) -> Result<()> {
        if self.is_root() {
            Ok(())
        } else {
            Err(Error::refused(format!("{what}: only root may do this")))
        }
    }
}

/// A user NSS knows, or a one-line error.
pub fn lookup_existing(name: &str) -> Result<Account> {
    check_user_name(name)?;
    account::lookup_user(name)?
        .ok_or_else(|| Error::failed(format!("no such user: {}", pam_totp::log::quoted(name))))
}

/// Refuses names no account can have, before they reach NSS, the store or a log.
pub fn check_user_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > 256
        || name.starts_with('-')
        || name
            .chars()
            .any(|c| c.is_control() || c == ':' || c == '/' || c.is_whitespace());
    if bad {
        return Err(Error::failed(format!(
            "not a valid user name: {}",
            pam_totp::log::quoted(name)
        )));
    }
    Ok(())
}

fn tty_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its whole length; ttyname_r NUL-terminates on success.
    let rc = unsafe { libc::ttyname_r(0, buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "none".into();
    }
    let name = CStr::from_bytes_until_nul(&buf)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    let short = name.strip_prefix("/dev/").unwrap_or(&name);
    if short.is_empty() {
        "none".into()
    } else {
        short.to_string()
    }
}

fn login_uid() -> Option<libc::uid_t> {
    let text = std::fs::read_to_string("/proc/self/loginuid").ok()?;
    let uid: libc::uid_t = text.trim().parse().ok()?;
    // 4294967295: not set (a daemon, or no pam_loginuid).
    (uid != libc::uid_t::MAX).then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(name: &str, uid: libc::uid_t) -> Caller {
        Caller {
            account: Account {
                name: name.into(),
                uid,
                gid: uid,
                home: "/".into(),
            },
            tty: "none".into(),
            login_uid: None,
        }
    }

    #[test]
    fn users_act_on_themselves_only() {
        let alice = caller("alice", 1000);
        assert_eq!(alice.target_name(None).unwrap(), "alice");
        assert_eq!(alice.target_name(Some("alice")).unwrap(), "alice");
        assert!(matches!(
            alice.target_name(Some("bob")),
            Err(Error::Refused(_))
        ));
        assert!(matches!(
            alice.target_name(Some("root")),
            Err(Error::Refused(_))
        ));
        assert!(alice.require_root("reset").is_err());
    }

    #[test]
    fn root_acts_on_anyone_with_a_sane_name() {
        let root = caller("root", 0);
        assert_eq!(root.target_name(Some("bob")).unwrap(), "bob");
        for bad in ["", "a\nb", "-x", "a:b", "../x", "a b"] {
            assert!(root.target_name(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
