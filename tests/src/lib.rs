//! Shared harness for the end-to-end tests: paths to the built artifacts, a private
//! copy of /etc seen through a private mount namespace, test users, codes from
//! `oathtool`, and a PAM client run through pam_wrapper.
//!
//! Nothing here touches the host's /etc: every command that needs the copy runs under
//! `unshare -m --propagation private` with the copy bind-mounted over /etc, so the
//! host's files stay as they were (the tests check that with a checksum).

pub mod admin_support;
pub mod bypass_support;
pub mod freeze_support;
pub mod netns_support;
pub mod nss_support;
pub mod packages_support;
pub mod pam_ffi;
pub mod pg_support;
pub mod pipe;
pub mod reliability_support;
pub mod rhel_support;
pub mod sshd_support;
pub mod store_support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where the release build lives: `$CARGO_TARGET_DIR/release`, else `target/release`.
pub fn release_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        workspace().join(target)
    };
    target.join("release")
}

fn artifact(name: &str) -> PathBuf {
    let path = release_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build first with `cargo build --release --workspace` (tests/run.sh does)",
        path.display()
    );
    path
}

/// The built PAM module, under the name it is installed with (`pam_totp.so`): PAM
/// stacks name it so, and pam_syslog prefixes its lines with that name. The copy is
/// refreshed when the build is newer, and replaced atomically so that test processes
/// running at once never load a half-written file.
pub fn module() -> PathBuf {
    let built = artifact("libpam_totp.so");
    let dir = release_dir().join("module");
    let installed = dir.join("pam_totp.so");
    let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if stamp(&installed) < stamp(&built) {
        std::fs::create_dir_all(&dir).unwrap();
        static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let partial = dir.join(format!(".pam_totp.so.{}.{n}", std::process::id()));
        std::fs::copy(&built, &partial).unwrap();
        std::fs::rename(&partial, &installed).unwrap();
    }
    installed
}

/// The built `totp-admin`.
pub fn totp_admin() -> PathBuf {
    artifact("totp-admin")
}

/// The test PAM application.
pub fn pam_client() -> PathBuf {
    artifact("pam-client")
}

/// These tests create users and bind-mount over /etc: they need root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the end-to-end tests run as root (they use private mount namespaces)"
    );
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Waits until at least `margin` seconds remain in the current time step, so that a
/// code computed now is still the current one when the module checks it.
pub fn wait_for_fresh_step(period: u64, margin: u64) {
    let into = unix_now() % period;
    if period - into < margin {
        std::thread::sleep(Duration::from_secs(period - into));
    }
}

/// A TOTP code from `oathtool`, `offset_secs` from now.
pub fn oathtool(
    secret: &str,
    algorithm: &str,
    digits: u32,
    period: u64,
    offset_secs: i64,
) -> String {
    let mut cmd = Command::new("oathtool");
    cmd.arg(format!("--totp={algorithm}"))
        .arg(format!("--digits={digits}"))
        .arg(format!("--time-step-size={period}s"))
        .arg("--base32");
    if offset_secs != 0 {
        let t = unix_now() as i64 + offset_secs;
        cmd.arg(format!("--now=@{t}"));
    }
    let out = cmd.arg(secret).output().expect("oathtool is installed");
    assert!(
        out.status.success(),
        "oathtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The default secret used by tests (base32 of "12345678901234567890").
pub const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// A SHA1, 6-digit, 30-second code for [`SECRET`] (or another key), `offset_secs` from now.
pub fn code(secret: &str, offset_secs: i64) -> String {
    oathtool(secret, "SHA1", 6, 30, offset_secs)
}

/// The result of one PAM transaction through pam-client.
#[derive(Debug)]
pub struct PamRun {
    pub stdout: String,
    /// Lines the module logged through pam_syslog (captured by pam_wrapper).
    pub logs: Vec<String>,
    /// `PAM_SUCCESS(0)`, `PAM_AUTH_ERR(7)`, ...
    pub auth: String,
    pub acct: Option<String>,
    /// Everything the process wrote to stderr, to check for secrets.
    pub stderr: String,
}

impl PamRun {
    pub fn auth_is(&self, name: &str) -> bool {
        self.auth.starts_with(name)
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.logs.iter().any(|l| l.contains(needle))
    }
}

/// A private world for one test: a copy of /etc, a home for test users, a config
/// and store directory, all under one temporary directory removed on drop.
pub struct Sandbox {
    pub dir: PathBuf,
}

/// Runs the rest of the command line with the sandbox's /etc bind-mounted over /etc and
/// a private, empty /tmp (pam_wrapper keeps its state in /tmp/pam.*: processes that start
/// at the same moment would otherwise trip over each other's).
fn enter_script() -> &'static str {
    static SCRIPT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| {
        format!(
            "T=\"$1\"; shift\n\
             mount --bind \"$T/etc\" /etc || exit 125\n\
             {}\n\
             exec \"$@\"",
            private_tmp("\"$T/private-tmp\"", "64m", "sandbox-tmp")
        )
    })
}

