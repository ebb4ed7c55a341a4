//! The RHEL family's artefacts, built and queried on Debian (whose kernel here has no
//! SELinux, and which has no authselect):
//!
//! - the SELinux policy module (packaging/selinux) compiled with the reference policy's
//!   development Makefile, installed with `semodule` into a private copy of Debian's
//!   policy store, and the compiled policy queried with `sesearch`;
//! - the authselect vendor profile (packaging/authselect/totp) rendered the way
//!   authselect renders it, feature `with-totp` on and off, checked line by line and by
//!   following every path through the stacks;
//! - the rendered stacks run behind a real sshd and `login` in a private mount namespace.

use pam_totp_tests::packages_support::{run, wrong_code, TempDir};
use pam_totp_tests::rhel_support::*;
use pam_totp_tests::sshd_support::{dialog_in, Namespace, Session, Sshd, SERVICE, WHOAMI};
use pam_totp_tests::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const PASSWORD: &str = "correct horse";
const DEVEL_MAKEFILE: &str = "/usr/share/selinux/devel/Makefile";

// ---------------------------------------------------------------------------------------
// SELinux

/// Compiles packaging/selinux into `work/pam_totp.pp`, installs it into a private policy
/// root made from Debian's refpolicy store (selinux-policy-default), and returns the
/// root and the compiled policy. The host's /etc/selinux and /var/lib/selinux are read,
/// never written.
fn policy_with_module(work: &Path) -> (PathBuf, PathBuf) {
    for ext in ["te", "fc", "if"] {
        let name = format!("pam_totp.{ext}");
        std::fs::copy(
            workspace().join("packaging/selinux").join(&name),
            work.join(&name),
        )
        .unwrap();
    }
    run(Command::new("make")
        .args(["-s", "-f", DEVEL_MAKEFILE, "pam_totp.pp"])
        .current_dir(work));
    let root = work.join("root");
    for (from, to) in [
        ("/var/lib/selinux/default", "var/lib/selinux"),
        ("/etc/selinux/default", "etc/selinux"),
    ] {
        std::fs::create_dir_all(root.join(to)).unwrap();
        run(Command::new("cp").args(["-a", from]).arg(root.join(to)));
    }
    run(Command::new("semodule")
        .arg("-p")
        .arg(&root)
        .args(["-s", "default", "-n", "-X", "200", "-i"])
        .arg(work.join("pam_totp.pp")));
    let dir = root.join("etc/selinux/default/policy");
    let policy = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("policy.")
        })
        .expect("a compiled policy");
    (root, policy)
}

