//! `doctor`: checks what a working setup needs and says what to change. Exit 0 when
//! all is well, 1 when something must be fixed.

use super::Ctx;
use crate::accounts::{
    has_authorized_key, login_accounts, shadow_passwords, DEFAULT_AUTHORIZED_KEYS,
};
use crate::error::{Error, Result};
use crate::output::{emit, emit_json, escaped};
use pam_totp::config::{Backend, Config, SslMode, StoreConfig};
use pam_totp::stack::{pam_rules, PamRule};
use pam_totp::store::{SqliteStore, StoreError, PG_SCHEMA_VERSION};
use serde_json::json;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const PAM_DIR: &str = "/etc/pam.d";
const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";
/// The services a second factor usually guards.
const SERVICES: [&str; 3] = ["sshd", "login", "sudo"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Works, but worth knowing; does not fail the run.
    Warn,
    /// Must be fixed.
    Fail,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub check: String,
    pub level: Level,
    pub message: String,
    /// What to change; empty when nothing.
    pub fix: String,
}

fn finding(
    check: &str,
    level: Level,
    message: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        check: check.to_string(),
        level,
        message: message.into(),
        fix: fix.into(),
    }
}

/// `doctor` (root).
pub fn run(ctx: &Ctx) -> Result<()> {
    ctx.caller.require_root("doctor")?;
    let mut findings = Vec::new();
    let config = check_config(&ctx.config_path, &mut findings);
    if let Some(config) = &config {
        findings.extend(check_groups(config));
        match config.store.backend {
            Backend::Sqlite => check_store(&config.store.path, &config.store.key, &mut findings),
            Backend::Postgresql => check_pg_store(config, &mut findings),
        }
        check_store_key(&config.store.key, &mut findings);
    }
    findings.extend(check_pam(Path::new(PAM_DIR), config.as_ref()));
    findings.extend(check_sshd(Path::new(SSHD_CONFIG)));
    if Path::new(SSHD_CONFIG).exists() {
        findings.extend(check_lockouts(Path::new(PAM_DIR)));
    }
    findings.push(check_clock());
    let failures = findings.iter().filter(|f| f.level == Level::Fail).count();
    if ctx.json {
        let list: Vec<_> = findings
            .iter()
            .map(|f| {
                json!({
                    "check": f.check,
                    "status": match f.level { Level::Ok => "ok", Level::Warn => "warn", Level::Fail => "fail" },
                    "message": f.message,
                    "fix": f.fix,
                })
            })
            .collect();
        emit_json(&json!({ "ok": failures == 0, "findings": list }))?;
    } else {
        let mut text = String::new();
        for f in &findings {
            let tag = match f.level {
                Level::Ok => "ok  ",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            // Messages quote files, paths and configured strings: escaped.
            text.push_str(&format!(
                "{tag}  {:<8} {}\n",
                escaped(&f.check),
                escaped(&f.message)
            ));
            if !f.fix.is_empty() {
                text.push_str(&format!("      {:<8} fix: {}\n", "", escaped(&f.fix)));
            }
        }
        emit(&text)?;
    }
    if failures > 0 {
        return Err(Error::failed(format!(
            "doctor: {failures} problem{} to fix",
            if failures == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}

fn check_config(path: &Path, findings: &mut Vec<Finding>) -> Option<Config> {
    match Config::load(path) {
        Ok(config) => {
            let mode = std::fs::metadata(path)
                .map(|m| m.mode() & 0o7777)
                .unwrap_or(0);
            findings.push(finding(
                "config",
                Level::Ok,
                format!("{}: valid, owned by root, mode {mode:04o}", path.display()),
                "",
            ));
            if mode & 0o044 != 0 {
                findings.push(finding(
                    "config",
                    Level::Warn,
                    format!(
                        "{} is readable by others (it lists exempt groups and networks)",
                        path.display()
                    ),
                    format!("chmod 600 {}", path.display()),
                ));
            }
            Some(config)
        }
        Err(e) => {
            let fix = match &e {
                pam_totp::config::ConfigError::Missing(_) => {
                    "install the package's config.toml (see pam_totp.conf(5))".to_string()
                }
                pam_totp::config::ConfigError::Insecure(p, _) => {
                    format!("chown root:root {0} && chmod 600 {0}", p.display())
                }
                _ => "correct the file; pam_totp.conf(5) lists every key".to_string(),
            };
            findings.push(finding(
                "config",
                Level::Fail,
                format!("{e}: enrolled and mandatory users cannot log in"),
                fix,
            ));
            None
        }
    }
}

/// Every group the policy names must resolve: a mandatory group that resolves nowhere
/// (a typo, a directory that is down) makes nobody mandatory, and one whose lookup
/// fails refuses every login that asks about it.
fn check_groups(config: &Config) -> Vec<Finding> {
    let policy = &config.policy;
    let named = policy
        .mandatory_groups
        .iter()
        .map(|g| ("mandatory_groups", g))
        .chain(policy.exempt_groups.iter().map(|g| ("exempt_groups", g)));
    let mut findings = Vec::new();
    for (key, group) in named {
        // Debug form: quoted, control characters escaped.
        let shown = format!("{group:?}");
        match pam_totp::account::lookup_group(group) {
            Ok(Some(_)) => {}
            Ok(None) => findings.push(finding(
                "groups",
                Level::Fail,
                format!("policy.{key} names group {shown}, which resolves nowhere (NSS knows no such group)"),
                format!("create the group, or correct policy.{key}"),
            )),
            Err(e) => findings.push(finding(
                "groups",
                Level::Fail,
                format!(
                    "policy.{key} names group {shown}, which cannot be looked up ({}): every login that asks about it is refused",
                    e.to_string().escape_debug()
                ),
                "check the directory service (sssd, winbind, LDAP) and /etc/nsswitch.conf",
            )),
        }
    }
    if findings.is_empty()
        && (!policy.mandatory_groups.is_empty() || !policy.exempt_groups.is_empty())
    {
        findings.push(finding(
            "groups",
            Level::Ok,
            "every group the policy names resolves",
            "",
        ));
    }
    findings
}

/// The host key that seals the factors' keys: a login of an enrolled user needs it.
fn check_store_key(key: &Path, findings: &mut Vec<Finding>) {
    if let Err(e) = pam_totp::store::seal::HostKey::load(key) {
        findings.push(finding(
            "store key",
            Level::Fail,
            format!("{e}: enrolled users cannot log in"),
            format!(
                "restore {0} from a backup (root's, chmod 400); if it is lost, reset every user",
                key.display()
            ),
        ));
    }
}

fn check_store(path: &Path, key: &Path, findings: &mut Vec<Finding>) {
    match SqliteStore::open_for_reading(path, key) {
        Ok(store) => match store.integrity_check() {
            Ok(()) => findings.push(finding(
                "store",
                Level::Ok,
                format!(
                    "{}: root's alone, schema current, integrity ok",
                    path.display()
                ),
                "",
            )),
            Err(e) => findings.push(finding(
                "store",
                Level::Fail,
                e.to_string(),
                "restore the store from a backup, or move it away and re-enroll the users",
            )),
        },
        Err(e) => {
            let fix = match &e {
                StoreError::Missing(_) | StoreError::Schema { .. } => {
                    "run totp-admin store init".to_string()
                }
                StoreError::Insecure(..) => {
                    let dir = path.parent().unwrap_or(Path::new("/"));
                    format!(
                        "make it root's alone: chown root:root {0} {1} && chmod 700 {0} && chmod 600 {1} \
                         (and replace a symbolic link by the real file)",
                        dir.display(),
                        path.display()
                    )
                }
                _ => "check the disk and the file; restore it from a backup if it is damaged"
                    .to_string(),
            };
            findings.push(finding("store", Level::Fail, e.to_string(), fix));
        }
    }
}

/// `backend = "postgresql"`: the files the module reads (password, CA), the TLS setting,
/// then one session made as a login makes it (the config's role, TLS and deadline),
/// which reads the schema version.
fn check_pg_store(config: &Config, findings: &mut Vec<Finding>) {
    let store = &config.store;
    findings.extend(pg_file_findings(store));
    let server = pg_server(store);
    let started = std::time::Instant::now();
    let result = pam_totp::store::postgresql_schema_version(config);
    let ms = started.elapsed().as_millis();
    let tls = match store.sslmode {
        SslMode::VerifyFull => "TLS verified against sslrootcert",
        SslMode::Disable => "no TLS",
    };
    let what = format!("{server}, database {:?} as {:?}", store.dbname, store.user);
    let connection = match result {
        Ok(PG_SCHEMA_VERSION) => finding(
            "store",
            Level::Ok,
            format!("{what}: connected ({tls}) in {ms} ms, schema version {PG_SCHEMA_VERSION}"),
            "",
        ),
        Ok(0) => finding(
            "store",
            Level::Fail,
            format!("{what}: connected, but the database has no pam_totp schema"),
            "run totp-admin store init --login-role ROLE with the administrators' config (docs/FLEET.md)",
        ),
        Ok(found) if found > PG_SCHEMA_VERSION => finding(
            "store",
            Level::Fail,
            format!("{what}: schema version {found}, newer than this version's {PG_SCHEMA_VERSION}: logins fail closed"),
            "install the pam_totp version the rest of the fleet runs",
        ),
        Ok(found) => finding(
            "store",
            Level::Fail,
            format!("{what}: schema version {found}, this version uses {PG_SCHEMA_VERSION}: logins fail closed"),
            "run totp-admin store init with the administrators' config",
        ),
        Err(e) => {
            let fix = pg_fix(&e, store, &server);
            finding(
                "store",
                Level::Fail,
                format!("{e}: enrolled and mandatory users cannot log in"),
                fix,
            )
        }
    };
    findings.push(connection);
    if store.timeout.0.as_millis() > 0 && ms * 2 > store.timeout.0.as_millis() {
        findings.push(finding(
            "store",
            Level::Warn,
            format!(
                "the check took {ms} ms of the {} ms deadline: a busier server will refuse logins",
                store.timeout.0.as_millis()
            ),
            "put the server (or PgBouncer) closer, or raise store.timeout",
        ));
    }
}

/// `hostaddr:port`, or the socket directory.
fn pg_server(store: &StoreConfig) -> String {
    match store.server_addr() {
        Some(std::net::IpAddr::V6(a)) => format!("[{a}]:{}", store.port),
        Some(a) => format!("{a}:{}", store.port),
        None => format!("{}/.s.PGSQL.{}", store.host, store.port),
    }
}

/// What to change for a failed PostgreSQL session, from the error it gave.
fn pg_fix(e: &StoreError, store: &StoreConfig, server: &str) -> String {
    let text = e.to_string();
    let has = |needle: &str| text.contains(needle);
    match e {
        StoreError::Unsupported(_) => {
            "install the pam-totp-postgresql (deb) or pam_totp-postgresql (rpm) package".into()
        }
        StoreError::Insecure(..) => {
            "make the file root's and not writable by others (see the findings above)".into()
        }
        _ if has("no answer within") => format!(
            "nothing answered at {server} within store.timeout: check that the server runs and              listens there (listen_addresses, port) and that no firewall drops the packets"
        ),
        _ if has("Connection refused") => format!(
            "no server listens at {server}: check store.hostaddr and store.port, and the              server's listen_addresses and port"
        ),
        _ if has("(28P01)") || has("password authentication failed") => format!(
            "the server refused the password of role {:?}: put its password on one line into              store.password_file",
            store.user
        ),
        _ if has("(28000)") || has("pg_hba") => format!(
            "let the role in, in the server's pg_hba.conf: hostssl {} {} <this host's address>/32 scram-sha-256",
            store.dbname, store.user
        ),
        _ if has("(3D000)") => format!("create the database {:?} (docs/FLEET.md)", store.dbname),
        _ if has("(42501)") || has("permission denied") => format!(
            "grant the role what a login needs: totp-admin store init --login-role {}",
            store.user
        ),
        _ if has("certificate") || has("UnknownIssuer") || has("NotValidForName") || has("TLS") => format!(
            "store.sslrootcert must be the CA that signed the server's certificate, and that              certificate must name store.host = {:?}",
            store.host
        ),
        _ => "check the server's log; docs/FLEET.md describes the setup".into(),
    }
}

/// The password file and CA a login reads, and the TLS setting.
fn pg_file_findings(store: &StoreConfig) -> Vec<Finding> {
    let mut findings = Vec::new();
    match &store.password_file {
        None => findings.push(finding(
            "store",
            Level::Warn,
            "no store.password_file: the server must let the module's role in without a password",
            "",
        )),
        Some(path) => {
            let fix = format!("chown root:root {0} && chmod 600 {0}", path.display());
            match std::fs::symlink_metadata(path) {
                Err(e) => findings.push(finding(
                    "store",
                    Level::Fail,
                    format!("password_file {}: {e}", path.display()),
                    format!(
                        "write the password of role {:?} on one line into {} (root's, mode 0600)",
                        store.user,
                        path.display()
                    ),
                )),
                Ok(meta) if !meta.file_type().is_file() => findings.push(finding(
                    "store",
                    Level::Fail,
                    format!("password_file {}: not a regular file (a symbolic link?)", path.display()),
                    "replace it by the file itself".to_string(),
                )),
                Ok(meta) if meta.uid() != 0 || meta.mode() & 0o077 != 0 => findings.push(finding(
                    "store",
                    Level::Fail,
                    format!(
                        "password_file {}: uid {}, mode {:04o}: the module refuses it unless it is root's with mode 0600",
                        path.display(),
                        meta.uid(),
                        meta.mode() & 0o7777
                    ),
                    fix,
                )),
                Ok(_) => findings.push(finding(
                    "store",
                    Level::Ok,
                    format!("password_file {}: root's, mode 0600", path.display()),
                    "",
                )),
            }
        }
    }
    match store.sslmode {
        SslMode::Disable if store.is_socket_dir() => {}
        SslMode::Disable => findings.push(finding(
            "store",
            Level::Warn,
            "sslmode = \"disable\": the password, the secrets and the replay updates cross the network in plaintext, and anything in between can answer for the server",
            "set sslmode = \"verify-full\" and sslrootcert = the CA that signed the server's certificate",
        )),
        SslMode::VerifyFull => {
            let Some(ca) = &store.sslrootcert else {
                return findings;
            };
            match std::fs::symlink_metadata(ca) {
                Err(e) => findings.push(finding(
                    "store",
                    Level::Fail,
                    format!("sslrootcert {}: {e}", ca.display()),
                    "copy the CA certificate that signed the server's certificate there (PEM)",
                )),
                Ok(meta) if meta.uid() != 0 || meta.mode() & 0o022 != 0 || !meta.file_type().is_file() => {
                    findings.push(finding(
                        "store",
                        Level::Fail,
                        format!(
                            "sslrootcert {}: must be a regular file, root's, not writable by others (uid {}, mode {:04o}): it decides which server is trusted with the secrets",
                            ca.display(),
                            meta.uid(),
                            meta.mode() & 0o7777
                        ),
                        format!("chown root:root {0} && chmod 644 {0}", ca.display()),
                    ))
                }
                Ok(_) => {}
            }
        }
    }
    findings
}

/// The authselect vendor profile the RHEL package ships, and its feature.
const AUTHSELECT_PROFILE: &str = "totp";
const AUTHSELECT_FEATURE: &str = "with-totp";

/// authselect's state where it writes the PAM stacks (RHEL, Fedora, Rocky, Alma): a
/// hand edit of system-auth or password-auth is overwritten on its next run.
#[derive(Debug, PartialEq, Eq)]
struct Authselect {
    /// The selected profile (`sssd`, `local`, `totp`, `custom/NAME`), when known.
    profile: Option<String>,
    features: Vec<String>,
}

/// Whether authselect manages the stacks in `pam_dir`: its `authselect.conf` beside
/// `pam_dir` (`/etc/authselect/`), or the header it writes into system-auth.
fn authselect_state(pam_dir: &Path) -> Option<Authselect> {
    let etc = pam_dir.parent().unwrap_or(Path::new("/etc"));
    if let Ok(text) = std::fs::read_to_string(etc.join("authselect/authselect.conf")) {
        let mut words = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let profile = words.next().map(str::to_string);
        return Some(Authselect {
            profile,
            features: words.map(str::to_string).collect(),
        });
    }
    let header = std::fs::read_to_string(pam_dir.join("system-auth")).ok()?;
    header
        .lines()
        .take(5)
        .any(|l| l.starts_with("# Generated by authselect"))
        .then_some(Authselect {
            profile: None,
            features: Vec::new(),
        })
}

/// What to run so that authselect writes pam_totp into system-auth and password-auth.
fn authselect_fix(state: &Authselect) -> String {
    if state.profile.as_deref() == Some(AUTHSELECT_PROFILE) {
        return format!(
            "authselect enable-feature {AUTHSELECT_FEATURE}, then authselect check \
             (the stacks are authselect's: a hand edit is overwritten)"
        );
    }
    let keep: String = state
        .features
        .iter()
        .filter(|f| *f != AUTHSELECT_FEATURE)
        .map(|f| format!(" {f}"))
        .collect();
    let from = state
        .profile
        .as_deref()
        .map(|p| format!(" in place of {p}"))
        .unwrap_or_default();
    format!(
        "authselect select {AUTHSELECT_PROFILE} {AUTHSELECT_FEATURE}{keep}{from}, then \
         authselect check (profile {AUTHSELECT_PROFILE}, from the pam_totp package, is \
         authselect's local profile with pam_totp; the stacks are authselect's: a hand \
         edit is overwritten)"
    )
}

/// The PAM stacks of sshd, login and sudo.
fn check_pam(pam_dir: &Path, config: Option<&Config>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let enroll_at_login = config.is_some_and(|c| c.policy.enroll_at_login);
    let authselect = authselect_state(pam_dir);
    // Under authselect every fix of a stack is the same command.
    let fix = |hand: String| match &authselect {
        Some(state) => authselect_fix(state),
        None => hand,
    };
    for service in SERVICES {
        let check = format!("pam {service}");
        let file = pam_dir.join(service);
        if !file.exists() {
            findings.push(finding(
                &check,
                Level::Warn,
                format!("{} does not exist: not checked", file.display()),
                "",
            ));
            continue;
        }
        let rules = match pam_rules(pam_dir, service, 0) {
            Ok(r) => r,
            Err(why) => {
                findings.push(finding(
                    &check,
                    Level::Fail,
                    why,
                    "correct the PAM configuration",
                ));
                continue;
            }
        };
        let auth: Vec<&PamRule> = rules.iter().filter(|r| r.kind == "auth").collect();
        let Some(totp) = auth.iter().find(|r| r.is_totp()) else {
            findings.push(finding(
                &check,
                Level::Fail,
                format!("pam_totp is not in the auth stack of {}", file.display()),
                fix(format!(
                    "add \"auth required pam_totp.so\" after the password module (@include common-auth) in {}, \
                     or run pam-auth-update --enable totp",
                    file.display()
                )),
            ));
            continue;
        };
        let mut ok = true;
        if matches!(totp.control.as_str(), "optional" | "sufficient") {
            ok = false;
            findings.push(finding(
                &check,
                Level::Fail,
                format!(
                    "pam_totp is \"{}\" in {}: a wrong code does not stop the login",
                    totp.control,
                    totp.file.display()
                ),
                fix(format!(
                    "make it \"auth required pam_totp.so\" in {}",
                    totp.file.display()
                )),
            ));
        }
        if enroll_at_login && !rules.iter().any(|r| r.kind == "account" && r.is_totp()) {
            ok = false;
            findings.push(finding(
                &check,
                Level::Fail,
                "enroll_at_login is on, but pam_totp is not in the account stack: enrollments at login are never stored",
                fix(format!("add \"account required pam_totp.so\" to {}", file.display())),
            ));
        }
        if ok {
            findings.push(finding(
                &check,
                Level::Ok,
                format!(
                    "pam_totp is in the auth stack ({} in {})",
                    totp.control,
                    totp.file.display()
                ),
                "",
            ));
        }
    }
    findings
}

/// sshd's settings as sshd reads them: the first value of a keyword wins, `Include`
/// is followed, and `Match` blocks (which apply to some logins only) end the scan.
fn sshd_settings(path: &Path) -> std::result::Result<HashMap<String, String>, String> {
    let mut settings = HashMap::new();
    read_sshd_file(path, &mut settings, 0)?;
    Ok(settings)
}

/// Returns `false` once a `Match` line is met.
fn read_sshd_file(
    path: &Path,
    settings: &mut HashMap<String, String>,
    depth: u32,
) -> std::result::Result<bool, String> {
    if depth > 8 {
        return Err("sshd_config: Include nests too deep".into());
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once(|c: char| c.is_whitespace() || c == '=') {
            Some((k, v)) => (
                k,
                v.trim_start_matches(|c: char| c.is_whitespace() || c == '=')
                    .trim(),
            ),
            None => (line, ""),
        };
        let key = key.to_ascii_lowercase();
        match key.as_str() {
            "match" => return Ok(false),
            "include" => {
                for pattern in value.split_whitespace() {
                    for file in expand_glob(&Path::new("/etc/ssh").join(pattern)) {
                        if !read_sshd_file(&file, settings, depth + 1)? {
                            return Ok(false);
                        }
                    }
                }
            }
            _ => {
                settings.entry(key).or_insert_with(|| value.to_string());
            }
        }
    }
    Ok(true)
}

/// The files a `dir/prefix*suffix` pattern names, sorted; a plain path as itself.
fn expand_glob(pattern: &Path) -> Vec<PathBuf> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((prefix, suffix)) = name.split_once('*') else {
        return if pattern.exists() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        };
    };
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.len() >= prefix.len() + suffix.len() && n.starts_with(prefix) && n.ends_with(suffix)
        })
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

fn check_sshd(path: &Path) -> Vec<Finding> {
    if !path.exists() {
        return vec![finding(
            "sshd",
            Level::Warn,
            format!("{} does not exist: not checked", path.display()),
            "",
        )];
    }
    let settings = match sshd_settings(path) {
        Ok(s) => s,
        Err(why) => return vec![finding("sshd", Level::Fail, why, "correct sshd_config")],
    };
    sshd_findings(&settings, path)
}

fn sshd_findings(settings: &HashMap<String, String>, path: &Path) -> Vec<Finding> {
    let get = |k: &str| settings.get(k).map(|v| v.to_ascii_lowercase());
    let mut findings = Vec::new();
    let file = path.display();
    if get("usepam").as_deref() != Some("yes") {
        findings.push(finding(
            "sshd",
            Level::Fail,
            "UsePAM is not yes: sshd never asks pam_totp",
            format!("set \"UsePAM yes\" in {file}"),
        ));
    }
    let kbd =
        get("kbdinteractiveauthentication").or_else(|| get("challengeresponseauthentication"));
    if kbd.as_deref() == Some("no") {
        findings.push(finding(
            "sshd",
            Level::Fail,
            "KbdInteractiveAuthentication is no: the code prompt cannot reach the user",
            format!("set \"KbdInteractiveAuthentication yes\" in {file}"),
        ));
    }
    let pubkey = get("pubkeyauthentication").as_deref() != Some("no");
    match get("authenticationmethods").as_deref() {
        None | Some("any") if pubkey => findings.push(finding(
            "sshd",
            Level::Fail,
            "AuthenticationMethods is not set: a login with an SSH key skips the code",
            format!(
                "set \"AuthenticationMethods publickey,keyboard-interactive\" (key and code) or \
                 \"AuthenticationMethods keyboard-interactive\" (password and code) in {file}"
            ),
        )),
        None | Some("any") => {}
        Some(methods) => {
            let without: Vec<&str> = methods
                .split_whitespace()
                .filter(|list| {
                    !list
                        .split(',')
                        .any(|m| m.starts_with("keyboard-interactive"))
                })
                .collect();
            if !without.is_empty() {
                findings.push(finding(
                    "sshd",
                    Level::Fail,
                    format!("AuthenticationMethods allows {} without keyboard-interactive: those logins skip the code", without.join(" ")),
                    format!("add keyboard-interactive to every list of AuthenticationMethods in {file}"),
                ));
            }
        }
    }
    if findings.is_empty() {
        findings.push(finding(
            "sshd",
            Level::Ok,
            "UsePAM, KbdInteractiveAuthentication and AuthenticationMethods let pam_totp ask every login",
            "",
        ));
    }
    findings
}

/// What decides whether one account can log in over SSH.
#[derive(Debug, Clone, Default)]
struct AccountFacts {
    name: String,
    /// An authorized key (or keys that only an AuthorizedKeysCommand knows: `true`).
    has_key: bool,
    /// A password hash that can match (not empty, not locked with `!` or `*`);
    /// `true` when the account is not in /etc/shadow (a directory decides).
    has_password: bool,
}

/// What sshd's PAM stack asks in a keyboard-interactive step.
#[derive(Debug, Clone, Copy, Default)]
struct SshdPam {
    /// `pam_totp.so after_publickey` ends the stack after a key, trusted (no rule
    /// lets the user write the PAM environment): a key is followed by the code alone.
    code_alone_after_key: bool,
    /// A password module runs (pam_unix, pam_sss, ...).
    asks_password: bool,
}

fn sshd_pam(pam_dir: &Path) -> SshdPam {
    let Ok(rules) = pam_rules(pam_dir, "sshd", 0) else {
        return SshdPam {
            code_alone_after_key: false,
            asks_password: true,
        };
    };
    let auth: Vec<&PamRule> = rules.iter().filter(|r| r.kind == "auth").collect();
    let after_key = auth.iter().any(|r| {
        r.is_totp()
            && r.control.replace(' ', "").contains("success=done")
            && r.args
                .iter()
                .any(|a| a == "after_publickey" || a == "after_publickey=sshd")
    });
    let owned: Vec<PamRule> = auth.iter().map(|r| (*r).clone()).collect();
    SshdPam {
        code_alone_after_key: after_key && pam_totp::stack::env_writer(&owned).is_none(),
        asks_password: auth.iter().any(|r| {
            matches!(
                r.module_name(),
                "pam_unix.so" | "pam_sss.so" | "pam_ldap.so" | "pam_krb5.so" | "pam_winbind.so"
            )
        }),
    }
}

/// Why `account` cannot complete `method` within a list of AuthenticationMethods
/// (`after_key`: a public key passed earlier in the list); `None` when it can.
fn method_refused(
    account: &AccountFacts,
    method: &str,
    after_key: bool,
    sshd: &HashMap<String, String>,
    pam: SshdPam,
) -> Option<String> {
    let get = |k: &str| sshd.get(k).map(String::as_str).unwrap_or("");
    let root_login = get("permitrootlogin");
    let root = account.name == "root";
    let method = method.split(':').next().unwrap_or(method);
    match method {
        "publickey" => {
            if get("pubkeyauthentication") == "no" {
                Some("PubkeyAuthentication is no".into())
            } else if !account.has_key {
                Some("no authorized key".into())
            } else {
                None
            }
        }
        "password" => {
            if get("passwordauthentication") == "no" {
                Some("PasswordAuthentication is no".into())
            } else if root && root_login != "yes" {
                Some(format!("PermitRootLogin {root_login} refuses it for root"))
            } else if !account.has_password {
                Some("no password".into())
            } else {
                None
            }
        }
        "keyboard-interactive" => {
            if get("kbdinteractiveauthentication") == "no" {
                Some("KbdInteractiveAuthentication is no".into())
            } else if get("usepam") == "no" {
                Some("UsePAM is no".into())
            } else if root && root_login != "yes" {
                Some(format!("PermitRootLogin {root_login} refuses it for root"))
            } else if after_key && pam.code_alone_after_key {
                None
            } else if pam.asks_password && !account.has_password {
                Some("no password, which /etc/pam.d/sshd asks here".into())
            } else {
                None
            }
        }
        // hostbased, gssapi-with-mic, none: not judged here.
        _ => None,
    }
}

/// `None` when some list of AuthenticationMethods lets `account` in, else why not.
fn no_way_in(
    account: &AccountFacts,
    sshd: &HashMap<String, String>,
    pam: SshdPam,
) -> Option<String> {
    let methods = sshd
        .get("authenticationmethods")
        .map(String::as_str)
        .unwrap_or("any");
    let lists: Vec<Vec<&str>> = if methods == "any" {
        ["publickey", "password", "keyboard-interactive"]
            .into_iter()
            .map(|m| vec![m])
            .collect()
    } else {
        methods
            .split_whitespace()
            .map(|l| l.split(',').collect())
            .collect()
    };
    let mut why = Vec::new();
    for list in &lists {
        let mut after_key = false;
        let mut refused = None;
        for method in list {
            if let Some(reason) = method_refused(account, method, after_key, sshd, pam) {
                refused = Some(format!("{}: {reason}", list.join(",")));
                break;
            }
            after_key |= method.split(':').next() == Some("publickey");
        }
        match refused {
            None => return None,
            Some(r) => why.push(r),
        }
    }
    Some(why.join("; "))
}

/// sshd's effective settings for a login of `user` from an address no `Match Address`
/// names (`sshd -T -C`), keywords in lower case.
fn sshd_effective(user: &str) -> std::result::Result<HashMap<String, String>, String> {
    let sshd = ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("sshd is not installed")?;
    let out = std::process::Command::new(sshd)
        .arg("-T")
        .arg("-C")
        .arg(format!("user={user},host=unknown,addr=192.0.2.1"))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{sshd}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "sshd -T: {}",
            err.lines().next().unwrap_or("failed")
        ));
    }
    let mut settings: HashMap<String, String> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((k, v)) = line.split_once(' ') else {
            continue;
        };
        // A list (AllowUsers, DenyGroups, ...) comes one value per line.
        settings
            .entry(k.to_string())
            .and_modify(|all| {
                all.push(' ');
                all.push_str(v);
            })
            .or_insert_with(|| v.to_string());
    }
    Ok(settings)
}

