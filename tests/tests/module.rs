//! The built pam_totp.so through real libpam (pam_wrapper), with real users and groups
//! in a private copy of /etc, and codes computed by oathtool.

use pam_totp_tests::*;
use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

const PASSWORD: &str = "correct horse";

/// Password (pam_unix) then the module, as in a real stack.
const STACK: &str = "auth required pam_unix.so\nauth required {module} config={config}\naccount required pam_permit.so\n";

/// A sandbox with the users every test here needs: alice enrolled with [`SECRET`];
/// bob not enrolled; carol with supplementary group admins; dave with primary group
/// admins; svc in group svcaccts.
fn world(name: &str, config: &str) -> (Sandbox, Vec<String>) {
    let sb = Sandbox::new(name);
    sb.add_group("admins");
    sb.add_group("svcaccts");
    sb.add_user("alice", PASSWORD, None, &[]);
    sb.add_user("bob", PASSWORD, None, &[]);
    sb.add_user("carol", PASSWORD, None, &["admins"]);
    sb.add_user("dave", PASSWORD, Some("admins"), &[]);
    sb.add_user("svc", PASSWORD, None, &["svcaccts"]);
    sb.write_config(config);
    let codes = sb.enroll("alice", SECRET);
    sb.service("login", STACK);
    (sb, codes)
}

fn answers(lines: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l.as_bytes());
        out.push(b'\n');
    }
    out
}

/// One login through the full stack: password, then `code`.
fn login(sb: &Sandbox, user: &str, rhost: &str, code: &str) -> PamRun {
    sb.pam(
        "login",
        user,
        &["--rhost", rhost],
        &answers(&[PASSWORD, code]),
    )
}

/// The module's own return code, calling pam_sm_authenticate directly on a real handle.
fn direct(sb: &Sandbox, user: &str, rhost: &str, answer_lines: &[&str]) -> PamRun {
    let config = format!("config={}", sb.config_path().display());
    let module = module();
    sb.pam(
        "login",
        user,
        &[
            "--rhost",
            rhost,
            "--direct",
            module.to_str().unwrap(),
            &config,
        ],
        &answers(answer_lines),
    )
}

fn assert_no_secrets(run: &PamRun, secrets: &[&str]) {
    for s in secrets {
        assert!(!s.is_empty());
        for line in &run.logs {
            assert!(!line.contains(s), "log line leaks {s:?}: {line}");
        }
    }
}

#[test]
fn right_code_passes_and_is_logged() {
    let (sb, _) = world("right", "");
    wait_for_fresh_step(30, 5);
    let c = code(SECRET, 0);
    let run = login(&sb, "alice", "192.0.2.10", &c);
    assert!(run.auth_is("PAM_SUCCESS"), "{run:?}");
    assert!(
        run.stdout.contains("PROMPT_ECHO_OFF: Verification code: "),
        "{}",
        run.stdout
    );
    assert_eq!(run.acct.as_deref(), Some("PAM_SUCCESS(0)"));
    assert!(
        run.stdout.contains("setcred=PAM_SUCCESS(0)"),
        "{}",
        run.stdout
    );
    assert!(
        run.log_contains(
            "user=\"alice\" service=\"login\" source=\"192.0.2.10\" result=success reason=\"code accepted\""
        ),
        "{:?}",
        run.logs
    );
    assert_no_secrets(&run, &[&c, SECRET, PASSWORD]);
}

