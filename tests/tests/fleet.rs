//! Fleets on PostgreSQL: one enrollment, one replay step and one set of throttle
//! counters for every host, through the real module (built with `--features
//! postgresql`) and real libpam, against a real PostgreSQL server with TLS.
//!
//! Most "hosts" here are PAM transactions in processes of their own that share nothing
//! but the database; `three_hosts_in_network_namespaces` runs three real sshds, each in a
//! network namespace of its own, logged into with OpenSSH's client. The module and
//! totp-admin of the PostgreSQL build are taken from `$PAM_TOTP_PG_RELEASE`
//! (tests/run.sh builds them into target/pg/release).

use pam_totp::secret::SecretKey;
use pam_totp_tests::netns_support::{self, Network};
use pam_totp_tests::pg_support::{
    copy_host_key, Postgres, ADMIN_ROLE, LOGIN_ROLE, STATEMENT_TIMEOUT_MS,
};
use pam_totp_tests::sshd_support::{Session, Sshd};
use pam_totp_tests::store_support::seal;
use pam_totp_tests::{code, feed, wait_for_fresh_step, write_file, PamRun, Sandbox, SECRET};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SECRET_BOB: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const SECRET_CAROL: &str = "KRUGKIDROVUWG2ZAMJZG653OEBTG66BA";

/// The directory with the PostgreSQL build's `libpam_totp.so` and `totp-admin`.
fn pg_build() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("PAM_TOTP_PG_RELEASE")?);
    for name in ["libpam_totp.so", "totp-admin"] {
        assert!(
            dir.join(name).exists(),
            "{} is missing: build it with `cargo build --release -p pam_totp -p totp-admin \
             --features pam_totp/postgresql` into that target directory",
            dir.join(name).display()
        );
    }
    Some(dir)
}

macro_rules! pg_build_or_skip {
    () => {
        match pg_build() {
            Some(dir) => dir,
            None => {
                eprintln!(
                    "SKIPPED: set PAM_TOTP_PG_RELEASE to the release directory of the PostgreSQL \
                     build (tests/run.sh does)"
                );
                return;
            }
        }
    };
}

struct Fleet {
    sb: Sandbox,
    pg: Postgres,
    build: PathBuf,
}

impl Fleet {
    /// A server with the schema made by `totp-admin store init --login-role`, and a
    /// login config (the module's role) with `policy` added.
    fn new(name: &str, build: PathBuf, policy: &str) -> Fleet {
        let sb = Sandbox::new(name);
        let pg = Postgres::start(name);
        for user in ["alice", "bob", "carol"] {
            sb.add_user(user, "password", None, &[]);
        }
        let fleet = Fleet { sb, pg, build };
        let totp = fleet.sb.dir.join("totp");
        let admin = fleet.pg.store_config(&totp, ADMIN_ROLE, "");
        write_file(&fleet.admin_config(), &admin, 0o600);
        fleet.set_login_config(policy, "");
        let out = fleet.admin(&["store", "init", "--login-role", LOGIN_ROLE], "");
        assert_ok(&out, "store init");
        fleet.service("fleet", &fleet.sb.config_path());
        fleet
    }

    fn admin_config(&self) -> PathBuf {
        self.sb.dir.join("totp/admin.toml")
    }

    /// The module's config: the login role, `store_extra` added to `[store]`.
    fn set_login_config(&self, policy: &str, store_extra: &str) {
        let totp = self.sb.dir.join("totp");
        let store = self.pg.store_config(&totp, LOGIN_ROLE, store_extra);
        write_file(&self.sb.config_path(), &format!("{policy}\n{store}"), 0o600);
    }

    /// A PAM service with the PostgreSQL build of the module and `config`.
    fn service(&self, name: &str, config: &Path) {
        self.service_with(name, &self.build.join("libpam_totp.so"), config);
    }

    fn service_with(&self, name: &str, module: &Path, config: &Path) {
        let dir = self.sb.dir.join("pam").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        write_file(
            &dir.join(name),
            &format!(
                "auth required {} config={}\n",
                module.display(),
                config.display()
            ),
            0o644,
        );
        write_file(&dir.join("other"), "auth required pam_deny.so\n", 0o644);
    }

    /// totp-admin of the PostgreSQL build, as root, with the admin config.
    fn admin(&self, args: &[&str], stdin: &str) -> Output {
        self.admin_with(&self.admin_config(), args, stdin)
    }

    fn admin_with(&self, config: &Path, args: &[&str], stdin: &str) -> Output {
        feed(
            self.sb
                .command(self.build.join("totp-admin"))
                .arg("--config")
                .arg(config)
                .args(args),
            stdin,
        )
    }

    fn enroll(&self, config: &Path, user: &str, secret: &str) {
        let out = self.admin_with(
            config,
            &["--json", "enroll", "--user", user, "--secret-stdin"],
            &format!("{secret}\n"),
        );
        assert_ok(&out, "enroll");
    }

