//! Ending a user's sessions for `reset --logout` (a lost or stolen phone, where someone
//! else may hold a session): through logind where it runs, then by signalling every
//! process that still runs as the user.

use crate::caller::{lookup_existing, SAFE_PATH};
use crate::error::{Error, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long processes get to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// Ends the sessions and processes of `user`; says how.
pub fn end_sessions(user: &str) -> Result<String> {
    let account = lookup_existing(user)?;
    if account.uid == 0 {
        return Err(Error::refused("--logout: will not end root's sessions"));
    }
    let mut how = Vec::new();
    if logind_runs() {
        if let Some(loginctl) = ["/usr/bin/loginctl", "/bin/loginctl"]
            .into_iter()
            .find(|p| Path::new(p).exists())
        {
            let ok = Command::new(loginctl)
                .args(["terminate-user", "--", user])
                .env_clear()
                .env("PATH", SAFE_PATH)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            how.push(if ok {
                "logind ended the sessions".to_string()
            } else {
                "logind could not end the sessions".to_string()
            });
        }
    }
    let signalled = kill_processes_of(account.uid)?;
    how.push(format!("{signalled} processes signalled"));
    Ok(how.join(", "))
}

fn logind_runs() -> bool {
    Path::new("/run/systemd/system").is_dir() && Path::new("/run/systemd/seats").exists()
}

/// Sends SIGTERM to every process whose real, effective or saved uid is `uid`, then
/// SIGKILL to those still there after [`GRACE`]. Returns how many were signalled.
fn kill_processes_of(uid: libc::uid_t) -> Result<usize> {
    let targets = processes_of(uid)?;
    let mut handles = Vec::new();
    for pid in &targets {
        if let Some(fd) = PidFd::open(*pid) {
            // The pidfd pins the process: /proc/PID is now the same process or gone.
            if process_uids(*pid).is_some_and(|uids| uids.contains(&uid))
                && fd.signal(libc::SIGTERM)
            {
                handles.push((*pid, fd));
            }
        }
    }
    let count = handles.len();
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline && handles.iter().any(|(pid, _)| alive(*pid)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (pid, fd) in &handles {
        if alive(*pid) {
            fd.signal(libc::SIGKILL);
        }
    }
    Ok(count)
}

fn processes_of(uid: libc::uid_t) -> Result<Vec<libc::pid_t>> {
    let me = std::process::id() as libc::pid_t;
    let entries = std::fs::read_dir("/proc").map_err(|e| Error::failed(format!("/proc: {e}")))?;
    Ok(entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| *pid != me && process_uids(*pid).is_some_and(|u| u.contains(&uid)))
        .collect())
}

/// Real, effective and saved uid from `/proc/PID/status`.
fn process_uids(pid: libc::pid_t) -> Option<[libc::uid_t; 3]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut ids = line.split_whitespace().map(|w| w.parse::<libc::uid_t>());
    Some([ids.next()?.ok()?, ids.next()?.ok()?, ids.next()?.ok()?])
}

/// Whether the process exists and is not a zombie.
fn alive(pid: libc::pid_t) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A process file descriptor: signals reach the process it was opened on, never a
/// later process that reused the pid.
struct PidFd(libc::c_int);

impl PidFd {
    fn open(pid: libc::pid_t) -> Option<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        (fd >= 0).then_some(PidFd(fd as libc::c_int))
    }

    fn signal(&self, signal: libc::c_int) -> bool {
        // SAFETY: self.0 is an open pidfd; a null siginfo means "as kill(2) would".
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0,
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        rc == 0
    }
}

impl Drop for PidFd {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this value owns.
        unsafe { libc::close(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_uids() {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let me = std::process::id() as libc::pid_t;
        assert_eq!(process_uids(me).unwrap()[0], uid);
        assert!(alive(me));
        assert!(!processes_of(uid).unwrap().contains(&me));
    }
}