/// The shell function that mounts a private /tmp (`tests/src/private_tmp.sh`).
const PRIVATE_TMP: &str = include_str!("private_tmp.sh");

/// Shell lines, for a script running in a private mount namespace, that mount a private,
/// empty tmpfs of `size` named `name` on /tmp, staged at `stage` (a shell word: a
/// directory the script may create, under the sandbox), and exit with 125 when that
/// fails. The directories of [`kept_under_tmp`] stay visible inside it: a checkout or a
/// build under /tmp would otherwise vanish from the namespace with the binaries the
/// test is about to run.
pub fn private_tmp(stage: &str, size: &str, name: &str) -> String {
    let keep: Vec<String> = kept_under_tmp().iter().map(|p| shell_quote(p)).collect();
    format!(
        "{PRIVATE_TMP}\nprivate_tmp {stage} {size} {name} {} || exit 125",
        keep.join(" ")
    )
}

/// The directories of the tests' own files that programs inside a sandbox read, when
/// they lie under /tmp: the workspace, the target directory, the PostgreSQL build of
/// `$PAM_TOTP_PG_RELEASE` and [`SANDBOX_BASE`], each as the tests name it and as it is
/// once symbolic links are resolved (/var/tmp may be one to /tmp). A directory inside
/// another is left out.
pub fn kept_under_tmp() -> Vec<PathBuf> {
    let mut named = vec![
        workspace(),
        release_dir().parent().unwrap().to_path_buf(),
        PathBuf::from(SANDBOX_BASE),
    ];
    named.extend(std::env::var_os("PAM_TOTP_PG_RELEASE").map(PathBuf::from));
    let dirs: Vec<PathBuf> = named
        .iter()
        .flat_map(|d| [Some(d.clone()), std::fs::canonicalize(d).ok()])
        .flatten()
        .filter(|d| {
            d.is_absolute()
                && d.starts_with("/tmp")
                && d != Path::new("/tmp")
                && !d.components().any(|c| c == std::path::Component::ParentDir)
        })
        .collect();
    let mut kept: Vec<PathBuf> = Vec::new();
    for dir in &dirs {
        let inside_another = dirs
            .iter()
            .any(|other| other != dir && dir.starts_with(other));
        if !inside_another && !kept.contains(dir) {
            kept.push(dir.clone());
        }
    }
    kept
}

/// `path` as one shell word.
pub fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.to_str().unwrap().replace('\'', "'\\''"))
}

/// Sandboxes live here rather than in /tmp, which each sandboxed process sees private.
pub const SANDBOX_BASE: &str = "/var/tmp/pam_totp-tests";