    /// One login on one host: `rhost` is where it comes from.
    fn login(&self, service: &str, user: &str, rhost: &str, answer: &str) -> Login {
        let run = self.sb.pam(
            service,
            user,
            &["--rhost", rhost, "--no-acct", "--report"],
            format!("{answer}\n").as_bytes(),
        );
        Login::from(run)
    }
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PAM run and what pam-client reported about the process after pam_end.
#[derive(Debug)]
struct Login {
    run: PamRun,
    auth_ms: u64,
    auth_us: u64,
    auth_cpu_us: u64,
    threads: u32,
    module_maps: u32,
}

impl From<PamRun> for Login {
    fn from(run: PamRun) -> Login {
        let field = |key: &str| {
            run.stdout
                .lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.parse::<u64>().ok()))
                .unwrap_or_else(|| panic!("no {key} in {run:?}"))
        };
        Login {
            auth_ms: field("auth_ms="),
            auth_us: field("auth_us="),
            auth_cpu_us: field("auth_cpu_us="),
            threads: field("threads=") as u32,
            module_maps: field("module_maps=") as u32,
            run,
        }
    }
}

impl Login {
    fn is(&self, name: &str) -> bool {
        self.run.auth_is(name)
    }

    /// Nothing of the module is left in the host process: no thread, no mapping.
    fn assert_clean_exit(&self) {
        assert_eq!(self.threads, 1, "threads left after pam_end: {self:?}");
        assert_eq!(
            self.module_maps, 0,
            "module still mapped after pam_end: {self:?}"
        );
    }
}

/// Several factors per user on PostgreSQL: a code of any logs in; the ninth is refused
/// inside the enrollment's transaction.
#[test]
fn several_factors_and_their_limit() {
    let build = pg_build_or_skip!();
    let fleet = Fleet::new("fleet-factors", build, "");
    let config = fleet.admin_config();
    fleet.enroll(&config, "alice", SECRET);
    let add = |name: &str, secret: &str| {
        fleet.admin_with(
            &config,
            &[
                "enroll",
                "--user",
                "alice",
                "--secret-stdin",
                "--name",
                name,
            ],
            &format!("{secret}\n"),
        )
    };
    for i in 2..=8 {
        let secret = if i == 2 { SECRET_BOB } else { SECRET_CAROL };
        assert_ok(&add(&format!("f{i}"), secret), "enroll --name");
    }
    let ninth = add("f9", SECRET);
    assert_eq!(ninth.status.code(), Some(1), "{ninth:?}");
    assert!(
        String::from_utf8_lossy(&ninth.stderr).contains("the most a user may have"),
        "{ninth:?}"
    );
    wait_for_fresh_step(30, 8);
    let second = fleet.login("fleet", "alice", "198.51.100.1", &code(SECRET_BOB, 0));
    assert!(second.is("PAM_SUCCESS"), "{second:?}");
    let first = fleet.login("fleet", "alice", "198.51.100.1", &code(SECRET, 0));
    assert!(first.is("PAM_SUCCESS"), "{first:?}");
}

