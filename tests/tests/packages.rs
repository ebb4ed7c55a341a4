//! The packages `packaging/build.sh` builds: what is in them, and what they do when
//! installed. The .deb is installed into a throwaway copy of this system (a private mount
//! namespace with overlays, see `packages_support`) and protects a real sshd login there;
//! the .rpm is installed into a throwaway RPM root. The host's files are left as they were.

use pam_totp_tests::packages_support::*;
use pam_totp_tests::{checksum, code, release_dir, require_root, workspace, SECRET};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian package's name (a Debian name has no underscore).
const DEB_PACKAGE: &str = "pam-totp";
const RPM_PACKAGE: &str = "pam_totp";
/// The PostgreSQL flavour, which takes the place of the SQLite-only package.
const PG_DEB_PACKAGE: &str = "pam-totp-postgresql";
const PG_RPM_PACKAGE: &str = "pam_totp-postgresql";

const DEB_MODULE: &str = "/usr/lib/x86_64-linux-gnu/security/pam_totp.so";
const RPM_MODULE: &str = "/usr/lib64/security/pam_totp.so";
const ADMIN: &str = "/usr/bin/totp-admin";
const CONFIG: &str = "/etc/pam_totp/config.toml";
const STATE_DIR: &str = "/var/lib/pam_totp";
const STORE: &str = "/var/lib/pam_totp/totp.db";
const COMMON_AUTH: &str = "/etc/pam.d/common-auth";
const COMMON_ACCOUNT: &str = "/etc/pam.d/common-account";

/// The module's size limit; it is about 2 MB stripped.
const MAX_MODULE_SIZE: u64 = 3 << 20;
/// The same for the PostgreSQL flavour's module (tokio, tokio-postgres, rustls): ~4.5 MB.
const MAX_PG_MODULE_SIZE: u64 = 6 << 20;

/// The oldest version of each package the .deb may depend on in the base systems it
/// targets: Ubuntu 22.04 (libc6 2.35, PAM 1.4.0, gcc 12) and Debian 12 (libc6 2.36,
/// PAM 1.5.2, gcc 12.2).
const BASE_SYSTEM: [(&str, &str); 4] = [
    ("libc6", "2.35-0ubuntu3"),
    ("libgcc-s1", "12-20220319-1ubuntu1"),
    ("libpam0g", "1.4.0-11ubuntu2"),
    ("libpam-runtime", "1.4.0-11ubuntu2"),
];

/// The compiled SELinux policy module in the .rpm.
const SELINUX_MODULE: &str = "/usr/share/selinux/packages/pam_totp.pp";
/// The authselect vendor profile in the .rpm, and its files.
const AUTHSELECT_PROFILE: &str = "/usr/share/authselect/vendor/totp";
const AUTHSELECT_FILES: [&str; 10] = [
    "README",
    "REQUIREMENTS",
    "system-auth",
    "password-auth",
    "fingerprint-auth",
    "smartcard-auth",
    "postlogin",
    "nsswitch.conf",
    "dconf-db",
    "dconf-locks",
];

/// The newest glibc symbol version the .rpm may need: RHEL 9 has glibc 2.34.
const RHEL_GLIBC: (u32, u32) = (2, 34);

fn strs(path: &str) -> &Path {
    Path::new(path)
}

/// `dpkg-deb -c`: path (without the leading `.`) to (permissions, owner/group).
fn deb_listing(deb: &Path) -> BTreeMap<String, (String, String)> {
    run(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let path = fields[5].trim_start_matches('.').to_string();
            (path, (fields[0].to_string(), fields[1].to_string()))
        })
        .collect()
}

#[test]
fn module_is_stripped_small_and_exports_only_the_pam_entry_points() {
    let packages = packages();
    let unpacked = TempDir::new("deb-unpacked");
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&packages.deb)
        .arg(unpacked.path()));
    let packaged = unpacked.path().join(DEB_MODULE.trim_start_matches('/'));
    for module in [release_dir().join("libpam_totp.so"), packaged] {
        assert_module_exports_only_pam_entry_points(&module, MAX_MODULE_SIZE);
    }
}

