//! A real sshd on 127.0.0.1 and OpenSSH's real client driven by `expect`: password +
//! code, key + code, enrollment at login (the QR code read back from the session and
//! decoded), a failed password that must store nothing, and the grace period.
//!
//! The PAM services are the examples in config/pam.d, with the module's path and the
//! sandbox's config filled in.

use pam_totp_tests::sshd_support::{dialog_in, Namespace, Session, Sshd, SERVICE, WHOAMI};
use pam_totp_tests::store_support::move_mandatory_since_back;
use pam_totp_tests::*;
use std::path::Path;

const PASSWORD: &str = "correct horse";

/// A config/pam.d example as a PAM service for the built module and the sandbox config.
fn example(name: &str) -> String {
    let text = std::fs::read_to_string(workspace().join("config/pam.d").join(name)).unwrap();
    assert!(text.contains("pam_totp.so"), "{name}: no pam_totp line");
    text.replace("pam_totp.so", "{module} config={config}")
}

/// pam_unix `required` and pam_totp after it: pam_totp runs even when the password
/// was wrong, which is what a failed login must survive without storing a factor.
const REQUIRED_STACK: &str = "auth required pam_unix.so\n\
     auth required {module} config={config}\n\
     account required pam_unix.so\n\
     account required {module} config={config}\n\
     session required pam_permit.so\n";

const KBDINT: &[&str] = &[
    "-o",
    "PubkeyAuthentication=no",
    "-o",
    "PreferredAuthentications=keyboard-interactive",
];

/// The host's files the tests must leave alone, and the paths they must not create.
struct Host {
    sums: Vec<(&'static str, String)>,
    absent: Vec<&'static str>,
}

impl Host {
    fn snapshot() -> Host {
        let sums = [
            "/etc/passwd",
            "/etc/shadow",
            "/etc/group",
            "/etc/pam.d/sshd",
        ]
        .into_iter()
        .map(|p| (p, checksum(Path::new(p))))
        .collect();
        let absent = ["/run/sshd", "/dev/log", "/etc/pam.d/sshd-totptest"]
            .into_iter()
            .filter(|p| !Path::new(p).exists())
            .collect();
        Host { sums, absent }
    }

    fn check(&self) {
        for (path, sum) in &self.sums {
            assert_eq!(&checksum(Path::new(path)), sum, "{path} changed");
        }
        for path in &self.absent {
            assert!(!Path::new(path).exists(), "{path} was created on the host");
        }
    }
}

fn password_login(sshd: &Sshd, user: &str, password: &str, code: &str) -> Session {
    sshd.ssh(
        user,
        KBDINT,
        &[("Password: ", password), ("Verification code: ", code)],
    )
}

fn wrong(code: &str) -> &'static str {
    if code == "000000" {
        "111111"
    } else {
        "000000"
    }
}

/// Lines the module logged for this sshd's service.
fn module_log(sshd: &Sshd) -> Vec<String> {
    sshd.ns
        .syslog()
        .into_iter()
        .filter(|l| l.contains(&format!("pam_totp({SERVICE}:")))
        .collect()
}

/// Creates the store, as the package's `totp-admin store init` does on installation
/// (the module itself never creates it).
fn init_store(sb: &Sandbox) {
    sb.init_store();
}

/// Whether `user` has a factor in the store, and how many unused recovery codes,
/// read through the store's own interface.
fn factors_of(sb: &Sandbox, user: &str) -> (bool, u32) {
    use pam_totp::store::{SqliteStore, Store};
    let store = SqliteStore::open_for_reading(&sb.store_path(), &sb.key_path()).unwrap();
    let enrolled = store.list().unwrap().iter().any(|u| u.user == user);
    (enrolled, store.recovery_codes_left(user).unwrap())
}

/// Moves the moment `user` was first seen mandatory and unenrolled `secs` back, as if
/// that much time had passed.
fn move_grace_start_back(sb: &Sandbox, user: &str, secs: i64) {
    move_mandatory_since_back(&sb.store_path(), user, secs);
}

#[test]
fn password_and_code() {
    let host = Host::snapshot();
    let sb = Sandbox::new("ssh-password");
    sb.add_user("alice", PASSWORD, None, &[]);
    sb.write_config("");
    init_store(&sb);
    sb.enroll("alice", SECRET);
    let sshd = Sshd::start(&sb, "keyboard-interactive", &example("sshd"));

    wait_for_fresh_step(30, 8);
    let c = code(SECRET, 0);
    let ok = password_login(&sshd, "alice", PASSWORD, &c);
    assert!(ok.logged_in_as("alice"), "{}", ok.text);
    assert_eq!(ok.exit, Some(0));
    let log = module_log(&sshd);
    assert!(
        log.iter().any(|l| l.contains(
            "user=\"alice\" service=\"sshd-totptest\" source=\"127.0.0.1\" result=success reason=\"code accepted\""
        )),
        "{log:?}\n{}",
        sshd.log()
    );

    // The same code again is a replay; a wrong code fails. The client shows why: sshd
    // sends the module's message with the failure.
    for (bad, why) in [
        (
            c.as_str(),
            "This code was already used; wait for the next one.",
        ),
        (wrong(&c), "Wrong verification code."),
    ] {
        let denied = password_login(&sshd, "alice", PASSWORD, bad);
        assert!(!denied.logged_in_as("alice"), "{}", denied.text);
        assert_eq!(denied.exit, Some(255), "{}", denied.text);
        assert!(denied.text.contains("Permission denied"), "{}", denied.text);
        assert!(denied.text.contains(why), "{}", denied.text);
    }
    let log = module_log(&sshd);
    assert!(
        log.iter()
            .any(|l| l.contains("reason=\"code already used\"")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l.contains("reason=\"wrong code\"")),
        "{log:?}"
    );

    // A wrong password ends the login before the code is asked (common-auth's
    // requisite pam_deny).
    let bad_password = sshd.ssh("alice", KBDINT, &[("Password: ", "wrong password")]);
    assert!(!bad_password.logged_in_as("alice"));
    assert!(
        !bad_password.text.contains("Verification code"),
        "{}",
        bad_password.text
    );
    for line in module_log(&sshd).iter().chain(&sshd.ns.syslog()) {
        assert!(!line.contains(&c) && !line.contains(SECRET), "{line}");
    }
    drop(sshd);
    host.check();
}

