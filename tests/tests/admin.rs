//! `totp-admin` as users get it: the built binary, setuid root, run by unprivileged
//! test users inside a private copy of /etc; self-enrollment driven by `expect`;
//! logins through the built module afterwards; and the refusals a setuid tool owes.

use pam_totp_tests::admin_support::{self, marker_library, strip_ansi, AdminWorld};
use pam_totp_tests::sshd_support::Namespace;
use pam_totp_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse";
const STACK: &str = "auth required {module} config={config}\naccount required pam_permit.so\n";

fn world(name: &str, config: &str) -> AdminWorld {
    let w = AdminWorld::new(name, config);
    w.sb.add_group("admins");
    w.sb.add_user("alice", PASSWORD, None, &[]);
    w.sb.add_user("bob", PASSWORD, None, &["admins"]);
    w.sb.service("login", STACK);
    w
}

fn lines(answers: &[&str]) -> Vec<u8> {
    answers
        .iter()
        .flat_map(|a| format!("{a}\n").into_bytes())
        .collect()
}

/// A login through the built module with `answer` at the code prompt.
fn login(w: &AdminWorld, user: &str, answer: &str) -> PamRun {
    w.sb.pam("login", user, &["--rhost", "192.0.2.10"], &lines(&[answer]))
}

/// Self-enrollment as expect drives it: the password, the key read from the screen,
/// first a wrong code and then the right one from oathtool.
const ENROLL_SCRIPT: &str = r#"
set timeout 30
spawn setpriv --reuid=$env(TA_USER) --regid=$env(TA_USER) --init-groups -- $env(TA_BIN) enroll
expect {
    "Password: " { send "$env(TA_PASSWORD)\r" }
    timeout { exit 10 }
    eof { exit 11 }
}
expect {
    -re {Key: ([A-Z2-7 ]+)\r?\n} { set key [string map {" " ""} $expect_out(1,string)] }
    timeout { exit 12 }
    eof { exit 13 }
}
expect {
    "Code: " {}
    timeout { exit 14 }
    eof { exit 15 }
}
set code [exec oathtool --totp -b $key]
set wrong [format %06d [expr {([scan $code %d] + 500000) % 1000000}]]
send "$wrong\r"
expect {
    "not right" {}
    timeout { exit 16 }
    eof { exit 17 }
}
expect {
    "Code: " {}
    timeout { exit 18 }
}
send "$code\r"
expect {
    eof {}
    timeout { exit 19 }
}
set result [wait]
puts "\nEXPECT-CODES: $code $wrong"
exit [lindex $result 3]
"#;

#[test]
fn self_enrollment_end_to_end() {
    let w = world("admin-self-enroll", "");
    wait_for_fresh_step(30, 12);
    let run = w.expect(
        ENROLL_SCRIPT,
        &[
            ("TA_USER", "alice"),
            ("TA_BIN", w.bin.to_str().unwrap()),
            ("TA_PASSWORD", PASSWORD),
            ("TERM", "xterm"),
        ],
    );
    assert_eq!(run.code, 0, "expect failed: {}{}", run.stdout, run.stderr);
    let text = strip_ansi(&run.stdout);
    let (right, wrong) = text
        .lines()
        .find_map(|l| l.strip_prefix("EXPECT-CODES: "))
        .and_then(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .expect("codes line");
    let key: String = text
        .lines()
        .find_map(|l| l.strip_prefix("Key: "))
        .unwrap()
        .replace(' ', "");
    let uri = text
        .lines()
        .find_map(|l| l.strip_prefix("URI: "))
        .unwrap()
        .to_string();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.contains(&format!("secret={key}&")), "{uri}");
    assert!(uri.contains("alice%40"), "{uri}");

    // The QR code, in black and white background colours, decodes to the URI printed
    // beside it, on either background.
    let qr = qr_code_lines(&run.stdout);
    assert!(qr.len() > 20, "a QR code was drawn: {}", run.stdout);
    assert!(qr.iter().all(|l| l.contains("\x1b[")), "{qr:?}");
    assert_eq!(decode_qr(&qr, true), uri);
    assert_eq!(decode_qr(&qr, false), uri);

    // Codes are typed with echo off and never printed: the tool's output (all but the
    // key and URI lines, which hold base32 text) shows neither the wrong code nor the
    // right one.
    let shown: String = text
        .lines()
        .filter(|l| {
            !l.starts_with("Key: ") && !l.starts_with("URI: ") && !l.starts_with("EXPECT-CODES")
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!shown.contains(&right), "the expected code was shown");
    assert!(!shown.contains(&wrong), "the typed code was echoed");
    assert!(text.contains("That code is not right"));
    assert!(text.contains("Recovery codes"));

    // Enrolled: the module now asks alice, and a later code from oathtool passes.
    let status = w.as_user("alice", &["status", "--json"], "");
    status.assert_ok();
    assert!(status.json_has("enrolled", "true"), "{status:?}");
    assert!(status.json_has("recovery_codes_left", "10"), "{status:?}");
    let run = login(&w, "alice", &code(&key, 30));
    assert!(run.auth_is("PAM_SUCCESS"), "{run:?}");
    // The code typed to confirm the enrollment is used up.
    let run = login(&w, "alice", &right);
    assert!(run.auth_is("PAM_AUTH_ERR"), "{run:?}");

    // Replacing the factor is explicit...
    let again = w.as_user("alice", &["enroll", "--qr", "none"], "");
    again.assert_refused("--replace");
    assert!(!again.stdout.contains("Key: "), "{again:?}");
    // ... and needs a current code first: wrong ones change nothing.
    let again = w.as_user(
        "alice",
        &["enroll", "--replace", "--qr", "none"],
        "000000\n111111\n222222\n",
    );
    again.assert_refused("wrong code");
    assert!(
        !again.stdout.contains("Key: "),
        "no new key before the proof: {again:?}"
    );
    // Nothing changed: a recovery code printed by the enrollment still works.
    let recovery = text
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 19 && l.matches('-').count() == 3)
        .expect("recovery codes were printed");
    let run = login(&w, "alice", recovery);
    assert!(
        run.auth_is("PAM_SUCCESS"),
        "the old factor still works: {run:?}"
    );
}

#[test]
fn a_wrong_password_enrolls_nothing() {
    let w = world("admin-wrong-password", "");
    let run = w.as_user("alice", &["enroll", "--qr", "none"], "not the password\n");
    run.assert_refused("password not accepted");
    assert!(!run.stdout.contains("Key: "), "{run:?}");
    let status = w.as_user("alice", &["status", "--json"], "");
    assert!(status.json_has("enrolled", "false"), "{status:?}");
}

/// Ctrl-C at the hidden password prompt: the tool ends and the terminal echoes again.
const INTERRUPT_SCRIPT: &str = r#"
set timeout 30
spawn sh -c "trap true INT; setpriv --reuid=$env(TA_USER) --regid=$env(TA_USER) --init-groups -- $env(TA_BIN) enroll; echo STATUS=\$?; stty -a"
expect {
    "Password: " { send "\003" }
    timeout { exit 10 }
    eof { exit 11 }
}
expect {
    -re {STATUS=([0-9]+)} { set status $expect_out(1,string) }
    timeout { exit 12 }
    eof { exit 13 }
}
expect {
    -re {\s(-?echo)\s} { set echo $expect_out(1,string) }
    timeout { exit 14 }
    eof { exit 15 }
}
puts "\nEXPECT-RESULT: $status $echo"
expect eof
"#;