/// An sshd pattern (`*`, `?`) against a whole name.
fn sshd_glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| sshd_glob(rest, &name[skip..])),
        Some((&p, rest)) => name
            .split_first()
            .is_some_and(|(&n, name)| (p == b'?' || p == n) && sshd_glob(rest, name)),
    }
}

/// Whether sshd's AllowUsers, DenyUsers, AllowGroups or DenyGroups keep `name` out
/// whatever the methods: such an account has no way in over SSH before the code either,
/// by the admin's choice. Only a sure answer counts: a pattern with a host part, a group
/// pattern with wildcards or a group NSS cannot resolve leaves the account in the check.
fn kept_out_by_sshd(name: &str, sshd: &HashMap<String, String>) -> bool {
    let list = |k: &str| -> Vec<&str> {
        sshd.get(k)
            .map(|v| v.split_whitespace().collect())
            .unwrap_or_default()
    };
    let (deny_users, allow_users) = (list("denyusers"), list("allowusers"));
    if deny_users
        .iter()
        .any(|p| !p.contains('@') && sshd_glob(p.as_bytes(), name.as_bytes()))
    {
        return true;
    }
    let user_part = |p: &&str| p.split('@').next().unwrap_or(p).to_string();
    if !allow_users.is_empty()
        && !allow_users
            .iter()
            .any(|p| sshd_glob(user_part(p).as_bytes(), name.as_bytes()))
    {
        return true;
    }
    let (deny_groups, allow_groups) = (list("denygroups"), list("allowgroups"));
    if deny_groups.is_empty() && allow_groups.is_empty() {
        return false;
    }
    let Ok(Some(account)) = pam_totp::account::lookup_user(name) else {
        return false;
    };
    let Ok(gids) = pam_totp::account::group_list(&account) else {
        return false;
    };
    // The gid of a literal group name; None: a wildcard or not resolvable.
    let gid = |p: &str| -> Option<libc::gid_t> {
        if p.contains(['*', '?']) {
            return None;
        }
        pam_totp::account::group_gid(p).ok().flatten()
    };
    if deny_groups
        .iter()
        .any(|p| gid(p).is_some_and(|g| gids.contains(&g)))
    {
        return true;
    }
    if allow_groups.is_empty() {
        return false;
    }
    let allowed: Option<Vec<libc::gid_t>> = allow_groups.iter().map(|p| gid(p)).collect();
    allowed.is_some_and(|allowed| !allowed.iter().any(|g| gids.contains(g)))
}