/// A code of a second factor ("yubikey", beside "default") logs in over SSH.
#[test]
fn a_second_factor_logs_in() {
    const OTHER: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let sb = Sandbox::new("ssh-second-factor");
    sb.add_user("alice", PASSWORD, None, &[]);
    sb.write_config("");
    init_store(&sb);
    sb.enroll("alice", SECRET);
    sb.add_factor("alice", "yubikey", OTHER);
    let sshd = Sshd::start(&sb, "keyboard-interactive", &example("sshd"));
    wait_for_fresh_step(30, 8);
    let ok = password_login(&sshd, "alice", PASSWORD, &code(OTHER, 0));
    assert!(ok.logged_in_as("alice"), "{}", ok.text);
    // The same code of that factor once more is a replay.
    let again = password_login(&sshd, "alice", PASSWORD, &code(OTHER, 0));
    assert!(!again.logged_in_as("alice"), "{}", again.text);
    assert!(again.text.contains("already used"), "{}", again.text);
}

#[test]
fn key_and_code() {
    let host = Host::snapshot();
    let sb = Sandbox::new("ssh-key");
    sb.add_user("alice", PASSWORD, None, &[]);
    sb.add_user("bob", PASSWORD, None, &[]);
    sb.write_config("");
    init_store(&sb);
    sb.enroll("alice", SECRET);
    let sshd = Sshd::start(
        &sb,
        "publickey,keyboard-interactive",
        &example("sshd-publickey"),
    );
    let alice_key = sshd.authorize_key(&sb, "alice");
    let bob_key = sshd.authorize_key(&sb, "bob");
    let with_key = |key: &Path| {
        vec![
            "-i".to_string(),
            key.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "PreferredAuthentications=publickey,keyboard-interactive".into(),
        ]
    };
    let alice_opts = with_key(&alice_key);
    let alice_opts: Vec<&str> = alice_opts.iter().map(String::as_str).collect();

    wait_for_fresh_step(30, 8);
    let c = code(SECRET, 0);
    let ok = sshd.ssh("alice", &alice_opts, &[("Verification code: ", &c)]);
    assert!(ok.logged_in_as("alice"), "{}\n{}", ok.text, sshd.log());
    assert!(!ok.text.contains("Password"), "{}", ok.text);
    // The key was the first of the two methods, the code the second.
    let log = sshd.log();
    assert!(
        log.contains("Partial publickey for alice from 127.0.0.1")
            && log.contains("Accepted keyboard-interactive/pam for alice from 127.0.0.1"),
        "{log}"
    );

    let bad = sshd.ssh(
        "alice",
        &alice_opts,
        &[("Verification code: ", wrong(&code(SECRET, 0)))],
    );
    assert!(!bad.logged_in_as("alice"), "{}", bad.text);
    assert!(bad.text.contains("Permission denied"), "{}", bad.text);

    // Without the key the code is never asked.
    let no_key = sshd.ssh(
        "alice",
        &[
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=publickey,keyboard-interactive",
        ],
        &[],
    );
    assert!(!no_key.logged_in_as("alice"));
    assert!(
        !no_key.text.contains("Verification code"),
        "{}",
        no_key.text
    );
    assert!(
        no_key.text.contains("Permission denied (publickey)"),
        "{}",
        no_key.text
    );

    // An optional user without a factor logs in on the key alone: pam_totp stands
    // aside and the example's pam_permit line lets the key decide.
    let bob_opts = with_key(&bob_key);
    let bob_opts: Vec<&str> = bob_opts.iter().map(String::as_str).collect();
    let bob = sshd.ssh("bob", &bob_opts, &[]);
    assert!(bob.logged_in_as("bob"), "{}", bob.text);
    assert!(!bob.text.contains("Verification code"), "{}", bob.text);
    drop(sshd);
    host.check();
}

/// What enrollment at login showed, read back from the session.
struct Shown {
    qr: Vec<String>,
    key: String,
    uri: String,
    recovery: Vec<String>,
}

fn shown(session: &Session) -> Shown {
    let lines = session.lines();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{}", session.text))
    };
    let drawn = at("If it does not scan, type the key below");
    let key_at = at("Or enter this key: ");
    let qr = lines[drawn + 1..key_at]
        .iter()
        .map(|l| l.to_string())
        .collect();
    let key = lines[key_at]
        .split_once("Or enter this key: ")
        .unwrap()
        .1
        .to_string();
    let uri = lines[at("URI: otpauth://")]
        .split_once("URI: ")
        .unwrap()
        .1
        .to_string();
    let codes_at = at("Recovery codes (");
    let recovery = lines[codes_at + 1..]
        .iter()
        .take_while(|l| !l.contains("Press Enter"))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    Shown {
        qr,
        key,
        uri,
        recovery,
    }
}

/// The secret parameter of an otpauth URI.
fn uri_secret(uri: &str) -> String {
    uri.split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .unwrap()
        .to_string()
}

fn check_shown(session: &Session, shown: &Shown, blocks_are_light: bool, codes: usize) {
    assert!(
        !session.text.contains('\u{1b}') && !session.text.contains("\\033"),
        "escape sequences reached the client:\n{}",
        session.text
    );
    // Drawn without colours for one background, which the text before it names, with
    // the way out when the user's terminal has the other.
    let background = if blocks_are_light { "dark" } else { "light" };
    assert!(
        session.text.contains(&format!(
            "Scan this QR code with an authenticator app (drawn for a terminal with a {background} background)."
        )) && session
            .text
            .contains("If it does not scan, type the key below into your app."),
        "{}",
        session.text
    );
    assert_eq!(decode_qr(&shown.qr, blocks_are_light), shown.uri);
    assert!(shown.uri.starts_with("otpauth://totp/"), "{}", shown.uri);
    let key = shown.key.replace(' ', "");
    assert_eq!(key, uri_secret(&shown.uri));
    assert!(
        shown.key.split(' ').all(|g| g.len() <= 4),
        "key not in groups of four: {}",
        shown.key
    );
    assert_eq!(shown.recovery.len(), codes, "{:?}", shown.recovery);
}