fn assert_module_exports_only_pam_entry_points(module: &Path, max_size: u64) {
    let symbols = run(Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(module));
    let names: Vec<&str> = symbols
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let expected = [
        "pam_sm_acct_mgmt",
        "pam_sm_authenticate",
        "pam_sm_chauthtok",
        "pam_sm_close_session",
        "pam_sm_open_session",
        "pam_sm_setcred",
    ];
    assert_eq!(names, expected, "{} exports {symbols}", module.display());

    let sections = run(Command::new("readelf").args(["-S", "--wide"]).arg(module));
    assert!(
        !sections.contains(".symtab") && !sections.contains(".debug_"),
        "{} is not stripped:\n{sections}",
        module.display()
    );

    let size = fs::metadata(module).unwrap().len();
    eprintln!("{}: {size} bytes", module.display());
    assert!(size <= max_size, "{} is {size} bytes", module.display());
}

/// Whether a built module carries the PostgreSQL store (its login statement).
fn has_postgresql_store(module: &Path) -> bool {
    let bytes = fs::read(module).unwrap();
    let needle = b"UPDATE pam_totp.factors SET last_step";
    bytes.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn deb_depends_only_on_the_base_system() {
    assert_depends_only_on_the_base_system(&packages().deb);
}

fn assert_depends_only_on_the_base_system(deb: &Path) {
    let depends = run(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(deb)
        .arg("Depends"));
    let base: BTreeMap<&str, &str> = BASE_SYSTEM.into_iter().collect();
    for dependency in depends.trim().split(',').map(str::trim) {
        assert!(!dependency.contains('|'), "alternatives in {dependency:?}");
        let (name, relation) = match dependency.split_once(' ') {
            Some((name, relation)) => (name, Some(relation)),
            None => (dependency, None),
        };
        let name = name.split(':').next().unwrap();
        let Some(oldest) = base.get(name) else {
            panic!("Depends names {name}, which is not in the base system: {depends}");
        };
        if let Some(relation) = relation {
            let relation = relation.trim_start_matches('(').trim_end_matches(')');
            let (op, version) = relation.split_once(' ').unwrap();
            let satisfied =
                output(Command::new("dpkg").args(["--compare-versions", oldest, op, version]))
                    .status
                    .success();
            assert!(satisfied, "{name} {oldest} does not satisfy {dependency}");
        }
    }
}

#[test]
fn deb_contents() {
    let deb = &packages().deb;
    let name = run(Command::new("dpkg-deb").arg("-f").arg(deb).arg("Package"));
    assert_eq!(name.trim(), DEB_PACKAGE);

    let files = deb_listing(deb);
    let expect = |path: &str, perms: &str| match files.get(path) {
        Some((p, owner)) => {
            assert_eq!(p, perms, "{path}");
            assert_eq!(owner, "0/0", "{path}");
        }
        None => panic!("{path} is not in the .deb: {files:#?}"),
    };
    expect(DEB_MODULE, "-rw-r--r--");
    expect(ADMIN, "-rwsr-xr-x");
    expect(CONFIG, "-rw-------");
    expect("/etc/pam.d/totp-admin", "-rw-r--r--");
    expect("/usr/share/pam-configs/totp", "-rw-r--r--");
    expect("/usr/share/doc/pam-totp/copyright", "-rw-r--r--");
    expect("/usr/share/doc/pam-totp/README.md", "-rw-r--r--");
    expect("/usr/share/doc/pam-totp/NEWS.gz", "-rw-r--r--");
    expect("/usr/share/doc/pam-totp/changelog.Debian.gz", "-rw-r--r--");
    expect("/usr/share/lintian/overrides/pam-totp", "-rw-r--r--");
    expect("/usr/share/man/man8/pam_totp.8.gz", "-rw-r--r--");
    expect("/usr/share/man/man8/totp-admin.8.gz", "-rw-r--r--");
    expect("/usr/share/man/man5/pam_totp.conf.5.gz", "-rw-r--r--");
    expect(
        "/usr/share/bash-completion/completions/totp-admin",
        "-rw-r--r--",
    );
    assert!(
        !files.keys().any(|p| p.starts_with("/var/")),
        "the state directory is made by postinst, with its mode"
    );

    let control = TempDir::new("deb-control");
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(deb)
        .arg(control.path()));
    let conffiles = fs::read_to_string(control.path().join("conffiles")).unwrap();
    for conffile in [CONFIG, "/etc/pam.d/totp-admin"] {
        assert!(conffiles.lines().any(|l| l == conffile), "{conffiles}");
    }

    let unpacked = TempDir::new("deb-profile");
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(unpacked.path()));
    let profile = fs::read_to_string(unpacked.path().join("usr/share/pam-configs/totp")).unwrap();
    let fields: Vec<&str> = profile.lines().map(str::trim).collect();
    for line in [
        "Default: no",
        "Auth-Type: Additional",
        "Account-Type: Additional",
    ] {
        assert!(fields.contains(&line), "{line:?} missing from:\n{profile}");
    }
    let module_lines = profile
        .lines()
        .filter(|l| l.starts_with(char::is_whitespace) && l.contains("pam_totp.so"))
        .count();
    assert_eq!(module_lines, 2, "an auth and an account line:\n{profile}");
}

