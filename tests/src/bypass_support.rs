//! Logins held at the code prompt and answered later, for the tests of what happens
//! between the prompt and the answer: several logins at the prompt at once, an answer
//! that comes late, a key replaced meanwhile.
//!
//! - [`HeldLogin`]: pam-client through pam_wrapper (as [`Sandbox::pam`]), whose
//!   standard input the test writes line by line when it chooses.
//! - [`HeldSsh`]: OpenSSH's client under `expect`, which answers `Password: `, then
//!   waits at `Verification code: `, says so by creating a file, and types the answer
//!   the test writes into another file.
//!
//! Every wait is bounded.

use crate::sshd_support::{Session, Sshd};
use crate::{pam_client, parse_run, write_file, PamRun, Sandbox};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The module's code prompt.
pub const CODE_PROMPT: &str = "Verification code: ";

/// pam-client through pam_wrapper for `service` (made with [`Sandbox::service`]),
/// answering each prompt with the next line the test writes.
pub struct HeldLogin {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stdout_reader: Option<JoinHandle<()>>,
    stderr_reader: Option<JoinHandle<Vec<u8>>>,
}

impl HeldLogin {
    /// Starts pam-client for `user` with `extra` on its command line; it is stopped
    /// after `limit_secs` whatever happens.
    pub fn start(
        sb: &Sandbox,
        service: &str,
        user: &str,
        extra: &[&str],
        limit_secs: u64,
    ) -> HeldLogin {
        let mut child = sb
            .command("timeout")
            .arg(limit_secs.to_string())
            .args(["env", "LD_PRELOAD=libpam_wrapper.so", "PAM_WRAPPER=1"])
            .arg(format!(
                "PAM_WRAPPER_SERVICE_DIR={}",
                sb.dir.join("pam").join(service).display()
            ))
            .arg("PAM_WRAPPER_DEBUGLEVEL=2")
            .arg(pam_client())
            .args([service, user])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr_reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stderr.read_to_end(&mut out);
            out
        });
        HeldLogin {
            child,
            stdin,
            lines,
            stdout: Vec::new(),
            stdout_reader: Some(stdout_reader),
            stderr_reader: Some(stderr_reader),
        }
    }

    /// Waits, at most `bound`, until pam-client has printed a line containing `text`;
    /// false when it did not (it ended, or the time ran out).
    pub fn wait_for(&mut self, text: &str, bound: Duration) -> bool {
        if self.stdout.iter().any(|l| l.contains(text)) {
            return true;
        }
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.stdout.push(line);
                    if found {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// Waits for the code prompt (bounded), panicking with what was printed if it never
    /// came.
    pub fn wait_for_code_prompt(&mut self) {
        if !self.wait_for(CODE_PROMPT, Duration::from_secs(30)) {
            panic!("no code prompt; pam-client printed: {:?}", self.stdout);
        }
    }

    /// Everything printed so far.
    pub fn printed(&self) -> &[String] {
        &self.stdout
    }

    /// Types `line` and Enter.
    pub fn answer(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        // The child may have ended already: its result says why.
        let _ = stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush());
    }

    /// Closes stdin, waits for the end (bounded by the limit given at the start) and
    /// returns the result.
    pub fn finish(mut self) -> PamRun {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        self.stdout_reader.take().unwrap().join().unwrap();
        while let Ok(line) = self.lines.try_recv() {
            self.stdout.push(line);
        }
        let stderr = self.stderr_reader.take().unwrap().join().unwrap();
        let mut stdout = self.stdout.join("\n").into_bytes();
        stdout.push(b'\n');
        parse_run(&Output {
            status,
            stdout,
            stderr,
        })
    }
}

