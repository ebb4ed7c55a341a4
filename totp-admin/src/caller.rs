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
#[derive(Debug, Clone)]
pub struct Process {
    /// The real uid at start: who ran the tool.
    pub real_uid: libc::uid_t,
    /// The real gid at start.
    pub real_gid: libc::gid_t,
    /// The supplementary groups at start (the caller's).
    pub groups: Vec<libc::gid_t>,
    /// Whether the effective uid is root (installed setuid root, or run by root).
    pub effective_root: bool,
}

/// Makes the process safe before anything else runs. For a caller other than root:
/// the environment is replaced by a fixed one, the umask is 077, the process cannot be
/// traced, dumped or signalled by the caller. Standard descriptors that were closed are
/// opened on /dev/null, so a file the tool opens cannot become someone's stdout.
///
/// The caller is identified here, by the real ids the kernel gave the process (read
/// first, kept in [`Process`]); right after, every uid and gid becomes root. From then
/// on the caller cannot signal the process (kill needs their uid as its real or saved
/// uid): no `kill -STOP` while it holds the store. The one step that needs the
/// caller's real ids, the password check, runs in a child ([`in_child_as_caller`]).
pub fn harden() -> Process {
    ensure_standard_fds();
    // SAFETY: getuid, getgid and geteuid cannot fail and have no preconditions.
    let (real_uid, real_gid, effective_uid) =
        unsafe { (libc::getuid(), libc::getgid(), libc::geteuid()) };
    let groups = supplementary_groups();
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o077) };
    // A stopped process would hold the store: the terminal's stop keys (and a
    // background read or write on the terminal) are ignored for the whole run, so
    // also while the store is open...
    for signal in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        // SAFETY: SIG_IGN for a catchable signal; no handler code runs.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    if real_uid != 0 {
        clear_environment();
        if effective_uid == 0 {
            // ... and, with every uid root, the caller can no longer send signals
            // (kill -STOP) to the process. Files it creates belong to root:root.
            set_ids(0, 0);
        }
    }
    no_dumps();
    Process {
        real_uid,
        real_gid,
        groups,
        effective_root: effective_uid == 0,
    }
}

/// Real ids `uid` and `gid`, effective and saved ids root. Exits when the kernel
/// refuses: the process must not go on with ids other than the ones it expects.
fn set_ids(uid: libc::uid_t, gid: libc::gid_t) {
    // SAFETY: plain ids; with euid 0 these calls cannot be refused.
    let (gid_rc, uid_rc) = unsafe { (libc::setresgid(gid, 0, 0), libc::setresuid(uid, 0, 0)) };
    if gid_rc != 0 || uid_rc != 0 {
        std::process::exit(1);
    }
    no_dumps();
}