/// A new directory (0755) for one test under [`SANDBOX_BASE`], `{prefix}-{pid}-{ns}`.
pub fn sandbox_dir(prefix: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = Path::new(SANDBOX_BASE).join(format!("{prefix}-{}-{nanos}", std::process::id()));
    // Another test's clean-up removes the base once it is empty, possibly between the two
    // steps below: then they are taken again (a few times at most).
    for _ in 0..5 {
        std::fs::create_dir_all(SANDBOX_BASE).unwrap();
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
                return dir;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("cannot create {}: {e}", dir.display()),
        }
    }
    panic!(
        "cannot create {}: its parent keeps going away",
        dir.display()
    );
}

/// Removes a test's directory, and [`SANDBOX_BASE`] with it when no other test has one
/// there (removing a directory that is not empty fails, and is left to the last test).
pub fn remove_sandbox_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir(SANDBOX_BASE);
}

impl Sandbox {
    pub fn new(name: &str) -> Sandbox {
        require_root();
        let sandbox = Sandbox {
            dir: sandbox_dir(&format!("pam_totp-{name}")),
        };
        let status = Command::new("cp")
            .args(["-a", "/etc"])
            .arg(sandbox.dir.join("etc"))
            .status()
            .unwrap();
        assert!(status.success(), "copying /etc failed");
        for dir in ["home", "pam", "totp", "totp/store"] {
            std::fs::create_dir_all(sandbox.dir.join(dir)).unwrap();
        }
        std::fs::set_permissions(
            sandbox.dir.join("totp/store"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        sandbox
    }

    /// A command that runs inside a fresh private mount namespace with this sandbox's
    /// /etc in place of the host's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args([
            "-m",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            enter_script(),
            "enter",
        ])
        .arg(&self.dir)
        .arg(program);
        cmd
    }

    /// Runs a command in the sandbox and asserts it succeeded.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = self
            .command(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn add_group(&self, name: &str) {
        self.run(&["groupadd", name]);
    }

    /// A user with a password, a home inside the sandbox, and the given supplementary
    /// groups. `primary` names an existing group to use as the primary group.
    pub fn add_user(&self, name: &str, password: &str, primary: Option<&str>, groups: &[&str]) {
        let home = self.dir.join("home").join(name);
        let home = home.to_str().unwrap();
        let mut args = vec!["useradd", "-m", "-d", home, "-s", "/bin/sh"];
        if let Some(g) = primary {
            args.extend(["-g", g]);
        } else {
            args.push("-U");
        }
        let joined = groups.join(",");
        if !groups.is_empty() {
            args.extend(["-G", &joined]);
        }
        args.push(name);
        self.run(&args);
        let mut child = self
            .command("chpasswd")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{name}:{password}").unwrap();
        assert!(child.wait().unwrap().success(), "chpasswd failed");
    }

    /// `count` accounts `prefix0..` without a password or home, written straight into
    /// the sandbox's /etc/passwd (useradd would take minutes for the load tests' tens
    /// of thousands): a login is judged for an account NSS knows, so the users the
    /// load tests enroll must exist. Each gets a uid of its own above every other.
    pub fn add_many_users(&self, prefix: &str, count: usize) {
        use std::fmt::Write as _;
        let path = self.dir.join("etc/passwd");
        let mut text = std::fs::read_to_string(&path).unwrap();
        let base = 1_000_000 + text.lines().count();
        for i in 0..count {
            let _ = writeln!(
                text,
                "{prefix}{i}:x:{}:65534::/nonexistent:/usr/sbin/nologin",
                base + i
            );
        }
        std::fs::write(&path, text).unwrap();
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("totp/config.toml")
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.join("totp/store/totp.db")
    }

    /// The host key as the test process sees it: the default `[store] key`,
    /// /etc/pam_totp/store.key, in the sandbox's copy of /etc (which sandboxed
    /// processes see as /etc).
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("etc/pam_totp/store.key")
    }

    /// Writes the config (root-owned, 0600) with `body`, adding the sandbox's store path
    /// unless `body` has a `[store]` table of its own.
    pub fn write_config(&self, body: &str) {
        let mut text = body.to_string();
        if !body.contains("[store]") {
            text.push_str(&format!(
                "\n[store]\npath = \"{}\"\n",
                self.store_path().display()
            ));
        }
        write_file(&self.config_path(), &text, 0o600);
    }

    /// Runs `totp-admin --config <sandbox config> ARGS` as root inside the sandbox.
    pub fn admin(&self, args: &[&str], stdin: &str) -> Output {
        feed(
            self.command(totp_admin())
                .arg("--config")
                .arg(self.config_path())
                .args(args),
            stdin,
        )
    }

    /// Creates the store, as the packages' `totp-admin store init` does at installation
    /// (nothing else creates one).
    pub fn init_store(&self) {
        let out = self.admin(&["store", "init"], "");
        assert!(
            out.status.success(),
            "store init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Enrolls `user` with a known base32 secret; returns the recovery codes. Creates
    /// the store first when there is none.
    pub fn enroll(&self, user: &str, secret: &str) -> Vec<String> {
        if !self.store_path().exists() {
            self.init_store();
        }
        let out = self.admin(
            &["--json", "enroll", "--user", user, "--secret-stdin"],
            &format!("{secret}\n"),
        );
        assert!(
            out.status.success(),
            "enroll {user} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let start = text
            .find("\"recovery_codes\"")
            .expect("recovery_codes in the JSON");
        let list = &text[start..];
        let list = &list[list.find('[').unwrap() + 1..list.find(']').unwrap()];
        list.split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Adds the factor `name` with the base32 `secret` beside the user's others (root,
    /// `enroll --secret-stdin --name`).
    pub fn add_factor(&self, user: &str, name: &str, secret: &str) {
        let out = self.admin(
            &["enroll", "--user", user, "--secret-stdin", "--name", name],
            secret,
        );
        assert!(
            out.status.success(),
            "enroll {user} --name {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes a PAM service file `name` for pam_wrapper with `lines` (use `{module}` and
    /// `{config}` as placeholders) and returns the service directory.
    pub fn service(&self, name: &str, lines: &str) -> PathBuf {
        let dir = self.dir.join("pam").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let text = lines
            .replace("{module}", module().to_str().unwrap())
            .replace("{config}", self.config_path().to_str().unwrap());
        write_file(&dir.join(name), &text, 0o644);
        write_file(
            &dir.join("other"),
            "auth required pam_deny.so\naccount required pam_deny.so\n",
            0o644,
        );
        dir
    }

    /// `program` through pam_wrapper for `service` (made with [`Sandbox::service`]),
    /// stopped after 20 s. Only `program` loads pam_wrapper, and only inside the private
    /// /tmp: pam_wrapper makes a directory in /tmp in every process that loads it.
    pub fn pam_command(&self, service: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = self.command("timeout");
        cmd.args(["20", "env", "LD_PRELOAD=libpam_wrapper.so", "PAM_WRAPPER=1"])
            .arg(format!(
                "PAM_WRAPPER_SERVICE_DIR={}",
                self.dir.join("pam").join(service).display()
            ))
            .arg("PAM_WRAPPER_DEBUGLEVEL=2")
            .arg(program);
        cmd
    }

    /// Runs pam-client through pam_wrapper for `service` (made with [`Sandbox::service`]),
    /// answering prompts with `answers` (one per line; fewer answers than prompts make
    /// the conversation fail). `extra` goes on pam-client's command line.
    pub fn pam(&self, service: &str, user: &str, extra: &[&str], answers: &[u8]) -> PamRun {
        let mut child = self
            .pam_command(service, pam_client())
            .args([service, user])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // A large answer must not deadlock against a child that stopped reading.
        let answers = answers.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&answers);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        parse_run(&out)
    }
}

/// Splits pam-client's output into results and the module's log lines.
pub fn parse_run(out: &Output) -> PamRun {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let field = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key).map(str::to_string))
    };
    let logs = stderr
        .lines()
        .filter_map(|l| l.split_once("SYSLOG(").map(|(_, rest)| rest.to_string()))
        .collect();
    PamRun {
        auth: field("auth=").unwrap_or_else(|| format!("(no result: {stdout} {stderr})")),
        acct: field("acct="),
        logs,
        stdout,
        stderr,
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        remove_sandbox_dir(&self.dir);
    }
}

/// Runs `cmd` with `stdin` as its standard input and collects its output.
pub fn feed(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The lines of `text` that draw a QR code: at least 20 cells of nothing but spaces and
/// half blocks, with or without colour escapes.
pub fn qr_code_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            let shown = admin_support::strip_ansi(l);
            shown.chars().count() > 20 && shown.chars().all(|c| " █▀▄".contains(c))
        })
        .map(str::to_string)
        .collect()
}

