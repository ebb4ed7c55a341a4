//! Console logins through the real `login` and `su`, and `sudo`, driven by `expect`
//! inside the sandbox's namespace: the sandbox's copies of /etc/pam.d/login, su and sudo
//! get the lines of config/pam.d/login and config/pam.d/sudo, as an admin would add them.

use pam_totp_tests::sshd_support::{dialog_in, Namespace, Session, WHOAMI};
use pam_totp_tests::*;
use std::path::Path;

const PASSWORD: &str = "correct horse";

/// The host's files that `login` and `su` would write to or read from.
const HOST_FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/pam.d/login",
    "/etc/pam.d/su",
    "/var/log/wtmp",
    "/var/log/btmp",
    "/var/log/lastlog",
    "/var/log/faillog",
];

fn host_state() -> Vec<(&'static str, Option<String>)> {
    HOST_FILES
        .iter()
        .map(|p| (*p, Path::new(p).exists().then(|| checksum(Path::new(p)))))
        .collect()
}

/// Adds the `auth` line of config/pam.d/EXAMPLE after `@include common-auth` and its
/// `account` line after `@include common-account` in the sandbox's /etc/pam.d/SERVICE.
fn add_module(sb: &Sandbox, service: &str, example: &str) {
    let example = std::fs::read_to_string(workspace().join("config/pam.d").join(example)).unwrap();
    let line_for = |kind: &str| {
        example
            .lines()
            .find(|l| l.starts_with(kind))
            .unwrap()
            .replace(
                "pam_totp.so",
                &format!(
                    "{} config={}",
                    module().display(),
                    sb.config_path().display()
                ),
            )
    };
    let path = sb.dir.join("etc/pam.d").join(service);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        match line.trim() {
            "@include common-auth" => out.push_str(&(line_for("auth") + "\n")),
            "@include common-account" => out.push_str(&(line_for("account") + "\n")),
            _ => {}
        }
    }
    let module = module().display().to_string();
    assert_eq!(out.matches(module.as_str()).count(), 2, "{service}:\n{out}");
    write_file(&path, &out, 0o644);
}

fn world(name: &str) -> (Sandbox, Namespace) {
    let sb = Sandbox::new(name);
    sb.add_user("alice", PASSWORD, None, &[]);
    sb.write_config("");
    sb.enroll("alice", SECRET);
    add_module(&sb, "login", "login");
    add_module(&sb, "su", "login");
    let ns = Namespace::new(&sb);
    (sb, ns)
}

fn wrong(code: &str) -> &'static str {
    if code == "000000" {
        "111111"
    } else {
        "000000"
    }
}

fn login(sb: &Sandbox, ns: &Namespace, code: &str) -> Session {
    let exit = format!("{WHOAMI}; exit");
    let dialog = [
        ("login: ", "alice"),
        ("Password: ", PASSWORD),
        ("Verification code: ", code),
        ("$ ", &exit),
    ];
    dialog_in(ns, &sb.dir, &["login"], &dialog)
}

#[test]
fn login_password_then_code() {
    let before = host_state();
    let (sb, ns) = world("console-login");
    wait_for_fresh_step(30, 10);
    let c = code(SECRET, 0);
    let ok = login(&sb, &ns, &c);
    assert!(ok.logged_in_as("alice"), "{}", ok.text);
    let log = ns.syslog();
    assert!(
        log.iter().any(|l| l.contains("pam_totp(login:auth)")
            && l.contains("user=\"alice\" service=\"login\"")
            && l.contains("result=success reason=\"code accepted\"")),
        "{log:?}"
    );

    // A wrong code: "Login incorrect", and login asks for a user name again.
    let bad = dialog_in(
        &ns,
        &sb.dir,
        &["login"],
        &[
            ("login: ", "alice"),
            ("Password: ", PASSWORD),
            ("Verification code: ", wrong(&code(SECRET, 0))),
            ("Login incorrect", "@end"),
        ],
    );
    assert!(!bad.logged_in_as("alice"), "{}", bad.text);
    let log = ns.syslog();
    assert!(
        log.iter()
            .any(|l| l.contains("pam_totp(login:auth)") && l.contains("reason=\"wrong code\"")),
        "{log:?}"
    );
    // The failures are counted against the terminal, the source of a console login.
    assert!(
        log.iter()
            .any(|l| l.contains("pam_totp(login:auth)") && l.contains("source=\"/dev/pts/")),
        "{log:?}"
    );
    drop(ns);
    drop(sb);
    assert_eq!(host_state(), before, "host files changed");
}

/// `su [-] alice` run by another user (root is never asked anything by su). `su -`
/// is the PAM service su-l, which includes su.
fn su(sb: &Sandbox, ns: &Namespace, dash: bool, code: &str) -> Session {
    let dialog = [("Password: ", PASSWORD), ("Verification code: ", code)];
    let mut argv = vec![
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--init-groups",
        "su",
    ];
    if dash {
        argv.push("-");
    }
    argv.extend(["alice", "-c", WHOAMI]);
    dialog_in(ns, &sb.dir, &argv, &dialog)
}