#[test]
fn enrollment_at_login_then_code() {
    let host = Host::snapshot();
    let sb = Sandbox::new("ssh-enroll");
    sb.add_user("bob", PASSWORD, None, &[]);
    sb.write_config("[policy]\nmandatory = true\nenroll_at_login = true\n");
    init_store(&sb);
    let sshd = Sshd::start(&sb, "keyboard-interactive", &example("sshd"));

    wait_for_fresh_step(30, 8);
    let enroll = sshd.ssh(
        "bob",
        KBDINT,
        &[
            ("Password: ", PASSWORD),
            ("Verification code: ", "@code"),
            ("Press Enter when you have saved them", ""),
        ],
    );
    assert!(
        enroll.logged_in_as("bob"),
        "{}\n{}",
        enroll.text,
        sshd.log()
    );
    let shown = shown(&enroll);
    check_shown(&enroll, &shown, true, 10);
    assert_eq!(factors_of(&sb, "bob"), (true, 10));
    let log = module_log(&sshd);
    assert!(
        log.iter()
            .any(|l| l.contains("user=\"bob\"") && l.contains("reason=\"enrolled at login\"")),
        "{log:?}"
    );
    let key = shown.key.replace(' ', "");
    for line in &log {
        assert!(!line.contains(&key), "the key reached the log: {line}");
    }

    // The next login asks for a code: the app's next one passes (the one typed to
    // confirm is used up).
    let next = password_login(&sshd, "bob", PASSWORD, &code(&key, 30));
    assert!(next.logged_in_as("bob"), "{}", next.text);
    assert!(!next.text.contains("Scan this QR code"), "{}", next.text);
    let denied = password_login(&sshd, "bob", PASSWORD, wrong(&code(&key, 0)));
    assert!(!denied.logged_in_as("bob"), "{}", denied.text);
    // A recovery code shown at enrollment works.
    let recovered = password_login(&sshd, "bob", PASSWORD, &shown.recovery[0]);
    assert!(recovered.logged_in_as("bob"), "{}", recovered.text);
    drop(sshd);
    host.check();
}

#[test]
fn enrollment_with_two_codes_on_a_light_terminal() {
    let sb = Sandbox::new("ssh-enroll2");
    sb.add_user("bob", PASSWORD, None, &[]);
    sb.write_config(
        "[policy]\nmandatory = true\nenroll_at_login = true\nenroll_confirm_codes = 2\n\
         [enroll]\nqr = \"light-terminal\"\n[recovery]\ncodes = 4\n",
    );
    init_store(&sb);
    let sshd = Sshd::start(&sb, "keyboard-interactive", &example("sshd"));
    wait_for_fresh_step(30, 8);
    let enroll = sshd.ssh(
        "bob",
        KBDINT,
        &[
            ("Password: ", PASSWORD),
            ("Verification code: ", "@code"),
            ("Next verification code: ", "@nextcode"),
            ("Press Enter when you have saved them", ""),
        ],
    );
    assert!(enroll.logged_in_as("bob"), "{}", enroll.text);
    let shown = shown(&enroll);
    check_shown(&enroll, &shown, false, 4);
    assert_eq!(factors_of(&sb, "bob"), (true, 4));

    // The same code twice is not two codes: asked again, then refused.
    let sb2 = Sandbox::new("ssh-enroll2-same");
    sb2.add_user("bob", PASSWORD, None, &[]);
    sb2.write_config(
        "[policy]\nmandatory = true\nenroll_at_login = true\nenroll_confirm_codes = 2\n",
    );
    init_store(&sb2);
    drop(sshd);
    let sshd = Sshd::start(&sb2, "keyboard-interactive", &example("sshd"));
    wait_for_fresh_step(30, 15);
    let same = sshd.ssh(
        "bob",
        KBDINT,
        &[
            ("Password: ", PASSWORD),
            ("Verification code: ", "@code"),
            ("Next verification code: ", "@same"),
            ("Next verification code: ", "@same"),
            ("Next verification code: ", "@same"),
        ],
    );
    assert!(!same.logged_in_as("bob"), "{}", same.text);
    assert!(
        same.text.contains("wait for the app to show the next code"),
        "{}",
        same.text
    );
    assert!(same.text.contains("Permission denied"), "{}", same.text);
    assert_eq!(factors_of(&sb2, "bob"), (false, 0));
}

#[test]
fn failed_password_then_enrollment_stores_nothing() {
    let host = Host::snapshot();
    let sb = Sandbox::new("ssh-enroll-badpw");
    sb.add_user("bob", PASSWORD, None, &[]);
    sb.write_config("[policy]\nmandatory = true\nenroll_at_login = true\n");
    init_store(&sb);
    let sshd = Sshd::start(&sb, "keyboard-interactive", REQUIRED_STACK);
    wait_for_fresh_step(30, 8);
    let failed = sshd.ssh(
        "bob",
        KBDINT,
        &[
            ("Password: ", "wrong password"),
            ("Verification code: ", "@code"),
            ("Press Enter when you have saved them", ""),
        ],
    );
    assert!(!failed.logged_in_as("bob"), "{}", failed.text);
    assert!(failed.text.contains("Permission denied"), "{}", failed.text);
    // The enrollment was shown and confirmed, and still nothing is stored.
    assert!(failed.text.contains("Recovery codes ("), "{}", failed.text);
    assert_eq!(factors_of(&sb, "bob"), (false, 0));
    let log = module_log(&sshd);
    assert!(
        !log.iter()
            .any(|l| l.contains("reason=\"enrolled at login\"")),
        "{log:?}"
    );

    // The same stack with the right password stores the factor.
    wait_for_fresh_step(30, 8);
    let ok = sshd.ssh(
        "bob",
        KBDINT,
        &[
            ("Password: ", PASSWORD),
            ("Verification code: ", "@code"),
            ("Press Enter when you have saved them", ""),
        ],
    );
    assert!(ok.logged_in_as("bob"), "{}", ok.text);
    assert_eq!(factors_of(&sb, "bob"), (true, 10));
    drop(sshd);
    host.check();
}