/// One character cell as a screen shows it: the colours of its upper and lower halves
/// (`true` is light). Cells the escapes leave uncoloured take the terminal's own
/// (`on_dark`) colours; of the 256-colour escapes 231 is white and 16 black.
fn qr_cells(line: &str, on_dark: bool) -> Vec<(bool, bool)> {
    let (mut fg, mut bg) = (None, None);
    let mut cells = Vec::new();
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("\x1b[") {
            let end = after.find('m').expect("an SGR sequence");
            let params: Vec<&str> = after[..end].split(';').collect();
            match params[..] {
                ["0"] | [""] => (fg, bg) = (None, None),
                ["38", "5", f, "48", "5", b] => (fg, bg) = (Some(f == "231"), Some(b == "231")),
                ["48", "5", b] => bg = Some(b == "231"),
                _ => panic!("unexpected escape {params:?} in the QR code"),
            }
            rest = &after[end + 1..];
            continue;
        }
        let back = bg.unwrap_or(!on_dark);
        let fore = fg.unwrap_or(on_dark);
        cells.push(match c {
            ' ' => (back, back),
            '█' => (fore, fore),
            '▀' => (fore, back),
            '▄' => (back, fore),
            '\r' => {
                rest = &rest[1..];
                continue;
            }
            other => panic!("unexpected character {other:?} in the QR code"),
        });
        rest = &rest[c.len_utf8()..];
    }
    cells
}