#[test]
fn su_password_then_code() {
    let before = host_state();
    let (sb, ns) = world("console-su");
    wait_for_fresh_step(30, 10);
    let ok = su(&sb, &ns, true, &code(SECRET, 0));
    assert!(ok.logged_in_as("alice"), "{}", ok.text);
    assert_eq!(ok.exit, Some(0), "{}", ok.text);
    let log = ns.syslog();
    assert!(
        log.iter().any(|l| l.contains("pam_totp(su-l:auth)")
            && l.contains("user=\"alice\" service=\"su-l\"")
            && l.contains("result=success reason=\"code accepted\"")),
        "{log:?}"
    );

    let bad = su(&sb, &ns, false, wrong(&code(SECRET, 0)));
    assert!(!bad.logged_in_as("alice"), "{}", bad.text);
    assert!(bad.text.contains("Authentication failure"), "{}", bad.text);
    assert_ne!(bad.exit, Some(0));
    let log = ns.syslog();
    assert!(
        log.iter()
            .any(|l| l.contains("pam_totp(su:auth)") && l.contains("reason=\"wrong code\"")),
        "{log:?}"
    );
    drop(ns);
    drop(sb);
    assert_eq!(host_state(), before, "host files changed");
}

/// The way back in of docs/ROLLOUT.md: a pam_succeed_if line right before pam_totp
/// skips it for one user on matching terminals (root on the local consoles, there;
/// alice on this test's pseudo-terminal, here). Anyone else is still asked.
#[test]
fn console_way_back_in_skips_the_code() {
    let (sb, ns) = world("console-way-back");
    sb.add_user("bob", PASSWORD, None, &[]);
    sb.enroll("bob", SECRET);
    let path = sb.dir.join("etc/pam.d/login");
    let text = std::fs::read_to_string(&path).unwrap();
    let module_line = text
        .lines()
        .find(|l| l.starts_with("auth") && l.contains(&module().display().to_string()))
        .unwrap()
        .to_string();
    let skip = "auth       [success=1 default=ignore] pam_succeed_if.so quiet user = alice tty =~ /dev/pts/*";
    write_file(
        &path,
        &text.replace(&module_line, &format!("{skip}\n{module_line}")),
        0o644,
    );
    let exit = format!("{WHOAMI}; exit");
    let alice = dialog_in(
        &ns,
        &sb.dir,
        &["login"],
        &[
            ("login: ", "alice"),
            ("Password: ", PASSWORD),
            ("$ ", &exit),
        ],
    );
    assert!(alice.logged_in_as("alice"), "{}", alice.text);
    assert!(!alice.text.contains("Verification code"), "{}", alice.text);
    wait_for_fresh_step(30, 10);
    let bob = dialog_in(
        &ns,
        &sb.dir,
        &["login"],
        &[
            ("login: ", "bob"),
            ("Password: ", PASSWORD),
            ("Verification code: ", &code(SECRET, 0)),
            ("$ ", &exit),
        ],
    );
    assert!(bob.logged_in_as("bob"), "{}", bob.text);
}

/// `sudo` as alice (in sudoers): the password, then the code; a wrong code is "Sorry,
/// try again". `-k`: no cached credentials, none recorded (the timestamps would go to
/// the namespace's private /run anyway).
#[test]
fn sudo_password_then_code() {
    let before = host_state();
    let (sb, ns) = world("console-sudo");
    add_module(&sb, "sudo", "sudo");
    write_file(
        &sb.dir.join("etc/sudoers.d/pam_totp-test"),
        "Defaults lecture=never\nalice ALL=(ALL:ALL) ALL\n",
        0o440,
    );
    let sudo = |code: &str, last: (&'static str, &'static str)| {
        let argv = [
            "setpriv",
            "--reuid=alice",
            "--regid=alice",
            "--init-groups",
            "sudo",
            "-k",
            "sh",
            "-c",
            WHOAMI,
        ];
        let dialog = [
            ("password for alice: ", PASSWORD),
            ("Verification code: ", code),
            last,
        ];
        dialog_in(&ns, &sb.dir, &argv, &dialog)
    };
    wait_for_fresh_step(30, 10);
    let ok = sudo(&code(SECRET, 0), ("logged-in-as-root", "@end"));
    assert!(ok.logged_in_as("root"), "{}", ok.text);
    let log = ns.syslog();
    assert!(
        log.iter().any(|l| l.contains("pam_totp(sudo:auth)")
            && l.contains("user=\"alice\" service=\"sudo\"")
            && l.contains("result=success reason=\"code accepted\"")),
        "{log:?}"
    );

    let bad = sudo(wrong(&code(SECRET, 0)), ("Sorry, try again.", "@end"));
    assert!(!bad.logged_in_as("root"), "{}", bad.text);
    let log = ns.syslog();
    assert!(
        log.iter()
            .any(|l| l.contains("pam_totp(sudo:auth)") && l.contains("reason=\"wrong code\"")),
        "{log:?}"
    );
    drop(ns);
    drop(sb);
    assert_eq!(host_state(), before, "host files changed");
}