/// lintian, Debian's package checker, finds no error and no warning in either .deb. The
/// two things the package does on purpose (totp-admin setuid root, the config 0600) are
/// overridden in packaging/deb/lintian-overrides, which says why; nothing else is.
#[test]
fn debs_pass_lintian() {
    let packages = packages();
    for deb in [&packages.deb, &packages.pg_deb] {
        let out = output(
            Command::new("lintian")
                // Overridden tags are listed as "O:", never as "E:" or "W:"; the exit
                // status then says only whether lintian itself ran.
                .args(["--info", "--show-overrides", "--fail-on", "none"])
                .arg(deb),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report = format!(
            "lintian {}:\n{stdout}{}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let tags: Vec<&str> = stdout
            .lines()
            .filter(|l| l.len() > 2 && l.as_bytes()[1] == b':' && !l.starts_with("N:"))
            .collect();
        let problems: Vec<&&str> = tags
            .iter()
            .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
            .collect();
        assert!(problems.is_empty() && out.status.success(), "{report}");
        let mut overridden: Vec<&str> = tags
            .iter()
            .filter_map(|l| l.strip_prefix("O: "))
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        overridden.sort_unstable();
        assert_eq!(
            overridden,
            ["elevated-privileges", "non-standard-file-perm"],
            "{report}"
        );
    }
}

/// The host files the package tests must not change, with their checksums ("" when
/// missing).
fn host_state() -> Vec<(&'static str, String)> {
    [
        COMMON_AUTH,
        COMMON_ACCOUNT,
        "/etc/passwd",
        "/etc/shadow",
        "/var/lib/dpkg/status",
        "/var/lib/pam/seen",
        DEB_MODULE,
        ADMIN,
        CONFIG,
        STORE,
    ]
    .into_iter()
    .map(|path| (path, checksum(strs(path))))
    .chain([(STATE_DIR, strs(STATE_DIR).exists().to_string())])
    .collect()
}

#[test]
fn deb_installs_protects_an_ssh_login_and_removes_cleanly() {
    require_root();
    let deb = &packages().deb;
    let before = host_state();
    let work = TempDir::new("deb-life");
    in_throwaway_system(|| deb_life_cycle(deb, work.path()));
    assert_eq!(host_state(), before, "the host's files changed");
}

const USER: &str = "pkgtotp";
const PLAIN_USER: &str = "pkgplain";
const PASSWORD: &str = "Pkg-test-password-1";

/// The module's prompt (DESIGN.md, a contract).
const CODE_PROMPT: &str = "Verification code";

fn assert_logged_in(login: &Login, asked_code: bool, what: &str) {
    assert!(login.logged_in, "{what}: not logged in\n{}", login.report);
    assert!(
        login.asked("Password"),
        "{what}: {:?}\n{}",
        login.prompts,
        login.report
    );
    assert_eq!(
        login.asked(CODE_PROMPT),
        asked_code,
        "{what}: {:?}\n{}",
        login.prompts,
        login.report
    );
}

fn pam_auth_update(args: &[&str]) {
    run(Command::new("timeout")
        .args(["120", "pam-auth-update"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive"));
}

fn deb_life_cycle(deb: &Path, work: &Path) {
    // A host that has the package installed: start from a system without it.
    if deb_installed(DEB_PACKAGE) {
        dpkg(&["--purge", DEB_PACKAGE]);
    }
    let auth_before = fs::read_to_string(COMMON_AUTH).unwrap();
    let account_before = fs::read_to_string(COMMON_ACCOUNT).unwrap();

    dpkg(&["-i", deb.to_str().unwrap()]);
    assert_eq!(mode(strs(DEB_MODULE)), 0o644);
    assert_eq!(mode(strs(ADMIN)), 0o4755);
    assert_eq!(mode(strs(CONFIG)), 0o600);
    assert_eq!(mode(strs(STATE_DIR)), 0o700);
    assert_eq!(mode(strs(STORE)), 0o600, "postinst creates the store");
    assert_eq!(
        fs::read_to_string(COMMON_AUTH).unwrap(),
        auth_before,
        "installing alone changed common-auth (the profile says Default: no)"
    );

    pam_auth_update(&["--enable", "totp"]);
    pam_auth_update(&["--disable", "totp"]);
    assert_eq!(
        fs::read_to_string(COMMON_AUTH).unwrap(),
        auth_before,
        "pam-auth-update --disable totp left common-auth changed"
    );
    pam_auth_update(&["--enable", "totp"]);
    let auth = fs::read_to_string(COMMON_AUTH).unwrap();
    let unix = auth.find("pam_unix.so").expect("pam_unix in common-auth");
    let totp = auth.find("pam_totp.so").expect("pam_totp in common-auth");
    assert!(unix < totp, "the code is asked after the password:\n{auth}");
    assert!(fs::read_to_string(COMMON_ACCOUNT)
        .unwrap()
        .contains("pam_totp.so"));

    add_user(USER, PASSWORD);
    add_user(PLAIN_USER, PASSWORD);
    run_with_input(
        Command::new(ADMIN).args(["enroll", "--user", USER, "--secret-stdin"]),
        &format!("{SECRET}\n"),
    );

    let sshd = Sshd::start(work);
    let right = sshd.login(work, USER, PASSWORD, Some(&code(SECRET, 0)));
    assert_logged_in(&right, true, "password and the right code");
    let wrong = sshd.login(work, USER, PASSWORD, Some(&wrong_code(SECRET)));
    assert!(
        !wrong.logged_in && wrong.asked(CODE_PROMPT),
        "password and a wrong code: {:?}\n{}",
        wrong.prompts,
        wrong.report
    );
    let plain = sshd.login(work, PLAIN_USER, PASSWORD, None);
    assert_logged_in(
        &plain,
        false,
        "a user who has not enrolled (optional policy)",
    );
    drop(sshd);

    // An upgrade keeps a changed config, the store and the enabled profile.
    let changed = format!(
        "{}\n# changed on this host\n",
        fs::read_to_string(CONFIG).unwrap()
    );
    fs::write(CONFIG, &changed).unwrap();
    dpkg(&["-i", next_version(deb, work).to_str().unwrap()]);
    assert_eq!(fs::read_to_string(CONFIG).unwrap(), changed);
    assert_eq!(mode(strs(CONFIG)), 0o600);
    let status = run(Command::new(ADMIN).args(["--json", "status", "--user", USER]));
    assert!(
        status
            .replace(char::is_whitespace, "")
            .contains("\"enrolled\":true"),
        "{status}"
    );
    assert!(fs::read_to_string(COMMON_AUTH)
        .unwrap()
        .contains("pam_totp.so"));
    let sshd = Sshd::start(work);
    // The step after the one used above: the earlier code would be a replay.
    let after_upgrade = sshd.login(work, USER, PASSWORD, Some(&code(SECRET, 30)));
    assert_logged_in(&after_upgrade, true, "after the upgrade");
    drop(sshd);

    dpkg(&["-r", DEB_PACKAGE]);
    assert_eq!(
        fs::read_to_string(COMMON_AUTH).unwrap(),
        auth_before,
        "dpkg -r left common-auth changed"
    );
    assert_eq!(
        fs::read_to_string(COMMON_ACCOUNT).unwrap(),
        account_before,
        "dpkg -r left common-account changed"
    );
    assert!(!strs(DEB_MODULE).exists() && !strs(ADMIN).exists());
    assert!(
        strs(CONFIG).exists() && strs(STORE).exists(),
        "remove keeps config and store"
    );

    dpkg(&["-P", DEB_PACKAGE]);
    assert!(!strs("/etc/pam_totp").exists(), "purge removes the config");
    assert!(!strs(STATE_DIR).exists(), "purge removes the store");
    assert!(!deb_installed(DEB_PACKAGE));
    assert_eq!(fs::read_to_string(COMMON_AUTH).unwrap(), auth_before);
}

/// The same .deb with a higher version, to install as an upgrade.
fn next_version(deb: &Path, work: &Path) -> PathBuf {
    let tree = work.join("next");
    run(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree));
    let control_path = tree.join("DEBIAN/control");
    let control = fs::read_to_string(&control_path).unwrap();
    let control: String = control
        .lines()
        .map(|l| match l.strip_prefix("Version: ") {
            Some(v) => format!("Version: {v}+next\n"),
            None => format!("{l}\n"),
        })
        .collect();
    fs::write(&control_path, control).unwrap();
    let next = work.join("next.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-b"])
        .arg(&tree)
        .arg(&next));
    next
}

/// `rpm -qp` per file: path to (mode, flags, user, group).
fn rpm_files(rpm: &Path) -> BTreeMap<String, (u32, String, String, String)> {
    let format = "[%{FILENAMES}\\t%{FILEMODES:octal}\\t%{FILEFLAGS:fflags}\\t%{FILEUSERNAME}\\t%{FILEGROUPNAME}\\n]";
    run(Command::new("rpm").args(["-qp", "--qf", format]).arg(rpm))
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let mode = u32::from_str_radix(f[1], 8).unwrap() & 0o7777;
            (
                f[0].to_string(),
                (mode, f[2].to_string(), f[3].to_string(), f[4].to_string()),
            )
        })
        .collect()
}

