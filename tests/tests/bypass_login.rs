//! Ways around the second factor at login, each shown through the built module and real
//! programs (pam-client through pam_wrapper, a real sshd and OpenSSH's client):
//!
//! - several logins held at the prompt at once must not get more checked answers than
//!   the throttle allows;
//! - another spelling of an account (a `useradd -o` alias, a name a case-insensitive
//!   directory folds) meets the account's factor, replay step and counters;
//! - a code is checked against the time the answer arrived, and a prompt held too long
//!   is refused;
//! - a key replaced while a login waits at the prompt no longer opens it;
//! - configuration that could mean something else is refused, or fails closed.

use pam_totp_tests::bypass_support::{count, wait_all_at_prompt, HeldLogin, HeldSsh};
use pam_totp_tests::nss_support::{Database, NssModule};
use pam_totp_tests::sshd_support::{Sshd, SERVICE};
use pam_totp_tests::*;
use std::process::Stdio;
use std::time::Duration;

const PASSWORD: &str = "correct horse";

/// A second key, for a second user or a replacement.
const OTHER_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// The module alone decides: pam_permit before it, and its account line (which
/// stores a factor enrolled at login).
const PERMIT_STACK: &str = "auth required pam_permit.so\n\
     auth required {module} config={config}\n\
     account required pam_permit.so\n\
     account required {module} config={config}\n";

/// The service every pam-client login here uses; the same stack is also written to
/// the sandbox's /etc/pam.d, where the module looks for its account line.
const SVC: &str = "bypass";

/// A sandbox with alice (enrolled with [`SECRET`]) and bob (not enrolled), `config`,
/// and the service [`SVC`] with [`PERMIT_STACK`].
fn world(name: &str, config: &str) -> Sandbox {
    let sb = Sandbox::new(name);
    sb.add_user("alice", PASSWORD, None, &[]);
    sb.add_user("bob", PASSWORD, None, &[]);
    // Enrolled under a plain config; the config under test comes after (it may be one
    // that totp-admin rightly refuses).
    sb.write_config("");
    sb.enroll("alice", SECRET);
    sb.write_config(config);
    sb.service(SVC, PERMIT_STACK);
    let system = PERMIT_STACK
        .replace("{module}", module().to_str().unwrap())
        .replace("{config}", sb.config_path().to_str().unwrap());
    write_file(&sb.dir.join("etc/pam.d").join(SVC), &system, 0o644);
    sb
}

fn wrong(code: &str) -> &'static str {
    if code == "000000" {
        "111111"
    } else {
        "000000"
    }
}

fn lines(answers: &[&str]) -> Vec<u8> {
    answers
        .iter()
        .flat_map(|a| format!("{a}\n").into_bytes())
        .collect()
}

/// One login through [`PERMIT_STACK`] from `rhost`, answering `answers`.
fn login(sb: &Sandbox, user: &str, rhost: &str, answers: &[&str]) -> PamRun {
    sb.pam(SVC, user, &["--rhost", rhost], &lines(answers))
}

/// The module's own return code (pam_sm_authenticate called directly).
fn direct(sb: &Sandbox, user: &str, rhost: &str, answers: &[&str]) -> PamRun {
    let config = format!("config={}", sb.config_path().display());
    let module = module();
    sb.pam(
        SVC,
        user,
        &[
            "--rhost",
            rhost,
            "--direct",
            module.to_str().unwrap(),
            &config,
        ],
        &lines(answers),
    )
}

fn asked_for_code(run: &PamRun) -> bool {
    run.stdout.contains("PROMPT_ECHO_OFF: Verification code: ")
}