#[test]
fn ctrl_c_at_a_hidden_prompt_gives_the_terminal_back() {
    let w = world("admin-interrupt", "");
    let run = w.expect(
        INTERRUPT_SCRIPT,
        &[("TA_USER", "alice"), ("TA_BIN", w.bin.to_str().unwrap())],
    );
    assert_eq!(run.code, 0, "expect failed: {}{}", run.stdout, run.stderr);
    let result = strip_ansi(&run.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("EXPECT-RESULT: ").map(str::to_string))
        .expect("result line");
    // 130: ended by SIGINT; "echo", not "-echo": the terminal echoes again.
    assert_eq!(result, "130 echo", "{}", run.stdout);
    let status = w.as_user("alice", &["status", "--json"], "");
    assert!(status.json_has("enrolled", "false"), "{status:?}");
}

#[test]
fn users_may_act_only_on_themselves() {
    let w = world("admin-refusals", "");
    w.sb.enroll("bob", SECRET);
    for args in [
        &["status", "--user", "bob"][..],
        &["enroll", "--user", "bob"],
        &["recovery-codes", "--user", "bob"],
        &["policy", "show", "--user", "bob"],
    ] {
        w.as_user("alice", args, "")
            .assert_refused("your own account");
    }
    for (args, what) in [
        (&["reset", "--user", "alice"][..], "reset"),
        (&["unlock", "--user", "alice"], "unlock"),
        (&["list"], "list"),
        (&["doctor"], "doctor"),
        (&["store", "init"], "store"),
        (&["policy", "set", "--mandatory"], "policy set"),
        (
            &["enroll", "--user", "alice", "--secret-stdin"],
            "enroll --secret-stdin",
        ),
        (
            &["import", "google-authenticator", "--user", "alice"],
            "import",
        ),
    ] {
        w.as_user("alice", args, SECRET)
            .assert_refused(&format!("{what}: only root"));
    }
    // The user's own status works, and says nothing about bob.
    let own = w.as_user("alice", &["status", "--user", "alice", "--json"], "");
    own.assert_ok();
    assert!(own.json_has("user", "\"alice\""), "{own:?}");

    // --config is refused before the file is opened: a FIFO would block an open().
    let fifo = w.sb.dir.join("config.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o666)).unwrap();
    let started = Instant::now();
    let run = w.as_user("alice", &["--config", fifo.to_str().unwrap(), "status"], "");
    run.assert_refused("--config: only root");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The refusals come before the configuration is read: with it gone, the reason
    // is still the refusal.
    std::fs::remove_file(w.sb.dir.join("etc/pam_totp/config.toml")).unwrap();
    w.as_user("alice", &["status", "--user", "bob"], "")
        .assert_refused("your own account");
    w.as_user("alice", &["list"], "")
        .assert_refused("only root");
    let own = w.as_user("alice", &["status"], "");
    own.assert_refused("config.toml");

    // Usage errors exit 2.
    assert_eq!(w.as_user("alice", &["frobnicate"], "").code, 2);
    assert_eq!(w.as_user("alice", &["policy", "set"], "").code, 2);
    assert_eq!(
        w.as_user("alice", &["status", "--no-such-flag"], "").code,
        2
    );
}

#[test]
fn a_hostile_environment_is_ignored() {
    let w = world("admin-environment", "");
    w.sb.enroll("alice", SECRET);
    let trap = w.sb.dir.join("trap");
    std::fs::create_dir_all(&trap).unwrap();
    std::fs::set_permissions(&trap, std::fs::Permissions::from_mode(0o777)).unwrap();
    let marker = trap.join("loaded");
    let lib = marker_library(&trap, &marker);
    // Every program the tool or libpam might look up through PATH leaves a mark.
    let fake_bin = trap.join("bin");
    std::fs::create_dir_all(&fake_bin).unwrap();
    for name in [
        "sh",
        "loginctl",
        "hostname",
        "unix_chkpwd",
        "timedatectl",
        "oathtool",
        "stty",
        "sqlite3",
    ] {
        write_file(
            &fake_bin.join(name),
            &format!("#!/bin/sh\ntouch {}/ran-{name}\n", trap.display()),
            0o755,
        );
    }
    let tmp = trap.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o777)).unwrap();
    let lib = lib.to_str().unwrap().to_string();
    let fake_path = format!("{}:/usr/bin:/bin", fake_bin.display());
    let tmp = tmp.to_str().unwrap().to_string();
    let env = [
        ("LD_PRELOAD", lib.as_str()),
        ("LD_LIBRARY_PATH", trap.to_str().unwrap()),
        ("PATH", fake_path.as_str()),
        ("TMPDIR", tmp.as_str()),
        ("SQLITE_TMPDIR", tmp.as_str()),
        ("HOME", tmp.as_str()),
        ("USER", "bob"),
        ("LOGNAME", "bob"),
        ("LOCALDOMAIN", "evil.example"),
        ("TZ", "/etc/shadow"),
        ("NLSPATH", "/etc/shadow"),
        ("MALLOC_CHECK_", "3"),
    ];
    let status = w.as_user_env("alice", &env, &["status", "--json"], "");
    status.assert_ok();
    // Who the caller is comes from the real uid, not $USER.
    assert!(status.json_has("user", "\"alice\""), "{status:?}");
    assert!(status.json_has("enrolled", "true"), "{status:?}");
    let policy = w.as_user_env("alice", &env, &["policy", "show"], "");
    policy.assert_ok();
    // A wrong code through the PAM path (password re-entry is not asked: alice has a
    // factor) and the store's write path.
    w.as_user_env("alice", &env, &["disable"], "1\n2\n3\n")
        .assert_refused("wrong code");
    let ran: Vec<String> = std::fs::read_dir(&trap)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ran-") || n == "loaded")
        .collect();
    assert!(ran.is_empty(), "the environment reached the tool: {ran:?}");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "files in the caller's TMPDIR"
    );
    // The preload library does work on an ordinary program, so the check means something.
    let out =
        w.sb.command("/usr/bin/env")
            .arg(format!("LD_PRELOAD={lib}"))
            .arg("true")
            .output()
            .unwrap();
    assert!(out.status.success());
    assert!(marker.exists(), "the marker library works");
}

#[test]
fn a_symlinked_store_is_refused() {
    let w = world("admin-symlink", "");
    w.sb.enroll("alice", SECRET);
    let store = w.sb.store_path();
    let elsewhere = w.sb.dir.join("totp/elsewhere.db");
    std::fs::copy(&store, &elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = checksum(&elsewhere);
    std::fs::remove_file(&store).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &store).unwrap();
    for args in [
        &["status"][..],
        &["enroll", "--qr", "none"],
        &["disable"],
        &["recovery-codes"],
    ] {
        w.as_user("alice", args, "123456\n")
            .assert_refused("symbolic link");
    }
    assert_eq!(
        checksum(&elsewhere),
        before,
        "the link's target was not touched"
    );
    assert!(std::fs::symlink_metadata(&store)
        .unwrap()
        .file_type()
        .is_symlink());

    // A symlinked store directory is refused as well.
    std::fs::remove_file(&store).unwrap();
    let link_dir = w.sb.dir.join("totp/link");
    std::os::unix::fs::symlink(w.sb.dir.join("totp/store"), &link_dir).unwrap();
    w.set_config(&format!(
        "[store]\npath = \"{}/totp.db\"\n",
        link_dir.display()
    ));
    w.as_user("alice", &["status"], "")
        .assert_refused("not a directory");
}