#[test]
fn rpm_file_list_modes_config_flags_and_scripts() {
    let rpm = &packages().rpm;
    let name = run(Command::new("rpm")
        .args(["-qp", "--qf", "%{NAME}"])
        .arg(rpm));
    assert_eq!(name, RPM_PACKAGE);
    // The licences of everything inside (packaging/gen-copyright.sh), SQLite's included.
    let license = run(Command::new("rpm")
        .args(["-qp", "--qf", "%{LICENSE}"])
        .arg(rpm));
    for term in [
        "(Apache-2.0 OR MIT)",
        "blessing",
        "BSD-3-Clause",
        "Unicode-3.0",
    ] {
        assert!(license.contains(term), "{term} missing from {license}");
    }

    let files = rpm_files(rpm);
    let expect = |path: &str, mode: u32, config: bool| match files.get(path) {
        Some((m, flags, user, group)) => {
            assert_eq!(*m, mode, "{path}: mode {m:o}");
            assert_eq!((user.as_str(), group.as_str()), ("root", "root"), "{path}");
            if config {
                assert!(
                    flags.contains('c') && flags.contains('n'),
                    "{path}: flags {flags}"
                );
            } else {
                assert!(!flags.contains('c'), "{path}: flags {flags}");
            }
        }
        None => panic!("{path} is not in the .rpm: {files:#?}"),
    };
    expect(RPM_MODULE, 0o755, false);
    expect(ADMIN, 0o4755, false);
    expect(CONFIG, 0o600, true);
    expect("/etc/pam.d/totp-admin", 0o644, true);
    expect("/usr/share/man/man8/pam_totp.8", 0o644, false);
    expect("/usr/share/man/man8/totp-admin.8", 0o644, false);
    expect("/usr/share/man/man5/pam_totp.conf.5", 0o644, false);
    expect("/usr/share/doc/pam_totp/README.md", 0o644, false);
    expect("/usr/share/licenses/pam_totp/copyright", 0o644, false);
    expect(
        "/usr/share/licenses/pam_totp/LICENSE-Apache-2.0",
        0o644,
        false,
    );
    expect("/usr/share/doc/pam_totp/NEWS", 0o644, false);
    expect(
        "/usr/share/bash-completion/completions/totp-admin",
        0o644,
        false,
    );
    assert!(
        !files.keys().any(|p| p.contains("pam-configs")),
        "pam-auth-update exists only on Debian"
    );
    // The RHEL family's own: the SELinux policy module (and its interface, for other
    // modules) and the authselect vendor profile.
    expect(SELINUX_MODULE, 0o644, false);
    expect(
        "/usr/share/selinux/devel/include/distributed/pam_totp.if",
        0o644,
        false,
    );
    for name in AUTHSELECT_FILES {
        expect(&format!("{AUTHSELECT_PROFILE}/{name}"), 0o644, false);
    }

    let scripts = run(Command::new("rpm").args(["-qp", "--scripts"]).arg(rpm));
    let section = |title: &str| -> String {
        let start = scripts
            .find(title)
            .unwrap_or_else(|| panic!("no {title}:\n{scripts}"));
        let rest = &scripts[start + title.len()..];
        let end = rest.find(" scriptlet").unwrap_or(rest.len());
        rest[..end].to_string()
    };
    let post = section("postinstall scriptlet");
    assert!(post.contains("-m 0700 /var/lib/pam_totp"), "{post}");
    assert!(post.contains("/usr/bin/totp-admin store init"), "{post}");
    let postun = section("postuninstall scriptlet");
    assert!(
        postun.contains("if [ \"$1\" = 0 ]") && postun.contains("rm -rf /var/lib/pam_totp"),
        "{postun}"
    );
    assert!(
        post.contains("selinuxenabled")
            && post.contains("semodule -X 200 -i /usr/share/selinux/packages/pam_totp.pp")
            && post.contains("restorecon -R /etc/pam_totp /var/lib/pam_totp /usr/bin/totp-admin"),
        "{post}"
    );
    assert!(postun.contains("semodule -X 200 -r pam_totp"), "{postun}");

    // glibc symbol versions beyond RHEL 9's would make the package uninstallable there.
    let requires = run(Command::new("rpm").arg("-qpR").arg(rpm));
    for line in requires.lines() {
        if let Some(rest) = line.split("(GLIBC_").nth(1) {
            let version = rest.split(')').next().unwrap();
            let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap());
            let found = (parts.next().unwrap(), parts.next().unwrap_or(0));
            assert!(found <= RHEL_GLIBC, "{line} is newer than RHEL 9's glibc");
        }
    }
}