/// Secrets pass through memory: no core file, no ptrace. Set after every change of
/// ids, since a change of credentials can reset the flag.
fn no_dumps() {
    // SAFETY: PR_SET_DUMPABLE with 0 takes no pointers.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// Runs `f` in a child process whose real uid and gid are the caller's (effective
/// and saved ids stay root), and waits for it. `f`'s error comes back as the result.
///
/// This is for the password check alone. PAM modules look at the real uid to learn
/// who is asking: pam_rootok passes anyone whose real uid is 0, and with every id root
/// (as [`harden`] leaves a setuid run) a `pam_rootok` line in /etc/pam.d/totp-admin
/// would let any user enroll without their password. With the real uid the caller's,
/// the stack runs as it does for `passwd` or `chsh`; the modules still read
/// /etc/shadow and write pam_faillock's tally with euid 0.
///
/// Why a child rather than switching the real uid back and forth here: a process
/// whose real uid is the caller's can be signalled by the caller (`kill -STOP`). The
/// child holds nothing anyone else needs (the store is not open; its caller opens it
/// after the check), and this process stays beyond the caller's signals throughout.
/// While it waits, this process ignores the terminal's fatal signals; when the child
/// dies of one (Ctrl-C at the password prompt, after it put the terminal back), this
/// process then dies of the same signal, as if it had been the one interrupted.
pub fn in_child_as_caller(process: &Process, f: impl FnOnce() -> Result<()>) -> Result<()> {
    if process.real_uid == 0 || !process.effective_root {
        return f();
    }
    // After fork the child runs PAM, which is only sound when no other thread could
    // hold a lock (malloc's, stdio's) at the moment of the fork.
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count());
    if !matches!(threads, Ok(1)) {
        return Err(Error::failed(
            "cannot check the password: the process is not single-threaded",
        ));
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::failed(format!(
            "cannot check the password: pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    let (read_end, write_end) = (fds[0], fds[1]);
    // The fatal signals stay blocked from before the fork until this process ignores
    // them, so none lands in between.
    let blocked = FatalSignals::block();
    // SAFETY: the process is single-threaded (checked above), so the child may run any
    // code; it leaves only through _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        blocked.unblock();
        // SAFETY: the child's copy of the read end is not used.
        unsafe { libc::close(read_end) };
        set_ids(process.real_uid, process.real_gid);
        // A panic must not unwind out of here: the child would go on as a copy of
        // the tool with the caller's real ids.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let (code, message) = match outcome {
            Ok(Ok(())) => (0, String::new()),
            Ok(Err(Error::Refused(m))) => (1, m),
            Ok(Err(Error::Failed(m))) => (2, m),
            Err(_) => (2, "the password check failed".to_string()),
        };
        write_all(write_end, message.as_bytes());
        // SAFETY: _exit ends the child without running this process's destructors or
        // atexit handlers (the parent owns those).
        unsafe { libc::_exit(code) };
    }
    // SAFETY: the parent's copy of the write end is not used.
    unsafe { libc::close(write_end) };
    if pid < 0 {
        let err = std::io::Error::last_os_error();
        blocked.unblock();
        // SAFETY: read_end is ours and not used afterwards.
        unsafe { libc::close(read_end) };
        return Err(Error::failed(format!(
            "cannot check the password: fork: {err}"
        )));
    }
    let ignored = blocked.ignore_then_unblock();
    let message = read_message(read_end);
    // SAFETY: read_end is ours and not used afterwards.
    unsafe { libc::close(read_end) };
    let status = wait_for(pid);
    ignored.restore();
    match status {
        ChildEnd::Exited(0) => Ok(()),
        ChildEnd::Exited(1) => Err(Error::Refused(message)),
        ChildEnd::Exited(_) => Err(Error::Failed(message)),
        ChildEnd::Signalled(sig) => {
            if FATAL_SIGNALS.contains(&sig) {
                // SAFETY: raise with the disposition this process had before; the
                // default ends it with `sig`, as the interrupted child was.
                unsafe { libc::raise(sig) };
            }
            Err(Error::refused(format!(
                "the password check was ended by signal {sig}"
            )))
        }
    }
}

/// The signals that end the program at a prompt (Ctrl-C, Ctrl-\\, a hang-up, kill).
const FATAL_SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP];

/// The fatal signals blocked, and the mask to go back to.
struct FatalSignals {
    old_mask: libc::sigset_t,
}

impl FatalSignals {
    fn block() -> FatalSignals {
        // SAFETY: all-zero sigsets are valid to initialise with sigemptyset; the
        // pointers passed are valid for the calls.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in FATAL_SIGNALS {
                libc::sigaddset(&mut set, sig);
            }
            let mut old_mask: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old_mask);
            FatalSignals { old_mask }
        }
    }

    fn unblock(&self) {
        // SAFETY: restores the mask sigprocmask returned.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut()) };
    }

    /// Ignores the fatal signals (a pending one is dropped), then unblocks them.
    fn ignore_then_unblock(self) -> IgnoredSignals {
        let mut saved = Vec::with_capacity(FATAL_SIGNALS.len());
        for sig in FATAL_SIGNALS {
            // SAFETY: all-zero sigaction values are valid to fill in; SIG_IGN runs no
            // code.
            unsafe {
                let mut ignore: libc::sigaction = std::mem::zeroed();
                ignore.sa_sigaction = libc::SIG_IGN;
                libc::sigemptyset(&mut ignore.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &ignore, &mut old) == 0 {
                    saved.push((sig, old));
                }
            }
        }
        self.unblock();
        IgnoredSignals { saved }
    }
}

/// The actions to put back once the child has ended.
struct IgnoredSignals {
    saved: Vec<(libc::c_int, libc::sigaction)>,
}

impl IgnoredSignals {
    fn restore(self) {
        for (sig, old) in &self.saved {
            // SAFETY: puts back the action sigaction returned for this signal.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
    }
}

enum ChildEnd {
    Exited(i32),
    Signalled(libc::c_int),
}

fn wait_for(pid: libc::pid_t) -> ChildEnd {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: status is a valid out-pointer; pid is our child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            if libc::WIFSIGNALED(status) {
                return ChildEnd::Signalled(libc::WTERMSIG(status));
            }
            return ChildEnd::Exited(libc::WEXITSTATUS(status));
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return ChildEnd::Exited(2);
        }
    }
}

/// Longest error message the child sends back.
const MAX_MESSAGE: usize = 4096;

fn read_message(fd: libc::c_int) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while out.len() < MAX_MESSAGE {
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => break,
            n if n > 0 => out.extend_from_slice(&buf[..n as usize]),
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => break,
        }
    }
    out.truncate(MAX_MESSAGE);
    String::from_utf8_lossy(&out).into_owned()
}