/// Paints QR code lines as a terminal shows them, one character 1 pixel wide and 2
/// tall, scaled up, and decodes the image. `on_dark`: the terminal's background is dark
/// (where the lines set no colours of their own, blocks then show light).
pub fn decode_qr(lines: &[String], on_dark: bool) -> String {
    const SCALE: usize = 4;
    let rows: Vec<Vec<(bool, bool)>> = lines.iter().map(|l| qr_cells(l, on_dark)).collect();
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    assert!(width > 20, "no QR code lines: {lines:?}");
    let height = rows.len() * 2;
    // A margin of the terminal's background around it, as a screen would show.
    let margin = 4;
    let (w, h) = (width + 2 * margin, height + 2 * margin);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w * SCALE, h * SCALE, |x, y| {
        let (x, y) = (x / SCALE, y / SCALE);
        let inside = x >= margin && y >= margin && x < width + margin && y < height + margin;
        let light = if inside {
            let (upper, lower) = rows[(y - margin) / 2]
                .get(x - margin)
                .copied()
                .unwrap_or((!on_dark, !on_dark));
            if (y - margin) % 2 == 0 {
                upper
            } else {
                lower
            }
        } else {
            !on_dark
        };
        if light {
            255
        } else {
            0
        }
    });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code expected");
    grids[0].decode().expect("the QR code decodes").1
}

/// Writes a file with a mode, root-owned (the tests run as root).
pub fn write_file(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// SHA-256 of a file, to prove the host's copy was left alone.
pub fn checksum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}
