//! QR codes as people see them: a real `xterm` on an X server of its own (Xvfb), with a
//! TrueType font (DejaVu Sans Mono) and with the bitmap font xterm uses by default, on a
//! dark and on a light background. Each screen is captured with ImageMagick's `import`
//! and the code read back with `zbarimg`, which must give the otpauth URI printed beside
//! it: `totp-admin enroll` in the terminal, and enrollment at login as the `ssh`
//! client printed it (no colours can pass there: one drawing per background).

use pam_totp_tests::sshd_support::Sshd;
use pam_totp_tests::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse";

/// A TrueType font through Xft, then the bitmap font xterm itself picks in a UTF-8
/// locale (misc-fixed 6x13, with the half blocks).
const FONTS: [(&str, &[&str]); 2] = [
    ("TrueType", &["-fa", "DejaVu Sans Mono", "-fs", "12"]),
    (
        "bitmap",
        &[
            "-fn",
            "-misc-fixed-medium-r-semicondensed--13-120-75-75-c-60-iso10646-1",
        ],
    ),
];
const DARK: &[&str] = &["-bg", "black", "-fg", "white"];
const LIGHT: &[&str] = &["-bg", "white", "-fg", "black"];

/// An X server of our own, on a display it picks itself (`-displayfd`), stopped on drop.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start() -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1600x1600x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb (tests/deps.sh installs it)");
        // Xvfb writes the display number once it accepts connections.
        let out = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let number = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if !line.trim().is_empty() => line.trim().to_string(),
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("Xvfb did not start: {other:?}");
            }
        };
        Xvfb {
            child,
            display: format!(":{number}"),
        }
    }

    /// An xterm on this display (`cmd` runs it) with `options`, running `program`.
    fn xterm(&self, mut cmd: Command, options: &[&[&str]], program: &[&str]) -> Term {
        cmd.env("DISPLAY", &self.display)
            .env("LC_ALL", "C.UTF-8")
            .args(["-u8", "+sb", "-geometry", "110x64+0+0"])
            .args(options.concat())
            .arg("-e")
            .args(program)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Term(cmd.spawn().expect("xterm (tests/deps.sh installs it)"))
    }

    /// Takes screenshots until zbarimg reads a QR code from one, for at most 20 s
    /// (xterm may still be drawing). Returns what it read, or `None`.
    fn scan(&self, path: &Path) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let shot = Command::new("timeout")
                .args(["20", "import", "-window", "root"])
                .arg(path)
                .env("DISPLAY", &self.display)
                .stderr(Stdio::null())
                .status()
                .expect("import (imagemagick)");
            assert!(shot.success(), "import failed");
            let read = Command::new("timeout")
                .args(["20", "zbarimg", "--raw", "-q"])
                .arg(path)
                .stderr(Stdio::null())
                .output()
                .expect("zbarimg (zbar-tools)");
            let text = String::from_utf8_lossy(&read.stdout).trim_end().to_string();
            if read.status.success() && !text.is_empty() {
                return Some(text);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        None
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An xterm we started, ended (with what runs in it) on drop.
struct Term(Child);

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (at most 30 s) until `path` holds `needle`; returns the text.
fn wait_for_text(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn uri_in(text: &str) -> String {
    text.lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("URI: "))
        .unwrap_or_else(|| panic!("no URI line in:\n{text}"))
        .to_string()
}

#[test]
fn totp_admin_enroll_scans_in_xterm() {
    let sb = Sandbox::new("qr-screens-admin");
    sb.add_user("alice", PASSWORD, None, &[]);
    sb.write_config("[totp]\nissuer = \"Example Corp\"\n");
    sb.init_store();
    let x = Xvfb::start();
    let bin = totp_admin();
    let config = sb.config_path();
    let enroll = format!(
        "{} --config {} enroll --user alice",
        bin.display(),
        config.display()
    );
    for (font_name, font) in FONTS {
        for (background, colours) in [("dark", DARK), ("light", LIGHT)] {
            let name = format!("{font_name}-{background}");
            // script(1) keeps a copy of what the tool printed, passing it on to xterm.
            let typescript: PathBuf = sb.dir.join(format!("enroll-{name}.txt"));
            let _ = std::fs::remove_file(&typescript);
            let term = x.xterm(
                sb.command("xterm"),
                &[font, colours],
                &[
                    "script",
                    "-q",
                    "-f",
                    "-c",
                    &enroll,
                    typescript.to_str().unwrap(),
                ],
            );
            // The QR code, the key and the URI are all out at the confirmation prompt.
            let printed = wait_for_text(&typescript, "Code: ");
            assert!(
                printed.contains("\x1b[48;5;231m"),
                "{name}: not drawn with background colours:\n{printed}"
            );
            assert!(
                !printed.contains("does not scan"),
                "{name}: the terminal was too small:\n{printed}"
            );
            let uri = uri_in(&printed);
            let read = x.scan(&sb.dir.join(format!("screen-{name}.png")));
            drop(term);
            assert_eq!(read.as_deref(), Some(uri.as_str()), "{name}");
        }
    }
    // Ended at the prompt: nothing was enrolled.
    let status = sb.admin(&["--json", "status", "--user", "alice"], "");
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("\"enrolled\":false"), "{status}");
}

/// A config/pam.d example as a PAM service for the built module and the sandbox config.
fn pam_service(name: &str) -> String {
    let text = std::fs::read_to_string(workspace().join("config/pam.d").join(name)).unwrap();
    text.replace("pam_totp.so", "{module} config={config}")
}

#[test]
fn enrollment_at_login_scans_in_xterm() {
    let x = Xvfb::start();
    for (qr, background, colours) in [
        ("dark-terminal", "dark", DARK),
        ("light-terminal", "light", LIGHT),
    ] {
        let sb = Sandbox::new(&format!("qr-screens-{qr}"));
        sb.add_user("bob", PASSWORD, None, &[]);
        sb.write_config(&format!(
            "[policy]\nmandatory = true\nenroll_at_login = true\n[enroll]\nqr = \"{qr}\"\n"
        ));
        sb.init_store();
        let sshd = Sshd::start(&sb, "keyboard-interactive", &pam_service("sshd"));
        wait_for_fresh_step(30, 8);
        let session = sshd.ssh(
            "bob",
            &[
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "PreferredAuthentications=keyboard-interactive",
            ],
            &[
                ("Password: ", PASSWORD),
                ("Verification code: ", "@code"),
                ("Press Enter when you have saved them", ""),
            ],
        );
        assert!(session.logged_in_as("bob"), "{}", session.text);
        let text = &session.text;
        assert!(
            text.contains(&format!(
                "drawn for a terminal with a {background} background"
            )) && text.contains("If it does not scan, type the key below into your app."),
            "{text}"
        );
        // What the client printed, up to the code prompt, shown in xterm.
        let start = text
            .find("Two-factor authentication is required")
            .expect("the enrollment text");
        let end = start + text[start..].find("Verification code: ").unwrap();
        let shown = sb.dir.join("shown.txt");
        std::fs::write(&shown, &text[start..end]).unwrap();
        let uri = uri_in(&text[start..end]);
        drop(sshd);
        for (font_name, font) in FONTS {
            let name = format!("{qr}-{font_name}");
            let term = x.xterm(
                Command::new("xterm"),
                &[font, colours, &["-hold"]],
                &["cat", shown.to_str().unwrap()],
            );
            let read = x.scan(&sb.dir.join(format!("screen-{name}.png")));
            drop(term);
            assert_eq!(read.as_deref(), Some(uri.as_str()), "{name}");
        }
    }
}