#[test]
fn one_enrollment_one_replay_state_one_throttle_across_hosts() {
    let build = pg_build_or_skip!();
    let fleet = Fleet::new("fleet", build, "[throttle]\nmax_failures = 3\n");
    let admin_config = fleet.admin_config();
    fleet.enroll(&admin_config, "alice", SECRET);
    fleet.enroll(&admin_config, "bob", SECRET_BOB);

    // The module's role may not write a factor: the grants hold.
    let denied = fleet.pg.sql_in(
        "pam_totp",
        "SET ROLE pam_totp_login; DO $$ BEGIN UPDATE pam_totp.factors SET sealed_key = 'x'; \
         EXCEPTION WHEN insufficient_privilege THEN RAISE NOTICE 'denied'; END $$; \
         SELECT has_column_privilege('pam_totp.factors', 'sealed_key', 'UPDATE')",
    );
    assert!(denied.ends_with('f'), "{denied}");

    wait_for_fresh_step(30, 12);
    let now = code(SECRET, 0);
    let host1 = fleet.login("fleet", "alice", "198.51.100.1", &now);
    assert!(host1.is("PAM_SUCCESS"), "{host1:?}");
    assert!(host1.run.log_contains("code accepted"), "{host1:?}");
    host1.assert_clean_exit();

    // The same code on a second host: refused, the step is shared.
    let host2 = fleet.login("fleet", "alice", "198.51.100.2", &now);
    assert!(host2.is("PAM_AUTH_ERR"), "{host2:?}");
    assert!(host2.run.log_contains("code already used"), "{host2:?}");
    host2.assert_clean_exit();

    // A fresh code (the next step, inside the window) on a third host: accepted.
    let host3 = fleet.login("fleet", "alice", "198.51.100.3", &code(SECRET, 30));
    assert!(host3.is("PAM_SUCCESS"), "{host3:?}");
    host3.assert_clean_exit();

    // Failures from one source throttle that source on every host; others are not.
    let stranger = "203.0.113.9";
    for _ in 0..3 {
        let r = fleet.login("fleet", "alice", stranger, "000000");
        assert!(r.is("PAM_AUTH_ERR"), "{r:?}");
    }
    let elsewhere = fleet.login("fleet", "alice", stranger, &code(SECRET, 30));
    assert!(elsewhere.is("PAM_AUTH_ERR"), "{elsewhere:?}");
    assert!(elsewhere.run.log_contains("throttled"), "{elsewhere:?}");
    assert!(
        elsewhere.run.stdout.contains("try again in"),
        "{elsewhere:?}"
    );
    let other_source = fleet.login("fleet", "alice", "198.51.100.4", "000000");
    assert!(
        other_source.run.log_contains("wrong code"),
        "{other_source:?}"
    );

    // 8 hosts race with one code: exactly one wins.
    let bob_code = code(SECRET_BOB, 0);
    let results: Vec<Login> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (fleet, bob_code) = (&fleet, &bob_code);
                s.spawn(move || {
                    fleet.login("fleet", "bob", &format!("192.0.2.{}", i + 1), bob_code)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wins = results.iter().filter(|r| r.is("PAM_SUCCESS")).count();
    let replays = results
        .iter()
        .filter(|r| r.is("PAM_AUTH_ERR") && r.run.log_contains("code already used"))
        .count();
    assert_eq!((wins, replays), (1, 7), "{results:#?}");
    for r in &results {
        r.assert_clean_exit();
    }

    // A recovery code works once, fleet-wide.
    let codes: Vec<String> = {
        let out = fleet.admin(&["--json", "recovery-codes", "--user", "bob"], "");
        assert_ok(&out, "recovery-codes");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let v = &text[text.find('[').unwrap() + 1..text.find(']').unwrap()];
        v.split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .collect()
    };
    let first = fleet.login("fleet", "bob", "192.0.2.50", &codes[0]);
    assert!(
        first.is("PAM_SUCCESS") && first.run.log_contains("recovery code accepted"),
        "{first:?}"
    );
    let again = fleet.login("fleet", "bob", "192.0.2.51", &codes[0]);
    assert!(again.is("PAM_AUTH_ERR"), "{again:?}");

    // totp-admin reads the shared state.
    let status = fleet.admin(&["--json", "status", "--user", "alice"], "");
    assert_ok(&status, "status");
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("\"enrolled\":true"), "{status}");
    assert!(status.contains("\"locked\":true"), "{status}");
    assert_ok(&fleet.admin(&["unlock", "--user", "alice"], ""), "unlock");

    // store init again: idempotent.
    let again = fleet.admin(&["store", "init"], "");
    assert_ok(&again, "second store init");
    assert!(String::from_utf8_lossy(&again.stdout).contains("is ready"));
}

/// A `pg_dump` of the fleet's database after enrollments and logins (one remembered)
/// holds no key: not raw, not in base32 (either case), not in hex (either case).
#[test]
fn a_pg_dump_of_the_fleet_holds_no_key() {
    let build = pg_build_or_skip!();
    let fleet = Fleet::new("fleetdump", build, "[policy]\nremember_source = \"1h\"\n");
    let admin_config = fleet.admin_config();
    let secrets = [SECRET, SECRET_BOB, SECRET_CAROL];
    for (user, secret) in ["alice", "bob", "carol"].iter().zip(secrets) {
        fleet.enroll(&admin_config, user, secret);
    }
    wait_for_fresh_step(30, 8);
    let run = fleet.login("fleet", "alice", "198.51.100.1", &code(SECRET, 0));
    assert!(run.is("PAM_SUCCESS"), "{run:?}");
    let run = fleet.login("fleet", "bob", "198.51.100.1", "000000");
    assert!(run.is("PAM_AUTH_ERR"), "{run:?}");
    let dump = fleet.pg.dump("pam_totp");
    let text = String::from_utf8_lossy(&dump);
    assert!(text.contains("COPY pam_totp.factors"), "{text}");
    assert!(text.contains("COPY pam_totp.remembered"), "{text}");
    for secret in secrets {
        let key = pam_totp::otp::decode_base32(secret).unwrap();
        let raw = key.as_bytes();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let forms: [&[u8]; 6] = [
            raw,
            secret.as_bytes(),
            &secret.to_ascii_lowercase().into_bytes(),
            hex.as_bytes(),
            &hex.to_ascii_uppercase().into_bytes(),
            &raw[..raw.len() / 2],
        ];
        for (i, form) in forms.iter().enumerate() {
            assert!(
                !dump.windows(form.len()).any(|w| w == *form),
                "form {i} of a key is in the dump"
            );
        }
    }
}

#[test]
fn store_copy_moves_a_host_into_the_fleet_and_back() {
    let build = pg_build_or_skip!();
    let fleet = Fleet::new("fleet-copy", build, "");
    // A single host's SQLite store, with carol enrolled there.
    let sqlite_config = fleet.sb.dir.join("totp/sqlite.toml");
    write_file(
        &sqlite_config,
        &format!("[store]\npath = \"{}\"\n", fleet.sb.store_path().display()),
        0o600,
    );
    assert_ok(
        &fleet.admin_with(&sqlite_config, &["store", "init"], ""),
        "store init",
    );
    fleet.enroll(&sqlite_config, "carol", SECRET_CAROL);
    let copied = fleet.admin_with(
        &sqlite_config,
        &[
            "store",
            "copy",
            "--to",
            fleet.admin_config().to_str().unwrap(),
        ],
        "",
    );
    assert_ok(&copied, "store copy to postgresql");
    assert!(String::from_utf8_lossy(&copied.stdout).contains("Copied 1 enrolled users"));

    wait_for_fresh_step(30, 8);
    let login = fleet.login("fleet", "carol", "198.51.100.7", &code(SECRET_CAROL, 0));
    assert!(login.is("PAM_SUCCESS"), "{login:?}");

    // And back, with the step just used: the same code stays refused on the SQLite host.
    let back_config = fleet.sb.dir.join("totp/back.toml");
    let back_store = fleet.sb.dir.join("totp/store/back.db");
    write_file(
        &back_config,
        &format!("[store]\npath = \"{}\"\n", back_store.display()),
        0o600,
    );
    assert_ok(
        &fleet.admin_with(&back_config, &["store", "init"], ""),
        "store init",
    );
    let back = fleet.admin(
        &["store", "copy", "--to", back_config.to_str().unwrap()],
        "",
    );
    assert_ok(&back, "store copy to sqlite");
    let list = fleet.admin_with(&back_config, &["--json", "list"], "");
    assert_ok(&list, "list");
    assert!(String::from_utf8_lossy(&list.stdout).contains("carol"));
    fleet.service("back", &back_config);
    let replay = fleet.login("back", "carol", "198.51.100.8", &code(SECRET_CAROL, 0));
    assert!(replay.is("PAM_AUTH_ERR"), "{replay:?}");
    assert!(replay.run.log_contains("code already used"), "{replay:?}");
}

/// `totp-admin doctor` with the module's config: the session a login would make, and
/// what to fix when it fails.
#[test]
fn doctor_checks_the_postgresql_store() {
    let build = pg_build_or_skip!();
    let mut fleet = Fleet::new("fleet-doctor", build, "");
    // The lines of the store checks, each with its fix line after it.
    let doctor = |fleet: &Fleet| {
        let out = fleet.admin_with(&fleet.sb.config_path(), &["doctor"], "");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = Vec::new();
        let mut keep = false;
        for line in text.lines() {
            if !line.starts_with(' ') {
                keep = line.split_whitespace().nth(1) == Some("store");
            }
            if keep {
                lines.push(line.trim().to_string());
            }
        }
        lines.join("\n")
    };
    let text = doctor(&fleet);
    assert!(
        text.lines().any(|l| l.starts_with("ok")
            && l.contains("connected (TLS verified against sslrootcert)")
            && l.contains("schema version 3")),
        "{text}"
    );
    assert!(!text.contains("FAIL"), "{text}");

    let password = fleet.sb.dir.join(format!("totp/{LOGIN_ROLE}.password"));
    let chmod = |mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    chmod(0o640);
    let text = doctor(&fleet);
    assert!(
        text.contains("FAIL") && text.contains("mode 0640"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "fix: chown root:root {0} && chmod 600 {0}",
            password.display()
        )),
        "{text}"
    );
    chmod(0o600);

    let other_ca = fleet.sb.dir.join("totp/other-ca.pem");
    std::fs::copy(fleet.pg.other_ca(), &other_ca).unwrap();
    fleet.set_login_config("", &format!("sslrootcert = \"{}\"\n", other_ca.display()));
    let text = doctor(&fleet);
    assert!(
        text.contains("fix: store.sslrootcert must be the CA"),
        "{text}"
    );

    fleet.set_login_config("", "sslmode = \"disable\"\n");
    let text = doctor(&fleet);
    assert!(
        text.lines()
            .any(|l| l.starts_with("warn") && l.contains("plaintext")),
        "{text}"
    );
    assert!(text.contains("connected (no TLS)"), "{text}");

    fleet.set_login_config("", "");
    fleet.pg.sql_in("pam_totp", "DROP SCHEMA pam_totp CASCADE");
    let text = doctor(&fleet);
    assert!(text.contains("has no pam_totp schema"), "{text}");
    assert!(text.contains("fix: run totp-admin store init"), "{text}");

    fleet.pg.stop();
    let text = doctor(&fleet);
    assert!(
        text.contains("FAIL") && text.contains("fix: no server listens"),
        "{text}"
    );
}