/// Names every account with a login shell that sshd and sshd's PAM stack would let in
/// by no list of AuthenticationMethods: no key and no password, a key-only account whose
/// keyboard-interactive step asks for a password, root refused by PermitRootLogin.
/// Checked on the files, before sshd is reloaded with them.
fn check_lockouts(pam_dir: &Path) -> Vec<Finding> {
    let pam = sshd_pam(pam_dir);
    let passwords = shadow_passwords();
    let mut findings = Vec::new();
    for (name, home) in login_accounts() {
        let sshd = match sshd_effective(&name) {
            Ok(s) => s,
            Err(why) => {
                return vec![finding(
                "lockout",
                Level::Warn,
                format!("cannot evaluate sshd's configuration per account: {why}"),
                "run as root on a host with sshd; sshd -T needs /run/sshd (mkdir -m 755 /run/sshd)",
            )]
            }
        };
        if name == "root" && sshd.get("permitrootlogin").map(String::as_str) == Some("no") {
            continue;
        }
        if kept_out_by_sshd(&name, &sshd) {
            continue;
        }
        let keys_command = sshd
            .get("authorizedkeyscommand")
            .is_some_and(|c| c != "none");
        let account = AccountFacts {
            has_key: keys_command
                || has_authorized_key(
                    sshd.get("authorizedkeysfile")
                        .map(String::as_str)
                        .unwrap_or(DEFAULT_AUTHORIZED_KEYS),
                    &name,
                    &home,
                ),
            has_password: passwords.get(&name).copied().unwrap_or(true),
            name,
        };
        if let Some(why) = no_way_in(&account, &sshd, pam) {
            findings.push(finding(
                "lockout",
                Level::Fail,
                format!("{}: cannot log in over SSH ({why})", escape(&account.name)),
                format!(
                    "give {} an authorized key or a password before reloading sshd; root under \
                     PermitRootLogin prohibit-password needs \"Match User root\" with \
                     \"PermitRootLogin yes\" and \"AuthenticationMethods publickey,keyboard-interactive\" \
                     (/usr/share/pam-totp/enable-sshd.sh writes it)",
                    escape(&account.name)
                ),
            ));
        }
    }
    if findings.is_empty() {
        findings.push(finding(
            "lockout",
            Level::Ok,
            "every account with a login shell has a way in over SSH",
            "",
        ));
    }
    findings
}