/// An RPM root with the commands the scriptlets call.
fn scriptlet_root() -> RpmRoot {
    let root = RpmRoot::new(&[
        "/usr/bin/install",
        "/usr/bin/grep",
        "/usr/bin/rm",
        "/usr/bin/rmdir",
    ]);
    // totp-admin arrives with the package; its libraries come from the host.
    root.copy_libraries_of(&release_dir().join("totp-admin"));
    root
}

#[test]
fn rpm_installs_upgrades_and_erases_in_a_throwaway_root() {
    require_root();
    let rpm = &packages().rpm;
    // The same package with a higher release, to install as an upgrade.
    let next_dir = TempDir::new("rpm-next");
    run(Command::new("cargo")
        .args(["generate-rpm", "-p", "pam_totp", "-s", "release = \"2\""])
        .arg("--target-dir")
        .arg(target_dir())
        .arg("--output")
        .arg(next_dir.path())
        .current_dir(workspace()));
    let next = fs::read_dir(next_dir.path())
        .unwrap()
        .next()
        .expect("the upgrade .rpm")
        .unwrap()
        .path();

    in_throwaway_system(|| {
        let root = scriptlet_root();
        let at = |path: &str| root.path().join(path.trim_start_matches('/'));

        run(root.rpm().args(["-ivh", "--nodeps"]).arg(rpm));
        assert_eq!(mode(&at(ADMIN)), 0o4755);
        assert_eq!(mode(&at(CONFIG)), 0o600);
        assert!(at(RPM_MODULE).is_file());
        assert_eq!(
            mode(&at(STATE_DIR)),
            0o700,
            "%post makes the state directory"
        );
        assert_eq!(mode(&at(STORE)), 0o600, "%post creates the store");

        let changed = format!(
            "{}\n# changed on this host\n",
            fs::read_to_string(at(CONFIG)).unwrap()
        );
        fs::write(at(CONFIG), &changed).unwrap();
        let store = fs::metadata(at(STORE)).unwrap().ino();
        run(root.rpm().args(["-Uvh", "--nodeps"]).arg(&next));
        let version = run(root.rpm().args(["-q", "--qf", "%{RELEASE}", RPM_PACKAGE]));
        assert_eq!(version, "2");
        assert_eq!(fs::read_to_string(at(CONFIG)).unwrap(), changed);
        assert_eq!(
            fs::metadata(at(STORE)).unwrap().ino(),
            store,
            "an upgrade keeps the store"
        );

        run(root.rpm().args(["-e", "--nodeps", RPM_PACKAGE]));
        assert!(!at(ADMIN).exists() && !at(RPM_MODULE).exists());
        assert!(!at(STATE_DIR).exists(), "an erase removes the store");
        assert_eq!(
            fs::read_to_string(at("/etc/pam_totp/config.toml.rpmsave")).unwrap(),
            changed,
            "an erase keeps a changed config as .rpmsave"
        );
    });
}

