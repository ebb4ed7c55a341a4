//! A real sshd (on 127.0.0.1, or on an address inside a network namespace) and real
//! interactive programs (`ssh`, `login`, `su`) driven
//! by `expect`, each inside a private mount namespace that leaves the host as it was:
//!
//! - the sandbox's copy of /etc is bound over /etc (as [`Sandbox::command`] does);
//! - a sandbox directory is bound over /run (sshd's privilege separation directory
//!   `/run/sshd`, pam_motd's `/run/motd.dynamic`) and another over /var/log (wtmp,
//!   lastlog, btmp);
//! - /dev is a small tmpfs holding the device nodes these programs use, re-bound from
//!   the host's /dev, a private devpts instance for terminals, and `/dev/log`: a
//!   datagram socket owned by the test, so the lines the module logs through
//!   `pam_syslog` can be read back ([`Namespace::syslog`]).

use crate::{module, workspace, write_file, Sandbox};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The PAM service name of the test sshd: it is started through a symlink of this
/// name, and sshd takes its service name from the name it was started as.
pub const SERVICE: &str = "sshd-totptest";

/// Sets up the private mounts, then runs the rest of the command line.
/// `$1` is the sandbox directory, `$2` the socket to bind over /dev/log.
const ENTER: &str = r#"T="$1"; S="$2"; shift 2
mount --bind "$T/etc" /etc || exit 125
mount --bind "$T/run" /run || exit 125
mount --bind "$T/varlog" /var/log || exit 125
D="$T/dev"
mount -t tmpfs -o mode=755,nosuid tmpfs "$D" || exit 125
for n in null zero full random urandom tty; do
    : > "$D/$n" && mount --bind "/dev/$n" "$D/$n" || exit 125
done
mkdir "$D/pts" "$D/shm" || exit 125
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$D/pts" || exit 125
ln -s pts/ptmx "$D/ptmx" && mount --bind /dev/shm "$D/shm" || exit 125
ln -s /proc/self/fd "$D/fd" && ln -s fd/0 "$D/stdin" && ln -s fd/1 "$D/stdout" && ln -s fd/2 "$D/stderr" || exit 125
: > "$D/log" && mount --bind "$S" "$D/log" || exit 125
mount --move "$D" /dev || exit 125
exec "$@""#;

/// The private mounts of one sandbox, and the socket that receives its syslog lines.
pub struct Namespace {
    dir: PathBuf,
    socket_path: PathBuf,
    /// Lines read from the socket by `reader`, which drains it all the time: a full
    /// socket queue would block every process that logs. (In a mutex: logins to one
    /// sshd may run from several threads.)
    lines: Mutex<Receiver<String>>,
    reader: Option<JoinHandle<()>>,
    /// The network namespace (`ip netns`) the commands run in; the host's when `None`.
    netns: Option<String>,
}

/// Sent to the log socket by the test itself to stop the reader.
const STOP: &str = "@@stop";

