//! Helpers for the package tests (`tests/packages.rs`): the built packages, commands
//! with checked results, a throwaway copy of the whole system to install them into, a
//! throwaway RPM root, and a real `sshd` on 127.0.0.1.
//!
//! A throwaway system is a private mount namespace, entered by one thread of the test
//! process, with an overlay on each of /etc, /usr, /var, /home, /root and /run: `dpkg`,
//! `pam-auth-update` and `useradd` work as on a real host, and every change lands in a
//! temporary upper layer that disappears with the namespace. The host's files stay as
//! they were; /dev/log, when there is one, is covered by /dev/null.

use crate::{release_dir, require_root, workspace};
use std::ffi::OsStr;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The directories a throwaway system lays an overlay on.
pub const OVERLAID: [&str; 6] = ["/etc", "/usr", "/var", "/home", "/root", "/run"];

/// The packages `packaging/build.sh` left in `<target>/packages/`.
#[derive(Debug)]
pub struct Packages {
    pub deb: PathBuf,
    pub rpm: PathBuf,
    /// The PostgreSQL flavour: `pam-totp-postgresql`, `pam_totp-postgresql`.
    pub pg_deb: PathBuf,
    pub pg_rpm: PathBuf,
}

/// Builds the packages with `packaging/build.sh` (once per test process, so the tests
/// never look at packages older than the sources) and returns their paths.
pub fn packages() -> &'static Packages {
    static BUILT: OnceLock<Packages> = OnceLock::new();
    BUILT.get_or_init(|| {
        run(Command::new("sh")
            .arg(workspace().join("packaging/build.sh"))
            .current_dir(workspace()));
        let dir = packages_dir();
        Packages {
            deb: only_file(&dir, "pam-totp", "deb"),
            rpm: only_file(&dir, "pam_totp", "rpm"),
            pg_deb: only_file(&dir, "pam-totp-postgresql", "deb"),
            pg_rpm: only_file(&dir, "pam_totp-postgresql", "rpm"),
        }
    })
}

/// Builds only this host's .deb of the SQLite flavour (`packaging/build.sh --deb
/// --sqlite`, as `install.sh` does; once per test process) and returns its path. It
/// replaces what `<target>/packages/` held: a test process uses this or [`packages`].
pub fn sqlite_deb() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            run(Command::new("sh")
                .arg(workspace().join("packaging/build.sh"))
                .args(["--deb", "--sqlite"])
                .current_dir(workspace()));
            only_file(&packages_dir(), "pam-totp", "deb")
        })
        .clone()
}

/// `<target>/packages`, where `packaging/build.sh` leaves the packages.
pub fn packages_dir() -> PathBuf {
    target_dir().join("packages")
}

/// `$CARGO_TARGET_DIR`, else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    release_dir().parent().unwrap().to_path_buf()
}

/// The release directory of the PostgreSQL flavour `packaging/build.sh` builds.
pub fn pg_release_dir() -> PathBuf {
    target_dir().join("pg/release")
}

/// The one package of `name` (`NAME_VERSION_ARCH.deb`, `NAME-VERSION-RELEASE.ARCH.rpm`).
fn only_file(dir: &Path, name: &str, extension: &str) -> PathBuf {
    let of_name = |p: &Path| {
        let file = p.file_name().unwrap().to_string_lossy();
        file.strip_prefix(name).is_some_and(|rest| {
            rest.strip_prefix(['_', '-'])
                .is_some_and(|version| version.starts_with(|c: char| c.is_ascii_digit()))
        })
    };
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension() == Some(OsStr::new(extension)) && of_name(p))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one .{extension} of {name} in {}: {found:?}",
        dir.display()
    );
    found.into_iter().next().unwrap()
}