#[test]
fn a_user_changes_recovery_codes_and_disables_with_proof() {
    let w = world("admin-self-service", "");
    let codes = w.sb.enroll("alice", SECRET);
    wait_for_fresh_step(30, 8);
    let run = w.as_user(
        "alice",
        &["--json", "recovery-codes"],
        &format!("{}\n", code(SECRET, 0)),
    );
    run.assert_ok();
    assert!(
        run.stdout
            .starts_with("{\"user\":\"alice\",\"recovery_codes\":[\""),
        "{run:?}"
    );
    // The old set no longer works.
    let old = login(&w, "alice", &codes[0]);
    assert!(old.auth_is("PAM_AUTH_ERR"), "{old:?}");
    let new_code = run.stdout.split('"').nth(7).unwrap().to_string();
    // disable with a recovery code from the new set.
    let off = w.as_user("alice", &["disable"], &format!("{new_code}\n"));
    off.assert_ok();
    let status = w.as_user("alice", &["status", "--json"], "");
    assert!(status.json_has("enrolled", "false"), "{status:?}");
    let run = login(&w, "alice", &code(SECRET, 0));
    assert!(run.log_contains("not enrolled, optional"), "{run:?}");
}

#[test]
fn root_resets_unlocks_lists_and_logs_out() {
    let w = world("admin-root", "[throttle]\nmax_failures = 2\n");
    // A uid no other test's sandbox gives out: --logout signals every process of it.
    let uid = 61_000 + std::process::id() % 3000;
    w.add_user_with_uid("carol", PASSWORD, uid);
    w.sb.enroll("carol", SECRET);
    w.sb.enroll("alice", SECRET);
    for _ in 0..2 {
        assert!(login(&w, "carol", "000000").auth_is("PAM_AUTH_ERR"));
    }
    let status = w.as_root(&["status", "--user", "carol", "--json"], "");
    assert!(status.json_has("locked", "true"), "{status:?}");
    let list = w.as_root(&["list", "--json"], "");
    list.assert_ok();
    assert!(
        list.stdout.contains("\"user\":\"alice\"") && list.stdout.contains("\"user\":\"carol\""),
        "{list:?}"
    );
    w.as_root(&["unlock", "--user", "carol"], "").assert_ok();
    let status = w.as_root(&["status", "--user", "carol", "--json"], "");
    assert!(status.json_has("locked", "false"), "{status:?}");

    // A process of carol's, as a session would be.
    let mut session =
        w.sb.command("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "sleep",
                "300",
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let reset = w.as_root(&["reset", "--user", "carol", "--logout"], "");
    reset.assert_ok();
    assert!(reset.stdout.contains("processes signalled"), "{reset:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let ended = loop {
        if let Some(status) = session.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = session.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        ended.is_some_and(|s| !s.success()),
        "carol's process was ended"
    );
    let status = w.as_root(&["status", "--user", "carol", "--json"], "");
    assert!(status.json_has("enrolled", "false"), "{status:?}");
    let list = w.as_root(&["list", "--json"], "");
    assert!(!list.stdout.contains("carol"), "{list:?}");
    // alice was not touched.
    assert!(login(&w, "alice", &code(SECRET, 0)).auth_is("PAM_SUCCESS"));
}

#[test]
fn policy_set_keeps_comments_owner_and_mode() {
    let w = world("admin-policy", "");
    let shipped = std::fs::read_to_string(workspace().join("config/config.toml")).unwrap();
    let store = w.sb.store_path();
    w.set_config(&shipped.replace("/var/lib/pam_totp/totp.db", store.to_str().unwrap()));
    let path = w.sb.config_path();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = std::fs::read_to_string(&path).unwrap();
    let status = w.as_root(&["status", "--user", "bob", "--json"], "");
    assert!(status.json_has("policy", "\"optional\""), "{status:?}");

    // bob, in admins, is not enrolled: refused from now on, so --yes is needed.
    let unsure = w.as_root(&["policy", "set", "--mandatory", "--group", "admins"], "");
    assert_eq!(unsure.code, 1, "{unsure:?}");
    assert!(unsure.stderr.contains("    bob\n"), "{unsure:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    let sure = w.as_root(
        &["policy", "set", "--mandatory", "--group", "admins", "--yes"],
        "",
    );
    sure.assert_ok();
    assert!(sure.stdout.contains("    bob\n"), "{sure:?}");
    let after = std::fs::read_to_string(&path).unwrap();
    assert!(after.contains("mandatory_groups = [\"admins\"]"), "{after}");
    let comments = |t: &str| {
        t.lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(comments(&before), comments(&after), "every comment kept");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    let status = w.as_root(&["status", "--user", "bob", "--json"], "");
    assert!(status.json_has("policy", "\"mandatory\""), "{status:?}");
    assert!(
        status.stdout.contains("member of mandatory group admins"),
        "{status:?}"
    );
    let show = w.as_root(&["policy", "show", "--user", "bob"], "");
    show.assert_ok();
    assert!(
        show.stdout.contains("| policy ") && show.stdout.contains("mandatory"),
        "{show:?}"
    );

    w.as_root(&["policy", "set", "--mandatory", "--yes"], "")
        .assert_ok();
    w.as_root(&["policy", "set", "--optional"], "").assert_ok();
    w.as_root(&["policy", "set", "--optional", "--group", "admins"], "")
        .assert_ok();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        before,
        "back to the original text"
    );

    // Refused: a group that does not exist, a group name the config cannot hold.
    w.as_root(
        &["policy", "set", "--mandatory", "--group", "no-such-group"],
        "",
    )
    .assert_refused("no such group");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    let bad = w.as_root(&["policy", "set", "--mandatory", "--group", "bad:name"], "");
    assert_eq!(bad.code, 1, "{bad:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
}

/// The configuration corpus (`pam_totp/tests/config_corpus/`, which the module's
/// reader is tested on): through the installed tool, every valid spelling (dotted
/// keys, inline tables, CR LF, comments, a byte order mark) reads as the same policy,
/// before and after `policy set` edits it; every invalid file is refused with the
/// file, the line and the key, exactly as the module words it.
#[test]
fn policy_show_and_set_read_the_config_corpus_alike() {
    let w = world("admin-config-corpus", "");
    let corpus = workspace().join("pam_totp/tests/config_corpus");
    let dir = w.sb.dir.join("totp/corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str], config: &std::path::Path| {
        let out =
            w.sb.command(totp_admin())
                .arg("--config")
                .arg(config)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let copy = |kind: &str, name: &str| {
        let path = dir.join(name);
        std::fs::write(&path, std::fs::read(corpus.join(kind).join(name)).unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    let files = |kind: &str, ext: &str| {
        let mut names: Vec<String> = std::fs::read_dir(corpus.join(kind))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(ext))
            .collect();
        names.sort();
        names
    };

    let show = ["policy", "show", "--json"];
    let reference = copy("valid", "reference.toml");
    let (code, want, err) = run(&show, &reference);
    assert_eq!(code, Some(0), "{err}");
    for field in [
        r#""mandatory":true"#,
        r#""mandatory_groups":["sudo","admins"]"#,
        r#""exempt_networks":["10.20.0.0/16","2001:db8::/32","192.0.2.7/32"]"#,
        r#""grace_period":"7d""#,
        r#""prompt_timeout":"90s""#,
        r#""failmode":"open""#,
    ] {
        assert!(want.contains(field), "{field}: {want}");
    }
    run(&["policy", "set", "--optional"], &reference);
    let (_, want_after, _) = run(&show, &reference);
    assert!(want_after.contains(r#""mandatory":false"#), "{want_after}");

    let valid = files("valid", ".toml");
    assert!(valid.len() >= 6, "{valid:?}");
    for name in &valid {
        let path = copy("valid", name);
        let (code, got, err) = run(&show, &path);
        assert_eq!(
            (code, got.as_str()),
            (Some(0), want.as_str()),
            "{name}: {err}"
        );
        let before = std::fs::read_to_string(&path).unwrap();
        let (code, _, err) = run(&["policy", "set", "--optional"], &path);
        assert_eq!(code, Some(0), "{name}: {err}");
        let (_, got, _) = run(&show, &path);
        assert_eq!(got, want_after, "{name} after policy set");
        let after = std::fs::read_to_string(&path).unwrap();
        let comments = |t: &str| t.matches('#').count();
        assert_eq!(comments(&before), comments(&after), "{name}: comments kept");
        assert_eq!(
            before.contains('\r'),
            after.contains('\r'),
            "{name}: line ends kept"
        );
    }

    let invalid = files("invalid", ".toml");
    assert!(invalid.len() >= 10, "{invalid:?}");
    for name in &invalid {
        let path = copy("invalid", name);
        let expected =
            std::fs::read_to_string(corpus.join("invalid").join(name.replace(".toml", ".err")))
                .unwrap();
        let (code, _, err) = run(&show, &path);
        assert_eq!(code, Some(1), "{name}: {err}");
        assert_eq!(
            err.trim_end(),
            format!(
                "totp-admin: config {}/{}",
                dir.display(),
                expected.trim_end()
            ),
            "{name}"
        );
        let before = std::fs::read(&path).unwrap();
        let (code, _, _) = run(&["policy", "set", "--mandatory"], &path);
        assert_eq!(code, Some(1), "{name}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "{name}: not written");
    }
}

#[test]
fn google_authenticator_files_are_imported() {
    let w = world("admin-import", "");
    let home = w.sb.dir.join("home/alice");
    // Made by the real tool, as alice, in her home.
    let made = w
        .user_command(
            "alice",
            &[("HOME", home.to_str().unwrap())],
            "google-authenticator",
        )
        .args([
            "-t", "-d", "-f", "-r", "3", "-R", "30", "-w", "3", "-e", "5", "-Q", "NONE", "-q",
        ])
        .arg("-s")
        .arg(home.join(".google_authenticator"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let text = std::fs::read_to_string(home.join(".google_authenticator")).unwrap();
    let secret = text.lines().next().unwrap().to_string();
    let scratch: Vec<&str> = text
        .lines()
        .filter(|l| l.len() == 8 && l.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    assert_eq!(scratch.len(), 5);

    let run = w.as_root(&["import", "google-authenticator", "--user", "alice"], "");
    run.assert_ok();
    assert!(run.stdout.contains("5 scratch codes"), "{run:?}");
    wait_for_fresh_step(30, 8);
    let ok = login(&w, "alice", &code(&secret, 0));
    assert!(
        ok.auth_is("PAM_SUCCESS"),
        "the app's codes work after the import: {ok:?}"
    );
    assert!(
        login(&w, "alice", scratch[2]).auth_is("PAM_SUCCESS"),
        "a scratch code works"
    );
    assert!(
        login(&w, "alice", scratch[2]).auth_is("PAM_AUTH_ERR"),
        "once"
    );

    // A counter-based (HOTP) file is refused with the reason.
    let hotp = w.sb.dir.join("hotp_file");
    let made =
        w.sb.command("google-authenticator")
            .args([
                "-c", "-f", "-w", "3", "-r", "3", "-R", "30", "-e", "2", "-Q", "NONE", "-q", "-s",
            ])
            .arg(&hotp)
            .stdin(Stdio::null())
            .output()
            .unwrap();
    assert!(made.status.success(), "{made:?}");
    w.as_root(
        &[
            "import",
            "google-authenticator",
            "--user",
            "bob",
            hotp.to_str().unwrap(),
        ],
        "",
    )
    .assert_refused("HOTP");
    // A malformed file, without echoing its content.
    let bad = w.sb.dir.join("bad_file");
    write_file(
        &bad,
        "JBSWY3DPEHPK3PXPJBSWY3DP\n\" TOTP_AUTH\nsecret-looking-line\n",
        0o600,
    );
    let run = w.as_root(
        &[
            "import",
            "google-authenticator",
            "--user",
            "bob",
            bad.to_str().unwrap(),
        ],
        "",
    );
    run.assert_refused("line 3");
    assert!(!run.stderr.contains("JBSWY3DP"));
    // A symlink in place of the user's file is refused.
    let bob_home = w.sb.dir.join("home/bob");
    std::os::unix::fs::symlink("/etc/shadow", bob_home.join(".google_authenticator")).unwrap();
    w.as_root(&["import", "google-authenticator", "--user", "bob"], "")
        .assert_refused("symbolic link");
}

#[test]
fn doctor_names_what_to_fix() {
    let w = world("admin-doctor", "");
    w.as_root(&["store", "init"], "").assert_ok();
    let run = w.as_root(&["doctor"], "");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("ok    config"), "{run:?}");
    assert!(run.stdout.contains("ok    store"), "{run:?}");
    assert!(
        run.stdout
            .contains("pam_totp is not in the auth stack of /etc/pam.d/login"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("fix: add \"auth required pam_totp.so\""),
        "{run:?}"
    );
    assert!(run.stderr.contains("problem"), "{run:?}");
    // With the module in the stacks, those findings turn to ok.
    for service in ["login", "sudo", "sshd"] {
        let path = w.sb.dir.join("etc/pam.d").join(service);
        if let Ok(text) = std::fs::read_to_string(&path) {
            write_file(
                &path,
                &format!("{text}\nauth required pam_totp.so\n"),
                0o644,
            );
        }
    }
    let run = w.as_root(&["doctor", "--json"], "");
    assert!(run.stdout.contains("\"check\":\"pam login\""), "{run:?}");
    assert!(!run.stdout.contains("not in the auth stack"), "{run:?}");
    // A store that others can read is named, with the command that fixes it.
    std::fs::set_permissions(w.sb.store_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = w.as_root(&["doctor"], "");
    assert!(run.stdout.contains("FAIL  store"), "{run:?}");
    assert!(run.stdout.contains("chmod 600"), "{run:?}");
}

#[test]
fn the_caller_cannot_stop_the_running_tool() {
    let w = world("admin-signals", "");
    // The tool waits at the password prompt, stdin open.
    let mut tool = w
        .user_command("alice", &[], w.bin.to_str().unwrap())
        .args(["enroll", "--qr", "none"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let pid = tool.id().to_string();
    // A stopped tool could hold the store's write lock and stall every login.
    for signal in ["-STOP", "-KILL"] {
        let kill = w
            .user_command("alice", &[], "/bin/kill")
            .args([signal, &pid])
            .output()
            .unwrap();
        assert!(
            !kill.status.success(),
            "alice could signal the tool ({signal})"
        );
    }
    drop(tool.stdin.take());
    let out = tool.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

/// Every change and every refusal reaches syslog (authpriv; notice when done, warning
/// when refused) with who did it to whom; never a key, a recovery code or a password.
#[test]
fn changes_and_refusals_are_audited_without_secrets() {
    let w = world("admin-audit", "");
    // The namespace's /dev/log is a socket this test reads.
    let ns = Namespace::new(&w.sb);
    let bin = w.bin.to_str().unwrap();
    let config = w.sb.config_path();
    let enroll = feed(
        ns.command(bin).arg("--config").arg(&config).args([
            "--json",
            "enroll",
            "--user",
            "alice",
            "--secret-stdin",
        ]),
        &format!("{SECRET}\n"),
    );
    assert!(enroll.status.success(), "{enroll:?}");
    let unlock = feed(
        ns.command(bin)
            .arg("--config")
            .arg(&config)
            .args(["unlock", "--user", "alice"]),
        "",
    );
    assert!(unlock.status.success(), "{unlock:?}");
    let refused = feed(
        ns.command("setpriv")
            .args(["--reuid=bob", "--regid=bob", "--init-groups", "--", bin])
            .args(["enroll", "--qr", "none"]),
        "not the password\n",
    );
    assert!(!refused.status.success(), "{refused:?}");
    let log = ns.syslog();

    let find = |needles: &[&str]| {
        log.iter()
            .find(|l| l.contains("totp-admin[") && needles.iter().all(|n| l.contains(n)))
            .unwrap_or_else(|| panic!("no line with {needles:?} in {log:#?}"))
    };
    // authpriv (10) * 8 + notice (5) = 85; + warning (4) = 84.
    let line = find(&[
        "action=enroll user=\"alice\" by=\"root\" uid=0",
        "result=done detail=\"key from standard input\"",
    ]);
    assert!(line.starts_with("<85>"), "{line}");
    let line = find(&["action=unlock user=\"alice\" by=\"root\"", "result=done"]);
    assert!(line.starts_with("<85>"), "{line}");
    let line = find(&[
        "action=enroll user=\"bob\" by=\"bob\"",
        "result=refused detail=\"password not accepted\"",
    ]);
    assert!(line.starts_with("<84>"), "{line}");

    let stdout = String::from_utf8_lossy(&enroll.stdout);
    let codes: Vec<String> = stdout
        .split('"')
        .filter(|t| t.len() >= 8 && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .filter(|t| t.contains('-'))
        .map(str::to_string)
        .collect();
    assert!(!codes.is_empty(), "no recovery codes in {stdout}");
    for l in &log {
        assert!(!l.contains(SECRET), "key in the log: {l}");
        assert!(!l.contains("not the password"), "password in the log: {l}");
        for c in &codes {
            assert!(!l.contains(c.as_str()), "recovery code in the log: {l}");
        }
    }
}

/// A cgroup made for one test, removed (once empty) when dropped.
struct TestCgroup {
    dir: std::path::PathBuf,
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Where the cgroup v1 freezer hierarchy and the v2 hierarchy are mounted here.
fn cgroup_mounts() -> Vec<(&'static str, std::path::PathBuf)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut found = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let tail: Vec<&str> = right.split(' ').collect();
        if fields.get(3) != Some(&"/") {
            continue;
        }
        let point = std::path::PathBuf::from(fields[4]);
        match tail.first() {
            Some(&"cgroup2") => found.push(("cgroup.freeze", point)),
            Some(&"cgroup")
                if tail
                    .get(2)
                    .is_some_and(|o| o.split(',').any(|o| o == "freezer")) =>
            {
                found.push(("freezer.state", point))
            }
            _ => {}
        }
    }
    found
}

fn uid_of(w: &AdminWorld, user: &str) -> u32 {
    let out = w.sb.run(&["id", "-u", user]);
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Runs the tool as `user` from inside `cgroup` (the shell moves itself there first).
fn as_user_in_cgroup(
    w: &AdminWorld,
    cgroup: &std::path::Path,
    user: &str,
    args: &[&str],
) -> admin_support::Run {
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec setpriv --reuid={user} --regid={user} --init-groups -- {} \"$@\"",
        cgroup.display(),
        w.bin.display()
    );
    let out =
        w.sb.command("sh")
            .args(["-c", &script, "sh"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
    admin_support::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A user who can freeze the tool's cgroup (cgroup v1 freezer.state, v2 cgroup.freeze,
/// of the cgroup itself or of an ancestor) could freeze it while it writes the store:
/// commands that write refuse to start there; reading commands still work.
#[test]
fn commands_from_a_cgroup_the_user_can_freeze_are_refused() {
    let w = world("admin-freezer", "");
    w.sb.enroll("alice", SECRET);
    let alice = uid_of(&w, "alice");
    let mounts = cgroup_mounts();
    assert!(!mounts.is_empty(), "no cgroup freezer mounted here");
    for (file, point) in mounts {
        let parent = TestCgroup {
            dir: point.join(format!("totp-admin-test-{}", std::process::id())),
        };
        std::fs::create_dir(&parent.dir).unwrap();
        let child = TestCgroup {
            dir: parent.dir.join("job"),
        };
        std::fs::create_dir(&child.dir).unwrap();
        for (owned_by_alice, at) in [(&child, "job"), (&parent, "")] {
            std::os::unix::fs::chown(owned_by_alice.dir.join(file), Some(alice), None).unwrap();
            let run = as_user_in_cgroup(&w, &child.dir, "alice", &["recovery-codes"]);
            run.assert_refused("login session");
            let name = format!("totp-admin-test-{}", std::process::id());
            assert!(run.stderr.contains(&name), "names the cgroup: {run:?}");
            if !at.is_empty() {
                assert!(run.stderr.contains(&format!("{name}/{at}")), "{run:?}");
            }
            assert!(run.stderr.contains(file), "{run:?}");
            // Reading too: a read-only connection can hold the WAL index exclusively.
            let status = as_user_in_cgroup(&w, &child.dir, "alice", &["--json", "status"]);
            status.assert_refused("login session");
            std::os::unix::fs::chown(owned_by_alice.dir.join(file), Some(0), None).unwrap();
        }
        // Group-writable by one of alice's groups counts too.
        let alice_gid = uid_of_group(&w, "alice");
        let path = parent.dir.join(file);
        std::os::unix::fs::chown(&path, Some(0), Some(alice_gid)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        as_user_in_cgroup(&w, &child.dir, "alice", &["recovery-codes"])
            .assert_refused("login session");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::chown(&path, Some(0), Some(0)).unwrap();
        // Root's alone again: the command runs (and asks for a code it does not get).
        let run = as_user_in_cgroup(&w, &child.dir, "alice", &["recovery-codes"]);
        assert_eq!(run.code, 1, "{run:?}");
        assert!(!run.stderr.contains("freeze"), "{run:?}");
        assert!(run.stderr.contains("standard input"), "{run:?}");
        drop(child);
        drop(parent);
    }
}

fn uid_of_group(w: &AdminWorld, group: &str) -> u32 {
    let out = w.sb.run(&["getent", "group", group]);
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The password check runs with the caller's real uid: a pam_rootok line does not let
/// a setuid run through, and pam_faillock counts the wrong passwords and then refuses.
#[test]
fn the_password_check_is_the_callers_and_counts_for_faillock() {
    let w = world("admin-rootok", "");
    let tally = w.sb.dir.join("faillock");
    std::fs::create_dir_all(&tally).unwrap();
    write_file(
        &w.sb.dir.join("etc/pam.d/totp-admin"),
        &format!(
            "auth sufficient pam_rootok.so\n\
             auth requisite pam_faillock.so preauth deny=2 unlock_time=600 dir={0}\n\
             auth [success=1 default=ignore] pam_unix.so\n\
             auth [default=die] pam_faillock.so authfail deny=2 unlock_time=600 dir={0}\n\
             auth sufficient pam_faillock.so authsucc deny=2 unlock_time=600 dir={0}\n\
             account required pam_faillock.so dir={0}\n\
             account required pam_unix.so\n",
            tally.display()
        ),
        0o644,
    );
    for _ in 0..2 {
        let run = w.as_user("alice", &["enroll", "--qr", "none"], "not the password\n");
        run.assert_refused("password not accepted");
        assert!(!run.stdout.contains("Key: "), "{run:?}");
    }
    // Locked by pam_faillock now: the right password is refused too.
    let run = w.as_user(
        "alice",
        &["enroll", "--qr", "none"],
        &format!("{PASSWORD}\n"),
    );
    run.assert_refused("password not accepted");
    assert!(!run.stdout.contains("Key: "), "{run:?}");
    let failures = w.sb.run(&[
        "faillock",
        "--dir",
        tally.to_str().unwrap(),
        "--user",
        "alice",
    ]);
    let text = String::from_utf8_lossy(&failures.stdout);
    let counted = text
        .lines()
        .filter(|l| l.trim_end().ends_with(" V"))
        .count();
    assert_eq!(counted, 2, "{text}");
    // PAM_TTY was set (no terminal here: the tool's name).
    assert!(text.contains("totp-admin"), "{text}");
    // The tool was never root to the stack: nothing enrolled.
    let status = w.as_user("alice", &["status", "--json"], "");
    assert!(status.json_has("enrolled", "false"), "{status:?}");
}

/// `policy show` by a user: their policy and why in general terms, never the groups or
/// networks the root-only configuration lists.
#[test]
fn users_see_their_own_policy_without_the_lists() {
    let config = "[policy]\nexempt_groups = [\"breakglass\"]\nmandatory_groups = [\"admins\"]\n\
                  exempt_networks = [\"198.51.100.0/24\"]\n";
    let w = world("admin-policy-view", config);
    w.sb.add_group("breakglass");
    w.sb.add_user("carol", PASSWORD, None, &["breakglass"]);
    for (user, policy, reason) in [
        ("alice", "optional", "no rule applies"),
        (
            "bob",
            "mandatory",
            "member of a group for which it is mandatory",
        ),
        ("carol", "exempt", "member of an exempt group"),
    ] {
        for json in [false, true] {
            let mut args = vec!["policy", "show"];
            if json {
                args.insert(0, "--json");
            }
            let run = w.as_user(user, &args, "");
            run.assert_ok();
            for secret in ["breakglass", "admins", "198.51.100"] {
                assert!(
                    !run.stdout.contains(secret),
                    "{user} sees {secret}: {run:?}"
                );
            }
            assert!(run.stdout.contains(policy), "{run:?}");
            assert!(run.stdout.contains(reason), "{run:?}");
        }
        let status = w.as_user(user, &["status"], "");
        status.assert_ok();
        for secret in ["breakglass", "admins"] {
            assert!(
                !status.stdout.contains(secret),
                "{user} sees {secret}: {status:?}"
            );
        }
    }
    // Root sees everything.
    let run = w.as_root(&["policy", "show", "--user", "bob"], "");
    run.assert_ok();
    for listed in [
        "breakglass",
        "admins",
        "198.51.100.0/24",
        "member of mandatory group admins",
    ] {
        assert!(run.stdout.contains(listed), "{run:?}");
    }
}

/// Two interactive enrollments of one user at once: both show a key, both are
/// confirmed; exactly one is stored, the other says why.
const RACE_SCRIPT: &str = r#"
set timeout 30
proc to_code {id} {
    expect {
        -i $id "Password: " { send -i $id "$::env(TA_PASSWORD)\r" }
        timeout { exit 10 }
    }
    expect {
        -i $id -re {Key: ([A-Z2-7 ]+)\r?\n} { set key [string map {" " ""} $expect_out(1,string)] }
        timeout { exit 11 }
    }
    expect {
        -i $id "Code: " {}
        timeout { exit 12 }
    }
    return $key
}
spawn setpriv --reuid=$env(TA_USER) --regid=$env(TA_USER) --init-groups -- $env(TA_BIN) enroll --qr none
set first $spawn_id
set key1 [to_code $first]
spawn setpriv --reuid=$env(TA_USER) --regid=$env(TA_USER) --init-groups -- $env(TA_BIN) enroll --qr none
set second $spawn_id
set key2 [to_code $second]
send -i $first "[exec oathtool --totp -b $key1]\r"
expect {
    -i $first eof {}
    timeout { exit 13 }
}
set r1 [wait -i $first]
send -i $second "[exec oathtool --totp -b $key2]\r"
expect {
    -i $second eof {}
    timeout { exit 14 }
}
set r2 [wait -i $second]
puts "\nEXPECT-RACE: [lindex $r1 3] [lindex $r2 3] $key1 $key2"
"#;

#[test]
fn of_two_enrollments_at_once_exactly_one_is_stored() {
    let w = world("admin-race", "");
    wait_for_fresh_step(30, 12);
    let run = w.expect(
        RACE_SCRIPT,
        &[
            ("TA_USER", "alice"),
            ("TA_BIN", w.bin.to_str().unwrap()),
            ("TA_PASSWORD", PASSWORD),
        ],
    );
    assert_eq!(run.code, 0, "expect failed: {}{}", run.stdout, run.stderr);
    let text = strip_ansi(&run.stdout);
    let result: Vec<String> = text
        .lines()
        .find_map(|l| l.strip_prefix("EXPECT-RACE: "))
        .expect("result line")
        .split(' ')
        .map(str::to_string)
        .collect();
    assert_eq!(&result[..2], ["0", "1"], "{text}");
    assert!(
        text.contains("a factor named default was enrolled for alice meanwhile"),
        "{text}"
    );
    // The first key is the one stored (a later code: the confirmation used this one).
    assert!(login(&w, "alice", &code(&result[2], 30)).auth_is("PAM_SUCCESS"));
    assert!(login(&w, "alice", &code(&result[3], 30)).auth_is("PAM_AUTH_ERR"));
}

/// Replacing a factor is explicit (`--replace`), for every way of enrolling, and is
/// audited as a replacement.
#[test]
fn replacing_a_factor_needs_replace() {
    let w = world("admin-replace", "");
    const OTHER: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    w.sb.enroll("alice", SECRET);
    let again = w.as_root(&["enroll", "--user", "alice", "--secret-stdin"], OTHER);
    again.assert_refused("--replace");
    wait_for_fresh_step(30, 8);
    assert!(login(&w, "alice", &code(SECRET, 0)).auth_is("PAM_SUCCESS"));
    let replaced = w.as_root(
        &["enroll", "--user", "alice", "--secret-stdin", "--replace"],
        OTHER,
    );
    replaced.assert_ok();
    assert!(replaced.stdout.contains("Replaced"), "{replaced:?}");
    assert!(login(&w, "alice", &code(OTHER, 30)).auth_is("PAM_SUCCESS"));
    // Interactive, by root for another user: refused before any key is shown.
    let run = w.as_root(&["enroll", "--user", "alice", "--qr", "none"], "");
    run.assert_refused("--replace");
    assert!(!run.stdout.contains("Key: "), "{run:?}");
    // import google-authenticator over the factor.
    let file = w.sb.dir.join("ga_file");
    write_file(
        &file,
        &format!("{SECRET}\n\" RATE_LIMIT 3 30\n\" WINDOW_SIZE 3\n\" TOTP_AUTH\n12345678\n"),
        0o600,
    );
    let args = [
        "import",
        "google-authenticator",
        "--user",
        "alice",
        file.to_str().unwrap(),
    ];
    w.as_root(&args, "").assert_refused("--replace");
    let mut with_replace = args.to_vec();
    with_replace.push("--replace");
    w.as_root(&with_replace, "").assert_ok();
}

/// `reset` and `unlock` of a name that is no user: exit 1, unless the store holds
/// records under it (a deleted account), which are removed.
#[test]
fn reset_and_unlock_of_unknown_names() {
    let w = world("admin-unknown-names", "");
    for action in ["reset", "unlock"] {
        let run = w.as_root(&[action, "--user", "nosuchuser"], "");
        run.assert_refused("no such user: nosuchuser");
        assert!(run.stdout.is_empty(), "{run:?}");
    }
    w.sb.add_user("dave", PASSWORD, None, &[]);
    w.sb.enroll("dave", SECRET);
    w.sb.run(&["userdel", "dave"]);
    let run = w.as_root(&["reset", "--user", "dave"], "");
    run.assert_ok();
    assert!(
        run.stdout
            .contains("dave is not a user any more; removed its records"),
        "{run:?}"
    );
    let list = w.as_root(&["list", "--json"], "");
    assert!(!list.stdout.contains("dave"), "{list:?}");
}

/// Only `store init` creates a store: every other command on a missing store says how
/// to get one back, and creates nothing.
#[test]
fn a_missing_store_is_not_recreated() {
    let w = world("admin-missing-store", "");
    let store = w.sb.store_path();
    std::fs::remove_file(&store).unwrap();
    let missing = format!("store {} is missing", store.display());
    for args in [&["status"][..], &["recovery-codes"], &["disable"]] {
        w.as_user("alice", args, "").assert_refused(&missing);
    }
    for args in [
        &["status", "--user", "alice"][..],
        &["list"],
        &["reset", "--user", "alice"],
        &["unlock", "--user", "alice"],
    ] {
        w.as_root(args, "").assert_refused(&missing);
    }
    w.as_root(&["enroll", "--user", "alice", "--secret-stdin"], SECRET)
        .assert_refused("totp-admin store init");
    assert!(!store.exists(), "a command recreated the store");
    w.as_root(&["store", "init"], "").assert_ok();
    assert!(store.exists());
}

/// Every command acts on the canonical account: an alias with alice's uid reaches
/// alice's records.
#[test]
fn aliases_act_on_the_canonical_account() {
    let w = world("admin-canonical", "");
    let alice = uid_of(&w, "alice").to_string();
    w.sb.run(&["useradd", "-o", "-u", &alice, "-g", &alice, "-M", "alias"]);
    let run = w.as_root(
        &["--json", "enroll", "--user", "alias", "--secret-stdin"],
        SECRET,
    );
    run.assert_ok();
    assert!(run.json_has("user", "\"alice\""), "{run:?}");
    let status = w.as_root(&["status", "--user", "alias", "--json"], "");
    assert!(status.json_has("user", "\"alice\""), "{status:?}");
    assert!(status.json_has("enrolled", "true"), "{status:?}");
    // alice may name herself by the alias too; bob may not.
    w.as_user("alice", &["status", "--user", "alias"], "")
        .assert_ok();
    w.as_user("bob", &["status", "--user", "alias"], "")
        .assert_refused("your own account");
}

/// Adding a factor to one's own enrolled account: with a current code of a factor the
/// user has, never with a password or a wrong code; the key shown, confirmed with a
/// code of the new key. Drives `enroll --name yubikey` with `expect`.
const SECOND_FACTOR_SCRIPT: &str = r#"
set timeout 30
spawn setpriv --reuid=$env(TA_USER) --regid=$env(TA_USER) --init-groups -- $env(TA_BIN) enroll --name yubikey --qr none
expect {
    "type a code of it to add another one" {}
    timeout { exit 10 }
    eof { exit 11 }
}
expect {
    "(or a recovery code): " { send "[exec oathtool --totp -b $env(TA_SECRET)]\r" }
    timeout { exit 12 }
    eof { exit 13 }
}
expect {
    -re {Key: ([A-Z2-7 ]+)\r?\n} { set key [string map {" " ""} $expect_out(1,string)] }
    timeout { exit 14 }
    eof { exit 15 }
}
expect {
    "Code: " { send "[exec oathtool --totp -b $key]\r" }
    timeout { exit 16 }
}
expect {
    eof {}
    timeout { exit 17 }
}
set result [wait]
puts "\nEXPECT-KEY: $key"
exit [lindex $result 3]
"#;

/// The factors' names in `status --json` (or the first user of `list --json`); each
/// factor has its `created` and `last_used` fields.
fn factor_names(json: &str) -> Vec<String> {
    let start = json.find("\"factors\":[").expect("factors") + "\"factors\":[".len();
    let list = &json[start..start + json[start..].find(']').unwrap()];
    list.split("},")
        .filter(|f| !f.is_empty())
        .map(|f| {
            assert!(
                f.contains("\"created\":") && f.contains("\"last_used\":"),
                "{f}"
            );
            let name = &f[f.find("\"name\":\"").unwrap() + 8..];
            name[..name.find('"').unwrap()].to_string()
        })
        .collect()
}

#[test]
fn a_user_adds_a_second_factor_with_a_code_of_the_first() {
    let w = world("admin-second-factor", "");
    let recovery = w.sb.enroll("alice", SECRET);
    // A password, a wrong code: no factor is added, no key is shown.
    let run = w.as_user(
        "alice",
        &["enroll", "--name", "yubikey", "--qr", "none"],
        &format!("{PASSWORD}\n000000\n111111\n"),
    );
    run.assert_refused("wrong code");
    assert!(!run.stdout.contains("Key: "), "{run:?}");
    // Without --name, over "default": refused as before, pointing to --name.
    let run = w.as_user("alice", &["enroll", "--qr", "none"], "");
    run.assert_refused("--name NAME");

    wait_for_fresh_step(30, 15);
    let run = w.expect(
        SECOND_FACTOR_SCRIPT,
        &[
            ("TA_USER", "alice"),
            ("TA_BIN", w.bin.to_str().unwrap()),
            ("TA_SECRET", SECRET),
        ],
    );
    assert_eq!(run.code, 0, "expect failed: {}{}", run.stdout, run.stderr);
    let text = strip_ansi(&run.stdout);
    assert!(text.contains("Your recovery codes are unchanged"), "{text}");
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("EXPECT-KEY: "))
        .expect("key line")
        .trim()
        .to_string();

    // Either factor's next code logs in, each once; the factors' steps are their own.
    let yubikey = code(&key, 30);
    assert!(login(&w, "alice", &yubikey).auth_is("PAM_SUCCESS"));
    let again = login(&w, "alice", &yubikey);
    assert!(again.auth_is("PAM_AUTH_ERR"), "{again:?}");
    assert!(again.log_contains("code already used"), "{again:?}");
    let default = code(SECRET, 30);
    assert!(login(&w, "alice", &default).auth_is("PAM_SUCCESS"));
    assert!(login(&w, "alice", &default).auth_is("PAM_AUTH_ERR"));

    // status and list show both, with their times.
    let status = w.as_user("alice", &["status", "--json"], "");
    status.assert_ok();
    assert_eq!(factor_names(&status.stdout), ["default", "yubikey"]);
    for field in [
        "user",
        "enrolled",
        "policy",
        "reason",
        "locked",
        "recovery_codes_left",
        "last_used",
    ] {
        assert!(
            status.stdout.contains(&format!("\"{field}\":")),
            "{status:?}"
        );
    }
    assert!(status.json_has("recovery_codes_left", "10"), "{status:?}");
    let table = w.as_user("alice", &["status"], "");
    assert!(
        table.stdout.contains("| factor ") && table.stdout.contains("yubikey"),
        "{table:?}"
    );
    assert!(table.stdout.contains("last used (yubikey)"), "{table:?}");
    let list = w.as_root(&["list", "--json"], "");
    assert_eq!(factor_names(&list.stdout), ["default", "yubikey"]);
    let list = w.as_root(&["list"], "");
    assert!(
        list.stdout.contains("| Factor ") && list.stdout.contains("yubikey"),
        "{list:?}"
    );

    // disable --name removes that one (proved with a recovery code); the other stays.
    let off = w.as_user(
        "alice",
        &["disable", "--name", "yubikey"],
        &format!("{}\n", recovery[0]),
    );
    off.assert_ok();
    assert!(off.stdout.contains("Removed the factor yubikey"), "{off:?}");
    let status = w.as_user("alice", &["status", "--json"], "");
    assert_eq!(factor_names(&status.stdout), ["default"]);
    assert!(status.json_has("recovery_codes_left", "9"), "{status:?}");
    let off = w.as_user(
        "alice",
        &["disable", "--name", "nosuch"],
        &format!("{}\n", recovery[1]),
    );
    off.assert_refused("no factor named nosuch");
}

#[test]
fn reset_by_name_limits_and_names() {
    let w = world("admin-factor-limits", "");
    const OTHER: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    w.sb.enroll("alice", SECRET);
    let add = |name: &str| {
        w.as_root(
            &[
                "enroll",
                "--user",
                "alice",
                "--secret-stdin",
                "--name",
                name,
            ],
            OTHER,
        )
    };
    // Names: short, plain, refused with what is allowed.
    for bad in ["bad name", "../x", "ph\u{1b}[2Jone", "-x", &"y".repeat(33)] {
        let run = w.as_root(
            &[
                "enroll",
                "--user",
                "alice",
                "--secret-stdin",
                &format!("--name={bad}"),
            ],
            OTHER,
        );
        run.assert_refused("is not allowed: use 1 to 32 letters, digits");
        assert!(!run.stderr.contains('\x1b'), "{run:?}");
    }
    let spare = add("spare");
    spare.assert_ok();
    assert!(
        spare.stdout.contains("recovery codes are unchanged"),
        "{spare:?}"
    );
    add("spare").assert_refused("--replace");
    for i in 3..=8 {
        add(&format!("f{i}")).assert_ok();
    }
    // A 9th is refused, by root and by the user, before any key is shown.
    add("ninth").assert_refused("has 8 factors, the most a user may have");
    let run = w.as_user("alice", &["enroll", "--name", "ninth", "--qr", "none"], "");
    run.assert_refused("the most a user may have");
    assert!(!run.stdout.contains("Key: "), "{run:?}");
    let status = w.as_root(&["status", "--user", "alice", "--json"], "");
    assert_eq!(factor_names(&status.stdout).len(), 8);

    // reset --name removes one; the others and the recovery codes stay.
    let reset = w.as_root(&["reset", "--user", "alice", "--name", "spare"], "");
    reset.assert_ok();
    assert!(
        reset
            .stdout
            .contains("Removed the factor spare of alice; 7 left"),
        "{reset:?}"
    );
    w.as_root(&["reset", "--user", "alice", "--name", "spare"], "")
        .assert_refused("no factor named spare");
    let status = w.as_root(&["status", "--user", "alice", "--json"], "");
    assert_eq!(factor_names(&status.stdout).len(), 7);
    assert!(status.json_has("recovery_codes_left", "10"), "{status:?}");
    wait_for_fresh_step(30, 5);
    assert!(login(&w, "alice", &code(SECRET, 0)).auth_is("PAM_SUCCESS"));
    // Removing the last one by name removes the recovery codes and lockouts too.
    for i in 3..=8 {
        w.as_root(
            &["reset", "--user", "alice", "--name", &format!("f{i}")],
            "",
        )
        .assert_ok();
    }
    let last = w.as_root(&["reset", "--user", "alice", "--name", "default"], "");
    last.assert_ok();
    assert!(last.stdout.contains("the last one"), "{last:?}");
    let status = w.as_root(&["status", "--user", "alice", "--json"], "");
    assert!(status.json_has("enrolled", "false"), "{status:?}");
    assert!(status.json_has("recovery_codes_left", "0"), "{status:?}");
}

/// `policy set --mandatory` names the accounts that can log in today and would be
/// refused from now on, root included, and changes nothing without `--yes`.
#[test]
fn policy_set_mandatory_names_who_would_be_refused() {
    let w = world("admin-policy-yes", "");
    let path = w.sb.config_path();
    let before = std::fs::read_to_string(&path).unwrap();
    // root can log in with a password in this sandbox.
    let mut child =
        w.sb.command("chpasswd")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
    {
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "root:{PASSWORD}").unwrap();
    }
    assert!(child.wait().unwrap().success());
    w.sb.enroll("bob", SECRET);
    // bob, the one member of admins, is enrolled: nobody is refused.
    let group = w.as_root(&["policy", "set", "--mandatory", "--group", "admins"], "");
    group.assert_ok();
    assert!(!group.stdout.contains("refused"), "{group:?}");

    let run = w.as_root(&["policy", "set", "--mandatory"], "");
    assert_eq!(run.code, 1, "{run:?}");
    let listed: Vec<&str> = run
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .collect();
    assert!(listed.contains(&"alice"), "{run:?}");
    assert!(
        listed.iter().any(|l| *l == "root" || *l == "root (you)"),
        "{run:?}"
    );
    assert!(!listed.contains(&"bob"), "{run:?}");
    assert!(
        run.stderr.lines().last().unwrap().contains("add --yes"),
        "{run:?}"
    );
    let after_group = std::fs::read_to_string(&path).unwrap();
    assert!(!after_group.contains("mandatory = true"), "{after_group}");

    // A grace period lets them enroll first: nobody is refused at once.
    let graced = after_group.replace("[policy]", "[policy]\ngrace_period = \"3d\"");
    let graced = if graced.contains("grace_period") {
        graced
    } else {
        format!("{after_group}\n[policy]\ngrace_period = \"3d\"\n")
    };
    w.set_config(&graced);
    w.as_root(&["policy", "set", "--mandatory"], "").assert_ok();
    w.set_config(&after_group);

    let yes = w.as_root(&["policy", "set", "--mandatory", "--yes"], "");
    yes.assert_ok();
    assert!(yes.stdout.contains("    alice\n"), "{yes:?}");
    let status = w.as_root(&["status", "--user", "alice", "--json"], "");
    assert!(status.json_has("policy", "\"mandatory\""), "{status:?}");
    assert_ne!(std::fs::read_to_string(&path).unwrap(), before);
}
