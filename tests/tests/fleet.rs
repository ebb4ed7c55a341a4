//! Fleets on PostgreSQL: one enrollment, one replay step and one set of throttle
//! counters for every host, through the real module (built with `--features
//! postgresql`) and real libpam, against a real PostgreSQL server with TLS.
//!
//! Each "host" is its own PAM transaction in its own process; they share nothing but
//! the database. The module and totp-admin of the PostgreSQL build are taken from
//! `$PAM_TOTP_PG_RELEASE` (tests/run.sh builds them into target/pg/release).

use pam_totp_tests::pg_support::{Postgres, ADMIN_ROLE, LOGIN_ROLE, STATEMENT_TIMEOUT_MS};
use pam_totp_tests::{code, wait_for_fresh_step, write_file, PamRun, Sandbox, SECRET};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
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
        use std::io::Write;
        let mut child = self
            .sb
            .command(self.build.join("totp-admin"))
            .arg("--config")
            .arg(config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
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
        "SET ROLE pam_totp_login; DO $$ BEGIN UPDATE pam_totp.users SET secret = 'x'; \
         EXCEPTION WHEN insufficient_privilege THEN RAISE NOTICE 'denied'; END $$; \
         SELECT has_column_privilege('pam_totp.users', 'secret', 'UPDATE')",
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
            "BEGIN; SELECT 'locked' FROM pam_totp.users WHERE name = 'alice' FOR UPDATE;"
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
/// `pam_authenticate`), with TLS and without. Printed for docs/BENCHMARKS.md; each login
/// is a different user with the same key, so that no code is a replay.
#[test]
fn login_cost_with_and_without_tls() {
    let build = pg_build_or_skip!();
    let fleet = Fleet::new("fleet-cost", build, "");
    const N: usize = 25;
    let secret_hex = "3132333435363738393031323334353637383930"; // SECRET, decoded
    fleet.pg.sql_in(
        "pam_totp",
        &format!(
            "INSERT INTO pam_totp.users (name, secret, algorithm, digits, period, created_at, confirmed_at)
             SELECT 'cost' || i, '\\x{secret_hex}'::bytea, 'SHA1', 6, 30, 0, 0
             FROM generate_series(0, {}) i",
            2 * N - 1
        ),
    );
    let median = |mut v: Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    for (label, extra, first) in [
        ("TLS (verify-full)", "", 0),
        (
            "no TLS (sslmode = \"disable\")",
            "sslmode = \"disable\"\n",
            N,
        ),
    ] {
        fleet.set_login_config("", extra);
        wait_for_fresh_step(30, 10);
        let code = code(SECRET, 0);
        let runs: Vec<Login> = (first..first + N)
            .map(|i| fleet.login("fleet", &format!("cost{i}"), "198.51.100.1", &code))
            .collect();
        for r in &runs {
            assert!(r.is("PAM_SUCCESS"), "{label}: {r:?}");
            r.assert_clean_exit();
        }
        eprintln!(
            "PostgreSQL login, {label}: median client CPU {} us, median wall {} ms ({N} logins)",
            median(runs.iter().map(|r| r.auth_cpu_us).collect()),
            median(runs.iter().map(|r| r.auth_ms).collect()),
        );
    }
}