#[test]
fn grace_period_before_and_after_expiry() {
    let host = Host::snapshot();
    let sb = Sandbox::new("ssh-grace");
    sb.add_user("bob", PASSWORD, None, &[]);
    sb.write_config("[policy]\nmandatory = true\ngrace_period = \"7d\"\n");
    init_store(&sb);
    let sshd = Sshd::start(&sb, "keyboard-interactive", &example("sshd"));

    // Within the grace period: the password alone, and the message says until when.
    // sshd shows text that comes after the last prompt of the login only in an
    // interactive session (with the message of the day), not to `ssh host command`.
    let within = sshd.ssh_shell("bob", KBDINT, &[("Password: ", PASSWORD)]);
    assert!(
        within.logged_in_as("bob"),
        "{}\n{}",
        within.text,
        sshd.log()
    );
    assert!(
        !within.text.contains("Verification code"),
        "{}",
        within.text
    );
    assert!(
        within
            .text
            .contains("Two-factor authentication becomes mandatory for this account on")
            && within.text.contains("totp-admin enroll"),
        "{}",
        within.text
    );
    let log = module_log(&sshd);
    assert!(
        log.iter()
            .any(|l| l.contains("not enrolled, mandatory, in grace period until")),
        "{log:?}"
    );

    // Eight days later (the first sighting moved back): refused, with the reason.
    move_grace_start_back(&sb, "bob", 8 * 86_400);
    let after = sshd.ssh("bob", KBDINT, &[("Password: ", PASSWORD)]);
    assert!(!after.logged_in_as("bob"), "{}", after.text);
    assert!(
        after.text.contains("Contact your administrator"),
        "{}",
        after.text
    );
    assert!(after.text.contains("Permission denied"), "{}", after.text);
    let log = module_log(&sshd);
    assert!(
        log.iter().any(|l| l.contains("result=failure")
            && l.contains("not enrolled, mandatory (mandatory for every user on this host)")),
        "{log:?}"
    );
    drop(sshd);
    host.check();
}

/// Without `account required pam_totp.so` the confirmed enrollment is never stored.
/// (sshd's authentication process ends without pam_end, so the module's "configuration
/// error" line, logged at pam_end elsewhere, does not appear here.)
#[test]
fn missing_account_line_stores_nothing() {
    let sb = Sandbox::new("ssh-no-account");
    sb.add_user("bob", PASSWORD, None, &[]);
    sb.write_config("[policy]\nmandatory = true\nenroll_at_login = true\n");
    init_store(&sb);
    let stack = example("sshd").replace("account    required     {module} config={config}\n", "");
    // The after_publickey line and the code after the password remain.
    assert_eq!(stack.matches("{module}").count(), 2, "{stack}");
    let sshd = Sshd::start(&sb, "keyboard-interactive", &stack);
    wait_for_fresh_step(30, 8);
    // The stack could never store the factor: the module refuses to enroll, says why
    // in the log, and the login fails closed.
    let session = sshd.ssh("bob", KBDINT, &[("Password: ", PASSWORD)]);
    assert!(!session.logged_in_as("bob"), "{}", session.text);
    assert!(
        !session.text.contains("Recovery codes ("),
        "{}",
        session.text
    );
    let log = module_log(&sshd);
    assert!(
        log.iter().any(|l| l.contains("user=\"bob\"")
            && l.contains("result=unavailable")
            && l.contains("enrollment at login needs 'account required pam_totp.so'")),
        "{log:?}"
    );
    assert_eq!(factors_of(&sb, "bob"), (false, 0));
}

/// The example sshd stack for the test service: `after_publickey` names it (sshd takes
/// its service name from the name it was started as).
fn keys_and_passwords_stack() -> String {
    let stack = example("sshd").replace("after_publickey", &format!("after_publickey={SERVICE}"));
    assert!(
        stack.contains("[success=done ignore=ignore default=die] {module}"),
        "{stack}"
    );
    stack
}

/// What `AuthenticationMethods` packaging/enable-sshd.sh writes where keys and
/// passwords both worked.
const KEYS_AND_PASSWORDS: &str = "publickey,keyboard-interactive keyboard-interactive";

/// A user who logs in with a key only: no password at all (shadow `!`).
fn add_keyonly_user(sb: &Sandbox, name: &str) {
    let home = sb.dir.join("home").join(name);
    sb.run(&[
        "useradd",
        "-m",
        "-d",
        home.to_str().unwrap(),
        "-s",
        "/bin/sh",
        "-U",
        name,
    ]);
}

/// root of the sandbox: no password (`*`, as on cloud images) and a home inside the
/// sandbox, so that its authorized key is the test's.
fn root_without_password(sb: &Sandbox) {
    let home = sb.dir.join("home/root");
    std::fs::create_dir_all(&home).unwrap();
    for (file, field, value) in [
        ("etc/passwd", 5, home.to_str().unwrap()),
        ("etc/shadow", 1, "*"),
    ] {
        let path = sb.dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let edited: String = text
            .lines()
            .map(|l| {
                let mut f: Vec<&str> = l.split(':').collect();
                if f[0] == "root" {
                    f[field] = value;
                }
                format!("{}\n", f.join(":"))
            })
            .collect();
        std::fs::write(&path, edited).unwrap();
    }
}