/// Adds `alias` with the uid and primary group of `of` (`useradd -o`), after it in
/// /etc/passwd: NSS maps the uid back to `of`.
fn add_alias(sb: &Sandbox, alias: &str, of: &str) {
    let uid = String::from_utf8(sb.run(&["id", "-u", of]).stdout).unwrap();
    let gid = String::from_utf8(sb.run(&["id", "-g", of]).stdout).unwrap();
    let home = sb.dir.join("home").join(of);
    sb.run(&[
        "useradd",
        "-o",
        "-u",
        uid.trim(),
        "-g",
        gid.trim(),
        "-M",
        "-d",
        home.to_str().unwrap(),
        "-s",
        "/bin/sh",
        alias,
    ]);
    let out = sb.run(&["getent", "passwd", uid.trim()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&format!("{of}:")),
        "uid {} should map back to {of}",
        uid.trim()
    );
}

/// Installs the case-folding NSS module and checks that `ALICE` resolves to alice.
fn install_casefold(sb: &Sandbox) {
    NssModule::install(sb, &[Database::Passwd, Database::Shadow, Database::Group]);
    let out = sb.run(&["getent", "passwd", "ALICE"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("alice:"),
        "ALICE does not resolve to alice: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Every module line of `runs`.
fn all_logs(runs: &[PamRun]) -> Vec<String> {
    runs.iter().flat_map(|r| r.logs.iter().cloned()).collect()
}

// ---------------------------------------------------------------------------------
// Item 1: several logins at the prompt at once.

/// Starts `n` pam-client logins of alice from `rhosts(i)`, waits until all are at the
/// prompt, answers all but the last with wrong codes at once, waits for them, then
/// answers the last with the right code. Returns the runs, the right one last.
fn parallel_pam_logins(sb: &Sandbox, n: usize, rhost: impl Fn(usize) -> String) -> Vec<PamRun> {
    wait_for_fresh_step(30, 20);
    let mut held: Vec<HeldLogin> = (0..n)
        .map(|i| HeldLogin::start(sb, SVC, "alice", &["--rhost", &rhost(i)], 90))
        .collect();
    for h in &mut held {
        h.wait_for_code_prompt();
    }
    let last = held.pop().unwrap();
    let bad = wrong(&code(SECRET, 0));
    for h in &mut held {
        h.answer(bad);
    }
    let mut runs: Vec<PamRun> = held.into_iter().map(HeldLogin::finish).collect();
    let mut last = last;
    last.answer(&code(SECRET, 0));
    runs.push(last.finish());
    runs
}

#[test]
fn parallel_pam_logins_get_no_more_checks_than_max_failures() {
    let sb = world(
        "par-pam",
        "[throttle]\nmax_failures = 3\nlockout = \"10m\"\nuser_max_failures = 50\n",
    );
    let runs = parallel_pam_logins(&sb, 10, |_| "192.0.2.50".to_string());
    let logs = all_logs(&runs);
    let checked = count(&logs, "reason=\"wrong code\"");
    let throttled = count(&logs, "reason=\"throttled");
    let last = runs.last().unwrap();
    assert!(
        checked <= 3,
        "{checked} wrong answers were checked against the key with max_failures = 3 \
         (the right code answered last: {}); logs: {logs:#?}",
        last.auth
    );
    assert!(
        !last.auth_is("PAM_SUCCESS"),
        "the right code answered after {checked} wrong ones opened the login: {last:?}"
    );
    assert!(last.log_contains("reason=\"throttled"), "{:?}", last.logs);
    assert_eq!(checked + throttled, 10, "{logs:#?}");
}

#[test]
fn parallel_pam_logins_from_many_sources_get_no_more_checks_than_user_max_failures() {
    let sb = world(
        "par-user",
        "[throttle]\nmax_failures = 100\nuser_max_failures = 4\n",
    );
    let runs = parallel_pam_logins(&sb, 8, |i| format!("192.0.2.{}", 60 + i));
    let logs = all_logs(&runs);
    let checked = count(&logs, "reason=\"wrong code\"");
    let last = runs.last().unwrap();
    assert!(
        checked <= 4,
        "{checked} wrong answers from 8 sources were checked with user_max_failures = 4 \
         (the right code answered last: {}); logs: {logs:#?}",
        last.auth
    );
    assert!(
        !last.auth_is("PAM_SUCCESS"),
        "the right code answered after {checked} wrong ones opened the login: {last:?}"
    );
    assert!(last.log_contains("reason=\"throttled"), "{:?}", last.logs);
}

/// The config/pam.d sshd example for the built module and the sandbox's config.
fn sshd_example() -> String {
    let text = std::fs::read_to_string(workspace().join("config/pam.d/sshd")).unwrap();
    text.replace("pam_totp.so", "{module} config={config}")
}

/// Lines the module logged for the test sshd's service.
fn module_log(sshd: &Sshd) -> Vec<String> {
    sshd.ns
        .syslog()
        .into_iter()
        .filter(|l| l.contains(&format!("pam_totp({SERVICE}:")))
        .collect()
}

#[test]
fn parallel_ssh_sessions_get_no_more_checks_than_max_failures() {
    let sb = world(
        "par-ssh",
        "[throttle]\nmax_failures = 3\nlockout = \"10m\"\nuser_max_failures = 50\n",
    );
    let sshd = Sshd::start(&sb, "keyboard-interactive", &sshd_example());
    wait_for_fresh_step(30, 25);
    let mut sessions: Vec<HeldSsh> = (0..10)
        .map(|_| HeldSsh::start(&sshd, "alice", PASSWORD))
        .collect();
    wait_all_at_prompt(&mut sessions, Duration::from_secs(50));
    let last = sessions.pop().unwrap();
    let bad = wrong(&code(SECRET, 0));
    for s in &sessions {
        s.answer(bad);
    }
    for s in sessions.into_iter().map(HeldSsh::finish) {
        assert!(s.problem.is_none(), "{:?}\n{}", s.problem, sshd.log());
        assert!(!s.logged_in_as("alice"), "{}", s.text);
    }
    last.answer(&code(SECRET, 0));
    let last = last.finish();
    let logs = module_log(&sshd);
    let checked = count(&logs, "reason=\"wrong code\"");
    assert!(
        checked <= 3,
        "{checked} wrong answers of 10 ssh sessions held at the prompt were checked with \
         max_failures = 3 (the right code answered last logged in: {}); logs: {logs:#?}",
        last.logged_in_as("alice")
    );
    assert!(
        !last.logged_in_as("alice"),
        "the right code answered after {checked} wrong ones logged in:\n{}",
        last.text
    );
    assert_eq!(
        count(&logs, "reason=\"throttled") + checked,
        10,
        "{logs:#?}"
    );
}

// ---------------------------------------------------------------------------------
// Item 2: another spelling of the account.

/// `name` reaches alice's account: it is asked for a code, a wrong code is refused, a
/// code alice already used is refused, and alice's next code is accepted, logged for
/// alice with the name typed.
fn meets_alices_factor(sb: &Sandbox, name: &str) {
    wait_for_fresh_step(30, 15);
    let now = code(SECRET, 0);
    let wrong_run = login(sb, name, "192.0.2.20", &[wrong(&now)]);
    assert!(
        asked_for_code(&wrong_run),
        "{name} (alice's account) was not asked for a code: {}; logs: {:?}",
        wrong_run.auth,
        wrong_run.logs
    );
    assert!(wrong_run.auth_is("PAM_AUTH_ERR"), "{wrong_run:?}");

    let alice = login(sb, "alice", "192.0.2.21", &[&now]);
    assert!(alice.auth_is("PAM_SUCCESS"), "{alice:?}");
    let replay = login(sb, name, "192.0.2.20", &[&now]);
    assert!(
        replay.auth_is("PAM_AUTH_ERR"),
        "a code alice already used opened {name}: {replay:?}"
    );
    assert!(
        replay.log_contains("reason=\"code already used\""),
        "{:?}",
        replay.logs
    );

    let next = login(sb, name, "192.0.2.20", &[&code(SECRET, 30)]);
    assert!(next.auth_is("PAM_SUCCESS"), "{next:?}");
    assert!(
        next.log_contains("user=\"alice\"")
            && next.log_contains(&format!("login_name=\"{name}\""))
            && next.log_contains("reason=\"code accepted\""),
        "{:?}",
        next.logs
    );
}

#[test]
fn alias_with_the_same_uid_meets_the_accounts_factor() {
    let sb = world("alias-uid", "");
    add_alias(&sb, "alias2", "alice");
    meets_alices_factor(&sb, "alias2");
}

#[test]
fn case_folded_name_meets_the_accounts_factor() {
    let sb = world("alias-case", "");
    install_casefold(&sb);
    meets_alices_factor(&sb, "ALICE");
}

#[test]
fn case_folded_name_over_ssh_meets_the_accounts_factor() {
    let sb = world("alias-case-ssh", "");
    install_casefold(&sb);
    let sshd = Sshd::start(&sb, "keyboard-interactive", &sshd_example());
    wait_for_fresh_step(30, 15);

    let mut held = HeldSsh::start(&sshd, "ALICE", PASSWORD);
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while !held.at_prompt() && !held.ended() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !held.at_prompt() {
        let session = held.finish();
        panic!(
            "ssh ALICE@ was never asked for a code (logged in as alice: {}):\n{}\nlogs: {:?}",
            session.logged_in_as("alice"),
            session.text,
            module_log(&sshd)
        );
    }
    held.answer(wrong(&code(SECRET, 0)));
    let refused = held.finish();
    assert!(!refused.logged_in_as("alice"), "{}", refused.text);

    let ok = sshd.ssh(
        "ALICE",
        &[
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=keyboard-interactive",
        ],
        &[
            ("Password: ", PASSWORD),
            ("Verification code: ", &code(SECRET, 0)),
        ],
    );
    assert!(ok.logged_in_as("alice"), "{}\n{}", ok.text, sshd.log());
    let logs = module_log(&sshd);
    assert!(
        logs.iter().any(|l| l.contains("user=\"alice\"")
            && l.contains("login_name=\"ALICE\"")
            && l.contains("reason=\"code accepted\"")),
        "{logs:?}"
    );
}

#[test]
fn other_spellings_of_an_enrolled_user_get_no_grace_period() {
    let sb = world(
        "alias-grace",
        "[policy]\nmandatory = true\ngrace_period = \"7d\"\n",
    );
    add_alias(&sb, "alias2", "alice");
    install_casefold(&sb);
    for name in ["alias2", "ALICE"] {
        let run = login(&sb, name, "192.0.2.22", &[wrong(&code(SECRET, 0))]);
        assert!(
            !run.log_contains("grace period"),
            "{name} (enrolled alice's account) got a grace period: {}; logs: {:?}",
            run.auth,
            run.logs
        );
        assert!(asked_for_code(&run), "{run:?}");
        assert!(run.auth_is("PAM_AUTH_ERR"), "{run:?}");
    }
}

#[test]
fn other_spellings_of_an_enrolled_user_are_never_offered_enrollment_at_login() {
    let sb = world(
        "alias-enroll",
        "[policy]\nmandatory = true\nenroll_at_login = true\n",
    );
    add_alias(&sb, "alias2", "alice");
    install_casefold(&sb);
    wait_for_fresh_step(30, 10);
    for (name, offset) in [("alias2", 0), ("ALICE", 30)] {
        let run = login(&sb, name, "192.0.2.23", &[&code(SECRET, offset), ""]);
        assert!(
            !run.stdout.contains("Or enter this key") && !run.stdout.contains("Scan this QR code"),
            "{name} (enrolled alice's account) was shown a new key to enroll: {}; logs: {:?}",
            run.auth,
            run.logs
        );
        assert!(asked_for_code(&run), "{run:?}");
        assert!(run.auth_is("PAM_SUCCESS"), "{run:?}");
        assert!(
            run.log_contains("reason=\"code accepted\""),
            "{:?}",
            run.logs
        );
    }
    // Nothing was enrolled under either name.
    let list = sb.admin(&["--json", "list"], "");
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        !text.contains("alias2") && !text.contains("ALICE"),
        "{text}"
    );
}

#[test]
fn unknown_name_is_refused_when_the_policy_could_be_mandatory() {
    let configs = [
        "[policy]\nmandatory = true\ngrace_period = \"7d\"\n",
        "[policy]\nmandatory = true\nenroll_at_login = true\n",
        "[policy]\nmandatory_groups = [\"admins\"]\n",
        "[policy]\nmandatory = true\n",
    ];
    for config in configs {
        let sb = world("unknown", config);
        if config.contains("admins") {
            sb.add_group("admins");
        }
        let run = login(&sb, "nosuchuser", "192.0.2.24", &["123456", ""]);
        assert!(
            !run.auth_is("PAM_SUCCESS"),
            "an unknown name logged in under {config:?}: {run:?}"
        );
        assert!(
            !run.stdout.contains("Or enter this key"),
            "an unknown name was offered enrollment under {config:?}: {}",
            run.stdout
        );
        assert!(
            run.log_contains("result=failure reason=\"unknown user\""),
            "under {config:?}: {:?}",
            run.logs
        );
    }
    // Where the policy cannot be mandatory, the module stands aside.
    let sb = world("unknown-optional", "");
    let run = direct(&sb, "nosuchuser", "192.0.2.24", &[]);
    assert!(run.auth_is("PAM_IGNORE"), "{run:?}");
    assert!(
        run.log_contains("reason=\"unknown user, optional\""),
        "{:?}",
        run.logs
    );
}

// ---------------------------------------------------------------------------------
// Item 3: a code is checked against the time the answer arrived.

#[test]
fn code_of_the_prompt_time_is_refused_once_two_steps_old() {
    let sb = world("held-old", "[totp]\nwindow = 1\n");
    wait_for_fresh_step(30, 10);
    let mut held = HeldLogin::start(&sb, SVC, "alice", &["--rhost", "192.0.2.30"], 150);
    held.wait_for_code_prompt();
    let step = unix_now() / 30;
    let then = code(SECRET, 0);
    // Bounded: at most 60 s plus a second.
    while unix_now() / 30 < step + 2 {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    held.answer(&then);
    let run = held.finish();
    assert!(
        !run.auth_is("PAM_SUCCESS"),
        "the code of the prompt's time, two steps old when it was typed (window = 1), \
         was accepted: {run:?}"
    );
    assert!(run.log_contains("reason=\"wrong code\""), "{:?}", run.logs);
}

#[test]
fn prompt_timeout_refuses_an_answer_that_comes_late() {
    let sb = world("held-timeout", "");
    sb.enroll("bob", OTHER_SECRET);
    sb.write_config("[policy]\nprompt_timeout = \"10s\"\n");
    wait_for_fresh_step(30, 8);
    let quick = login(&sb, "alice", "192.0.2.31", &[&code(SECRET, 0)]);
    assert!(
        quick.auth_is("PAM_SUCCESS"),
        "prompt_timeout = \"10s\": an answer at once: {quick:?}"
    );

    let mut held = HeldLogin::start(&sb, SVC, "bob", &["--rhost", "192.0.2.31"], 60);
    held.wait_for_code_prompt();
    std::thread::sleep(Duration::from_secs(12));
    held.answer(&code(OTHER_SECRET, 0));
    let run = held.finish();
    assert!(
        !run.auth_is("PAM_SUCCESS"),
        "a current code typed 12 s after the prompt (prompt_timeout = 10s) was accepted: {run:?}"
    );
    assert!(run.log_contains("prompt_timeout"), "{:?}", run.logs);
}

// ---------------------------------------------------------------------------------
// Item 6: a key replaced while a login waits at the prompt.

#[test]
fn key_replaced_during_the_prompt_refuses_the_old_keys_code() {
    let sb = world("held-revoked", "");
    wait_for_fresh_step(30, 15);
    let mut held = HeldLogin::start(&sb, SVC, "alice", &["--rhost", "192.0.2.40"], 60);
    held.wait_for_code_prompt();
    let reset = sb.admin(&["reset", "--user", "alice"], "");
    assert!(
        reset.status.success(),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    sb.enroll("alice", OTHER_SECRET);
    held.answer(&code(SECRET, 0));
    let run = held.finish();
    assert!(
        !run.auth_is("PAM_SUCCESS"),
        "a code of the key removed while the login waited at the prompt was accepted: {run:?}"
    );
    // Checked against the key it was shown for (then that key is gone), or against
    // the new key (then it is simply wrong).
    assert!(
        run.log_contains("reason=\"factor changed during the login\"")
            || run.log_contains("reason=\"wrong code\""),
        "{:?}",
        run.logs
    );
    // The new key works.
    let new = login(&sb, "alice", "192.0.2.40", &[&code(OTHER_SECRET, 0)]);
    assert!(new.auth_is("PAM_SUCCESS"), "{new:?}");
}

// ---------------------------------------------------------------------------------
// Item 7: configuration that could mean something else.

/// pam-client through pam_wrapper with the store of `sb` at the default path
/// (/var/lib/pam_totp, on a tmpfs over /var/lib inside the private namespace), so that
/// a config read as all defaults still finds it. The module's own return code.
fn direct_with_default_store(sb: &Sandbox, user: &str, answers: &[&str]) -> PamRun {
    const SETUP: &str = r#"S="$1"; shift
mount -t tmpfs -o mode=755 sandbox-varlib /var/lib || exit 125
mkdir -m 700 /var/lib/pam_totp && cp -a "$S"/. /var/lib/pam_totp/ || exit 125
exec "$@""#;
    let config = format!("config={}", sb.config_path().display());
    let module = module();
    let mut cmd = sb.command("sh");
    cmd.args(["-c", SETUP, "setup"])
        .arg(sb.dir.join("totp/store"))
        .args([
            "timeout",
            "20",
            "env",
            "LD_PRELOAD=libpam_wrapper.so",
            "PAM_WRAPPER=1",
        ])
        .arg(format!(
            "PAM_WRAPPER_SERVICE_DIR={}",
            sb.dir.join("pam").join(SVC).display()
        ))
        .arg("PAM_WRAPPER_DEBUGLEVEL=2")
        .arg(pam_client())
        .args([SVC, user, "--rhost", "192.0.2.70", "--direct"])
        .arg(module)
        .arg(config);
    let out = feed(&mut cmd, &String::from_utf8(lines(answers)).unwrap());
    parse_run(&out)
}

#[test]
fn cr_and_crlf_line_endings_keep_mandatory() {
    for (ending, name) in [("\r\n", "CRLF"), ("\r", "CR")] {
        let sb = world("config-eol", "");
        let text = "# pam_totp configuration\n[policy]\nmandatory = true\n".replace('\n', ending);
        write_file(&sb.config_path(), &text, 0o600);
        let run = direct_with_default_store(&sb, "bob", &[]);
        assert!(
            !run.auth_is("PAM_IGNORE") && !run.auth_is("PAM_SUCCESS"),
            "{name} line endings, mandatory = true: unenrolled bob got {}; logs: {:?}",
            run.auth,
            run.logs
        );
        if name == "CRLF" {
            assert!(run.auth_is("PAM_AUTH_ERR"), "{run:?}");
        }
        let show = sb.admin(&["--json", "policy", "show", "--user", "bob"], "");
        let stdout = String::from_utf8_lossy(&show.stdout);
        let stderr = String::from_utf8_lossy(&show.stderr);
        if show.status.success() {
            assert!(
                stdout.contains("\"mandatory\":true")
                    && stdout.contains("\"policy\":\"mandatory\""),
                "{name} line endings, mandatory = true: totp-admin policy show read {stdout}"
            );
        } else {
            assert_ne!(name, "CRLF", "CRLF is valid TOML: {stderr}");
            assert!(stderr.contains("line"), "{stderr}");
        }
    }
}

#[test]
fn grace_period_without_a_unit_is_refused() {
    let sb = world("config-grace", "[policy]\ngrace_period = \"7\"\n");
    wait_for_fresh_step(30, 5);
    let run = direct(&sb, "alice", "192.0.2.71", &[&code(SECRET, 0)]);
    assert!(
        run.auth_is("PAM_AUTHINFO_UNAVAIL"),
        "grace_period = \"7\" (no unit): enrolled alice got {}; logs: {:?}",
        run.auth,
        run.logs
    );
    let show = sb.admin(&["policy", "show"], "");
    let stderr = String::from_utf8_lossy(&show.stderr);
    assert_eq!(
        show.status.code(),
        Some(1),
        "totp-admin policy show accepted grace_period = \"7\": {}{stderr}",
        String::from_utf8_lossy(&show.stdout)
    );
    assert!(
        stderr.contains("grace_period")
            && stderr.contains("config.toml:2:")
            && stderr.contains(sb.config_path().to_str().unwrap()),
        "{stderr}"
    );
}

#[test]
fn exempt_network_with_host_bits_is_refused() {
    let sb = world(
        "config-net",
        "[policy]\nexempt_networks = [\"192.0.2.99/8\"]\n",
    );
    wait_for_fresh_step(30, 5);
    let run = direct(&sb, "alice", "192.1.2.3", &[wrong(&code(SECRET, 0))]);
    assert!(
        !run.auth_is("PAM_IGNORE") && !run.auth_is("PAM_SUCCESS"),
        "exempt_networks = [\"192.0.2.99/8\"]: a login from 192.1.2.3 got {}; logs: {:?}",
        run.auth,
        run.logs
    );
    assert!(run.auth_is("PAM_AUTHINFO_UNAVAIL"), "{run:?}");
    assert!(run.log_contains("192.0.0.0/8"), "{:?}", run.logs);
    let show = sb.admin(&["policy", "show"], "");
    let stderr = String::from_utf8_lossy(&show.stderr);
    assert_eq!(
        show.status.code(),
        Some(1),
        "totp-admin policy show accepted 192.0.2.99/8: {}{stderr}",
        String::from_utf8_lossy(&show.stdout)
    );
    assert!(
        stderr.contains("192.0.0.0/8") && stderr.contains("exempt_networks"),
        "{stderr}"
    );
}

#[test]
fn exempt_networks_never_match_a_host_name() {
    let sb = world(
        "config-hostname",
        "[policy]\nexempt_networks = [\"127.0.0.0/8\"]\n",
    );
    wait_for_fresh_step(30, 5);
    let run = direct(&sb, "alice", "localhost", &[wrong(&code(SECRET, 0))]);
    assert!(
        asked_for_code(&run) && run.auth_is("PAM_AUTH_ERR"),
        "PAM_RHOST=localhost was exempt by 127.0.0.0/8: {run:?}"
    );
    // The literal address is exempt.
    let literal = direct(&sb, "alice", "127.0.0.1", &[]);
    assert!(literal.auth_is("PAM_IGNORE"), "{literal:?}");
}

#[test]
fn mandatory_group_that_nss_cannot_look_up_fails_closed() {
    for group in ["unreachable-admins", "tryagain-admins"] {
        let sb = world(
            "config-nss-group",
            &format!("[policy]\nmandatory_groups = [\"{group}\"]\n"),
        );
        NssModule::install(&sb, &[Database::Group]);
        let getent = sb
            .command("getent")
            .args(["group", group])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!getent.status.success(), "{group} resolved: {getent:?}");
        let run = direct(&sb, "bob", "192.0.2.72", &[]);
        assert!(
            run.auth_is("PAM_AUTHINFO_UNAVAIL"),
            "mandatory group {group:?} could not be looked up (NSS error): unenrolled bob got {}; \
             logs: {:?}",
            run.auth,
            run.logs
        );
        assert!(run.log_contains(group), "{:?}", run.logs);
    }
}

#[test]
fn doctor_names_a_group_that_resolves_nowhere() {
    let sb = world(
        "config-doctor",
        "[policy]\nmandatory_groups = [\"nosuchgroup\"]\n",
    );
    let out = sb.admin(&["doctor"], "");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("nosuchgroup"),
        "doctor does not name the configured group that resolves nowhere:\n{text}"
    );
}