impl Namespace {
    pub fn new(sb: &Sandbox) -> Namespace {
        let dir = sb.dir.clone();
        for sub in ["run/sshd", "varlog", "dev"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for sub in ["run", "run/sshd", "varlog"] {
            std::fs::set_permissions(dir.join(sub), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        let socket_path = dir.join("log.sock");
        let socket = UnixDatagram::bind(&socket_path).unwrap();
        std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let (tx, lines) = channel();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = socket.recv(&mut buf) {
                let line = String::from_utf8_lossy(&buf[..n]).into_owned();
                if line == STOP || tx.send(line).is_err() {
                    break;
                }
            }
        });
        Namespace {
            dir,
            socket_path,
            lines: Mutex::new(lines),
            reader: Some(reader),
            netns: None,
        }
    }

    /// The same private mounts, with the commands run inside network namespace `netns`
    /// (made with `ip netns add`).
    pub fn in_netns(mut self, netns: &str) -> Namespace {
        self.netns = Some(netns.to_string());
        self
    }

    /// A command that runs in a fresh private mount namespace set up as described above.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = match &self.netns {
            Some(netns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", netns, "unshare"]);
                cmd
            }
            None => Command::new("unshare"),
        };
        cmd.args([
            "-m",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            ENTER,
            "enter",
        ])
        .arg(&self.dir)
        .arg(&self.socket_path)
        .arg(program);
        cmd
    }

    /// The syslog lines received since the last call. A PAM application logs the
    /// module's lines before it answers its client, so once the client is done they
    /// are all in the socket; a marker sent now comes out after them.
    pub fn syslog(&self) -> Vec<String> {
        let marker = format!("@@mark {}", unix_nanos());
        UnixDatagram::unbound()
            .unwrap()
            .send_to(marker.as_bytes(), &self.socket_path)
            .unwrap();
        let received = self.lines.lock().unwrap();
        let mut lines = Vec::new();
        loop {
            match received.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if line == marker => return lines,
                Ok(line) => lines.push(line),
                Err(e) => panic!("the syslog reader stopped: {e}"),
            }
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Ok(s) = UnixDatagram::unbound() {
            let _ = s.send_to(STOP.as_bytes(), &self.socket_path);
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// One run of an interactive program under `expect`.
#[derive(Debug)]
pub struct Session {
    /// Everything the program wrote to its terminal, with `\r\n` turned into `\n`.
    pub text: String,
    /// The program's exit status, if it ran to its end.
    pub exit: Option<i32>,
    /// Set when the dialog did not go as planned (a text never came).
    pub problem: Option<String>,
}

impl Session {
    /// The program printed `logged-in-as-USER`, which only a shell of USER prints
    /// (the command is `echo logged-in-as-$(id -un)`).
    pub fn logged_in_as(&self, user: &str) -> bool {
        self.text.contains(&format!("logged-in-as-{user}"))
    }

    /// The lines of the transcript (trailing spaces removed).
    pub fn lines(&self) -> Vec<&str> {
        self.text.lines().map(str::trim_end).collect()
    }
}

/// The command every login runs, which proves who is logged in.
pub const WHOAMI: &str = "echo logged-in-as-$(id -un)";

/// The `expect` program: waits for each text of the dialog in turn and types the answer.
/// `@code` types the current TOTP code (SHA1, 6 digits, 30 s) for the key shown earlier
/// in the session ("Or enter this key: ..."), computed with oathtool; `@nextcode` the code
/// for the step after the last one typed; `@same` the last code again; `@end` stops
/// there, answering nothing.
const DRIVER: &str = r#"
set timeout 20
match_max 200000
log_user 1
set dialog [lindex $argv 0]
set command [lrange $argv 1 end]
set f [open $dialog r]
fconfigure $f -encoding utf-8
set steps [split [string trimright [read $f] "\n"] "\n"]
close $f
set seen ""
set step 0
proc key_shown {} {
    global seen
    if {![regexp {Or enter this key: ([A-Z2-7 ]+)} $seen -> key]} {
        puts "\n@@NOKEY"
        exit 103
    }
    return [string map {" " ""} $key]
}
proc totp {step} {
    return [exec oathtool --totp --base32 --now=@[expr {$step * 30}] [key_shown]]
}
spawn -noecho {*}$command
foreach line $steps {
    lassign [split $line "\t"] want answer
    expect {
        -ex $want { append seen $expect_out(buffer) }
        timeout { puts "\n@@TIMEOUT waiting for: $want"; exit 101 }
        eof { puts "\n@@EOF waiting for: $want"; exit 102 }
    }
    switch -- $answer {
        @end { close; wait; puts "\n@@END"; exit 0 }
        @code { set step [expr {[clock seconds] / 30}]; set answer [totp $step] }
        @nextcode { incr step; set answer [totp $step] }
        @same { set answer [totp $step] }
    }
    send -- "$answer\r"
}
expect {
    eof {}
    timeout { puts "\n@@TIMEOUT waiting for the end"; exit 101 }
}
lassign [wait] pid id oserr status
puts "\n@@EXIT $status"
"#;

/// One step of a dialog: wait for `.0` (exact text), then type `.1` and Enter.
pub type Step<'a> = (&'a str, &'a str);

/// Runs `argv` under `expect`, through `prefix` (a command that may enter a namespace
/// and ends with the program that runs `expect`), in a UTF-8 locale so that the QR
/// code's half blocks arrive intact. `work` holds the driver and dialog files.
pub fn run_dialog(mut prefix: Command, work: &Path, argv: &[&str], dialog: &[Step<'_>]) -> Session {
    // Dialogs may run at once in one directory: each writes the driver whole (renamed
    // into place) and has a dialog file of its own.
    static DIALOGS: AtomicUsize = AtomicUsize::new(0);
    let n = DIALOGS.fetch_add(1, Ordering::Relaxed);
    let driver = work.join("driver.exp");
    let partial = work.join(format!(".driver.exp.{}.{n}", std::process::id()));
    write_file(&partial, DRIVER, 0o644);
    std::fs::rename(&partial, &driver).unwrap();
    let file = work.join(format!("dialog-{}-{n}", unix_nanos()));
    let text: String = dialog
        .iter()
        .map(|(want, answer)| {
            assert!(!want.contains(['\t', '\n']) && !answer.contains(['\t', '\n']));
            format!("{want}\t{answer}\n")
        })
        .collect();
    write_file(&file, &text, 0o644);
    let out = prefix
        .arg("-f")
        .arg(&driver)
        .arg(&file)
        .args(argv)
        .env("LANG", "C.UTF-8")
        .env("LC_ALL", "C.UTF-8")
        .env("TERM", "dumb")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("DISPLAY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let raw = String::from_utf8_lossy(&out.stdout);
    let text = raw.replace("\r\n", "\n").replace('\r', "");
    let exit = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("@@EXIT "))
        .and_then(|s| s.trim().parse().ok());
    let planned =
        !text.contains("@@TIMEOUT") && !text.contains("@@EOF") && !text.contains("@@NOKEY");
    let problem = (!planned).then(|| {
        format!(
            "the dialog did not go as planned:\n{text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Session {
        text,
        exit,
        problem,
    }
}

/// Runs `argv` under `expect` inside `ns` (bounded by `timeout`).
pub fn dialog_in(ns: &Namespace, work: &Path, argv: &[&str], dialog: &[Step<'_>]) -> Session {
    let mut prefix = ns.command("timeout");
    prefix.args(["90", "expect"]);
    let session = run_dialog(prefix, work, argv, dialog);
    if let Some(problem) = &session.problem {
        panic!("{problem}\nsyslog: {:?}", ns.syslog());
    }
    session
}

/// A real sshd, started under [`SERVICE`] inside the sandbox's namespace. Dropping it
/// stops it.
pub struct Sshd {
    /// Where it listens: 127.0.0.1, or an address inside its network namespace.
    pub addr: IpAddr,
    pub port: u16,
    /// The sandbox's private mounts (and its syslog lines).
    pub ns: Namespace,
    /// Host key, config, client keys, known_hosts.
    pub dir: PathBuf,
    child: Child,
}

impl Sshd {
    /// Starts sshd with `AuthenticationMethods methods`, the rest of its settings from
    /// config/sshd_config.d/50-pam-totp.conf, and `pam` as the PAM service (`{module}`
    /// and `{config}` are replaced by the built module and the sandbox's config).
    /// Waits, with a bound, until it listens on 127.0.0.1.
    pub fn start(sb: &Sandbox, methods: &str, pam: &str) -> Sshd {
        Sshd::start_with(sb, methods, pam, "")
    }

    /// The same, with `extra` lines of sshd_config before the example drop-in (the
    /// first value of a keyword wins).
    pub fn start_with(sb: &Sandbox, methods: &str, pam: &str, extra: &str) -> Sshd {
        Sshd::start_at(
            Namespace::new(sb),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            sb,
            methods,
            pam,
            extra,
        )
    }

    /// The same, inside network namespace `netns`, listening on `addr` there.
    pub fn start_in_netns(
        sb: &Sandbox,
        methods: &str,
        pam: &str,
        netns: &str,
        addr: IpAddr,
    ) -> Sshd {
        Sshd::start_at(
            Namespace::new(sb).in_netns(netns),
            addr,
            sb,
            methods,
            pam,
            "",
        )
    }

    fn start_at(
        ns: Namespace,
        addr: IpAddr,
        sb: &Sandbox,
        methods: &str,
        pam: &str,
        extra: &str,
    ) -> Sshd {
        let dir = sb.dir.join("sshd");
        std::fs::create_dir_all(&dir).unwrap();
        let host_key = dir.join("host_key");
        if !host_key.exists() {
            keygen(&host_key);
        }
        let binary = dir.join(SERVICE);
        if !binary.exists() {
            std::os::unix::fs::symlink("/usr/sbin/sshd", &binary).unwrap();
        }
        let text = pam
            .replace("{module}", module().to_str().unwrap())
            .replace("{config}", sb.config_path().to_str().unwrap());
        write_file(&sb.dir.join("etc/pam.d").join(SERVICE), &text, 0o644);
        let log = dir.join("sshd.log");
        let config = dir.join("sshd_config");
        // The example drop-in (UsePAM, KbdInteractiveAuthentication, ...) comes last:
        // sshd keeps the first value of a keyword, so `methods` wins over its
        // AuthenticationMethods.
        let dropin = workspace().join("config/sshd_config.d/50-pam-totp.conf");
        for _attempt in 0..5 {
            let port = free_port();
            write_file(
                &config,
                &format!(
                    "Port {port}\n\
                     ListenAddress {addr}\n\
                     HostKey {key}\n\
                     PidFile {pid}\n\
                     PubkeyAuthentication yes\n\
                     AuthenticationMethods {methods}\n\
                     StrictModes no\n\
                     LoginGraceTime 60\n\
                     LogLevel VERBOSE\n\
                     {extra}\
                     Include {dropin}\n",
                    key = host_key.display(),
                    pid = dir.join("sshd.pid").display(),
                    dropin = dropin.display(),
                ),
                0o600,
            );
            let _ = std::fs::remove_file(&log);
            let mut child = ns
                .command(&binary)
                .arg("-D")
                .arg("-f")
                .arg(&config)
                .arg("-E")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            match wait_until_listening(&mut child, &log, addr, port) {
                Ok(()) => {
                    return Sshd {
                        addr,
                        port,
                        ns,
                        dir,
                        child,
                    }
                }
                // Another process took the port between the probe and sshd's bind.
                Err(why) if why.contains("Address already in use") => continue,
                Err(why) => panic!("sshd did not start: {why}"),
            }
        }
        panic!("sshd found no free port in 5 attempts");
    }

    /// sshd's own log (`-E`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// A new key pair for `user`, authorized in their home; returns the private key.
    pub fn authorize_key(&self, sb: &Sandbox, user: &str) -> PathBuf {
        let key = self.dir.join(format!("{user}_key"));
        keygen(&key);
        let ssh_dir = sb.dir.join("home").join(user).join(".ssh");
        std::fs::create_dir_all(&ssh_dir).unwrap();
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        write_file(&ssh_dir.join("authorized_keys"), &public, 0o600);
        // sshd reads authorized_keys as the user.
        sb.run(&[
            "chown",
            "-R",
            &format!("{user}:"),
            ssh_dir.to_str().unwrap(),
        ]);
        key
    }

    /// `ssh [options] user@ADDR 'echo logged-in-as-$(id -un)'` under expect,
    /// with `options` after the common ones, answering the prompts as `dialog` says.
    pub fn ssh(&self, user: &str, options: &[&str], dialog: &[Step<'_>]) -> Session {
        self.client(user, options, Some(WHOAMI), dialog)
    }

    /// An interactive login (`ssh -tt`, no command): after `dialog`, waits for the
    /// shell's prompt and types `echo logged-in-as-$(id -un); exit`. sshd shows the
    /// text that came after the last prompt of the login only in such a session.
    pub fn ssh_shell(&self, user: &str, options: &[&str], dialog: &[Step<'_>]) -> Session {
        let mut options = options.to_vec();
        options.push("-tt");
        let exit = format!("{WHOAMI}; exit");
        let mut dialog = dialog.to_vec();
        dialog.push(("$ ", &exit));
        self.client(user, &options, None, &dialog)
    }

    fn client(
        &self,
        user: &str,
        options: &[&str],
        command: Option<&str>,
        dialog: &[Step<'_>],
    ) -> Session {
        let port = self.port.to_string();
        let known_hosts = format!(
            "UserKnownHostsFile={}",
            self.dir.join("known_hosts").display()
        );
        let target = format!("{user}@{}", self.addr);
        let mut argv = vec![
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
        ];
        argv.extend_from_slice(options);
        argv.push(&target);
        argv.extend(command);
        let mut prefix = Command::new("timeout");
        prefix.args(["90", "expect"]);
        let session = run_dialog(prefix, &self.dir, &argv, dialog);
        if let Some(problem) = &session.problem {
            panic!(
                "{problem}\nsshd log:\n{}\nsyslog: {:?}",
                self.log(),
                self.ns.syslog()
            );
        }
        session
    }
}

/// Waits until sshd's log says it listens on `addr` and `port`, polling with a bound.
fn wait_until_listening(
    child: &mut Child,
    log: &Path,
    addr: IpAddr,
    port: u16,
) -> Result<(), String> {
    let ready = format!("Server listening on {addr} port {port}.");
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(&ready) {
            return Ok(());
        }
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!("exited with {status}: {text}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
    Err("not listening after 15 s".into())
}

/// Generates an ed25519 key pair without a passphrase at `path`.
pub fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "pam_totp test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "ssh-keygen failed");
}

/// A port on 127.0.0.1 that was free a moment ago (sshd's bind failing is retried).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child
        // (ip netns exec, unshare and sh exec into sshd, so the child is sshd itself), not
        // yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
