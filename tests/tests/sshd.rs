//! A real sshd on 127.0.0.1 and OpenSSH's real client driven by `expect`: password +
//! code, key + code, enrollment at login (the QR code read back from the session and
//! decoded), a failed password that must store nothing, and the grace period.
//!
//! The PAM services are the examples in config/pam.d, with the module's path and the
//! sandbox's config filled in.

use pam_totp_tests::sshd_support::{Session, Sshd, SERVICE};
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

    // The same code again is a replay; a wrong code fails.
    for bad in [c.as_str(), wrong(&c)] {
        let denied = password_login(&sshd, "alice", PASSWORD, bad);
        assert!(!denied.logged_in_as("alice"), "{}", denied.text);
        assert_eq!(denied.exit, Some(255), "{}", denied.text);
        assert!(denied.text.contains("Permission denied"), "{}", denied.text);
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
    let scan = at("Scan this QR code with an authenticator app:");
    let key_at = at("Or enter this key: ");
    let qr = lines[scan + 1..key_at]
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
    assert_eq!(stack.matches("{module}").count(), 1, "{stack}");
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