/// `sesearch` with `args` on `policy`: the rules, one a line.
fn sesearch(policy: &Path, args: &[&str]) -> BTreeSet<String> {
    run(Command::new("sesearch").args(args).arg(policy))
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The allow rules that name `source` (a type or attribute, matched as written) and one
/// of the module's file types.
fn own_rules(policy: &Path, source: &str) -> BTreeSet<String> {
    ["pam_totp_conf_t", "pam_totp_key_t", "pam_totp_var_lib_t"]
        .iter()
        .flat_map(|t| sesearch(policy, &["-A", "-s", source, "-ds", "-t", t, "-dt"]))
        .collect()
}

/// What a login domain may do: read the config and the key, read and write the store
/// (SQLite makes and removes its journal beside the database).
fn login_rules(source: &str) -> BTreeSet<String> {
    [
        "pam_totp_conf_t:dir { getattr open search };",
        "pam_totp_conf_t:file { getattr ioctl lock open read };",
        "pam_totp_key_t:file { getattr ioctl lock open read };",
        "pam_totp_var_lib_t:dir { add_name getattr ioctl lock open read remove_name search write };",
        "pam_totp_var_lib_t:file { append create getattr ioctl link lock open read rename setattr unlink write };",
    ]
    .iter()
    .map(|r| format!("allow {source} {r}"))
    .collect()
}

#[test]
fn selinux_module_gives_each_login_domain_exactly_its_rules() {
    require_root();
    let work = TempDir::new("selinux");
    let (root, policy) = policy_with_module(work.path());

    // sudo runs in one domain per role, all in the attribute sudodomain; su has one
    // domain per role and no attribute; xdm_t is the display manager's.
    for source in [
        "sshd_t",
        "local_login_t",
        "sudodomain",
        "sysadm_su_t",
        "staff_su_t",
        "user_su_t",
        "xdm_t",
    ] {
        assert_eq!(own_rules(&policy, source), login_rules(source), "{source}");
    }
    for sudo in ["sysadm_sudo_t", "staff_sudo_t", "user_sudo_t"] {
        let attributes = run(Command::new("seinfo").arg(&policy).args(["-t", sudo, "-x"]));
        assert!(attributes.contains("sudodomain"), "{attributes}");
    }

    // The confined login domains, every rule that reaches them counted (through
    // attributes too): nothing writes the config or the key, nothing executes or
    // relabels the module's files. (xdm_t is unconfined in the reference policy.)
    for domain in [
        "sshd_t",
        "local_login_t",
        "sysadm_sudo_t",
        "staff_sudo_t",
        "user_sudo_t",
        "sysadm_su_t",
        "staff_su_t",
        "user_su_t",
    ] {
        for target in ["pam_totp_conf_t", "pam_totp_key_t", "pam_totp_var_lib_t"] {
            for rule in sesearch(&policy, &["-A", "-s", domain, "-t", target]) {
                for perm in ["execute", "relabelfrom", "relabelto", "mounton"] {
                    assert!(!rule.contains(perm), "{domain}: {rule}");
                }
                if target != "pam_totp_var_lib_t" && rule.contains(":file ") {
                    for perm in ["write", "append", "create", "unlink", "setattr"] {
                        assert!(!rule.contains(perm), "{domain} may change {target}: {rule}");
                    }
                }
            }
        }
    }

    // totp-admin: entered from the user domains and the administrator's, by its
    // executable's label; it may manage the config, the key and the store.
    for (domain, role) in [
        ("unconfined_t", "unconfined_r"),
        ("user_t", "user_r"),
        ("staff_t", "staff_r"),
        ("sysadm_t", "sysadm_r"),
    ] {
        let transitions = sesearch(
            &policy,
            &["-T", "-s", domain, "-ds", "-t", "totp_admin_exec_t"],
        );
        assert!(
            transitions.contains(&format!(
                "type_transition {domain} totp_admin_exec_t:process totp_admin_t;"
            )),
            "{domain}: {transitions:?}"
        );
        let roles = run(Command::new("seinfo").arg(&policy).args(["-r", role, "-x"]));
        assert!(roles.contains("totp_admin_t"), "{role}: {roles}");
    }
    let admin = own_rules(&policy, "totp_admin_t");
    for wanted in [
        "allow totp_admin_t pam_totp_key_t:file { append create getattr ioctl link lock open read rename setattr unlink write };",
        "allow totp_admin_t pam_totp_var_lib_t:file { append create getattr ioctl link lock open read rename setattr unlink write };",
    ] {
        assert!(admin.contains(wanted), "{admin:#?}");
    }
    // A host key store init writes lands with the key's label.
    let named = sesearch(
        &policy,
        &["-T", "-s", "totp_admin_t", "-t", "pam_totp_conf_t"],
    );
    for name in [
        "store.key",
        "store.key.partial",
        "store.key.new",
        "store.key.new.partial",
    ] {
        assert!(
            named.contains(&format!(
                "type_transition totp_admin_t pam_totp_conf_t:file pam_totp_key_t {name};"
            )),
            "{name}: {named:?}"
        );
    }
    // The PostgreSQL boolean, off by default.
    let booleans =
        run(Command::new("seinfo")
            .arg(&policy)
            .args(["-b", "pam_totp_connect_postgresql", "-x"]));
    assert!(
        booleans.contains("pam_totp_connect_postgresql"),
        "{booleans}"
    );

    // The labels.
    let contexts =
        std::fs::read_to_string(root.join("etc/selinux/default/contexts/files/file_contexts"))
            .unwrap();
    for line in [
        "/etc/pam_totp(/.*)?\tsystem_u:object_r:pam_totp_conf_t:s0",
        "/etc/pam_totp/store\\.key(\\.new)?(\\.partial)?\t--\tsystem_u:object_r:pam_totp_key_t:s0",
        "/var/lib/pam_totp(/.*)?\tsystem_u:object_r:pam_totp_var_lib_t:s0",
        "/usr/bin/totp-admin\t--\tsystem_u:object_r:totp_admin_exec_t:s0",
    ] {
        assert!(contexts.lines().any(|l| l == line), "{line} missing");
    }
}

// ---------------------------------------------------------------------------------------
// authselect

/// authselect's `local` profile rendered with no feature: the totp profile with
/// `with-totp` off must give exactly this.
const LOCAL_AUTH: &[&str] = &[
    "auth required pam_env.so",
    "auth required pam_faildelay.so delay=2000000",
    "auth sufficient pam_unix.so nullok",
    "auth required pam_deny.so",
];
const LOCAL_ACCOUNT: &[&str] = &["account required pam_unix.so"];

#[test]
fn authselect_profile_without_totp_is_the_local_profile() {
    for name in ["system-auth", "password-auth"] {
        let off = render(&template(name), &[]);
        assert_eq!(phase(&off, "auth"), LOCAL_AUTH, "{name}:\n{off}");
        assert_eq!(phase(&off, "account"), LOCAL_ACCOUNT, "{name}:\n{off}");
        assert!(!off.contains("pam_totp"), "{name}:\n{off}");
        assert!(!off.contains('{'), "an operator left in {name}:\n{off}");
        let session = phase(&off, "session");
        assert_eq!(session.len(), 5, "{session:?}");
        assert_eq!(session.last().unwrap(), "session required pam_unix.so");
    }
}

#[test]
fn authselect_profile_with_totp_asks_the_code_after_the_password() {
    for name in ["system-auth", "password-auth"] {
        let on = render(&template(name), &["with-totp"]);
        assert_eq!(
            phase(&on, "auth"),
            [
                "auth required pam_env.so",
                "auth required pam_faildelay.so delay=2000000",
                "auth [success=1 default=ignore] pam_unix.so nullok",
                "auth requisite pam_deny.so",
                "auth requisite pam_totp.so",
                "auth required pam_permit.so",
            ],
            "{name}:\n{on}"
        );
        assert_eq!(
            phase(&on, "account"),
            [
                "account required pam_unix.so",
                "account required pam_totp.so"
            ],
            "{name}:\n{on}"
        );
        // The other phases are the local profile's.
        let off = render(&template(name), &[]);
        for kind in ["password", "session"] {
            assert_eq!(phase(&on, kind), phase(&off, kind), "{name} {kind}");
        }

        let faillock = render(&template(name), &["with-totp", "with-faillock"]);
        assert_eq!(
            phase(&faillock, "auth")[2..],
            [
                "auth required pam_faillock.so preauth silent",
                "auth [success=2 default=ignore] pam_unix.so nullok",
                "auth required pam_faillock.so authfail",
                "auth requisite pam_deny.so",
                "auth requisite pam_totp.so",
                "auth required pam_permit.so",
            ],
            "{name}:\n{faillock}"
        );
    }
    // The other files of the profile do not name the module.
    for name in ["fingerprint-auth", "smartcard-auth", "postlogin"] {
        assert!(!template(name).contains("pam_totp"), "{name}");
    }
}

/// What each module returns on the password path: fingerprint and U2F do not log the
/// user in on their own (the second-factor U2F line, `required`, passes: the user has
/// the key or needs none), the user is not a systemd-homed one.
fn password_path(unix: Rc, totp: Rc) -> impl Fn(&str, &str) -> Rc {
    move |module: &str, line: &str| match module {
        "pam_unix.so" => unix,
        "pam_totp.so" => totp,
        "pam_deny.so" => Rc::AuthErr,
        "pam_fprintd.so" => Rc::AuthErr,
        "pam_u2f.so" if line.contains(" required ") => Rc::Success,
        "pam_u2f.so" => Rc::AuthErr,
        "pam_systemd_home.so" => Rc::Ignore,
        _ => Rc::Success,
    }
}

#[test]
fn authselect_with_totp_every_feature_combination_runs_the_module_only_after_the_password() {
    for name in ["system-auth", "password-auth"] {
        let text = template(name);
        let others: Vec<String> = features_named(&text)
            .into_iter()
            .filter(|f| f != "with-totp")
            .collect();
        assert!(others.len() < 16, "{others:?}");
        for mask in 0u32..(1 << others.len()) {
            let mut features: Vec<&str> = others
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, f)| f.as_str())
                .collect();
            let off = phase(&render(&text, &features), "auth");
            assert!(!off.iter().any(|l| l.contains("pam_totp")), "{off:#?}");
            features.push("with-totp");
            let auth = phase(&render(&text, &features), "auth");
            let account = phase(&render(&text, &features), "account");
            let context = format!("{name} {features:?}:\n{auth:#?}");
            assert_eq!(
                auth.iter().filter(|l| l.contains("pam_totp.so")).count(),
                1,
                "{context}"
            );

            // A wrong password: pam_totp never runs, whatever it would say.
            for totp in [Rc::Success, Rc::Ignore, Rc::AuthErr] {
                let wrong = simulate(&auth, password_path(Rc::AuthErr, totp));
                assert!(!wrong.success, "{context}");
                assert!(
                    !wrong.ran.iter().any(|m| m == "pam_totp.so"),
                    "pam_totp ran after a wrong password: {context}"
                );
            }
            // The right password: the code decides; a user who needs none gets in.
            let ok = simulate(&auth, password_path(Rc::Success, Rc::Success));
            assert!(
                ok.success && ok.ran.iter().any(|m| m == "pam_totp.so"),
                "{context}"
            );
            let bad_code = simulate(&auth, password_path(Rc::Success, Rc::AuthErr));
            assert!(!bad_code.success, "{context}");
            let no_code = simulate(&auth, password_path(Rc::Success, Rc::Ignore));
            assert!(no_code.success, "{context}");

            // The account phase always reaches pam_totp (it stores an enrollment).
            let acct = simulate(&account, |_, _| Rc::Success);
            assert!(
                acct.success && acct.ran.iter().any(|m| m == "pam_totp.so"),
                "{name} {features:?}: {account:#?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The rendered stacks behind sshd and login

/// RHEL's /etc/pam.d/sshd, with what Debian lacks left out: pam_sepermit and
/// pam_selinux (SELinux, not enabled here), pam_namespace and the postlogin include
/// (pam_lastlog, not what is tested).
const RHEL_SSHD: &str = "\
auth       substack     password-auth
account    required     pam_nologin.so
account    include      password-auth
password   include      password-auth
session    required     pam_loginuid.so
session    optional     pam_keyinit.so force revoke
session    include      password-auth
";

/// RHEL's /etc/pam.d/login, left out as for [`RHEL_SSHD`].
const RHEL_LOGIN: &str = "\
auth       substack     system-auth
account    required     pam_nologin.so
account    include      system-auth
password   include      system-auth
session    optional     pam_keyinit.so force revoke
session    include      system-auth
";

/// Writes the profile's system-auth and password-auth, rendered with `with-totp`, into
/// the sandbox's /etc/pam.d, with the built module and the sandbox's config. The only
/// RHEL module these stacks name that Debian lacks is pam_pwquality (the password
/// phase, not run here): it is left out.
fn install_rendered_stacks(sb: &Sandbox) {
    let module_args = format!(
        "{} config={}",
        module().display(),
        sb.config_path().display()
    );
    for name in ["system-auth", "password-auth"] {
        let rendered = render(&template(name), &["with-totp"]);
        let text: String = rendered
            .lines()
            .filter(|l| !l.contains("pam_pwquality.so"))
            .map(|l| format!("{}\n", l.replace("pam_totp.so", &module_args)))
            .collect();
        write_file(&sb.dir.join("etc/pam.d").join(name), &text, 0o644);
    }
}

fn rhel_sandbox(name: &str) -> Sandbox {
    let sb = Sandbox::new(name);
    sb.add_group("mandatory");
    sb.add_user("alice", PASSWORD, None, &[]);
    // bob: mandatory by group, not enrolled, enrollment at login on.
    sb.add_user("bob", PASSWORD, None, &["mandatory"]);
    sb.write_config("[policy]\nmandatory_groups = [\"mandatory\"]\nenroll_at_login = true\n");
    sb.init_store();
    sb.enroll("alice", SECRET);
    install_rendered_stacks(&sb);
    sb
}

const KBDINT: &[&str] = &[
    "-o",
    "PubkeyAuthentication=no",
    "-o",
    "PreferredAuthentications=keyboard-interactive",
    "-o",
    "NumberOfPasswordPrompts=1",
];

/// Nothing of an enrollment reached the session: no QR code, no key, no URI.
fn assert_nothing_shown(session: &Session) {
    for text in [
        "Verification code",
        "Scan this QR",
        "Or enter this key",
        "otpauth://",
        "▀",
        "▄",
    ] {
        assert!(!session.text.contains(text), "{text}:\n{}", session.text);
    }
}

#[test]
fn rhel_stacks_behind_sshd() {
    let sb = rhel_sandbox("rhel-sshd");
    let sshd = Sshd::start(&sb, "keyboard-interactive", RHEL_SSHD);

    wait_for_fresh_step(30, 8);
    let c = code(SECRET, 0);
    let ok = sshd.ssh(
        "alice",
        KBDINT,
        &[("Password: ", PASSWORD), ("Verification code: ", &c)],
    );
    assert!(ok.logged_in_as("alice"), "{}\n{}", ok.text, sshd.log());

    let bad_code = sshd.ssh(
        "alice",
        KBDINT,
        &[
            ("Password: ", PASSWORD),
            ("Verification code: ", &wrong_code(SECRET)),
        ],
    );
    assert!(!bad_code.logged_in_as("alice"), "{}", bad_code.text);

    let bad_password = sshd.ssh("alice", KBDINT, &[("Password: ", "wrong password")]);
    assert!(!bad_password.logged_in_as("alice"), "{}", bad_password.text);
    assert!(
        !bad_password.text.contains("Verification code"),
        "{}",
        bad_password.text
    );

    // The unenrolled mandatory user with a wrong password: refused, and shown nothing
    // of an enrollment; nothing stored.
    let bob = sshd.ssh("bob", KBDINT, &[("Password: ", "wrong password")]);
    assert!(!bob.logged_in_as("bob"), "{}", bob.text);
    assert!(bob.text.contains("Permission denied"), "{}", bob.text);
    assert_nothing_shown(&bob);
    let log: Vec<String> = sshd
        .ns
        .syslog()
        .into_iter()
        .filter(|l| l.contains(&format!("pam_totp({SERVICE}:")))
        .collect();
    assert!(
        !log.iter().any(|l| l.contains("user=\"bob\"")),
        "pam_totp ran for bob: {log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("user=\"alice\"") && l.contains("reason=\"code accepted\"")),
        "{log:?}"
    );
    drop(sshd);
}

#[test]
fn rhel_stacks_behind_login() {
    let sb = rhel_sandbox("rhel-login");
    write_file(&sb.dir.join("etc/pam.d/login"), RHEL_LOGIN, 0o644);
    let ns = Namespace::new(&sb);
    let exit = format!("{WHOAMI}; exit");

    wait_for_fresh_step(30, 10);
    let c = code(SECRET, 0);
    let ok = dialog_in(
        &ns,
        &sb.dir,
        &["login"],
        &[
            ("login: ", "alice"),
            ("Password: ", PASSWORD),
            ("Verification code: ", &c),
            ("$ ", &exit),
        ],
    );
    assert!(ok.logged_in_as("alice"), "{}", ok.text);

    let bad_code = dialog_in(
        &ns,
        &sb.dir,
        &["login"],
        &[
            ("login: ", "alice"),
            ("Password: ", PASSWORD),
            ("Verification code: ", &wrong_code(SECRET)),
            ("Login incorrect", "@end"),
        ],
    );
    assert!(!bad_code.logged_in_as("alice"), "{}", bad_code.text);

    for user in ["alice", "bob"] {
        let bad_password = dialog_in(
            &ns,
            &sb.dir,
            &["login"],
            &[
                ("login: ", user),
                ("Password: ", "wrong password"),
                ("Login incorrect", "@end"),
            ],
        );
        assert!(!bad_password.logged_in_as(user), "{}", bad_password.text);
        assert_nothing_shown(&bad_password);
    }
    let log = ns.syslog();
    assert!(
        !log.iter()
            .any(|l| l.contains("pam_totp(login:") && l.contains("user=\"bob\"")),
        "pam_totp ran for bob: {log:?}"
    );
}

// ---------------------------------------------------------------------------------------
// totp-admin doctor on an authselect-managed /etc

/// authselect's header, as it writes it above every file it generates.
const AUTHSELECT_PREAMBLE: &str = "# Generated by authselect\n\
# Do not modify this file manually, use authselect instead. Any user changes will be overwritten.\n\
# You can stop authselect from managing your configuration by calling 'authselect opt-out'.\n\
# See authselect(8) for more details.\n\n";

/// Lays out the sandbox's /etc/pam.d as authselect does with `features` (and, with
/// `selected`, its /etc/authselect/authselect.conf), with RHEL's sshd, login and sudo.
fn authselect_etc(sb: &Sandbox, selected: Option<&str>, features: &[&str]) {
    let pam = sb.dir.join("etc/pam.d");
    for name in ["system-auth", "password-auth"] {
        let text = format!("{AUTHSELECT_PREAMBLE}{}", render(&template(name), features));
        write_file(&pam.join(name), &text, 0o644);
    }
    write_file(&pam.join("sshd"), RHEL_SSHD, 0o644);
    write_file(&pam.join("login"), RHEL_LOGIN, 0o644);
    write_file(
        &pam.join("sudo"),
        "auth       include      system-auth\naccount    include      system-auth\n",
        0o644,
    );
    let conf = sb.dir.join("etc/authselect/authselect.conf");
    match selected {
        Some(profile) => {
            std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
            let lines: String = features.iter().map(|f| format!("{f}\n")).collect();
            write_file(&conf, &format!("{profile}\n{lines}"), 0o644);
        }
        None => {
            let _ = std::fs::remove_file(&conf);
        }
    }
}

/// `doctor --json`: the findings of the PAM checks, by service: (status, fix).
fn doctor_pam(sb: &Sandbox) -> Vec<(String, String, String)> {
    let out = sb.admin(&["doctor", "--json"], "");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut found = Vec::new();
    // One finding a JSON object; read the three fields of the "pam ..." ones.
    for object in text.split('{').skip(2) {
        let field = |name: &str| {
            let key = format!("\"{name}\":");
            let at = object.find(&key)? + key.len();
            let rest = object[at..].trim_start().strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_string())
        };
        if let (Some(check), Some(status), Some(fix)) =
            (field("check"), field("status"), field("fix"))
        {
            if check.starts_with("pam ") {
                found.push((check, status, fix));
            }
        }
    }
    assert_eq!(found.len(), 3, "{text}");
    found
}