/// Stands in for a command of SELinux's in an RPM root: records its arguments.
fn selinux_stub(root: &RpmRoot, name: &str, status: u8) {
    let path = root.path().join("usr/sbin").join(name);
    std::fs::write(
        &path,
        format!("#!/bin/sh\necho \"{name} $*\" >> /selinux-calls\nexit {status}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// The .rpm where SELinux is enabled (stand-ins for selinuxenabled, semodule and
/// restorecon record how they are called), disabled (selinuxenabled says no), and
/// absent (no such commands: the other install test): the module goes in and the
/// paths are relabelled only in the first case, and an erase takes it out.
#[test]
fn rpm_installs_the_selinux_module_only_where_selinux_is_enabled() {
    require_root();
    let rpm = &packages().rpm;
    in_throwaway_system(|| {
        for enabled in [true, false] {
            let root = scriptlet_root();
            selinux_stub(&root, "selinuxenabled", if enabled { 0 } else { 1 });
            selinux_stub(&root, "semodule", 0);
            selinux_stub(&root, "restorecon", 0);
            let calls =
                || fs::read_to_string(root.path().join("selinux-calls")).unwrap_or_default();
            let install = run(root.rpm().args(["-ivh", "--nodeps"]).arg(rpm));
            assert!(!install.contains("WARNING"), "{install}");
            assert!(root
                .path()
                .join(SELINUX_MODULE.trim_start_matches('/'))
                .is_file());
            let expected = if enabled {
                format!(
                    "selinuxenabled \nsemodule -X 200 -i {SELINUX_MODULE}\n\
                     restorecon -R /etc/pam_totp /var/lib/pam_totp /usr/bin/totp-admin\n"
                )
            } else {
                "selinuxenabled \n".to_string()
            };
            assert_eq!(calls(), expected, "enabled: {enabled}");
            assert_eq!(
                mode(&root.path().join(STORE.trim_start_matches('/'))),
                0o600
            );

            run(root.rpm().args(["-e", "--nodeps", RPM_PACKAGE]));
            let erased = if enabled {
                format!("{expected}selinuxenabled \nsemodule -X 200 -r pam_totp\n")
            } else {
                format!("{expected}selinuxenabled \n")
            };
            assert_eq!(calls(), erased, "enabled: {enabled}");
        }
    });
}

/// The PostgreSQL flavour's .deb: the files of pam-totp (its doc directory named after
/// it, and FLEET.md added) with the module and totp-admin of the PostgreSQL build, in
/// place of pam-totp.
#[test]
fn pg_deb_contents_relations_and_module() {
    let packages = packages();
    let deb = &packages.pg_deb;
    let field = |name: &str| {
        run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name))
            .trim()
            .to_string()
    };
    assert_eq!(field("Package"), PG_DEB_PACKAGE);
    for relation in ["Conflicts", "Replaces", "Provides"] {
        assert_eq!(field(relation), DEB_PACKAGE, "{relation}");
    }
    assert_depends_only_on_the_base_system(deb);

    let (plain_doc, pg_doc) = (
        format!("/usr/share/doc/{DEB_PACKAGE}/"),
        format!("/usr/share/doc/{PG_DEB_PACKAGE}/"),
    );
    // The doc directory and the lintian overrides are named after the package.
    let overrides = "/usr/share/lintian/overrides/";
    let renamed = |path: String| {
        if path == format!("{overrides}{DEB_PACKAGE}") {
            format!("{overrides}{PG_DEB_PACKAGE}")
        } else {
            path.replace(&plain_doc, &pg_doc)
        }
    };
    let mut expected: BTreeMap<String, (String, String)> = deb_listing(&packages.deb)
        .into_iter()
        .map(|(path, meta)| (renamed(path), meta))
        .collect();
    expected.insert(
        format!("{pg_doc}FLEET.md"),
        ("-rw-r--r--".into(), "0/0".into()),
    );
    assert_eq!(deb_listing(deb), expected);

    // The same conffiles and maintainer scripts.
    let control = |deb: &Path| {
        let dir = TempDir::new("deb-control");
        run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(dir.path()));
        ["conffiles", "postinst", "prerm", "postrm"]
            .map(|f| fs::read_to_string(dir.path().join(f)).unwrap())
    };
    assert_eq!(control(deb), control(&packages.deb));

    let unpacked = TempDir::new("pg-deb-unpacked");
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(unpacked.path()));
    let module = unpacked.path().join(DEB_MODULE.trim_start_matches('/'));
    assert_module_exports_only_pam_entry_points(&module, MAX_PG_MODULE_SIZE);
    assert!(has_postgresql_store(&module), "not the PostgreSQL build");
    assert!(!has_postgresql_store(&release_dir().join("libpam_totp.so")));
    let admin = fs::read(unpacked.path().join(ADMIN.trim_start_matches('/'))).unwrap();
    let needle = b"pg_advisory_xact_lock";
    assert!(
        admin.windows(needle.len()).any(|w| w == needle),
        "totp-admin without store init for PostgreSQL"
    );
}