#[test]
fn wrong_replayed_and_stale_codes_fail() {
    let (sb, _) = world("wrong", "[throttle]\nmax_failures = 20\n");
    wait_for_fresh_step(30, 8);
    let c = code(SECRET, 0);
    // A wrong code.
    let wrong = if c == "000000" { "111111" } else { "000000" };
    let run = login(&sb, "alice", "192.0.2.11", wrong);
    assert!(run.auth_is("PAM_AUTH_ERR"), "{run:?}");
    assert!(
        run.log_contains("result=failure reason=\"wrong code\""),
        "{:?}",
        run.logs
    );
    // Outside the window (window = 1): two and three steps away.
    for offset in [-90, -60, 60, 90] {
        let stale = code(SECRET, offset);
        if stale == c {
            continue;
        }
        let run = login(&sb, "alice", "192.0.2.11", &stale);
        assert!(run.auth_is("PAM_AUTH_ERR"), "offset {offset}: {run:?}");
    }
    // The current code once, then never again; nor the previous step's code.
    assert!(login(&sb, "alice", "192.0.2.11", &c).auth_is("PAM_SUCCESS"));
    let again = login(&sb, "alice", "192.0.2.11", &c);
    assert!(again.auth_is("PAM_AUTH_ERR"), "{again:?}");
    assert!(
        again.log_contains("reason=\"code already used\""),
        "{:?}",
        again.logs
    );
    let earlier = login(&sb, "alice", "192.0.2.11", &code(SECRET, -30));
    assert!(earlier.auth_is("PAM_AUTH_ERR"), "{earlier:?}");
    // The next step's code (inside the window) is still good.
    assert!(login(&sb, "alice", "192.0.2.11", &code(SECRET, 30)).auth_is("PAM_SUCCESS"));
}

#[test]
fn password_failure_fails_the_stack() {
    let (sb, _) = world("password", "");
    let run = sb.pam(
        "login",
        "alice",
        &["--rhost", "192.0.2.12"],
        &answers(&["wrong password", &code(SECRET, 0)]),
    );
    assert!(run.auth_is("PAM_AUTH_ERR"), "{run:?}");
}

#[test]
fn algorithms_digits_and_periods_match_oathtool() {
    for (alg, digits, period) in [
        ("SHA256", 8, 30),
        ("SHA512", 7, 60),
        ("SHA1", 8, 45),
        ("SHA256", 6, 20),
    ] {
        let sb = Sandbox::new("algorithms");
        sb.add_user("alice", PASSWORD, None, &[]);
        sb.write_config(&format!(
            "[totp]\nalgorithm = \"{alg}\"\ndigits = {digits}\nperiod = {period}\n"
        ));
        sb.enroll("alice", SECRET);
        sb.service("login", STACK);
        wait_for_fresh_step(period, 5);
        let c = oathtool(SECRET, alg, digits, period, 0);
        assert_eq!(c.len(), digits as usize);
        let run = login(&sb, "alice", "192.0.2.13", &c);
        assert!(
            run.auth_is("PAM_SUCCESS"),
            "{alg}/{digits}/{period}: {run:?}"
        );
    }
}

#[test]
fn spaces_inside_the_code_are_ignored() {
    let (sb, _) = world("spaces", "");
    wait_for_fresh_step(30, 5);
    let c = code(SECRET, 0);
    let spaced = format!(" {} {} ", &c[..3], &c[3..]);
    assert!(login(&sb, "alice", "192.0.2.14", &spaced).auth_is("PAM_SUCCESS"));
}

#[test]
fn recovery_codes_work_once_each() {
    let (sb, codes) = world("recovery", "");
    assert_eq!(codes.len(), 10, "{codes:?}");
    let status = |sb: &Sandbox| {
        let out = sb.admin(&["--json", "status", "--user", "alice"], "");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        status(&sb).contains("\"recovery_codes_left\": 10")
            || status(&sb).contains("\"recovery_codes_left\":10")
    );
    let first = login(&sb, "alice", "192.0.2.15", &codes[0]);
    assert!(first.auth_is("PAM_SUCCESS"), "{first:?}");
    assert!(
        first.log_contains("reason=\"recovery code accepted\""),
        "{:?}",
        first.logs
    );
    assert_no_secrets(&first, &[&codes[0], &codes[0].replace('-', "")]);
    let again = login(&sb, "alice", "192.0.2.15", &codes[0]);
    assert!(again.auth_is("PAM_AUTH_ERR"), "{again:?}");
    // Typed in upper case with spaces instead of dashes.
    let typed = codes[1].to_uppercase().replace('-', " ");
    assert!(login(&sb, "alice", "192.0.2.15", &typed).auth_is("PAM_SUCCESS"));
    let s = status(&sb);
    assert!(
        s.contains("\"recovery_codes_left\": 8") || s.contains("\"recovery_codes_left\":8"),
        "{s}"
    );
}