#[test]
fn doctor_names_the_authselect_command() {
    let sb = Sandbox::new("rhel-doctor");
    sb.write_config("[policy]\nenroll_at_login = true\n");
    sb.init_store();

    // authselect's local profile: switch to totp, keeping the features.
    authselect_etc(&sb, Some("local"), &["with-faillock"]);
    for (check, status, fix) in doctor_pam(&sb) {
        assert_eq!(status, "fail", "{check}");
        assert_eq!(
            fix,
            "authselect select totp with-totp with-faillock in place of local, then \
             authselect check (profile totp, from the pam_totp package, is authselect's \
             local profile with pam_totp; the stacks are authselect's: a hand edit is \
             overwritten)",
            "{check}"
        );
    }

    // The totp profile without its feature: turn the feature on.
    authselect_etc(&sb, Some("totp"), &[]);
    for (check, status, fix) in doctor_pam(&sb) {
        assert_eq!(status, "fail", "{check}");
        assert!(
            fix.starts_with("authselect enable-feature with-totp, then authselect check"),
            "{check}: {fix}"
        );
    }

    // Only the header tells: the same advice, no profile to name.
    authselect_etc(&sb, None, &[]);
    for (check, status, fix) in doctor_pam(&sb) {
        assert_eq!(status, "fail", "{check}");
        assert!(
            fix.starts_with("authselect select totp with-totp, then authselect check"),
            "{check}: {fix}"
        );
    }

    // With the feature on, every service is covered, the account phase included.
    authselect_etc(&sb, Some("totp"), &["with-totp"]);
    for (check, status, fix) in doctor_pam(&sb) {
        assert_eq!((status.as_str(), fix.as_str()), ("ok", ""), "{check}");
    }
}