/// Schema 1 of the fleet's tables (one factor per user, its key in clear) and the
/// grants `store init --login-role` gave the module's role then.
const SCHEMA_V1: &str = "
CREATE SCHEMA pam_totp;
CREATE TABLE pam_totp.schema_version (version bigint NOT NULL);
INSERT INTO pam_totp.schema_version VALUES (1);
CREATE TABLE pam_totp.users (name text PRIMARY KEY, secret bytea, algorithm text,
    digits bigint, period bigint, created_at bigint, confirmed_at bigint,
    last_used_at bigint, last_step bigint, mandatory_since bigint,
    window_start bigint NOT NULL DEFAULT 0, window_failures bigint NOT NULL DEFAULT 0);
CREATE TABLE pam_totp.throttle (name text NOT NULL, source text NOT NULL,
    failures bigint NOT NULL, locked_until bigint NOT NULL, PRIMARY KEY (name, source));
CREATE TABLE pam_totp.recovery_codes (name text NOT NULL, salt bytea NOT NULL,
    hash bytea NOT NULL, used_at bigint, PRIMARY KEY (name, salt));
ALTER SCHEMA pam_totp OWNER TO pam_totp_admin;
ALTER TABLE pam_totp.schema_version OWNER TO pam_totp_admin;
ALTER TABLE pam_totp.users OWNER TO pam_totp_admin;
ALTER TABLE pam_totp.throttle OWNER TO pam_totp_admin;
ALTER TABLE pam_totp.recovery_codes OWNER TO pam_totp_admin;
SET ROLE pam_totp_admin;
GRANT USAGE ON SCHEMA pam_totp TO pam_totp_login;
GRANT SELECT ON pam_totp.schema_version, pam_totp.users, pam_totp.throttle,
    pam_totp.recovery_codes TO pam_totp_login;
GRANT UPDATE (last_step, last_used_at, window_start, window_failures, mandatory_since)
    ON pam_totp.users TO pam_totp_login;