fn write_all(fd: libc::c_int, mut bytes: &[u8]) {
    bytes = &bytes[..bytes.len().min(MAX_MESSAGE)];
    while !bytes.is_empty() {
        // SAFETY: bytes is readable for its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = &bytes[n as usize..];
        } else if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {
            continue;
        } else {
            return;
        }
    }
}

/// The supplementary groups of the process.
fn supplementary_groups() -> Vec<libc::gid_t> {
    // SAFETY: a count query with size 0 writes nothing.
    let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let Ok(count) = usize::try_from(count) else {
        return Vec::new();
    };
    let mut groups = vec![0 as libc::gid_t; count];
    // SAFETY: groups has room for `count` gids.
    let got = unsafe { libc::getgroups(count as libc::c_int, groups.as_mut_ptr()) };
    groups.truncate(usize::try_from(got).unwrap_or(0));
    groups
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

    /// The account a command acts on: the caller, or `--user` when it names the
    /// caller or the caller is root. Always the canonical account (see
    /// [`canonical_account`]), so an alias or another spelling of a name reaches the
    /// same records. A name NSS does not know comes back as [`Target::Unknown`], for
    /// root only.
    pub fn resolve(&self, requested: Option<&str>) -> Result<Target> {
        let Some(name) = requested else {
            return Ok(Target::Account(self.account.clone()));
        };
        check_user_name(name)?;
        let found = canonical_account(name)?;
        match found {
            Some(account) if account.name == self.account.name => Ok(Target::Account(account)),
            _ if !self.is_root() => Err(Error::refused(format!(
                "you may act only on your own account, not on {}",
                pam_totp::log::quoted(name)
            ))),
            Some(account) => Ok(Target::Account(account)),
            None => Ok(Target::Unknown(name.to_string())),
        }
    }

    /// [`Caller::resolve`] for commands that need an account NSS knows.
    pub fn target(&self, requested: Option<&str>) -> Result<Account> {
        match self.resolve(requested)? {
            Target::Account(account) => Ok(account),
            Target::Unknown(name) => Err(no_such_user(&name)),
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

/// Whom a command acts on.
#[derive(Debug, Clone)]
pub enum Target {
    /// An account NSS knows, under its canonical name.
    Account(Account),
    /// A name NSS does not know (root asked; e.g. a deleted account).
    Unknown(String),
}

/// "no such user: NAME".
pub fn no_such_user(name: &str) -> Error {
    Error::failed(format!("no such user: {}", crate::output::escaped(name)))
}

/// The account a typed name stands for, as logins key it (the library's
/// [`account::canonical_account`]). `Ok(None)`: NSS does not know the name.
pub fn canonical_account(name: &str) -> Result<Option<Account>> {
    Ok(account::canonical_account(name)?)
}

/// A user NSS knows, under its canonical name, or a one-line error.
pub fn lookup_existing(name: &str) -> Result<Account> {
    check_user_name(name)?;
    canonical_account(name)?.ok_or_else(|| no_such_user(name))
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

    fn name_of(t: Target) -> String {
        match t {
            Target::Account(a) => a.name,
            Target::Unknown(n) => format!("unknown {n}"),
        }
    }

    // These use the accounts every system has (root, uid 0) and names none has.
    const NOBODY_HAS: &str = "no-such-user-totp-admin-test";

    #[test]
    fn users_act_on_themselves_only() {
        let alice = caller("alice", 1000);
        assert_eq!(name_of(alice.resolve(None).unwrap()), "alice");
        for other in ["bob", "root", NOBODY_HAS] {
            assert!(
                matches!(alice.resolve(Some(other)), Err(Error::Refused(_))),
                "{other}"
            );
        }
        assert!(alice.require_root("reset").is_err());
    }

    #[test]
    fn root_acts_on_anyone_with_a_sane_name() {
        let root = caller("root", 0);
        assert_eq!(name_of(root.resolve(Some("root")).unwrap()), "root");
        assert_eq!(
            name_of(root.resolve(Some(NOBODY_HAS)).unwrap()),
            format!("unknown {NOBODY_HAS}")
        );
        let err = root.target(Some(NOBODY_HAS)).unwrap_err();
        assert_eq!(err.to_string(), format!("no such user: {NOBODY_HAS}"));
        for bad in ["", "a\nb", "-x", "a:b", "../x", "a b"] {
            assert!(root.resolve(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_canonical() {
        let root = canonical_account("root").unwrap().unwrap();
        assert_eq!((root.name.as_str(), root.uid), ("root", 0));
        assert!(canonical_account(NOBODY_HAS).unwrap().is_none());
    }
}
