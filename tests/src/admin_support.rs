//! Helpers for the `totp-admin` tests: a setuid-root copy of the built binary inside a
//! sandbox, the system-wide configuration and the `totp-admin` PAM service in the
//! sandbox's /etc, runs as an unprivileged user, `expect` scripts.

use crate::{totp_admin, workspace, write_file, Sandbox};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// A sandbox where `totp-admin` is installed as the packages install it: setuid root,
/// reading `/etc/pam_totp/config.toml` (the sandbox's copy) and asking passwords
/// through `/etc/pam.d/totp-admin` (the project's file).
pub struct AdminWorld {
    pub sb: Sandbox,
    /// The setuid-root copy of the binary.
    pub bin: PathBuf,
}

/// The result of one run of the tool.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts exit 1 with exactly one line on stderr containing `needle`.
    pub fn assert_refused(&self, needle: &str) {
        assert_eq!(self.code, 1, "expected exit 1: {self:?}");
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "one line on stderr: {self:?}"
        );
        assert!(
            self.stderr.contains(needle),
            "stderr should mention {needle:?}: {self:?}"
        );
    }

    pub fn assert_ok(&self) {
        assert_eq!(self.code, 0, "expected success: {self:?}");
    }

    /// Whether the (compact, one-line) JSON output has `"key":value`.
    pub fn json_has(&self, key: &str, value: &str) -> bool {
        self.stdout.contains(&format!("\"{key}\":{value}"))
    }
}

impl AdminWorld {
    /// A sandbox with `config` (the sandbox's store path is added) both at the
    /// sandbox's config path (for root's `--config`) and at `/etc/pam_totp/config.toml`.
    pub fn new(name: &str, config: &str) -> AdminWorld {
        let sb = Sandbox::new(name);
        sb.write_config(config);
        let etc_dir = sb.dir.join("etc/pam_totp");
        std::fs::create_dir_all(&etc_dir).unwrap();
        std::fs::set_permissions(&etc_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(sb.config_path(), etc_dir.join("config.toml")).unwrap();
        std::fs::set_permissions(
            etc_dir.join("config.toml"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let service = std::fs::read_to_string(workspace().join("config/pam.d/totp-admin")).unwrap();
        write_file(&sb.dir.join("etc/pam.d/totp-admin"), &service, 0o644);
        let bin_dir = sb.dir.join("bin");
        std::fs::create_dir_all(&bin_dir).unwrap();
        std::fs::set_permissions(&bin_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = bin_dir.join("totp-admin");
        std::fs::copy(totp_admin(), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o4755)).unwrap();
        // Only `store init` creates a store, as the packages run it at installation.
        let init = sb.admin(&["store", "init"], "");
        assert!(
            init.status.success(),
            "store init failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        AdminWorld { sb, bin }
    }

    /// Rewrites both copies of the configuration.
    pub fn set_config(&self, text: &str) {
        write_file(&self.sb.config_path(), text, 0o600);
        write_file(&self.sb.dir.join("etc/pam_totp/config.toml"), text, 0o600);
    }

    /// A user with a fixed uid (for tests that signal the user's processes: a uid no
    /// other test's sandbox hands out).
    pub fn add_user_with_uid(&self, name: &str, password: &str, uid: u32) {
        let home = self.sb.dir.join("home").join(name);
        let uid = uid.to_string();
        self.sb.run(&[
            "useradd",
            "-m",
            "-d",
            home.to_str().unwrap(),
            "-s",
            "/bin/sh",
            "-u",
            &uid,
            "-U",
            name,
        ]);
        let mut child = self
            .sb
            .command("chpasswd")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{name}:{password}").unwrap();
        assert!(child.wait().unwrap().success(), "chpasswd failed");
    }

    /// A command that runs `program` as `user` (real uid, gid and groups) inside the
    /// sandbox; `env` is set for `program` alone (through env(1), so that nothing
    /// before it, unshare, mount, setpriv, is affected).
    pub fn user_command(&self, user: &str, env: &[(&str, &str)], program: &str) -> Command {
        let mut cmd = self.sb.command("setpriv");
        cmd.args([
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--init-groups",
            "--",
            "/usr/bin/env",
        ]);
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.arg(program);
        cmd
    }

    /// Runs the setuid tool as `user` with `args`, feeding `stdin`.
    pub fn as_user(&self, user: &str, args: &[&str], stdin: &str) -> Run {
        self.as_user_env(user, &[], args, stdin)
    }

    pub fn as_user_env(&self, user: &str, env: &[(&str, &str)], args: &[&str], stdin: &str) -> Run {
        let mut child = self
            .user_command(user, env, self.bin.to_str().unwrap())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let text = stdin.as_bytes().to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&text);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        Run::from(out)
    }

    /// Runs the tool as root with `--config` (the sandbox's config).
    pub fn as_root(&self, args: &[&str], stdin: &str) -> Run {
        Run::from(self.sb.admin(args, stdin))
    }

    /// Runs an expect script (Tcl) inside the sandbox, as root; `env` passes values to
    /// the script (`$env(NAME)`). Returns everything expect printed.
    pub fn expect(&self, script: &str, env: &[(&str, &str)]) -> Run {
        let path = self
            .sb
            .dir
            .join(format!("script-{}.exp", std::process::id()));
        write_file(&path, script, 0o644);
        let mut cmd = self.sb.command("timeout");
        cmd.args(["120", "expect", "-f", path.to_str().unwrap()]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.stdin(Stdio::null()).output().unwrap())
    }
}

/// The text without `ESC [ ... m` colour sequences and carriage returns.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// Builds a shared object whose constructor creates `marker`: if a process ever loads
/// it (LD_PRELOAD), the file appears.
pub fn marker_library(dir: &std::path::Path, marker: &std::path::Path) -> PathBuf {
    let src = dir.join("marker.c");
    let lib = dir.join("libmarker.so");
    std::fs::write(
        &src,
        format!(
            "#include <fcntl.h>\n#include <unistd.h>\n__attribute__((constructor)) static void hit(void) {{ \
             int fd = open(\"{}\", O_WRONLY | O_CREAT, 0666); if (fd >= 0) close(fd); }}\n",
            marker.display()
        ),
    )
    .unwrap();
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .unwrap();
    assert!(status.success(), "cc failed");
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o755)).unwrap();
    lib
}