/// ssh options for a login with `key`, then keyboard-interactive.
fn key_options(key: &Path) -> Vec<String> {
    vec![
        "-i".to_string(),
        key.display().to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "PreferredAuthentications=publickey,keyboard-interactive".into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// One sshd configuration for everyone: a key + code (no password asked, whether the
/// account has a password or not, root under prohibit-password included), password +
/// code without a key, neither without the code; a key user who has not enrolled logs
/// in with the key as before.
#[test]
fn keys_and_passwords_each_with_a_code() {
    let host = Host::snapshot();
    let sb = Sandbox::new("ssh-both");
    sb.add_user("alice", PASSWORD, None, &[]);
    add_keyonly_user(&sb, "kate");
    add_keyonly_user(&sb, "newbie");
    sb.add_user("pat", PASSWORD, None, &[]);
    root_without_password(&sb);
    sb.write_config("");
    init_store(&sb);
    for user in ["alice", "kate", "pat", "root"] {
        sb.enroll(user, SECRET);
    }
    let sshd = Sshd::start(&sb, KEYS_AND_PASSWORDS, &keys_and_passwords_stack());
    let keys: Vec<(&str, Vec<String>)> = ["alice", "kate", "root", "newbie"]
        .into_iter()
        .map(|u| (u, key_options(&sshd.authorize_key(&sb, u))))
        .collect();
    let opts = |user: &str| strs(&keys.iter().find(|(u, _)| *u == user).unwrap().1);

    wait_for_fresh_step(30, 20);
    let c = code(SECRET, 0);
    for user in ["alice", "kate", "root"] {
        let ok = sshd.ssh(user, &opts(user), &[("Verification code: ", &c)]);
        assert!(ok.logged_in_as(user), "{user}: {}\n{}", ok.text, sshd.log());
        assert!(
            !ok.text.contains("assword"),
            "{user} was asked a password: {}",
            ok.text
        );
        let bad = sshd.ssh(user, &opts(user), &[("Verification code: ", wrong(&c))]);
        assert!(!bad.logged_in_as(user), "{user}: {}", bad.text);
        assert!(bad.text.contains("Permission denied"), "{}", bad.text);
    }
    let log = sshd.log();
    assert!(
        log.contains("Partial publickey for root from 127.0.0.1")
            && log.contains("Accepted keyboard-interactive/pam for root from 127.0.0.1"),
        "{log}"
    );
    let module = module_log(&sshd);
    assert!(
        module.iter().any(|l| l.contains("user=\"kate\"")
            && l.contains("reason=\"code accepted\"")
            && l.contains("first_factor=\"publickey\"")),
        "{module:?}"
    );

    // Without a key: password + code, and nothing less.
    let pat = password_login(&sshd, "pat", PASSWORD, &c);
    assert!(pat.logged_in_as("pat"), "{}\n{}", pat.text, sshd.log());
    let pat_bad = password_login(&sshd, "pat", PASSWORD, wrong(&c));
    assert!(!pat_bad.logged_in_as("pat"), "{}", pat_bad.text);
    // alice may also come without her key: then her password is asked too.
    let alice = password_login(&sshd, "alice", PASSWORD, &code(SECRET, 30));
    assert!(alice.logged_in_as("alice"), "{}", alice.text);
    // kate has no password: without her key there is no way in.
    let kate = sshd.ssh("kate", KBDINT, &[("Password: ", "")]);
    assert!(!kate.logged_in_as("kate"), "{}", kate.text);

    // Not enrolled (optional policy): the key alone, as before pam_totp.
    let newbie = sshd.ssh("newbie", &opts("newbie"), &[]);
    assert!(
        newbie.logged_in_as("newbie"),
        "{}\n{}",
        newbie.text,
        sshd.log()
    );
    assert!(
        !newbie.text.contains("Verification code"),
        "{}",
        newbie.text
    );
    for line in module_log(&sshd) {
        assert!(!line.contains(&c), "{line}");
    }
    drop(sshd);
    host.check();
}

/// SSH_AUTH_INFO_0 is believed only where sshd alone can have written it: with pam_env
/// reading the user's ~/.pam_environment in the auth stack, a key is followed by the
/// password and the code, and a forged variable gets nobody past the password; su and
/// sudo, with the line in their stacks and the variable in the caller's environment,
/// still ask for the password.
#[test]
fn a_forged_key_report_gets_nobody_past_the_password() {
    let host = Host::snapshot();
    let sb = Sandbox::new("ssh-forged");
    sb.add_user("alice", PASSWORD, None, &[]);
    sb.add_user("pat", PASSWORD, None, &[]);
    sb.write_config("");
    init_store(&sb);
    sb.enroll("alice", SECRET);
    sb.enroll("pat", SECRET);
    let forged = "publickey ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    write_file(
        &sb.dir.join("home/pat/.pam_environment"),
        &format!("SSH_AUTH_INFO_0 DEFAULT=\"{forged}\"\n"),
        0o644,
    );
    let stack = format!(
        "auth required pam_env.so user_readenv=1\n{}",
        keys_and_passwords_stack()
    );
    let sshd = Sshd::start(&sb, KEYS_AND_PASSWORDS, &stack);
    let alice_key = key_options(&sshd.authorize_key(&sb, "alice"));

    wait_for_fresh_step(30, 15);
    let c = code(SECRET, 0);
    // pat types only the code where the password is asked: refused.
    let pat = sshd.ssh("pat", KBDINT, &[("Password: ", &c)]);
    assert!(!pat.logged_in_as("pat"), "{}", pat.text);
    // alice's key is followed by the password now, then the code.
    let alice = sshd.ssh(
        "alice",
        &strs(&alice_key),
        &[("Password: ", PASSWORD), ("Verification code: ", &c)],
    );
    assert!(
        alice.logged_in_as("alice"),
        "{}\n{}",
        alice.text,
        sshd.log()
    );
    let log = module_log(&sshd);
    assert!(
        log.iter().any(|l| l.contains("user=\"alice\"")
            && l.contains("SSH_AUTH_INFO_0 not believed (pam_env.so in")
            && l.contains("lets the user write SSH_AUTH_INFO_0); the password is asked")),
        "{log:?}"
    );
    drop(sshd);

    // su and sudo with the line in their stacks: the variable in the caller's
    // environment changes nothing.
    let line = format!(
        "auth [success=done ignore=ignore default=die] {} config={} after_publickey\n",
        module().display(),
        sb.config_path().display()
    );
    for service in ["su", "sudo"] {
        let path = sb.dir.join("etc/pam.d").join(service);
        let text = std::fs::read_to_string(&path).unwrap();
        write_file(&path, &format!("{line}{text}"), 0o644);
    }
    write_file(
        &sb.dir.join("etc/sudoers.d/pat"),
        "pat ALL=(ALL) ALL\n",
        0o440,
    );
    // The namespace of the stopped sshd left its log socket behind.
    std::fs::remove_file(sb.dir.join("log.sock")).unwrap();
    let ns = Namespace::new(&sb);
    let as_pat = |argv: &[&str], prompt: &str, tries: usize| {
        let mut full = vec![
            "setpriv",
            "--reuid=pat",
            "--regid=pat",
            "--init-groups",
            "env",
        ];
        let var = format!("SSH_AUTH_INFO_0={forged}");
        full.push(&var);
        full.extend_from_slice(argv);
        // The code alone, at every password prompt (sudo asks three times).
        dialog_in(&ns, &sb.dir, &full, &vec![(prompt, c.as_str()); tries])
    };
    let su = as_pat(&["su", "alice", "-c", WHOAMI], "Password: ", 1);
    assert!(!su.logged_in_as("alice"), "{}", su.text);
    let sudo = as_pat(&["sudo", "-k", "sh", "-c", WHOAMI], "password for pat: ", 3);
    assert!(!sudo.logged_in_as("root"), "{}", sudo.text);
    drop(ns);
    host.check();
}

/// A user without a password enrolls at their first SSH login with a key
/// (enroll_at_login), and from then on logs in with key + code.
#[test]
fn enrollment_at_login_after_a_key() {
    let host = Host::snapshot();
    let sb = Sandbox::new("ssh-enroll-key");
    add_keyonly_user(&sb, "kate");
    sb.write_config("[policy]\nmandatory = true\nenroll_at_login = true\n");
    init_store(&sb);
    let sshd = Sshd::start(&sb, KEYS_AND_PASSWORDS, &keys_and_passwords_stack());
    let kate_key = key_options(&sshd.authorize_key(&sb, "kate"));

    wait_for_fresh_step(30, 8);
    let enroll = sshd.ssh(
        "kate",
        &strs(&kate_key),
        &[
            ("Verification code: ", "@code"),
            ("Press Enter when you have saved them", ""),
        ],
    );
    assert!(
        enroll.logged_in_as("kate"),
        "{}\n{}",
        enroll.text,
        sshd.log()
    );
    assert!(!enroll.text.contains("assword:"), "{}", enroll.text);
    let shown = shown(&enroll);
    assert_eq!(factors_of(&sb, "kate"), (true, 10));
    let key = shown.key.replace(' ', "");
    let next = sshd.ssh(
        "kate",
        &strs(&kate_key),
        &[("Verification code: ", &code(&key, 30))],
    );
    assert!(next.logged_in_as("kate"), "{}", next.text);
    assert!(!next.text.contains("Scan this QR code"), "{}", next.text);
    drop(sshd);
    host.check();
}

/// forward_pass: sshd with PasswordAuthentication (one prompt, answered with what the
/// user typed): the password followed by the code, or by a space and a recovery code.
#[test]
fn forward_pass_through_password_authentication() {
    let host = Host::snapshot();
    let sb = Sandbox::new("ssh-forward");
    sb.add_user("alice", PASSWORD, None, &[]);
    sb.add_user("bob", PASSWORD, None, &[]);
    sb.write_config("");
    init_store(&sb);
    let recovery = sb.enroll("alice", SECRET);
    let stack = "auth required {module} config={config} forward_pass\n\
         auth required pam_unix.so use_first_pass\n\
         account required pam_unix.so\n\
         account required {module} config={config}\n\
         session required pam_permit.so\n";
    let sshd = Sshd::start_with(&sb, "password", stack, "PasswordAuthentication yes\n");
    let password_only = [
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "PreferredAuthentications=password",
    ];
    let login = |user: &str, answer: &str| {
        sshd.ssh(
            user,
            &password_only,
            &[(&format!("{user}@127.0.0.1's password: ") as &str, answer)],
        )
    };

    wait_for_fresh_step(30, 20);
    let c = code(SECRET, 0);
    let ok = login("alice", &format!("{PASSWORD}{c}"));
    assert!(ok.logged_in_as("alice"), "{}\n{}", ok.text, sshd.log());
    for bad in [
        PASSWORD.to_string(),
        format!("{PASSWORD}{}", wrong(&c)),
        format!("wrong password{}", code(SECRET, 30)),
        code(SECRET, 30),
    ] {
        let denied = login("alice", &bad);
        assert!(!denied.logged_in_as("alice"), "{}", denied.text);
    }
    let recovered = login("alice", &format!("{PASSWORD} {}", recovery[0]));
    assert!(recovered.logged_in_as("alice"), "{}", recovered.text);
    // Not enrolled (optional): the password alone, handed on whole.
    let bob = login("bob", PASSWORD);
    assert!(bob.logged_in_as("bob"), "{}", bob.text);
    let log = module_log(&sshd);
    assert!(
        log.iter().any(
            |l| l.contains("user=\"alice\"") && l.contains("reason=\"recovery code accepted\"")
        ),
        "{log:?}"
    );
    for line in module_log(&sshd).iter().chain(&[sshd.log()]) {
        assert!(
            !line.contains(PASSWORD) && !line.contains(&recovery[0]),
            "{line}"
        );
    }
    drop(sshd);
    host.check();
}

/// The package's enable-sshd.sh (what `install.sh --enable-sshd` runs after installing
/// the package) on a copy of this host (a throwaway system: overlays on /etc, /usr, /var,
/// /home, /root, /run in a private mount namespace) in which the real .deb was installed
/// with dpkg. Then the real sshd, started as `sshd` with the host's sshd_config and the
/// drop-in and PAM stack exactly as the script left them: key + code with and without a
/// password, root under prohibit-password, password + code, none without the code.
/// Before that, a stack in which a key would be followed by a password: the script names
/// the accounts that would be locked out and does not reload sshd.
#[test]
fn enable_sshd_keeps_every_way_in_and_adds_the_code() {
    use pam_totp_tests::packages_support::{
        dpkg, in_throwaway_system, run, run_with_input, sqlite_deb,
    };
    use std::process::Command;
    let host = Host::snapshot();
    // Removed on drop, also when an assertion fails.
    struct Work(std::path::PathBuf);
    impl Drop for Work {
        fn drop(&mut self) {
            remove_sandbox_dir(&self.0);
        }
    }
    let work = Work(sandbox_dir("ssh-enable"));
    let deb = sqlite_deb();
    let script = Path::new("/usr/share/pam-totp/enable-sshd.sh");
    let checked = work.0.clone();
    in_throwaway_system(move || {
        let work = checked;
        // The package as an admin installs it: its postinst makes the store.
        dpkg(&["-i", deb.to_str().unwrap()]);
        assert!(
            std::fs::read(script).unwrap()
                == std::fs::read(workspace().join("packaging/enable-sshd.sh")).unwrap(),
            "the package carries another enable-sshd.sh than this checkout's"
        );

        // alice: password and key; kate: key only; pat: password only; root: key only
        // (PermitRootLogin prohibit-password, the default); ghost: neither, before too.
        for (user, password) in [
            ("alice", Some(PASSWORD)),
            ("kate", None),
            ("pat", Some(PASSWORD)),
            ("ghost", None),
        ] {
            run(Command::new("useradd").args(["-m", "-s", "/bin/sh", user]));
            if let Some(p) = password {
                run_with_input(&mut Command::new("chpasswd"), &format!("{user}:{p}\n"));
            }
        }
        run(Command::new("usermod").args(["-p", "*", "root"]));
        let mut keys = Vec::new();
        for (user, home) in [
            ("alice", "/home/alice"),
            ("kate", "/home/kate"),
            ("root", "/root"),
        ] {
            let key = work.join(format!("{user}_key"));
            pam_totp_tests::sshd_support::keygen(&key);
            let ssh = Path::new(home).join(".ssh");
            std::fs::create_dir_all(&ssh).unwrap();
            let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
            std::fs::write(ssh.join("authorized_keys"), public).unwrap();
            run(Command::new("chown").args(["-R", &format!("{user}:"), ssh.to_str().unwrap()]));
            keys.push((user, key_options(&key)));
        }
        for user in ["alice", "kate", "pat", "root"] {
            run_with_input(
                Command::new("totp-admin").args(["enroll", "--user", user, "--secret-stdin"]),
                &format!("{SECRET}\n"),
            );
        }
        let pam_sshd_before = std::fs::read_to_string("/etc/pam.d/sshd").unwrap();
        let enable = || {
            Command::new("timeout")
                .args(["120", "sh"])
                .arg(script)
                .arg("--no-reload")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output()
                .unwrap()
        };

        // A stack where pam_env reads the user's file: the key report cannot be
        // believed, a key is followed by a password, kate and root have none.
        std::fs::write(
            "/etc/pam.d/sshd",
            format!("auth required pam_env.so user_readenv=1\n{pam_sshd_before}"),
        )
        .unwrap();
        let refused = enable();
        let text = String::from_utf8_lossy(&refused.stdout).into_owned()
            + &String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{text}");
        assert!(text.contains("sshd was NOT reloaded"), "{text}");
        let named = text.split("would be locked out:").nth(1).unwrap_or("");
        for user in ["kate", "root"] {
            assert!(
                named.contains(&format!("  {user}: cannot log in over SSH")),
                "{text}"
            );
        }
        assert!(
            !named.contains("alice:") && !named.contains("pat:"),
            "{text}"
        );
        let doctor = Command::new("totp-admin").arg("doctor").output().unwrap();
        let doctor = String::from_utf8_lossy(&doctor.stdout);
        assert!(
            doctor.contains("FAIL  lockout  kate: cannot log in over SSH")
                && doctor.contains("no password, which /etc/pam.d/sshd asks here"),
            "{doctor}"
        );

        // The stack as the host had it: every way in is kept.
        let pam_now = std::fs::read_to_string("/etc/pam.d/sshd").unwrap();
        std::fs::write(
            "/etc/pam.d/sshd",
            pam_now.replace("auth required pam_env.so user_readenv=1\n", ""),
        )
        .unwrap();
        let done = enable();
        let text = String::from_utf8_lossy(&done.stdout).into_owned()
            + &String::from_utf8_lossy(&done.stderr);
        assert!(done.status.success(), "{text}");
        assert!(text.contains("no account is locked out"), "{text}");
        assert!(
            text.split("before either:")
                .nth(1)
                .is_some_and(|t| t.contains("\n  ghost: ")),
            "{text}"
        );
        let dropin = std::fs::read_to_string("/etc/ssh/sshd_config.d/50-pam-totp.conf").unwrap();
        assert!(
            dropin.contains("\nAuthenticationMethods publickey,keyboard-interactive keyboard-interactive\n")
                && dropin.contains("\nMatch User root\n    PermitRootLogin yes\n    AuthenticationMethods publickey,keyboard-interactive\n"),
            "{dropin}"
        );
        let pam = std::fs::read_to_string("/etc/pam.d/sshd").unwrap();
        let line = pam
            .find("auth [success=done ignore=ignore default=die] pam_totp.so after_publickey\n")
            .expect(&pam);
        assert!(line < pam.find("@include common-auth").unwrap(), "{pam}");
        assert!(std::fs::read_to_string("/etc/pam.d/common-auth")
            .unwrap()
            .contains("pam_totp.so"));
        assert!(std::fs::read_dir("/var/backups/pam_totp")
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("pam.d-sshd.")));

        // sshd as the host would run it after a reload: service `sshd`, the host's
        // sshd_config (which includes the drop-in), on a port of its own.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host_key = work.join("host_key");
        pam_totp_tests::sshd_support::keygen(&host_key);
        let config = work.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nLogLevel VERBOSE\n\
                 Include /etc/ssh/sshd_config\n",
                host_key.display(),
                work.join("sshd.pid").display()
            ),
        )
        .unwrap();
        let log = work.join("sshd.log");
        let mut sshd = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(&config)
            .arg("-E")
            .arg(&log)
            .spawn()
            .unwrap();
        struct Kill(std::process::Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let ready = format!("Server listening on 127.0.0.1 port {port}.");
        for _ in 0..300 {
            if std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(&ready)
            {
                break;
            }
            assert!(sshd.try_wait().unwrap().is_none(), "sshd exited");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let sshd = Kill(sshd);
        let ssh = |user: &str, options: &[&str], dialog: &[(&str, &str)]| {
            let port = port.to_string();
            let known = format!("UserKnownHostsFile={}", work.join("known_hosts").display());
            let target = format!("{user}@127.0.0.1");
            let mut argv = vec![
                "ssh",
                "-F",
                "/dev/null",
                "-p",
                &port,
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                &known,
                "-o",
                "NumberOfPasswordPrompts=1",
            ];
            argv.extend_from_slice(options);
            argv.extend([target.as_str(), WHOAMI]);
            let mut prefix = Command::new("timeout");
            prefix.args(["90", "expect"]);
            let session = pam_totp_tests::sshd_support::run_dialog(prefix, &work, &argv, dialog);
            assert!(
                session.problem.is_none(),
                "{session:?}\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
            session
        };
        wait_for_fresh_step(30, 20);
        let c = code(SECRET, 0);
        for (user, options) in &keys {
            let ok = ssh(user, &strs(options), &[("Verification code: ", &c)]);
            assert!(ok.logged_in_as(user), "{user}: {}", ok.text);
            assert!(!ok.text.contains("assword"), "{user}: {}", ok.text);
            let bad = ssh(user, &strs(options), &[("Verification code: ", wrong(&c))]);
            assert!(!bad.logged_in_as(user), "{user}: {}", bad.text);
        }
        let pat = ssh(
            "pat",
            KBDINT,
            &[("Password: ", PASSWORD), ("Verification code: ", &c)],
        );
        assert!(pat.logged_in_as("pat"), "{}", pat.text);
        let pat_bad = ssh(
            "pat",
            KBDINT,
            &[("Password: ", PASSWORD), ("Verification code: ", wrong(&c))],
        );
        assert!(!pat_bad.logged_in_as("pat"), "{}", pat_bad.text);
        drop(sshd);
    });
    drop(work);
    host.check();
}

/// A user without a password who runs `totp-admin enroll` is told how they can enroll
/// (at the next SSH login with enroll_at_login, or by root) instead of meeting a
/// password prompt they cannot answer.
#[test]
fn a_user_without_a_password_is_told_how_to_enroll() {
    use pam_totp_tests::admin_support::AdminWorld;
    for (config, advice) in [
        (
            "[policy]\nenroll_at_login = true\nmandatory = true\n",
            "log in over SSH again: you will be asked to set it up during the login",
        ),
        ("", "ask your administrator to turn on enroll_at_login"),
    ] {
        let world = AdminWorld::new("enroll-nopass", config);
        world.sb.init_store();
        add_keyonly_user(&world.sb, "kate");
        let run = world.as_user("kate", &["enroll"], "");
        run.assert_refused(advice);
        assert!(
            run.stderr
                .contains("or ask root to run: totp-admin enroll --user kate"),
            "{}",
            run.stderr
        );
        assert!(
            !run.stdout.contains("assword") && !run.stderr.contains("Password:"),
            "{}{}",
            run.stdout,
            run.stderr
        );
    }
}

/// `remember_source`: the second ssh login from 127.0.0.1 is not asked for a code, and
/// its log line says why it passed.
#[test]
fn a_second_login_from_a_remembered_address() {
    let host = Host::snapshot();
    let sb = Sandbox::new("ssh-remember");
    sb.add_user("alice", PASSWORD, None, &[]);
    sb.write_config("[policy]\nremember_source = \"1h\"\n");
    init_store(&sb);
    sb.enroll("alice", SECRET);
    let sshd = Sshd::start(&sb, "keyboard-interactive", &example("sshd"));

    wait_for_fresh_step(30, 8);
    let first = password_login(&sshd, "alice", PASSWORD, &code(SECRET, 0));
    assert!(first.logged_in_as("alice"), "{}", first.text);
    let second = sshd.ssh("alice", KBDINT, &[("Password: ", PASSWORD)]);
    assert!(second.logged_in_as("alice"), "{}", second.text);
    assert!(
        !second.text.contains("Verification code"),
        "{}",
        second.text
    );
    let log = module_log(&sshd);
    assert!(
        log.iter().any(|l| l.contains(
            "user=\"alice\" service=\"sshd-totptest\" source=\"127.0.0.1\" result=success reason=\"remembered source\""
        )),
        "{log:?}"
    );
    // A wrong password still ends the login.
    let bad_password = sshd.ssh("alice", KBDINT, &[("Password: ", "wrong password")]);
    assert!(!bad_password.logged_in_as("alice"), "{}", bad_password.text);
    drop(sshd);
    host.check();
}