/// Runs a command to its end with stdin closed; panics with everything it printed unless
/// it succeeded. Returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(out.status.success(), "{}", describe(cmd, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command to its end with stdin closed, whatever its exit status.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command with `input` on its stdin; panics unless it succeeded.
pub fn run_with_input(cmd: &mut Command, input: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(cmd, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command, its exit status and what it printed, for an assertion message.
pub fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?}: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The permission bits of a file, setuid/setgid/sticky included.
pub fn mode(path: &Path) -> u32 {
    let meta =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    meta.permissions().mode() & 0o7777
}

/// A directory under the system's temporary directory, removed with its contents on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path =
            std::env::temp_dir().join(format!("pam_totp-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn mount_namespace() -> PathBuf {
    std::fs::read_link("/proc/thread-self/ns/mnt").expect("/proc/thread-self/ns/mnt")
}

/// Runs `body` in a throwaway system (see the module documentation) and returns what it
/// returns; a panic inside is passed on once the namespace is gone.
///
/// `body` runs on a thread of its own that alone enters the new mount namespace; the
/// commands it starts inherit that namespace. Processes it starts must have ended when it
/// returns (use guards that kill on drop), or they keep the namespace alive.
pub fn in_throwaway_system<T: Send>(body: impl FnOnce() -> T + Send) -> T {
    require_root();
    let layers = TempDir::new("layers");
    let outcome = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_throwaway_system(layers.path());
                body()
            })
            .join()
    });
    drop(layers);
    match outcome {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn enter_throwaway_system(layers: &Path) {
    let host = mount_namespace();
    // SAFETY: unshare takes no pointers. CLONE_NEWNS (with the CLONE_FS it implies) moves
    // only the calling thread, which runs nothing but the test body, into a new namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNS): {}",
        std::io::Error::last_os_error()
    );
    // Without a namespace of its own, the mounts below would change the host.
    assert_ne!(
        mount_namespace(),
        host,
        "still in the host's mount namespace"
    );
    run(Command::new("mount").args(["--make-rprivate", "/"]));
    for dir in OVERLAID {
        let layer = layers.join(dir.trim_start_matches('/'));
        let (upper, work) = (layer.join("upper"), layer.join("work"));
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let options = format!(
            "lowerdir={dir},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        run(Command::new("mount").args(["-t", "overlay", "overlay", "-o", &options, dir]));
    }
    // What the module and sshd log stays out of the host's journal.
    if Path::new("/dev/log").exists() {
        run(Command::new("mount").args(["--bind", "/dev/null", "/dev/log"]));
    }
}

/// The packages' maintainer scripts and `pam-auth-update` must never wait for an answer.
pub fn dpkg(args: &[&str]) -> String {
    run(Command::new("timeout")
        .arg("300")
        .arg("dpkg")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Whether dpkg has `package` installed (in the current namespace).
pub fn deb_installed(package: &str) -> bool {
    let out = output(Command::new("dpkg-query").args(["-W", "-f", "${Status}", package]));
    out.status.success() && String::from_utf8_lossy(&out.stdout).ends_with(" installed")
}

/// Adds a user with a password (inside a throwaway system).
pub fn add_user(name: &str, password: &str) {
    run(Command::new("useradd").args(["-m", "-s", "/bin/sh", name]));
    run_with_input(
        &mut Command::new("chpasswd"),
        &format!("{name}:{password}\n"),
    );
}

/// A 6-digit code that `oathtool` gives for none of the steps around now.
pub fn wrong_code(secret: &str) -> String {
    let near: Vec<String> = (-3..=3).map(|i| crate::code(secret, i * 30)).collect();
    [
        "000000", "111111", "222222", "333333", "444444", "555555", "666666", "777777",
    ]
    .into_iter()
    .find(|c| !near.iter().any(|n| n == c))
    .unwrap()
    .to_string()
}

/// An `sshd` on 127.0.0.1 that authenticates with keyboard-interactive through PAM
/// service `sshd` (`/etc/pam.d/sshd` of the namespace it runs in). Killed on drop.
pub struct Sshd {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Sshd {
    /// Starts sshd with its host key, config and log in `dir`, and returns once it
    /// accepts connections.
    pub fn start(dir: &Path) -> Sshd {
        std::fs::create_dir_all("/run/sshd").unwrap();
        let key = dir.join("host_ed25519_key");
        if !key.exists() {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&key));
        }
        let port = free_port();
        let config = dir.join("sshd_config");
        let log = dir.join("sshd.log");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nPidFile {pid}\n\
                 UsePAM yes\nKbdInteractiveAuthentication yes\nPasswordAuthentication no\n\
                 PubkeyAuthentication no\nAuthenticationMethods keyboard-interactive\n\
                 PermitRootLogin no\nLogLevel VERBOSE\n",
                key = key.display(),
                pid = dir.join("sshd.pid").display(),
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(&config)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .spawn()
            .expect("/usr/sbin/sshd");
        let mut sshd = Sshd { child, port, log };
        sshd.wait_until_listening();
        sshd
    }

    fn wait_until_listening(&mut self) {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("sshd exited ({status}):\n{}", self.log());
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "sshd is not listening on {address} after 30 s:\n{}",
            self.log()
        );
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Logs in as `user` with the real `ssh` client and runs `echo logged-in`, answering
    /// the password prompt with `password` and the code prompt with `code` (an empty
    /// answer when `None`).
    pub fn login(&self, dir: &Path, user: &str, password: &str, code: Option<&str>) -> Login {
        let answers = dir.join("answers");
        std::fs::create_dir_all(&answers).unwrap();
        let prompts = answers.join("prompts");
        std::fs::write(&prompts, "").unwrap();
        std::fs::write(answers.join("password"), format!("{password}\n")).unwrap();
        std::fs::write(answers.join("code"), format!("{}\n", code.unwrap_or(""))).unwrap();
        let askpass = answers.join("askpass");
        std::fs::write(
            &askpass,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$1\" >> {a}/prompts\ncase \"$1\" in\n\
                 *assword*) cat {a}/password ;;\n*erification*) cat {a}/code ;;\n\
                 *) exit 1 ;;\nesac\n",
                a = answers.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut ssh = Command::new("timeout");
        ssh.args(["60", "ssh", "-F", "/dev/null", "-p"])
            .arg(self.port.to_string())
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "PreferredAuthentications=keyboard-interactive",
                "-o",
                "NumberOfPasswordPrompts=1",
                "-o",
                "ConnectTimeout=20",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("{user}@127.0.0.1"))
            .args(["echo", "logged-in"])
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env_remove("DISPLAY");
        let out = output(&mut ssh);
        Login {
            logged_in: out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains("logged-in"),
            prompts: std::fs::read_to_string(&prompts)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect(),
            report: format!("{}\n--- sshd log\n{}", describe(&ssh, &out), self.log()),
        }
    }
}

/// How one `ssh` login went.
#[derive(Debug)]
pub struct Login {
    /// The remote command ran.
    pub logged_in: bool,
    /// The prompts the client was asked to answer, in order.
    pub prompts: Vec<String>,
    /// The client's exit status and output and the sshd log, for assertion messages.
    pub report: String,
}

impl Login {
    /// Whether one of the prompts contained `text`.
    pub fn asked(&self, text: &str) -> bool {
        self.prompts.iter().any(|p| p.contains(text))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A directory to install RPMs into with `rpm --root`, holding just what the
/// scriptlets run: `/bin/sh` and the tools they call, with their libraries, and the
/// user and group files for `root`. Laid out with a merged /usr like RHEL 9.
pub struct RpmRoot {
    dir: TempDir,
}

impl RpmRoot {
    /// `tools` are absolute paths of programs to copy in besides `/bin/sh`.
    pub fn new(tools: &[&str]) -> RpmRoot {
        let dir = TempDir::new("rpmroot");
        let root = dir.path();
        for sub in [
            "usr/bin",
            "usr/sbin",
            "usr/lib",
            "usr/lib64",
            "etc",
            "var/tmp",
            "tmp",
            "dev",
        ] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            std::os::unix::fs::symlink(target, root.join(link)).unwrap();
        }
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
        std::fs::write(
            root.join("etc/nsswitch.conf"),
            "passwd: files\ngroup: files\nshadow: files\n",
        )
        .unwrap();
        let rpm_root = RpmRoot { dir };
        rpm_root.copy_program(Path::new("/bin/sh"));
        for tool in tools {
            rpm_root.copy_program(Path::new(tool));
        }
        run(rpm_root.rpm().arg("--initdb"));
        rpm_root
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies a program (following symlinks) and the libraries `ldd` lists for it.
    pub fn copy_program(&self, program: &Path) {
        self.copy_file(program);
        self.copy_libraries_of(program);
    }

    /// Copies the libraries `ldd` lists for `program`, which a package brings along.
    pub fn copy_libraries_of(&self, program: &Path) {
        let libraries = run(Command::new("ldd").arg(program));
        for line in libraries.lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(path) = path.filter(|p| p.starts_with('/')) {
                self.copy_file(Path::new(path));
            }
        }
    }

    fn copy_file(&self, path: &Path) {
        let dest = self.path().join(path.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(path, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", path.display()));
    }

    /// `rpm --root <this root> --dbpath /var/lib/rpm`, ready for more arguments.
    pub fn rpm(&self) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["120", "rpm", "--root"])
            .arg(self.path())
            .args(["--dbpath", "/var/lib/rpm"]);
        cmd
    }
}
