//! A throwaway PostgreSQL server for the fleet tests: Debian's `postgresql` package,
//! `initdb` into a temporary directory as the `postgres` user, listening on 127.0.0.1
//! (a free port), optionally on one more address (a test network's bridge), and on a
//! Unix socket in that directory, TLS with a CA made by `openssl` for the test.
//! Stopped and removed on drop.

use crate::write_file;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The name in the server's certificate (`host` in the configs; `hostaddr` is 127.0.0.1).
pub const SERVER_NAME: &str = "db.pam-totp.test";
/// The role `totp-admin` uses: owns the database and the schema.
pub const ADMIN_ROLE: &str = "pam_totp_admin";
/// The module's role: only the grants of `totp-admin store init --login-role`.
pub const LOGIN_ROLE: &str = "pam_totp_login";
pub const DATABASE: &str = "pam_totp";
const ADMIN_PASSWORD: &str = "admin-secret-for-tests";
const LOGIN_PASSWORD: &str = "login-secret-for-tests";
/// The server kills the module's statements after this long (set on its role).
pub const STATEMENT_TIMEOUT_MS: u64 = 1000;

/// Where the PostgreSQL programs of Debian's package live.
fn bin(program: &str) -> PathBuf {
    let base = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(base)
        .unwrap_or_else(|_| panic!("{} is missing: apt-get install postgresql", base.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    versions
        .last()
        .expect("a PostgreSQL version")
        .join("bin")
        .join(program)
}

/// Runs `argv` as the `postgres` user and asserts it succeeded.
fn as_postgres(argv: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).args(argv);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{argv:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free TCP port on 127.0.0.1 (the listener is closed again at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Postgres {
    pub dir: PathBuf,
    pub port: u16,
    running: bool,
}

impl Postgres {
    /// initdb, TLS files, roles and database; the server is running on return.
    pub fn start(name: &str) -> Postgres {
        Postgres::start_listening(name, None)
    }

    /// The same, listening also on `also.0` for clients in network `also.1` (CIDR), who
    /// may log in only over TLS.
    pub fn start_listening(name: &str, also: Option<(IpAddr, &str)>) -> Postgres {
        crate::require_root();
        let dir = crate::sandbox_dir(&format!("pg-{name}"));
        let mut pg = Postgres {
            port: free_port(),
            dir,
            running: false,
        };
        pg.make_tls();
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&pg.dir));
        let data = pg.data();
        as_postgres(
            &[
                bin("initdb").to_str().unwrap(),
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "--no-instructions",
            ],
            None,
        );
        let tls = pg.dir.join("tls");
        let mut listen = String::from("127.0.0.1");
        let mut hba = String::from(
            "local all postgres trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostnossl all all 127.0.0.1/32 scram-sha-256\n",
        );
        if let Some((addr, network)) = also {
            listen.push_str(&format!(",{addr}"));
            hba.push_str(&format!("hostssl all all {network} scram-sha-256\n"));
        }
        let conf = format!(
            "listen_addresses = '{listen}'\nport = {}\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = '{}/server.crt'\nssl_key_file = '{}/server.key'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             max_connections = 60\nshared_buffers = '32MB'\nlog_min_messages = warning\n",
            pg.port,
            pg.dir.display(),
            tls.display(),
            tls.display()
        );
        let mut old = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        old.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), old).unwrap();
        // The superuser only through the socket; the two roles over TCP, with SCRAM.
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        pg.start_server();
        pg.running = true;
        pg.sql(&format!(
            "CREATE ROLE {ADMIN_ROLE} LOGIN PASSWORD '{ADMIN_PASSWORD}';
             CREATE ROLE {LOGIN_ROLE} LOGIN PASSWORD '{LOGIN_PASSWORD}';
             ALTER ROLE {LOGIN_ROLE} SET statement_timeout = '{STATEMENT_TIMEOUT_MS}ms';
             ALTER ROLE {LOGIN_ROLE} SET idle_in_transaction_session_timeout = '5s';
             CREATE DATABASE {DATABASE} OWNER {ADMIN_ROLE};"
        ));
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The CA (`tls/ca.pem`, the only file a config names) and the server's key and
    /// certificate for [`SERVER_NAME`] and 127.0.0.1.
    fn make_tls(&self) {
        let tls = self.dir.join("tls");
        std::fs::create_dir(&tls).unwrap();
        let ossl = |args: &[&str]| run(Command::new("openssl").current_dir(&tls).args(args));
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        ossl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=pam_totp test CA",
                ],
            ]
            .concat(),
        );
        ossl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    &format!("/CN={SERVER_NAME}"),
                ],
            ]
            .concat(),
        );
        std::fs::write(
            tls.join("san.ext"),
            format!(
                "subjectAltName = DNS:{SERVER_NAME}, IP:127.0.0.1\nbasicConstraints = CA:FALSE\n"
            ),
        )
        .unwrap();
        ossl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        std::fs::set_permissions(
            tls.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        // A second CA that signed nothing: a config trusting it must refuse the server.
        ossl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "other-ca.key",
                    "-out",
                    "other-ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=unrelated CA",
                ],
            ]
            .concat(),
        );
    }

    /// The test CA's certificate, as the server presents it.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }

    /// A CA that did not sign the server's certificate.
    pub fn other_ca(&self) -> PathBuf {
        self.dir.join("tls/other-ca.pem")
    }

    pub fn start_server(&self) {
        as_postgres(
            &[
                bin("pg_ctl").to_str().unwrap(),
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                self.dir.join("server.log").to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
            None,
        );
    }

    /// Stops the server (fast: sessions are cut).
    pub fn stop(&mut self) {
        if self.running {
            as_postgres(
                &[
                    bin("pg_ctl").to_str().unwrap(),
                    "-D",
                    self.data().to_str().unwrap(),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "60",
                    "stop",
                ],
                None,
            );
            self.running = false;
        }
    }

    fn psql_args(&self, db: &str) -> Vec<String> {
        [
            bin("psql").to_str().unwrap(),
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            self.dir.to_str().unwrap(),
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Runs SQL as the superuser in database `postgres`; returns the output.
    pub fn sql(&self, sql: &str) -> String {
        self.sql_in("postgres", sql)
    }

    /// Runs SQL as the superuser in `db`; returns the output (unaligned, tuples only).
    pub fn sql_in(&self, db: &str, sql: &str) -> String {
        let args = self.psql_args(db);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = as_postgres(&argv, Some(sql));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `pg_dump` of `db` as the superuser, in plain SQL (what a backup holds).
    pub fn dump(&self, db: &str) -> Vec<u8> {
        let args = self.psql_args(db);
        // psql's connection arguments, from `-h` on, suit pg_dump too.
        let from = args.iter().position(|a| a == "-h").unwrap();
        let mut argv = vec![bin("pg_dump").to_str().unwrap().to_string()];
        argv.extend(args[from..].iter().cloned());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        as_postgres(&argv, None).stdout
    }

    /// A psql session as the superuser in the fleet database, reading SQL from the
    /// returned child's stdin (for a transaction held open while a login runs).
    pub fn session(&self) -> Child {
        let args = self.psql_args(DATABASE);
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// A `[store]` table for this server: `role` is [`ADMIN_ROLE`] or [`LOGIN_ROLE`];
    /// the password file and a root-owned copy of the CA are written into `dir`.
    pub fn store_config(&self, dir: &Path, role: &str, extra: &str) -> String {
        self.store_config_at(dir, role, IpAddr::V4(Ipv4Addr::LOCALHOST), extra)
    }

    /// The same, for clients that reach the server at `hostaddr`.
    pub fn store_config_at(&self, dir: &Path, role: &str, hostaddr: IpAddr, extra: &str) -> String {
        let password = if role == ADMIN_ROLE {
            ADMIN_PASSWORD
        } else {
            LOGIN_PASSWORD
        };
        let password_file = dir.join(format!("{role}.password"));
        write_file(&password_file, &format!("{password}\n"), 0o600);
        let ca = dir.join("db-ca.pem");
        std::fs::copy(self.ca(), &ca).unwrap();
        std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut text = format!(
            "[store]\nbackend = \"postgresql\"\nhost = \"{SERVER_NAME}\"\nhostaddr = \"{hostaddr}\"\n\
             port = {}\ndbname = \"{DATABASE}\"\nuser = \"{role}\"\npassword_file = \"{}\"\n",
            self.port,
            password_file.display()
        );
        if !extra.contains("sslrootcert") {
            text.push_str(&format!("sslrootcert = \"{}\"\n", ca.display()));
        }
        text.push_str(extra);
        text
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin("pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "-t", "60", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        crate::remove_sandbox_dir(&self.dir);
    }
}

/// Copies the host key at `from` to `to` (root's, mode 0400): every host of a fleet
/// needs the same key.
pub fn copy_host_key(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o400)).unwrap();
}