/// A name from /etc/passwd as printed: control characters as \xNN.
fn escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                format!("\\x{:02x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Codes depend on the clock: a clock a minute off refuses every code.
fn check_clock() -> Finding {
    // SAFETY: an all-zero timex with modes 0 only reads the kernel's clock state.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: tx is a valid, writable timex.
    let state = unsafe { libc::adjtimex(&mut tx) };
    let synced = state >= 0 && state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0;
    if synced {
        finding("clock", Level::Ok, "the clock is synchronised (NTP)", "")
    } else {
        finding(
            "clock",
            Level::Fail,
            "the clock is not synchronised: codes are checked against it, and a drift of a minute refuses them",
            "turn on time synchronisation: timedatectl set-ntp true, or install chrony",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("totp-admin-doctor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn pam_includes_are_followed() {
        let dir = temp_dir("pam");
        std::fs::write(dir.join("common-auth"), "auth [success=1 default=ignore] pam_unix.so nullok\nauth requisite pam_deny.so\nauth required pam_totp.so\n").unwrap();
        std::fs::write(dir.join("common-account"), "account required pam_unix.so\n").unwrap();
        std::fs::write(
            dir.join("sshd"),
            "# sshd\n@include common-auth\n@include common-account\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("login"),
            "auth include common-auth\naccount include common-account\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("sudo"),
            "auth optional /lib/security/pam_totp.so\n",
        )
        .unwrap();
        let findings = check_pam(&dir, None);
        let level = |check: &str| {
            findings
                .iter()
                .filter(|f| f.check == check)
                .map(|f| f.level)
                .collect::<Vec<_>>()
        };
        assert_eq!(level("pam sshd"), vec![Level::Ok]);
        assert_eq!(level("pam login"), vec![Level::Ok]);
        assert_eq!(level("pam sudo"), vec![Level::Fail]);
        let mut config = Config::default();
        config.policy.enroll_at_login = true;
        let findings = check_pam(&dir, Some(&config));
        assert!(findings
            .iter()
            .any(|f| f.check == "pam sshd" && f.message.contains("account stack")));
        std::fs::write(dir.join("sshd"), "@include common-account\n").unwrap();
        let findings = check_pam(&dir, None);
        let sshd = findings.iter().find(|f| f.check == "pam sshd").unwrap();
        assert_eq!(sshd.level, Level::Fail);
        assert!(sshd.fix.contains("auth required pam_totp.so"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn authselect_stacks_get_the_authselect_command() {
        let dir = temp_dir("authselect");
        let pam = dir.join("pam.d");
        std::fs::create_dir_all(&pam).unwrap();
        assert_eq!(authselect_state(&pam), None);
        std::fs::write(
            pam.join("system-auth"),
            "# Generated by authselect\n# Do not modify this file manually.\n\nauth sufficient pam_unix.so\n",
        )
        .unwrap();
        let state = authselect_state(&pam).unwrap();
        assert_eq!(state.profile, None);
        assert!(authselect_fix(&state).starts_with("authselect select totp with-totp, then"));

        std::fs::create_dir_all(dir.join("authselect")).unwrap();
        std::fs::write(
            dir.join("authselect/authselect.conf"),
            "sssd\nwith-mkhomedir\nwith-sudo\n",
        )
        .unwrap();
        let state = authselect_state(&pam).unwrap();
        assert_eq!(state.profile.as_deref(), Some("sssd"));
        assert!(authselect_fix(&state).starts_with(
            "authselect select totp with-totp with-mkhomedir with-sudo in place of sssd"
        ));

        std::fs::write(dir.join("authselect/authselect.conf"), "totp\n").unwrap();
        let state = authselect_state(&pam).unwrap();
        assert!(authselect_fix(&state).starts_with("authselect enable-feature with-totp"));

        // sshd's stack without pam_totp: the fix is the authselect command.
        std::fs::write(pam.join("sshd"), "auth substack system-auth\n").unwrap();
        let findings = check_pam(&pam, None);
        let sshd = findings.iter().find(|f| f.check == "pam sshd").unwrap();
        assert_eq!(sshd.level, Level::Fail);
        assert!(
            sshd.fix.starts_with("authselect enable-feature with-totp"),
            "{}",
            sshd.fix
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn postgresql_failures_say_what_to_fix() {
        let mut config = Config::default();
        config.store.backend = Backend::Postgresql;
        config.store.host = "db.example.net".into();
        config.store.hostaddr = Some("192.0.2.10".parse().unwrap());
        config.store.user = "pam_totp_login".into();
        config.store.dbname = "pam_totp".into();
        let store = &config.store;
        let server = pg_server(store);
        assert_eq!(server, "192.0.2.10:5432");
        let fix = |why: &str| {
            pg_fix(
                &StoreError::Remote(format!("{server}: {why}")),
                store,
                &server,
            )
        };
        assert!(fix("no answer within 1500 ms").contains("firewall"));
        assert!(
            fix("error connecting to server: Connection refused (os error 111)")
                .contains("no server listens at 192.0.2.10:5432")
        );
        assert!(
            fix("FATAL: password authentication failed for user \"pam_totp_login\" (28P01)")
                .contains("password_file")
        );
        assert!(fix("FATAL: no pg_hba.conf entry for host (28000)")
            .contains("hostssl pam_totp pam_totp_login"));
        assert!(
            fix("error performing TLS handshake: invalid peer certificate: UnknownIssuer")
                .contains("sslrootcert")
        );
        assert!(fix("ERROR: permission denied for table users (42501)")
            .contains("--login-role pam_totp_login"));
        let unsupported = StoreError::Unsupported("no PostgreSQL support".into());
        assert!(pg_fix(&unsupported, store, &server).contains("pam-totp-postgresql"));
    }

    #[test]
    fn sshd_first_value_wins_and_match_ends() {
        let dir = temp_dir("sshd");
        let conf = dir.join("sshd_config");
        std::fs::write(
            &conf,
            "# c\nUsePAM yes\nusepam no\nKbdInteractiveAuthentication=yes\n\
             AuthenticationMethods publickey,keyboard-interactive\nMatch User x\n  UsePAM no\n",
        )
        .unwrap();
        let s = sshd_settings(&conf).unwrap();
        assert_eq!(s["usepam"], "yes");
        assert_eq!(s["kbdinteractiveauthentication"], "yes");
        let f = sshd_findings(&s, &conf);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].level, Level::Ok);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn accounts_sshd_keeps_out_are_not_lockouts() {
        let sshd = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(sshd_glob(b"svc-*", b"svc-backup"));
        assert!(sshd_glob(b"b?b", b"bob"));
        assert!(!sshd_glob(b"b?b", b"bobb"));
        assert!(!sshd_glob(b"alice", b"alice2"));
        assert!(!kept_out_by_sshd("alice", &sshd(&[])));
        assert!(kept_out_by_sshd(
            "svc-backup",
            &sshd(&[("denyusers", "nobody svc-*")])
        ));
        // A host part: sshd decides by the client's address, so the account stays.
        assert!(!kept_out_by_sshd(
            "alice",
            &sshd(&[("denyusers", "alice@10.0.0.1")])
        ));
        assert!(kept_out_by_sshd(
            "carol",
            &sshd(&[("allowusers", "alice bob@10.*")])
        ));
        assert!(!kept_out_by_sshd(
            "bob",
            &sshd(&[("allowusers", "alice bob@10.*")])
        ));
        // root is in group root (gid 0) on every host.
        assert!(kept_out_by_sshd("root", &sshd(&[("denygroups", "root")])));
        assert!(!kept_out_by_sshd("root", &sshd(&[("allowgroups", "root")])));
        assert!(!kept_out_by_sshd("root", &sshd(&[("allowgroups", "ro*")])));
        assert!(!kept_out_by_sshd(
            "root",
            &sshd(&[("allowgroups", "no-such-group-anywhere")])
        ));
    }

    #[test]
    fn lockouts_are_named() {
        let sshd = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            let mut m: HashMap<String, String> = [
                ("pubkeyauthentication", "yes"),
                ("passwordauthentication", "no"),
                ("kbdinteractiveauthentication", "yes"),
                ("usepam", "yes"),
                ("permitrootlogin", "without-password"),
                (
                    "authenticationmethods",
                    "publickey,keyboard-interactive keyboard-interactive",
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            for (k, v) in pairs {
                m.insert(k.to_string(), v.to_string());
            }
            m
        };
        let who = |name: &str, key: bool, pw: bool| AccountFacts {
            name: name.into(),
            has_key: key,
            has_password: pw,
        };
        let trusted = SshdPam {
            code_alone_after_key: true,
            asks_password: true,
        };
        let untrusted = SshdPam {
            code_alone_after_key: false,
            asks_password: true,
        };
        let s = sshd(&[]);
        // Key + code without a password; password + code without a key.
        assert_eq!(no_way_in(&who("alice", true, false), &s, trusted), None);
        assert_eq!(no_way_in(&who("bob", false, true), &s, trusted), None);
        let none = no_way_in(&who("carol", false, false), &s, trusted).unwrap();
        assert!(
            none.contains("no authorized key") && none.contains("no password"),
            "{none}"
        );
        // Without the after_publickey line a key-only account meets a password prompt.
        let keyonly = no_way_in(&who("alice", true, false), &s, untrusted).unwrap();
        assert!(
            keyonly.contains("no password, which /etc/pam.d/sshd asks"),
            "{keyonly}"
        );
        // root under prohibit-password: keyboard-interactive is refused without a Match.
        let root = no_way_in(&who("root", true, false), &s, trusted).unwrap();
        assert!(
            root.contains("PermitRootLogin without-password refuses it for root"),
            "{root}"
        );
        let root_match = sshd(&[
            ("permitrootlogin", "yes"),
            ("authenticationmethods", "publickey,keyboard-interactive"),
        ]);
        assert_eq!(
            no_way_in(&who("root", true, false), &root_match, trusted),
            None
        );
        // Before any change: "any" lets a key alone in.
        let before = sshd(&[
            ("authenticationmethods", "any"),
            ("kbdinteractiveauthentication", "no"),
        ]);
        assert_eq!(
            no_way_in(&who("root", true, false), &before, untrusted),
            None
        );
        assert!(no_way_in(&who("carol", false, false), &before, untrusted).is_some());
    }

    #[test]
    fn sshd_problems_say_what_to_set() {
        let path = Path::new("/etc/ssh/sshd_config");
        let settings: HashMap<String, String> = [("kbdinteractiveauthentication", "no")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let f = sshd_findings(&settings, path);
        assert!(f.iter().any(|f| f.fix.contains("UsePAM yes")));
        assert!(f
            .iter()
            .any(|f| f.fix.contains("KbdInteractiveAuthentication yes")));
        assert!(f.iter().any(|f| f
            .fix
            .contains("AuthenticationMethods publickey,keyboard-interactive")));
        let settings: HashMap<String, String> = [
            ("usepam", "yes"),
            (
                "authenticationmethods",
                "publickey password,keyboard-interactive",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let f = sshd_findings(&settings, path);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].message.contains("allows publickey without"),
            "{}",
            f[0].message
        );
    }
}