GRANT INSERT (name, mandatory_since) ON pam_totp.users TO pam_totp_login;
GRANT INSERT, UPDATE, DELETE ON pam_totp.throttle TO pam_totp_login;
GRANT UPDATE (used_at) ON pam_totp.recovery_codes TO pam_totp_login;
RESET ROLE;
INSERT INTO pam_totp.users (name, secret, algorithm, digits, period, created_at, confirmed_at)
    VALUES ('alice', '\\x3132333435363738393031323334353637383930', 'SHA1', 6, 30, 1, 1);
INSERT INTO pam_totp.users (name, mandatory_since) VALUES ('bob', 77);
INSERT INTO pam_totp.throttle VALUES ('alice', '203.0.113.9', 2, 0);
";

/// Before `store init`, a login on an older schema fails closed saying what to run;
/// `store init` then migrates from `version`.
fn migrated_by_store_init(fleet: &Fleet, version: i64) {
    wait_for_fresh_step(30, 10);
    let before = fleet.login("fleet", "alice", "198.51.100.1", &code(SECRET, 0));
    assert!(before.is("PAM_AUTHINFO_UNAVAIL"), "{before:?}");
    assert!(
        before.run.log_contains("run totp-admin store init"),
        "{before:?}"
    );
    let out = fleet.admin(&["store", "init"], "");
    assert_ok(&out, "store init");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("from version {version} to 3")),
        "{text}"
    );
}

/// A fleet's schema of version 1 is migrated by `store init`: a login before that fails
/// closed, saying what to run; after it the keys are sealed, the module's role keeps
/// what it may do, and logins go on with the state they had.
#[test]
fn a_version_1_schema_is_migrated() {
    let build = pg_build_or_skip!();
    let fleet = Fleet::new("fleet-migrate", build, "");
    fleet.pg.sql_in(
        "pam_totp",
        &format!("DROP SCHEMA pam_totp CASCADE; {SCHEMA_V1}"),
    );
    migrated_by_store_init(&fleet, 1);
    let clear = fleet.pg.sql_in(
        "pam_totp",
        "SELECT count(*) FROM pam_totp.factors
         WHERE position('\\x3132333435363738393031323334353637383930'::bytea in sealed_key) > 0",
    );
    assert_eq!(clear, "0");
    let tables = fleet.pg.sql_in(
        "pam_totp",
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables
         WHERE schemaname = 'pam_totp'",
    );
    assert_eq!(
        tables,
        "factors,recovery_codes,remembered,schema_version,throttle,users"
    );

    let login = fleet.login("fleet", "alice", "198.51.100.1", &code(SECRET, 0));
    assert!(login.is("PAM_SUCCESS"), "{login:?}");
    let replay = fleet.login("fleet", "alice", "198.51.100.2", &code(SECRET, 0));
    assert!(replay.run.log_contains("code already used"), "{replay:?}");
    // The throttle row and the grace sighting came along.
    let failures = fleet.pg.sql_in(
        "pam_totp",
        "SELECT failures FROM pam_totp.throttle WHERE \"user\" = 'alice' AND source = '203.0.113.9'",
    );
    assert_eq!(failures, "2");
    let since = fleet.pg.sql_in(
        "pam_totp",
        "SELECT mandatory_since FROM pam_totp.users WHERE \"user\" = 'bob'",
    );
    assert_eq!(since, "77");
}

/// A fleet's schema of version 2 (version 3 without `remembered`) is migrated by
/// `store init`, and the module's role may then remember a source.
#[test]
fn a_version_2_schema_gains_the_remembered_sources() {
    let build = pg_build_or_skip!();
    let fleet = Fleet::new("fleet-v2", build, "[policy]\nremember_source = \"1h\"\n");
    fleet.enroll(&fleet.admin_config(), "alice", SECRET);
    fleet.pg.sql_in(
        "pam_totp",
        "DROP TABLE pam_totp.remembered; UPDATE pam_totp.schema_version SET version = 2",
    );
    migrated_by_store_init(&fleet, 2);
    let login = fleet.login("fleet", "alice", "198.51.100.1", &code(SECRET, 0));
    assert!(login.is("PAM_SUCCESS"), "{login:?}");
    let again = fleet.login("fleet", "alice", "198.51.100.1", "");
    assert!(again.is("PAM_SUCCESS"), "{again:?}");
    assert!(
        again.run.log_contains("reason=\"remembered source\""),
        "{again:?}"
    );
    let elsewhere = fleet.login("fleet", "alice", "198.51.100.2", "");
    assert!(!elsewhere.is("PAM_SUCCESS"), "{elsewhere:?}");
}