/// The PostgreSQL flavour's .rpm: the files and scriptlets of pam_totp (doc and licence
/// directories named after it, FLEET.md added), the PostgreSQL build's module.
#[test]
fn pg_rpm_file_list_relations_and_module() {
    let packages = packages();
    let rpm = &packages.pg_rpm;
    let query = |rpm: &Path, args: &[&str]| run(Command::new("rpm").arg("-qp").args(args).arg(rpm));
    assert_eq!(query(rpm, &["--qf", "%{NAME}"]), PG_RPM_PACKAGE);
    assert_eq!(query(rpm, &["--conflicts"]).trim(), RPM_PACKAGE);
    assert!(
        query(rpm, &["--provides"])
            .lines()
            .any(|l| l == RPM_PACKAGE),
        "it provides {RPM_PACKAGE}"
    );

    // The doc and licence directories are named after the package; /etc/pam_totp is not.
    let renamed = |path: String| {
        ["/usr/share/doc/", "/usr/share/licenses/"]
            .iter()
            .fold(path, |path, dir| {
                path.replace(
                    &format!("{dir}{RPM_PACKAGE}/"),
                    &format!("{dir}{PG_RPM_PACKAGE}/"),
                )
            })
    };
    let mut expected: BTreeMap<_, _> = rpm_files(&packages.rpm)
        .into_iter()
        .map(|(path, meta)| (renamed(path), meta))
        .collect();
    expected.insert(
        format!("/usr/share/doc/{PG_RPM_PACKAGE}/FLEET.md"),
        (0o644, "d".into(), "root".into(), "root".into()),
    );
    assert_eq!(rpm_files(rpm), expected);
    assert_eq!(
        query(rpm, &["--scripts"]),
        query(&packages.rpm, &["--scripts"])
    );

    // The packaged module is the PostgreSQL build's, which exports only the entry points.
    let built = pg_release_dir().join("libpam_totp.so");
    let digests = query(rpm, &["--qf", "[%{FILENAMES} %{FILEDIGESTS}\\n]"]);
    let packaged = digests
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{RPM_MODULE} ")))
        .expect("the module in the .rpm");
    assert_eq!(packaged, checksum(&built), "{}", built.display());
    assert_module_exports_only_pam_entry_points(&built, MAX_PG_MODULE_SIZE);
    assert!(has_postgresql_store(&built));
}