/// The expect program of [`HeldSsh`]: `argv` is READY ANSWER PASSWORD COMMAND...
const HOLD_DRIVER: &str = r#"
set timeout 40
match_max 200000
log_user 1
set ready [lindex $argv 0]
set answer_file [lindex $argv 1]
set password [lindex $argv 2]
set command [lrange $argv 3 end]
spawn -noecho {*}$command
expect {
    -ex "Password: " { send -- "$password\r"; exp_continue }
    -ex "Verification code: " {}
    timeout { puts "\n@@TIMEOUT waiting for the code prompt"; exit 101 }
    eof { puts "\n@@EOF waiting for the code prompt"; exit 102 }
}
set f [open $ready w]
close $f
set waited 0
while {![file exists $answer_file]} {
    if {$waited > 1500} { puts "\n@@TIMEOUT waiting for the answer"; exit 101 }
    after 100
    incr waited
}
set f [open $answer_file r]
set answer [string trim [read $f]]
close $f
send -- "$answer\r"
expect {
    eof {}
    timeout { puts "\n@@TIMEOUT waiting for the end"; exit 101 }
}
lassign [wait] pid id oserr status
puts "\n@@EXIT $status"
"#;

/// `ssh user@sshd` (keyboard-interactive, password then code) held at the code prompt
/// until [`HeldSsh::answer`].
pub struct HeldSsh {
    child: Child,
    ready: PathBuf,
    answer_file: PathBuf,
    output: Option<JoinHandle<Vec<u8>>>,
}

impl HeldSsh {
    pub fn start(sshd: &Sshd, user: &str, password: &str) -> HeldSsh {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let work = sshd.dir.join(format!("held-{n}"));
        std::fs::create_dir_all(&work).unwrap();
        let driver = work.join("hold.exp");
        write_file(&driver, HOLD_DRIVER, 0o644);
        let ready = work.join("ready");
        let answer_file = work.join("answer");
        let port = sshd.port.to_string();
        let known_hosts = format!(
            "UserKnownHostsFile={}",
            sshd.dir.join(format!("known_hosts-{n}")).display()
        );
        let target = format!("{user}@{}", sshd.addr);
        let mut child = Command::new("timeout")
            .args(["150", "expect", "-f"])
            .arg(&driver)
            .arg(&ready)
            .arg(&answer_file)
            .arg(password)
            .args([
                "ssh",
                "-F",
                "/dev/null",
                "-p",
                &port,
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                &known_hosts,
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "NumberOfPasswordPrompts=1",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "PreferredAuthentications=keyboard-interactive",
                &target,
                crate::sshd_support::WHOAMI,
            ])
            .env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .env("TERM", "dumb")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("DISPLAY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let output = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            out
        });
        HeldSsh {
            child,
            ready,
            answer_file,
            output: Some(output),
        }
    }

    /// Whether the session has reached the code prompt.
    pub fn at_prompt(&self) -> bool {
        self.ready.exists()
    }

    /// Whether the client has ended (it failed before the prompt, or it is done).
    pub fn ended(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Types `code` at the held prompt.
    pub fn answer(&self, code: &str) {
        let partial = self.answer_file.with_extension("partial");
        write_file(&partial, &format!("{code}\n"), 0o644);
        std::fs::rename(&partial, &self.answer_file).unwrap();
    }

    /// Waits for the client's end (bounded by its 150 s limit) and returns the session.
    pub fn finish(mut self) -> Session {
        let _ = self.child.wait();
        let raw = self.output.take().unwrap().join().unwrap();
        let text = String::from_utf8_lossy(&raw)
            .replace("\r\n", "\n")
            .replace('\r', "");
        let exit = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("@@EXIT "))
            .and_then(|s| s.trim().parse().ok());
        let planned = !text.contains("@@TIMEOUT") && !text.contains("@@EOF") && exit.is_some();
        let problem = (!planned).then(|| format!("the dialog did not go as planned:\n{text}"));
        Session {
            text,
            exit,
            problem,
        }
    }
}

/// Waits, at most `bound`, until every one of `sessions` is at its code prompt; panics
/// naming the ones that are not.
pub fn wait_all_at_prompt(sessions: &mut [HeldSsh], bound: Duration) {
    let deadline = Instant::now() + bound;
    loop {
        if sessions.iter().all(HeldSsh::at_prompt) {
            return;
        }
        let mut ended = Vec::new();
        for (i, s) in sessions.iter_mut().enumerate() {
            if !s.at_prompt() && s.ended() {
                ended.push(i);
            }
        }
        assert!(
            ended.is_empty(),
            "sessions {ended:?} ended before the code prompt"
        );
        assert!(
            Instant::now() < deadline,
            "not every session reached the code prompt within {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many of `lines` contain `needle`.
pub fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}