/// A listener that accepts connections and never says a word, until dropped.
struct SilentListener {
    port: u16,
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentListener {
    fn start() -> SilentListener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            let until = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        SilentListener {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The deadline of these tests' configs, and what a failed login may take beyond it
/// (the process start under pam_wrapper, the first session, the log line).
const TIMEOUT_MS: u64 = 1000;
const MARGIN_MS: u64 = 600;

#[test]
fn faults_fail_closed_within_the_deadline() {
    let build = pg_build_or_skip!();
    let mut fleet = Fleet::new("fleet-faults", build, "");
    fleet.enroll(&fleet.admin_config(), "alice", SECRET);
    fleet.set_login_config("", "timeout = \"1s\"\n");

    let unavailable = |label: &str, r: &Login, within_ms: u64| {
        assert!(r.is("PAM_AUTHINFO_UNAVAIL"), "{label}: {r:?}");
        assert!(r.run.log_contains("result=unavailable"), "{label}: {r:?}");
        assert!(
            r.auth_ms <= within_ms,
            "{label}: took {} ms: {r:?}",
            r.auth_ms
        );
        r.assert_clean_exit();
        eprintln!("{label}: PAM_AUTHINFO_UNAVAIL after {} ms", r.auth_ms);
    };

    // Healthy first, to time a good login.
    wait_for_fresh_step(30, 10);
    let ok = fleet.login("fleet", "alice", "198.51.100.1", &code(SECRET, 0));
    assert!(ok.is("PAM_SUCCESS"), "{ok:?}");
    ok.assert_clean_exit();
    eprintln!("good login: {} ms", ok.auth_ms);

    // A held row lock: the replay UPDATE waits; the server's statement_timeout or the
    // module's deadline ends it, whichever comes first.
    let mut locker = fleet.pg.session();
    {
        use std::io::{BufRead, Write};
        let mut stdin = locker.stdin.take().unwrap();
        writeln!(
            stdin,
            "BEGIN; SELECT 'locked' FROM pam_totp.users WHERE \"user\" = 'alice' FOR UPDATE;"
        )
        .unwrap();
        let mut out = std::io::BufReader::new(locker.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "locked");
        let slow = fleet.login("fleet", "alice", "198.51.100.1", &code(SECRET, 30));
        unavailable(
            "held row lock",
            &slow,
            STATEMENT_TIMEOUT_MS.min(TIMEOUT_MS) + MARGIN_MS + 400,
        );
        assert!(slow.run.log_contains("postgresql"), "{slow:?}");
        writeln!(stdin, "ROLLBACK;").unwrap();
        drop(stdin);
    }
    let _ = locker.wait();

    // The wrong CA: TLS refuses the server.
    let other_ca = fleet.sb.dir.join("totp/other-ca.pem");
    std::fs::copy(fleet.pg.other_ca(), &other_ca).unwrap();
    fleet.set_login_config(
        "",
        &format!(
            "timeout = \"1s\"\nsslrootcert = \"{}\"\n",
            other_ca.display()
        ),
    );
    let r = fleet.login("fleet", "alice", "198.51.100.1", &code(SECRET, 0));
    unavailable("unknown CA", &r, TIMEOUT_MS + MARGIN_MS);

    // A listener that accepts and never answers.
    let silent = SilentListener::start();
    let text = std::fs::read_to_string(fleet.sb.config_path()).unwrap();
    let port_line = format!("port = {}", fleet.pg.port);
    fleet.set_login_config("", "timeout = \"1s\"\n");
    let text_ok = std::fs::read_to_string(fleet.sb.config_path()).unwrap();
    drop(text);
    write_file(
        &fleet.sb.config_path(),
        &text_ok.replace(&port_line, &format!("port = {}", silent.port)),
        0o600,
    );
    let r = fleet.login("fleet", "alice", "198.51.100.1", &code(SECRET, 0));
    unavailable("silent listener", &r, TIMEOUT_MS + MARGIN_MS);
    assert!(r.run.log_contains("within 1000 ms"), "{r:?}");
    drop(silent);
    write_file(&fleet.sb.config_path(), &text_ok, 0o600);

    // The server stopped.
    fleet.pg.stop();
    let r = fleet.login("fleet", "alice", "198.51.100.1", &code(SECRET, 0));
    unavailable("server stopped", &r, TIMEOUT_MS + MARGIN_MS);

    // The SQLite-only module refuses backend = "postgresql", with the reason.
    let plain = pam_totp_tests::release_dir().join("libpam_totp.so");
    if plain.exists() {
        fleet.service_with("plain", &plain, &fleet.sb.config_path());
        let r = fleet.login("plain", "alice", "198.51.100.1", &code(SECRET, 0));
        assert!(r.is("PAM_AUTHINFO_UNAVAIL"), "{r:?}");
        assert!(r.run.log_contains("no PostgreSQL support"), "{r:?}");
    }
}

/// What one successful login costs the host (client CPU, wall time of
/// `pam_authenticate`), with TLS and without: tests/bench/pg.sh prints the `BENCH-ROW`
/// lines as a table (docs/FLEET.md). Each login is a different user with the same key, so
/// that no code is a replay. `PAM_TOTP_BENCH_LOGINS` sets the logins per row (25).
#[test]
fn login_cost_with_and_without_tls() {
    let build = pg_build_or_skip!();
    let fleet = Fleet::new("fleet-cost", build, "");
    let n: usize = std::env::var("PAM_TOTP_BENCH_LOGINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| (1..=1000).contains(&n))
        .unwrap_or(25);
    // SECRET, decoded, sealed for each user under the host key.
    let secret = SecretKey::from_bytes(b"12345678901234567890".to_vec());
    // Logins are judged for accounts NSS knows.
    fleet.sb.add_many_users("cost", 2 * n);
    fleet.sb.add_many_users("cost-none", 1);
    let rows: Vec<String> = (0..2 * n)
        .map(|i| {
            let user = format!("cost{i}");
            let sealed = seal(&fleet.sb.key_path(), &user, "default", &secret);
            let hex: String = sealed.iter().map(|b| format!("{b:02x}")).collect();
            format!("('{user}', 'default', '\\x{hex}'::bytea, 'SHA1', 6, 30, 0)")
        })
        .collect();
    fleet.pg.sql_in(
        "pam_totp",
        &format!(
            "INSERT INTO pam_totp.factors (\"user\", name, sealed_key, algorithm, digits, period,
                                           created_at) VALUES {}",
            rows.join(", ")
        ),
    );
    // Median and 90th percentile, in ms with one decimal.
    let ms = |mut v: Vec<u64>| {
        v.sort_unstable();
        let at = |q: usize| v[(v.len() * q / 100).min(v.len() - 1)] as f64 / 1000.0;
        format!("{:.1} / {:.1}", at(50), at(90))
    };
    for (label, extra, first) in [
        ("TLS (verify-full, ECDSA P-256)", "", 0),
        (
            "no TLS (`sslmode = \"disable\"`)",
            "sslmode = \"disable\"\n",
            n,
        ),
    ] {
        fleet.set_login_config("", extra);
        // One login to warm the server's caches, then the measured ones inside one step.
        let warm = fleet.login("fleet", "cost-none0", "198.51.100.1", "000000");
        assert!(warm.run.log_contains("not enrolled"), "{warm:?}");
        wait_for_fresh_step(30, (10 + n as u64 / 5).min(25));
        let code = code(SECRET, 0);
        let runs: Vec<Login> = (first..first + n)
            .map(|i| fleet.login("fleet", &format!("cost{i}"), "198.51.100.1", &code))
            .collect();
        for r in &runs {
            assert!(r.is("PAM_SUCCESS"), "{label}: {r:?}");
            r.assert_clean_exit();
        }
        eprintln!(
            "BENCH-ROW | {label} | {n} | {} | {} |",
            ms(runs.iter().map(|r| r.auth_cpu_us).collect()),
            ms(runs.iter().map(|r| r.auth_us).collect()),
        );
    }
}

/// One host of the namespaced fleet: its own /etc (the same users and passwords as the
/// others), its own copy of the module and config, its own sshd in its own network
/// namespace. The sshd stops before the sandbox goes.
struct SshHost {
    sshd: Sshd,
    sb: Sandbox,
}

const FLEET_PASSWORD: &str = "Fleet-password-1";

/// Password and code through sshd (AuthenticationMethods keyboard-interactive).
/// `nodelay`: no 2 s pause after a failed login, of which this test makes many.
const FLEET_SSHD_STACK: &str = "auth requisite pam_unix.so nodelay\n\
     auth required {pg_module} config={config}\n\
     account required pam_unix.so\n\
     session required pam_permit.so\n";

const KBDINT: &[&str] = &[
    "-o",
    "PubkeyAuthentication=no",
    "-o",
    "PreferredAuthentications=keyboard-interactive",
];

impl SshHost {
    fn start(
        n: usize,
        net: &netns_support::NetHost,
        pg: &Postgres,
        gateway: Ipv4Addr,
        build: &Path,
    ) -> SshHost {
        let sb = Sandbox::new(&format!("fleet-host{n}"));
        for user in ["alice", "bob"] {
            sb.add_user(user, FLEET_PASSWORD, None, &[]);
        }
        let lib = sb.dir.join("lib");
        std::fs::create_dir_all(&lib).unwrap();
        let module = lib.join("pam_totp.so");
        std::fs::copy(build.join("libpam_totp.so"), &module).unwrap();
        // The module reaches the server at the bridge's address, over TLS (the server
        // takes nothing else from this network).
        let store = pg.store_config_at(&sb.dir.join("totp"), LOGIN_ROLE, IpAddr::V4(gateway), "");
        write_file(
            &sb.config_path(),
            &format!("[throttle]\nmax_failures = 8\n\n{store}"),
            0o600,
        );
        let pam = FLEET_SSHD_STACK
            .replace("{pg_module}", module.to_str().unwrap())
            .replace("{config}", sb.config_path().to_str().unwrap());
        let sshd = Sshd::start_in_netns(
            &sb,
            "keyboard-interactive",
            &pam,
            &net.netns,
            IpAddr::V4(net.addr),
        );
        SshHost { sshd, sb }
    }

    fn login(&self, user: &str, code: &str) -> Session {
        self.sshd.ssh(
            user,
            KBDINT,
            &[
                ("Password: ", FLEET_PASSWORD),
                ("Verification code: ", code),
            ],
        )
    }

    /// The module's log lines since the last call.
    fn module_log(&self) -> Vec<String> {
        self.sshd
            .ns
            .syslog()
            .into_iter()
            .filter(|l| l.contains("result="))
            .collect()
    }
}

fn logged_with(log: &[String], needle: &str) -> usize {
    log.iter().filter(|l| l.contains(needle)).count()
}

/// Three hosts, each an sshd in a network namespace of its own, on one database that
/// listens on the bridge in the root namespace; OpenSSH's client logs in from the root
/// namespace, so every login comes from the bridge's address.
#[test]
fn three_hosts_in_network_namespaces() {
    let build = pg_build_or_skip!();
    let before = netns_support::snapshot();
    let netns_dir_before = Path::new("/run/netns").exists();
    {
        let net = Network::new(3);
        let pg =
            Postgres::start_listening("fleet-netns", Some((IpAddr::V4(net.gateway), &net.cidr())));
        let hosts: Vec<SshHost> = net
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| SshHost::start(i + 1, h, &pg, net.gateway, &build))
            .collect();
        let source = net.gateway.to_string();

        // Enroll once, with totp-admin on host 1.
        let admin_sb = &hosts[0].sb;
        let admin_config = admin_sb.dir.join("totp/admin.toml");
        let admin_text = pg.store_config(&admin_sb.dir.join("totp"), ADMIN_ROLE, "");
        write_file(&admin_config, &admin_text, 0o600);
        let admin = |args: &[&str], stdin: &str| {
            feed(
                admin_sb
                    .command(build.join("totp-admin"))
                    .arg("--config")
                    .arg(&admin_config)
                    .args(args),
                stdin,
            )
        };
        assert_ok(
            &admin(&["store", "init", "--login-role", LOGIN_ROLE], ""),
            "store init",
        );
        // Every host holds the same host key.
        for host in &hosts[1..] {
            copy_host_key(&admin_sb.key_path(), &host.sb.key_path());
        }
        for (user, secret) in [("alice", SECRET), ("bob", SECRET_BOB)] {
            let out = admin(
                &["--json", "enroll", "--user", user, "--secret-stdin"],
                &format!("{secret}\n"),
            );
            assert_ok(&out, "enroll");
        }

        // Host 1 accepts the code; host 2 refuses the same code; host 3 takes a fresh one.
        wait_for_fresh_step(30, 15);
        let now = code(SECRET, 0);
        let first = hosts[0].login("alice", &now);
        assert!(first.logged_in_as("alice"), "host 1: {}", first.text);
        let log = hosts[0].module_log();
        assert_eq!(logged_with(&log, "code accepted"), 1, "host 1: {log:?}");
        assert_eq!(
            logged_with(&log, &format!("source=\"{source}\"")),
            1,
            "the login came over the bridge: {log:?}"
        );

        let replay = hosts[1].login("alice", &now);
        assert!(!replay.logged_in_as("alice"), "host 2: {}", replay.text);
        assert!(replay.text.contains("Permission denied"), "{}", replay.text);
        let log = hosts[1].module_log();
        assert_eq!(logged_with(&log, "code already used"), 1, "host 2: {log:?}");

        let fresh = hosts[2].login("alice", &code(SECRET, 30));
        assert!(fresh.logged_in_as("alice"), "host 3: {}", fresh.text);
        let log = hosts[2].module_log();
        assert_eq!(logged_with(&log, "code accepted"), 1, "host 3: {log:?}");

        // 8 logins with one code, at once, spread over the three hosts: one gets in.
        for host in &hosts {
            host.module_log();
        }
        wait_for_fresh_step(30, 20);
        let bob_code = code(SECRET_BOB, 0);
        let sessions: Vec<Session> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let (host, bob_code) = (&hosts[i % 3], &bob_code);
                    s.spawn(move || host.login("bob", bob_code))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let wins = sessions.iter().filter(|s| s.logged_in_as("bob")).count();
        let logs: Vec<String> = hosts.iter().flat_map(SshHost::module_log).collect();
        assert_eq!(
            (
                wins,
                logged_with(&logs, "code accepted"),
                logged_with(&logs, "code already used")
            ),
            (1, 1, 7),
            "{sessions:#?}\n{logs:#?}"
        );

        // Failures from one source on host 1 throttle that source on host 2.
        for _ in 0..8 {
            let wrong = hosts[0].login("alice", "000000");
            assert!(!wrong.logged_in_as("alice"), "{}", wrong.text);
        }
        let log = hosts[0].module_log();
        assert_eq!(logged_with(&log, "wrong code"), 8, "host 1: {log:?}");
        // Locked: refused after the password, before any code is asked.
        let throttled = hosts[1]
            .sshd
            .ssh("alice", KBDINT, &[("Password: ", FLEET_PASSWORD)]);
        assert!(!throttled.logged_in_as("alice"), "{}", throttled.text);
        assert!(
            throttled.text.contains("try again in"),
            "{}",
            throttled.text
        );
        let log = hosts[1].module_log();
        assert_eq!(logged_with(&log, "throttled"), 1, "host 2: {log:?}");
        drop(hosts);
    }
    assert_eq!(
        netns_support::snapshot(),
        before,
        "network namespaces or interfaces were left behind"
    );
    assert_eq!(
        Path::new("/run/netns").exists(),
        netns_dir_before,
        "/run/netns was left behind"
    );
}

/// docs/STORE.md's PostgreSQL query, pasted into psql on the fleet's database after
/// logins on two hosts: who is enrolled, since when, last used, locked from where.
#[test]
fn the_documented_query_reads_the_fleet_store() {
    let build = pg_build_or_skip!();
    let fleet = Fleet::new("fleet-query", build, "[throttle]\nmax_failures = 2\n");
    let admin_config = fleet.admin_config();
    fleet.enroll(&admin_config, "alice", SECRET);
    fleet.enroll(&admin_config, "bob", SECRET_BOB);
    wait_for_fresh_step(30, 5);
    let ok = fleet.login("fleet", "alice", "198.51.100.1", &code(SECRET, 0));
    assert!(ok.is("PAM_SUCCESS"), "{ok:?}");
    for _ in 0..2 {
        let r = fleet.login("fleet", "alice", "203.0.113.9", "000000");
        assert!(r.is("PAM_AUTH_ERR"), "{r:?}");
    }
    let query = pam_totp_tests::store_support::documented_query(1);
    let text = fleet.pg.sql_in("pam_totp", &query);
    pam_totp_tests::store_support::assert_documented_rows(&text, "alice", "203.0.113.9", "bob");
}