/// Installing pam-totp-postgresql over pam-totp: pam-totp goes, the module stays in the
/// PAM stacks, and the config and the store (with its enrollments) stay; purging
/// pam-totp's leftovers later takes nothing from the new flavour.
#[test]
fn deb_postgresql_flavour_takes_the_place_of_pam_totp() {
    require_root();
    let packages = packages();
    let before = host_state();
    in_throwaway_system(|| {
        for package in [PG_DEB_PACKAGE, DEB_PACKAGE] {
            if deb_installed(package) {
                dpkg(&["--purge", package]);
            }
        }
        let auth_before = fs::read_to_string(COMMON_AUTH).unwrap();
        dpkg(&["-i", packages.deb.to_str().unwrap()]);
        pam_auth_update(&["--enable", "totp"]);
        let auth_enabled = fs::read_to_string(COMMON_AUTH).unwrap();
        add_user(USER, PASSWORD);
        run_with_input(
            Command::new(ADMIN).args(["enroll", "--user", USER, "--secret-stdin"]),
            &format!("{SECRET}\n"),
        );
        let config = fs::read_to_string(CONFIG).unwrap();

        dpkg(&["-i", packages.pg_deb.to_str().unwrap()]);
        assert!(deb_installed(PG_DEB_PACKAGE) && !deb_installed(DEB_PACKAGE));
        assert!(has_postgresql_store(strs(DEB_MODULE)));
        assert_eq!(
            fs::read_to_string(COMMON_AUTH).unwrap(),
            auth_enabled,
            "the switch took pam_totp out of common-auth"
        );
        assert_eq!(fs::read_to_string(CONFIG).unwrap(), config);
        let enrolled = || {
            run(Command::new(ADMIN).args(["--json", "status", "--user", USER]))
                .replace(char::is_whitespace, "")
                .contains("\"enrolled\":true")
        };
        assert!(enrolled(), "the store went with pam-totp");

        // Whatever dpkg kept of pam-totp, purging it leaves the new flavour's files.
        let _ = output(Command::new("dpkg").args(["--purge", DEB_PACKAGE]));
        assert!(strs(STORE).exists() && strs(CONFIG).exists());
        assert!(enrolled());

        dpkg(&["-P", PG_DEB_PACKAGE]);
        assert_eq!(fs::read_to_string(COMMON_AUTH).unwrap(), auth_before);
        assert!(!strs(STATE_DIR).exists());
    });
    assert_eq!(host_state(), before, "the host's files changed");
}