/// Two logins in two processes with the same valid code: exactly one succeeds.
/// 50 rounds, each against a different enrolled user so every round races afresh.
#[test]
fn replay_race_between_processes() {
    let sb = Sandbox::new("race");
    sb.write_config("");
    let users: Vec<String> = (0..50).map(|i| format!("racer{i}")).collect();
    for u in &users {
        sb.add_user(u, PASSWORD, None, &[]);
        sb.enroll(u, SECRET);
    }
    sb.service(
        "race",
        "auth required {module} config={config}\naccount required pam_permit.so\n",
    );
    wait_for_fresh_step(30, 20);
    let c = code(SECRET, 0);
    for u in &users {
        let spawn = || {
            sb.pam_command("race", pam_client())
                .args(["race", u, "--rhost", "192.0.2.16"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut a = spawn();
        let mut b = spawn();
        // Both are started before either gets its answer.
        let line = format!("{c}\n");
        use std::io::Write;
        a.stdin.take().unwrap().write_all(line.as_bytes()).unwrap();
        b.stdin.take().unwrap().write_all(line.as_bytes()).unwrap();
        let ra = parse_run(&a.wait_with_output().unwrap());
        let rb = parse_run(&b.wait_with_output().unwrap());
        let wins = [&ra, &rb]
            .iter()
            .filter(|r| r.auth_is("PAM_SUCCESS"))
            .count();
        assert_eq!(wins, 1, "{u}: {ra:?} {rb:?}");
        let loser = if ra.auth_is("PAM_SUCCESS") { &rb } else { &ra };
        assert!(loser.auth_is("PAM_AUTH_ERR"), "{loser:?}");
    }
}

#[test]
fn throttling_is_per_source() {
    let (sb, _) = world(
        "throttle",
        "[throttle]\nmax_failures = 3\nlockout = \"10m\"\n",
    );
    wait_for_fresh_step(30, 10);
    let c = code(SECRET, 0);
    let wrong = if c == "000000" { "111111" } else { "000000" };
    for _ in 0..3 {
        assert!(login(&sb, "alice", "203.0.113.5", wrong).auth_is("PAM_AUTH_ERR"));
    }
    // Locked from that source: even the right code fails, with a message.
    let locked = login(&sb, "alice", "203.0.113.5", &c);
    assert!(locked.auth_is("PAM_AUTH_ERR"), "{locked:?}");
    assert!(locked.stdout.contains("try again in"), "{}", locked.stdout);
    assert!(
        locked.log_contains("reason=\"throttled for"),
        "{:?}",
        locked.logs
    );
    // Another source is not affected, and the code was not used up by the locked try.
    let other = login(&sb, "alice", "198.51.100.7", &c);
    assert!(other.auth_is("PAM_SUCCESS"), "{other:?}");
    // Local logins count by tty.
    for _ in 0..3 {
        let run = sb.pam(
            "login",
            "alice",
            &["--tty", "tty3"],
            &answers(&[PASSWORD, wrong]),
        );
        assert!(run.auth_is("PAM_AUTH_ERR"));
    }
    let tty_locked = sb.pam(
        "login",
        "alice",
        &["--tty", "tty3"],
        &answers(&[PASSWORD, &code(SECRET, 30)]),
    );
    assert!(
        tty_locked.stdout.contains("try again in"),
        "{}",
        tty_locked.stdout
    );
    // unlock clears it.
    let out = sb.admin(&["unlock", "--user", "alice"], "");
    if out.status.success() {
        let run = sb.pam(
            "login",
            "alice",
            &["--tty", "tty3"],
            &answers(&[PASSWORD, &code(SECRET, 30)]),
        );
        assert!(run.auth_is("PAM_SUCCESS"), "{run:?}");
    }
}

#[test]
fn optional_unenrolled_is_ignored_never_success() {
    let (sb, _) = world("optional", "");
    let run = direct(&sb, "bob", "192.0.2.20", &[]);
    assert!(run.auth_is("PAM_IGNORE"), "{run:?}");
    assert!(!run.stdout.contains("Verification code"), "{}", run.stdout);
    assert!(
        run.log_contains("result=ignore reason=\"not enrolled, optional\""),
        "{:?}",
        run.logs
    );
    // In a stack of its own, an ignoring module cannot make the stack succeed.
    sb.service(
        "alone",
        "auth required {module} config={config}\naccount required pam_permit.so\n",
    );
    let alone = sb.pam("alone", "bob", &["--rhost", "192.0.2.20"], b"");
    assert!(!alone.auth_is("PAM_SUCCESS"), "{alone:?}");
    // After a password module it lets the login through.
    let stacked = login(&sb, "bob", "192.0.2.20", "");
    assert!(stacked.auth_is("PAM_SUCCESS"), "{stacked:?}");
}

#[test]
fn mandatory_for_the_host() {
    let (sb, _) = world("mandatory", "[policy]\nmandatory = true\n");
    let run = direct(&sb, "bob", "192.0.2.21", &[]);
    assert!(run.auth_is("PAM_AUTH_ERR"), "{run:?}");
    assert!(
        run.stdout.contains("ERROR_MSG:") && run.stdout.contains("administrator"),
        "{}",
        run.stdout
    );
    assert!(
        run.log_contains(
            "reason=\"not enrolled, mandatory (mandatory for every user on this host)\""
        ),
        "{:?}",
        run.logs
    );
    // Enrolled users are asked as usual.
    wait_for_fresh_step(30, 5);
    assert!(direct(&sb, "alice", "192.0.2.21", &[&code(SECRET, 0)]).auth_is("PAM_SUCCESS"));
}

#[test]
fn mandatory_groups_primary_and_supplementary() {
    let (sb, _) = world("groups", "[policy]\nmandatory_groups = [\"admins\"]\n");
    for user in ["carol", "dave"] {
        let run = direct(&sb, user, "192.0.2.22", &[]);
        assert!(run.auth_is("PAM_AUTH_ERR"), "{user}: {run:?}");
        assert!(
            run.log_contains("member of mandatory group admins"),
            "{:?}",
            run.logs
        );
    }
    assert!(direct(&sb, "bob", "192.0.2.22", &[]).auth_is("PAM_IGNORE"));
}

#[test]
fn exempt_groups_win_over_mandatory() {
    let (sb, _) = world(
        "exempt",
        "[policy]\nmandatory = true\nexempt_groups = [\"svcaccts\"]\n",
    );
    let run = direct(&sb, "svc", "192.0.2.23", &[]);
    assert!(run.auth_is("PAM_IGNORE"), "{run:?}");
    assert!(
        run.log_contains("exempt: member of exempt group svcaccts"),
        "{:?}",
        run.logs
    );
    assert!(direct(&sb, "bob", "192.0.2.23", &[]).auth_is("PAM_AUTH_ERR"));
}

#[test]
fn exempt_networks_v4_and_v6() {
    let (sb, _) = world(
        "networks",
        "[policy]\nmandatory = true\nexempt_networks = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n",
    );
    for (rhost, exempt) in [
        ("10.1.2.3", true),
        ("2001:db8:1::5", true),
        ("::ffff:10.9.9.9", true),
        ("11.1.2.3", false),
        ("2001:db9::5", false),
        ("10.1.2.3.example.com", false),
    ] {
        let run = direct(&sb, "bob", rhost, &[]);
        let want = if exempt { "PAM_IGNORE" } else { "PAM_AUTH_ERR" };
        assert!(run.auth_is(want), "{rhost}: {run:?}");
    }
    // An enrolled user from an exempt network is not asked either.
    let run = direct(&sb, "alice", "10.0.0.1", &[]);
    assert!(
        run.auth_is("PAM_IGNORE") && !run.stdout.contains("Verification"),
        "{run:?}"
    );
}

#[test]
fn grace_period_then_refusal() {
    let (sb, _) = world(
        "grace",
        "[policy]\nmandatory = true\ngrace_period = \"7d\"\n",
    );
    let run = direct(&sb, "bob", "192.0.2.24", &[]);
    assert!(run.auth_is("PAM_IGNORE"), "{run:?}");
    assert!(
        run.stdout.contains("TEXT_INFO:") && run.stdout.contains("totp-admin enroll"),
        "{}",
        run.stdout
    );
    // Move the first sighting back eight days, as if the week had passed.
    let past = unix_now() as i64 - 8 * 86_400;
    pam_totp_tests::store_support::set_mandatory_since(&sb.store_path(), "bob", past);
    let after = direct(&sb, "bob", "192.0.2.24", &[]);
    assert!(after.auth_is("PAM_AUTH_ERR"), "{after:?}");
}

/// Every way the config or store can be broken refuses enrolled and mandatory users
/// with PAM_AUTHINFO_UNAVAIL and logs why; the process survives.
#[test]
fn fail_closed() {
    type Breaker = fn(&Sandbox);
    let cases: [(&str, Breaker); 9] = [
        ("missing config", |sb| {
            std::fs::remove_file(sb.config_path()).unwrap()
        }),
        ("unparsable config", |sb| {
            write_file(&sb.config_path(), "[policy\nmandatory = ", 0o600)
        }),
        ("unknown key", |sb| {
            sb.write_config("[policy]\nmandatroy = true\n")
        }),
        ("world-writable config", |sb| {
            std::fs::set_permissions(
                sb.config_path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o666),
            )
            .unwrap()
        }),
        ("config not owned by root", |sb| {
            std::os::unix::fs::chown(sb.config_path(), Some(65534), None).unwrap()
        }),
        ("missing store", |sb| {
            std::fs::remove_file(sb.store_path()).unwrap()
        }),
        ("corrupt store", |sb| {
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", sb.store_path().display()));
            }
            write_file(&sb.store_path(), &"garbage ".repeat(2000), 0o600)
        }),
        ("store readable by others", |sb| {
            std::fs::set_permissions(
                sb.store_path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )
            .unwrap()
        }),
        ("store is a symlink", |sb| {
            let real = sb.dir.join("totp/store/real.db");
            std::fs::rename(sb.store_path(), &real).unwrap();
            std::os::unix::fs::symlink(&real, sb.store_path()).unwrap();
        }),
    ];
    for (what, breaker) in cases {
        let (sb, _) = world("failclosed", "[policy]\nmandatory_groups = [\"admins\"]\n");
        breaker(&sb);
        for user in ["alice", "carol"] {
            let run = direct(&sb, user, "192.0.2.30", &["123456"]);
            assert!(
                run.auth_is("PAM_AUTHINFO_UNAVAIL"),
                "{what}, {user}: {run:?}"
            );
            assert!(
                run.log_contains("result=unavailable"),
                "{what}: {:?}",
                run.logs
            );
            // And through the whole stack, with the right password and code.
            let stacked = login(&sb, user, "192.0.2.30", &code(SECRET, 0));
            assert!(
                stacked.auth_is("PAM_AUTHINFO_UNAVAIL"),
                "{what}, {user}: {stacked:?}"
            );
        }
    }
}

/// The host key that seals the factors' keys: missing, another key, or readable by
/// others, every login of an enrolled user fails closed, and the log names the file;
/// an unenrolled optional user is not affected.
#[test]
fn a_missing_or_wrong_host_key_fails_closed() {
    type Breaker = fn(&Sandbox);
    let cases: [(&str, Breaker); 3] = [
        ("missing host key", |sb| {
            std::fs::remove_file(sb.key_path()).unwrap()
        }),
        ("another host key", |sb| {
            write_file(&sb.key_path(), &"k".repeat(32), 0o400)
        }),
        ("host key readable by others", |sb| {
            std::fs::set_permissions(
                sb.key_path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o444),
            )
            .unwrap()
        }),
    ];
    let (sb, _) = world("hostkey", "");
    let original = std::fs::read(sb.key_path()).unwrap();
    for (what, breaker) in cases {
        breaker(&sb);
        let run = direct(&sb, "alice", "192.0.2.32", &["123456"]);
        assert!(run.auth_is("PAM_AUTHINFO_UNAVAIL"), "{what}: {run:?}");
        assert!(
            run.log_contains("result=unavailable reason=\"store key /etc/pam_totp/store.key"),
            "{what}: {:?}",
            run.logs
        );
        let stacked = login(&sb, "alice", "192.0.2.32", &code(SECRET, 0));
        assert!(
            stacked.auth_is("PAM_AUTHINFO_UNAVAIL"),
            "{what}: {stacked:?}"
        );
        let bob = direct(&sb, "bob", "192.0.2.32", &[]);
        assert!(bob.auth_is("PAM_IGNORE"), "{what}: {bob:?}");
        let _ = std::fs::remove_file(sb.key_path());
        std::fs::write(sb.key_path(), &original).unwrap();
        std::fs::set_permissions(
            sb.key_path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o400),
        )
        .unwrap();
    }
}

/// `store rekey`: every key re-sealed under a new host key; logins go on, and the old
/// key opens nothing any more.
#[test]
fn store_rekey_reseals_every_key() {
    let (sb, _) = world("rekey", "");
    sb.enroll("bob", SECRET);
    let old = std::fs::read(sb.key_path()).unwrap();
    let out = sb.admin(&["store", "rekey"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Re-sealed 2 factor keys"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let new = std::fs::read(sb.key_path()).unwrap();
    assert_ne!(old, new);
    assert_eq!(new.len(), 32);
    let mode = std::fs::metadata(sb.key_path())
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o400);
    let mut pending = sb.key_path().into_os_string();
    pending.push(".new");
    assert!(!std::path::Path::new(&pending).exists());
    wait_for_fresh_step(30, 5);
    let run = login(&sb, "alice", "192.0.2.33", &code(SECRET, 0));
    assert!(run.auth_is("PAM_SUCCESS"), "{run:?}");
    // The old key back in place: the factors do not open.
    let _ = std::fs::remove_file(sb.key_path());
    write_file(&sb.key_path(), "", 0o400);
    std::fs::write(sb.key_path(), &old).unwrap();
    let run = login(&sb, "bob", "192.0.2.33", &code(SECRET, 0));
    assert!(run.auth_is("PAM_AUTHINFO_UNAVAIL"), "{run:?}");
}

#[test]
fn failmode_open_is_explicit_and_logged() {
    let (sb, _) = world("failopen", "[policy]\nfailmode = \"open\"\n");
    std::fs::remove_file(sb.store_path()).unwrap();
    let run = direct(&sb, "alice", "192.0.2.31", &[]);
    assert!(run.auth_is("PAM_IGNORE"), "{run:?}");
    assert!(
        run.log_contains("result=ignore reason=\"failmode=open: store"),
        "{:?}",
        run.logs
    );
    // A broken config cannot say "open": closed.
    write_file(
        &sb.config_path(),
        "[policy]\nfailmode = \"open\"\nbogus = 1\n",
        0o600,
    );
    assert!(direct(&sb, "alice", "192.0.2.31", &[]).auth_is("PAM_AUTHINFO_UNAVAIL"));
}

#[test]
fn bad_answers_are_plain_failures() {
    let (sb, _) = world("badinput", "[throttle]\nmax_failures = 100\n");
    let huge = "7".repeat(100_000);
    let cases: [&[u8]; 7] = [
        b"\n",
        b"     \n",
        b"12\x003456\n",
        "１２３４５６\n".as_bytes(),
        b"abcdef\n",
        b"\xff\xfe\x01\x02\x1b[31m\n",
        b"%s%s%n%x\n",
    ];
    let mut inputs: Vec<Vec<u8>> = cases.iter().map(|c| c.to_vec()).collect();
    inputs.push(format!("{huge}\n").into_bytes());
    for input in inputs {
        let mut a = format!("{PASSWORD}\n").into_bytes();
        a.extend_from_slice(&input);
        let run = sb.pam("login", "alice", &["--rhost", "192.0.2.32"], &a);
        assert!(
            run.auth_is("PAM_AUTH_ERR"),
            "{:?}: {run:?}",
            String::from_utf8_lossy(&input[..input.len().min(20)])
        );
        assert!(run.log_contains("result=failure"), "{:?}", run.logs);
    }
}

#[test]
fn no_answer_is_a_conversation_error() {
    let (sb, _) = world("conv", "");
    let run = sb.pam(
        "login",
        "alice",
        &["--rhost", "192.0.2.33"],
        format!("{PASSWORD}\n").as_bytes(),
    );
    assert!(run.auth_is("PAM_CONV_ERR"), "{run:?}");
    assert!(run.log_contains("result=conv_error"), "{:?}", run.logs);
}

#[test]
fn hostile_rhost_and_user_reach_the_log_escaped() {
    let (sb, _) = world("hostile", "");
    let rhost = "1.2.3.4\nuser=\"root\" result=success %s%n";
    let run = direct(&sb, "bob", rhost, &[]);
    assert!(run.auth_is("PAM_IGNORE"), "{run:?}");
    let line = run
        .logs
        .iter()
        .find(|l| l.contains("user=\"bob\""))
        .expect("a decision line");
    assert!(
        line.contains("source=\"1.2.3.4\\x0auser=\\\"root\\\" result=success %s%n\""),
        "{line}"
    );
    assert_eq!(
        run.logs.iter().filter(|l| l.contains("result=")).count(),
        1,
        "{:?}",
        run.logs
    );
}

#[test]
fn bad_module_arguments_fail_closed() {
    let (sb, _) = world("args", "");
    sb.service(
        "typo",
        "auth required {module} confg={config}\naccount required pam_permit.so\n",
    );
    let run = sb.pam("typo", "alice", &["--rhost", "192.0.2.34"], b"123456\n");
    assert!(run.auth_is("PAM_AUTHINFO_UNAVAIL"), "{run:?}");
    assert!(
        run.log_contains("unknown module argument"),
        "{:?}",
        run.logs
    );
}

#[test]
fn host_etc_is_untouched() {
    let before: HashSet<String> = ["/etc/passwd", "/etc/group", "/etc/shadow"]
        .iter()
        .map(|p| checksum(std::path::Path::new(p)))
        .collect();
    let (sb, _) = world("untouched", "");
    sb.add_user("extra", PASSWORD, None, &[]);
    drop(sb);
    let after: HashSet<String> = ["/etc/passwd", "/etc/group", "/etc/shadow"]
        .iter()
        .map(|p| checksum(std::path::Path::new(p)))
        .collect();
    assert_eq!(before, after);
}

/// docs/STORE.md's query, pasted into sqlite3 on the store a login wrote: who is
/// enrolled, since when, last used, and the source alice is locked from now.
#[test]
fn the_documented_query_reads_the_store() {
    let (sb, _) = world("query", "[throttle]\nmax_failures = 2\n");
    sb.enroll("carol", SECRET);
    wait_for_fresh_step(30, 5);
    let ok = login(&sb, "alice", "198.51.100.1", &code(SECRET, 0));
    assert!(ok.auth_is("PAM_SUCCESS"), "{ok:?}");
    for _ in 0..2 {
        let r = login(&sb, "alice", "203.0.113.9", "000000");
        assert!(r.auth_is("PAM_AUTH_ERR"), "{r:?}");
    }
    let query = pam_totp_tests::store_support::documented_query(0);
    let out = sb
        .command("sqlite3")
        .arg("-readonly")
        .arg(sb.store_path())
        .arg(&query)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pam_totp_tests::store_support::assert_documented_rows(&text, "alice", "203.0.113.9", "carol");
}

/// A second factor: a current code of either is accepted, each code once per factor;
/// a refused code says why (the user cannot tell otherwise whether the password or the
/// code failed).
#[test]
fn either_factor_passes_and_refusals_say_why() {
    let (sb, _) = world("second-factor", "");
    const OTHER: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    sb.add_factor("alice", "yubikey", OTHER);
    wait_for_fresh_step(30, 8);
    let yubikey = code(OTHER, 0);
    let ok = login(&sb, "alice", "192.0.2.1", &yubikey);
    assert!(ok.auth_is("PAM_SUCCESS"), "{ok:?}");
    let replayed = login(&sb, "alice", "192.0.2.1", &yubikey);
    assert!(replayed.auth_is("PAM_AUTH_ERR"), "{replayed:?}");
    assert!(
        replayed
            .stdout
            .contains("This code was already used; wait for the next one."),
        "{}",
        replayed.stdout
    );
    // The other factor's step is its own: its current code still passes.
    let default = code(SECRET, 0);
    let ok = login(&sb, "alice", "192.0.2.1", &default);
    assert!(ok.auth_is("PAM_SUCCESS"), "{ok:?}");
    let wrong = if default == "000000" || yubikey == "000000" {
        "999999"
    } else {
        "000000"
    };
    let denied = login(&sb, "alice", "192.0.2.1", wrong);
    assert!(denied.auth_is("PAM_AUTH_ERR"), "{denied:?}");
    assert!(
        denied.stdout.contains("Wrong verification code."),
        "{}",
        denied.stdout
    );
    assert!(denied.log_contains("reason=\"wrong code\""), "{denied:?}");
}

/// `remember_source`: a user who passed with a code from one remote address is not asked
/// again from it; asked from another address, from no address, through sudo; asked
/// again after `unlock`, `reset` and a replaced factor.
#[test]
fn a_remembered_source_is_not_asked_again() {
    const OTHER: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    const THIRD: &str = "KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU";
    let (sb, _) = world("remember", "[policy]\nremember_source = \"8h\"\n");
    sb.service("sudo", STACK);
    let asked = |run: &PamRun| run.stdout.contains("Verification code: ");
    let password_only =
        |service: &str, extra: &[&str]| sb.pam(service, "alice", extra, &answers(&[PASSWORD]));
    let here = ["--rhost", "192.0.2.10"];
    wait_for_fresh_step(30, 5);
    let first = login(&sb, "alice", "192.0.2.10", &code(SECRET, 0));
    assert!(first.auth_is("PAM_SUCCESS") && asked(&first), "{first:?}");

    let again = password_only("login", &here);
    assert!(again.auth_is("PAM_SUCCESS") && !asked(&again), "{again:?}");
    assert!(
        again.log_contains(
            "user=\"alice\" service=\"login\" source=\"192.0.2.10\" result=success reason=\"remembered source\""
        ),
        "{:?}",
        again.logs
    );
    for (service, extra) in [
        ("login", &["--rhost", "192.0.2.11"][..]),
        ("login", &["--tty", "tty3"][..]),
        ("sudo", &here[..]),
    ] {
        let run = password_only(service, extra);
        assert!(
            !run.auth_is("PAM_SUCCESS") && asked(&run),
            "{service} {extra:?}: {run:?}"
        );
    }

    // unlock forgets it; a code remembers it again.
    assert!(sb
        .admin(&["unlock", "--user", "alice"], "")
        .status
        .success());
    assert!(asked(&password_only("login", &here)));
    let run = login(&sb, "alice", "192.0.2.10", &code(SECRET, 30));
    assert!(run.auth_is("PAM_SUCCESS"), "{run:?}");
    assert!(!asked(&password_only("login", &here)));

    // So does a reset: enrolled again, alice is asked; a recovery code remembers it.
    assert!(sb.admin(&["reset", "--user", "alice"], "").status.success());
    let recovery = sb.enroll("alice", THIRD);
    assert!(asked(&password_only("login", &here)));
    let run = login(&sb, "alice", "192.0.2.10", &recovery[0]);
    assert!(run.auth_is("PAM_SUCCESS"), "{run:?}");
    assert!(!asked(&password_only("login", &here)));

    // A replaced factor forgets it.
    let out = sb.admin(
        &["enroll", "--user", "alice", "--secret-stdin", "--replace"],
        &format!("{OTHER}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(asked(&password_only("login", &here)));
}
