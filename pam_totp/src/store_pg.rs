//! The PostgreSQL store, for fleets: one enrollment, one replay step and one set of
//! throttle counters shared by every host (feature `postgresql`; see docs/FLEET.md).
//!
//! A login connects when it first asks the store something and closes before the
//! person is asked for a code: reading the login state ends the session, so nothing is
//! held open while someone types. The answer is then checked in a second short
//! session. Every wait of a session — TCP connect, TLS, the PostgreSQL login, the
//! statements and the close — is bounded by one deadline, `[store] timeout`.
//!
//! The client is tokio-postgres on a single-thread runtime made for the session and
//! dropped with it. That runtime is only ever driven from a short-lived helper thread,
//! joined before the call returns: tokio and the SCRAM client keep thread-locals with
//! destructors, which on the host's own thread would pin the module in memory after
//! `pam_end`. Names are never resolved (the address comes from `hostaddr`); TLS is
//! rustls with the one CA of `sslrootcert`; nothing is read from `PG*` variables or
//! `~/.pgpass`. Statements are sent with explicit parameter types and no named
//! prepared statements, so PgBouncer in transaction mode can stand in between.

use crate::config::{check_owner_and_mode, SslMode, StoreConfig, ThrottleConfig};
use crate::otp::{Algorithm, OtpParams};
use crate::recovery::{self, HashedCode};
use crate::secret::SecretKey;
use crate::store::seal::{HostKey, Keyring};
use crate::store::{
    check_enrollment, hashed_code, Attempt, EnrolledUser, Enrollment, Factor, FactorSummary,
    LoginState, Passed, Result, StepOutcome, Store, StoreError, UserSummary, DEFAULT_FACTOR,
};
use crate::throttle::{self, PairFailures, UserFailures};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::cell::RefCell;
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, NoTls, TlsConnect};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};
use zeroize::Zeroizing;

pub use crate::store::PG_SCHEMA_VERSION as SCHEMA_VERSION;

/// `totp-admin` waits at least this long per call: a copy or a migration is not a login.
const ADMIN_MIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The tables of `store.rs`, in a schema of their own so that they can share a
/// database: the same tables and columns as the SQLite store. `user` is a reserved word
/// in PostgreSQL, so that column is always written quoted.
const SCHEMA: &str = r#"
CREATE TABLE pam_totp.users (
    "user" text PRIMARY KEY,
    mandatory_since bigint,
    window_start bigint NOT NULL DEFAULT 0,
    window_failures bigint NOT NULL DEFAULT 0,
    retired_step bigint
);
CREATE TABLE pam_totp.factors (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "user" text NOT NULL,
    name text NOT NULL,
    sealed_key bytea NOT NULL,
    algorithm text NOT NULL,
    digits bigint NOT NULL,
    period bigint NOT NULL,
    created_at bigint NOT NULL,
    last_used_at bigint,
    last_step bigint,
    UNIQUE ("user", name)
);
CREATE TABLE pam_totp.recovery_codes (
    "user" text NOT NULL,
    salt bytea NOT NULL,
    hash bytea NOT NULL,
    used_at bigint,
    PRIMARY KEY ("user", salt)
);
CREATE TABLE pam_totp.throttle (
    "user" text NOT NULL,
    source text NOT NULL,
    failures bigint NOT NULL,
    locked_until bigint NOT NULL,
    last_failure_at bigint NOT NULL,
    PRIMARY KEY ("user", source)
);
CREATE TABLE pam_totp.remembered (
    "user" text NOT NULL,
    source text NOT NULL,
    "until" bigint NOT NULL,
    PRIMARY KEY ("user", source)
);
"#;

/// What the module's own database role may do: read factors and state, move a
/// factor's replay step, count and clear failures, note a first mandatory sighting and
/// mark a recovery code used. It can neither write a key nor remove a factor. `{role}`
/// is replaced by a checked identifier.
pub const LOGIN_GRANTS: &str = r#"
GRANT USAGE ON SCHEMA pam_totp TO {role};
GRANT SELECT ON pam_totp.schema_version, pam_totp.users, pam_totp.factors,
    pam_totp.throttle, pam_totp.recovery_codes TO {role};
GRANT UPDATE (last_step, last_used_at) ON pam_totp.factors TO {role};
GRANT INSERT ("user", mandatory_since, window_start, window_failures),
    UPDATE (mandatory_since, window_start, window_failures) ON pam_totp.users TO {role};
GRANT INSERT, UPDATE, DELETE ON pam_totp.throttle TO {role};
GRANT UPDATE (used_at) ON pam_totp.recovery_codes TO {role};
GRANT SELECT, INSERT, UPDATE ("until") ON pam_totp.remembered TO {role};
"#;

/// [`LOGIN_GRANTS`] for `role`, a plain lowercase identifier.
fn login_grants(role: &str) -> Result<String> {
    if role.is_empty()
        || role.len() > 63
        || !role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        || role.as_bytes()[0].is_ascii_digit()
    {
        return Err(StoreError::Remote(format!(
            "role {role:?}: use lowercase letters, digits and _"
        )));
    }
    Ok(LOGIN_GRANTS.replace("{role}", role))
}

/// The roles other than the owner that can read the store's tables: the module's,
/// granted by `--login-role`. A migration grants them the same on the new tables.
async fn login_roles(c: &Client) -> std::result::Result<Vec<String>, Failure> {
    let rows = query(
        c,
        "SELECT DISTINCT grantee::text FROM information_schema.role_table_grants
         WHERE table_schema = 'pam_totp' AND table_name = 'users' AND privilege_type = 'SELECT'
           AND grantee::text <> current_user AND grantee::text <> 'PUBLIC'",
        &[],
    )
    .await?;
    rows.iter()
        .map(|r| get(r, 0))
        .collect::<Result<_>>()
        .map_err(Failure::from)
}

/// Schema 2 to 3, inside the caller's transaction: the table of remembered sources,
/// granted to the module's roles.
async fn migrate_v2(c: &Client) -> std::result::Result<(), Failure> {
    let roles = login_roles(c).await?;
    c.batch_execute(
        r#"CREATE TABLE pam_totp.remembered (
               "user" text NOT NULL,
               source text NOT NULL,
               "until" bigint NOT NULL,
               PRIMARY KEY ("user", source)
           );"#,
    )
    .await?;
    for role in &roles {
        c.batch_execute(&login_grants(role)?).await?;
    }
    Ok(())
}

/// Schema 1 to 3, inside the caller's transaction: the old tables renamed out of the
/// way, schema 3 made, the rows copied (each key sealed under `key` as the user's
/// `default` factor), the old tables dropped, and the roles that could read the old
/// tables (the module's, granted by `--login-role`) granted the same on the new ones.
async fn migrate_v1(c: &Client, key: &HostKey, now: i64) -> std::result::Result<(), Failure> {
    let grantees = login_roles(c).await?;
    c.batch_execute(
        "ALTER TABLE pam_totp.users RENAME TO users_v1;
         ALTER TABLE pam_totp.users_v1 RENAME CONSTRAINT users_pkey TO users_v1_pkey;
         ALTER TABLE pam_totp.throttle RENAME TO throttle_v1;
         ALTER TABLE pam_totp.throttle_v1 RENAME CONSTRAINT throttle_pkey TO throttle_v1_pkey;
         ALTER TABLE pam_totp.recovery_codes RENAME TO recovery_codes_v1;
         ALTER TABLE pam_totp.recovery_codes_v1
             RENAME CONSTRAINT recovery_codes_pkey TO recovery_codes_v1_pkey;",
    )
    .await?;
    c.batch_execute(SCHEMA).await?;
    c.batch_execute(
        r#"INSERT INTO pam_totp.users ("user", mandatory_since, window_start, window_failures,
                                      retired_step)
               SELECT name, mandatory_since, window_start, window_failures,
                      CASE WHEN secret IS NULL THEN last_step END
               FROM pam_totp.users_v1;
           INSERT INTO pam_totp.recovery_codes ("user", salt, hash, used_at)
               SELECT name, salt, hash, used_at FROM pam_totp.recovery_codes_v1;"#,
    )
    .await?;
    query(
        c,
        r#"INSERT INTO pam_totp.throttle ("user", source, failures, locked_until, last_failure_at)
           SELECT name, source, failures, locked_until, $1 FROM pam_totp.throttle_v1"#,
        &[P::Int(now)],
    )
    .await?;
    let rows = query(
        c,
        "SELECT name, secret, algorithm, digits, period, created_at, last_used_at, last_step
         FROM pam_totp.users_v1 WHERE secret IS NOT NULL ORDER BY name",
        &[],
    )
    .await?;
    for r in &rows {
        let user: String = get(r, 0)?;
        let secret = SecretKey::from_bytes(get(r, 1)?);
        let algorithm: Option<String> = get(r, 2)?;
        let params = params_from(
            &user,
            DEFAULT_FACTOR,
            algorithm.as_deref().unwrap_or(""),
            get::<Option<i64>>(r, 3)?.unwrap_or(0),
            get::<Option<i64>>(r, 4)?.unwrap_or(0),
        )?;
        let sealed = key.seal(&user, DEFAULT_FACTOR, &secret)?;
        insert_factor(
            c,
            &user,
            DEFAULT_FACTOR,
            sealed,
            params,
            get::<Option<i64>>(r, 5)?.unwrap_or(0),
            get(r, 6)?,
            get(r, 7)?,
        )
        .await?;
    }
    c.batch_execute(
        "DROP TABLE pam_totp.users_v1, pam_totp.throttle_v1, pam_totp.recovery_codes_v1",
    )
    .await?;
    for role in &grantees {
        c.batch_execute(&login_grants(role)?).await?;
    }
    Ok(())
}

/// The columns of a factor, in the order [`PgStore::factor_from_row`] reads them.
const FACTOR_COLUMNS: &str = "f.id, f.name, f.sealed_key, f.algorithm, f.digits, f.period, \
                              f.created_at, f.last_used_at, f.last_step";

/// A user's factors, `default` first, then in the order enrolled.
const FACTOR_ORDER: &str = "f.name <> 'default', f.id";

/// Sources whose failures are kept per user (as in the SQLite store).
const MAX_SOURCES: i64 = 64;

/// Where and how to connect; fixed for the store's lifetime.
struct Target {
    endpoint: Endpoint,
    tls: Option<RustlsConnect>,
    pg: tokio_postgres::Config,
    timeout: Duration,
    /// For messages: `192.0.2.10:5432` or the socket path.
    name: String,
}

enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// One open connection and the runtime that drives it.
struct Session {
    runtime: tokio::runtime::Runtime,
    client: Client,
    connection: tokio::task::JoinHandle<()>,
    deadline: Instant,
}

/// The PostgreSQL store. Not shared between threads: one per login or command.
pub struct PgStore {
    /// The host key: the same file on every host of the fleet.
    keys: Keyring,
    target: Arc<Target>,
    session: RefCell<Option<Session>>,
    /// `totp-admin`: each call gets a deadline of its own.
    admin: bool,
}

type BoxFuture<'c, T> = Pin<Box<dyn Future<Output = std::result::Result<T, Failure>> + Send + 'c>>;

/// Why a statement failed, before it becomes a [`StoreError`].
enum Failure {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Pg(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

/// One line for the log: the server's own message for a refused statement or login,
/// else what went wrong on the way.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// An owned statement parameter, sent with its type (no prepare round trip).
enum P {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Bytes(Vec<u8>),
}

impl P {
    fn typed(&self) -> (&(dyn ToSql + Sync), Type) {
        match self {
            P::Text(v) => (v, Type::TEXT),
            P::OptText(v) => (v, Type::TEXT),
            P::Int(v) => (v, Type::INT8),
            P::OptInt(v) => (v, Type::INT8),
            P::Bytes(v) => (v, Type::BYTEA),
        }
    }
}

fn text(v: &str) -> P {
    P::Text(v.to_string())
}

async fn query(c: &Client, sql: &str, params: &[P]) -> std::result::Result<Vec<Row>, Failure> {
    let typed: Vec<_> = params.iter().map(P::typed).collect();
    Ok(c.query_typed(sql, &typed).await?)
}

impl PgStore {
    /// The store for one login, with the deadline of `[store] timeout` per session.
    pub fn for_login(config: &StoreConfig) -> Result<PgStore> {
        PgStore::new(config, false)
    }

    /// The store for `totp-admin`: a fresh deadline per call, at least 10 s.
    pub fn for_admin(config: &StoreConfig) -> Result<PgStore> {
        PgStore::new(config, true)
    }

    fn new(config: &StoreConfig, admin: bool) -> Result<PgStore> {
        let refuse = |why: String| StoreError::Insecure(PathBuf::new(), why);
        let endpoint = if config.is_socket_dir() {
            Endpoint::Unix(Path::new(&config.host).join(format!(".s.PGSQL.{}", config.port)))
        } else {
            let ip = config.server_addr().ok_or_else(|| {
                StoreError::Remote("store.hostaddr is not set (names are not resolved)".into())
            })?;
            Endpoint::Tcp(SocketAddr::new(ip, config.port))
        };
        let name = match &endpoint {
            Endpoint::Tcp(a) => a.to_string(),
            Endpoint::Unix(p) => p.display().to_string(),
        };
        let tls = match config.sslmode {
            SslMode::Disable => None,
            SslMode::VerifyFull => {
                let ca = config.sslrootcert.as_deref().ok_or_else(|| {
                    StoreError::Remote("sslmode = \"verify-full\" needs sslrootcert".into())
                })?;
                Some(RustlsConnect::new(ca, &config.host)?)
            }
        };
        let mut pg = tokio_postgres::Config::new();
        pg.user(&config.user)
            .dbname(&config.dbname)
            .application_name(if admin { "totp-admin" } else { "pam_totp" })
            .ssl_mode(if tls.is_some() {
                tokio_postgres::config::SslMode::Require
            } else {
                tokio_postgres::config::SslMode::Disable
            })
            .channel_binding(tokio_postgres::config::ChannelBinding::Disable);
        if let Some(path) = &config.password_file {
            let password = read_password(path).map_err(refuse)?;
            pg.password(password.as_bytes());
        }
        let timeout = if admin {
            config.timeout.0.max(ADMIN_MIN_TIMEOUT)
        } else {
            config.timeout.0
        };
        Ok(PgStore {
            keys: Keyring::new(&config.key),
            target: Arc::new(Target {
                endpoint,
                tls,
                pg,
                timeout,
                name,
            }),
            session: RefCell::new(None),
            admin,
        })
    }

    /// Runs `job` on the session (connecting first when there is none) in a helper
    /// thread, within the session's deadline. A failed or late job ends the session;
    /// `then_close` ends it after a good one too.
    fn run<T, F>(&self, then_close: bool, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Client) -> BoxFuture<'c, T> + Send + 'static,
    {
        let session = self.session.borrow_mut().take();
        let target = Arc::clone(&self.target);
        let admin = self.admin;
        let outcome = on_helper_thread(move || {
            let mut session = match session {
                Some(s) => s,
                None => Session::open(&target)?,
            };
            if admin {
                session.deadline = Instant::now() + target.timeout;
            }
            let deadline = tokio::time::Instant::from_std(session.deadline);
            let result = session
                .runtime
                .block_on(async { tokio::time::timeout_at(deadline, job(&session.client)).await });
            match result {
                Ok(Ok(value)) if !then_close => Ok((Some(session), value)),
                Ok(Ok(value)) => {
                    session.close();
                    Ok((None, value))
                }
                Ok(Err(failure)) => {
                    session.close();
                    Err(match failure {
                        Failure::Pg(e) => {
                            StoreError::Remote(format!("{}: {}", target.name, describe(&e)))
                        }
                        Failure::Store(e) => e,
                    })
                }
                Err(_) => Err(StoreError::Remote(format!(
                    "{}: no answer within {} ms",
                    target.name,
                    target.timeout.as_millis()
                ))),
            }
        })
        .map_err(StoreError::Remote)?;
        let (session, value) = outcome?;
        *self.session.borrow_mut() = session;
        Ok(value)
    }

    /// Runs one statement and returns its rows.
    fn query(&self, then_close: bool, sql: impl Into<String>, params: Vec<P>) -> Result<Vec<Row>> {
        let sql = sql.into();
        self.run(then_close, move |c| {
            Box::pin(async move { query(c, &sql, &params).await })
        })
    }

    /// Creates the schema or migrates it to [`SCHEMA_VERSION`], in one transaction under
    /// an advisory lock (two hosts running `store init` at once). Returns the version
    /// found before.
    pub fn migrate(&self) -> Result<i64> {
        // A version-1 schema's keys are sealed under the host key as they move.
        let key_path = self.keys.path().to_path_buf();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.run(false, move |c| {
            Box::pin(async move {
                c.batch_execute(
                    "BEGIN;
                     SELECT pg_advisory_xact_lock(7460716);
                     CREATE SCHEMA IF NOT EXISTS pam_totp;
                     CREATE TABLE IF NOT EXISTS pam_totp.schema_version (version bigint NOT NULL);",
                )
                .await?;
                let rows = query(c, "SELECT version FROM pam_totp.schema_version", &[]).await?;
                let found: i64 = match rows.first() {
                    Some(r) => r.try_get(0)?,
                    None => 0,
                };
                if found > SCHEMA_VERSION {
                    c.batch_execute("ROLLBACK").await?;
                    return Err(StoreError::Schema { found }.into());
                }
                match found {
                    SCHEMA_VERSION => {}
                    0 => {
                        c.batch_execute(SCHEMA).await?;
                        c.batch_execute("INSERT INTO pam_totp.schema_version VALUES (3)")
                            .await?;
                    }
                    1 => {
                        let key = HostKey::load(&key_path)?;
                        migrate_v1(c, &key, now).await?;
                        c.batch_execute("UPDATE pam_totp.schema_version SET version = 3")
                            .await?;
                    }
                    2 => {
                        migrate_v2(c).await?;
                        c.batch_execute("UPDATE pam_totp.schema_version SET version = 3")
                            .await?;
                    }
                    _ => {
                        c.batch_execute("ROLLBACK").await?;
                        return Err(StoreError::Schema { found }.into());
                    }
                }
                c.batch_execute("COMMIT").await?;
                Ok(found)
            })
        })
    }

    /// Grants the module's role what a login needs, and nothing more ([`LOGIN_GRANTS`]).
    pub fn grant_login_role(&self, role: &str) -> Result<()> {
        let sql = login_grants(role)?;
        self.run(false, move |c| {
            Box::pin(async move { Ok(c.batch_execute(&sql).await?) })
        })
    }

    /// The schema version, `0` when there is none yet. Two statements: a statement that
    /// names a missing table fails when it is parsed, whatever its WHERE says.
    pub fn schema_version(&self) -> Result<i64> {
        self.run(true, |c| {
            Box::pin(async move {
                let exists = query(
                    c,
                    "SELECT to_regclass('pam_totp.schema_version') IS NOT NULL",
                    &[],
                )
                .await?;
                if !exists.first().map_or(Ok(false), |r| r.try_get(0))? {
                    return Ok(0);
                }
                let rows = query(
                    c,
                    "SELECT coalesce(max(version), 0) FROM pam_totp.schema_version",
                    &[],
                )
                .await?;
                Ok(rows.first().map_or(Ok(0), |r| r.try_get(0))?)
            })
        })
    }
}

impl Drop for PgStore {
    /// Closes an open session from a helper thread, like every other use of it.
    fn drop(&mut self) {
        if let Some(session) = self.session.get_mut().take() {
            let _ = on_helper_thread(move || session.close());
        }
    }
}

/// Runs `f` on a new thread and waits for it. The thread is made with
/// `pthread_create`, not `std::thread`, whose bookkeeping leaves thread-locals with
/// destructors on the calling thread; every thread-local `f` touches is destroyed when
/// the helper exits, before this returns, so nothing keeps the module loaded.
fn on_helper_thread<F, T>(f: F) -> std::result::Result<T, String>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    struct Job<F, T> {
        f: Option<F>,
        out: Option<std::thread::Result<T>>,
    }
    extern "C" fn trampoline<F: FnOnce() -> T, T>(arg: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: arg is the Job that on_helper_thread passed to pthread_create; it lives
        // on that caller's stack until pthread_join has returned, and only this thread
        // touches it meanwhile.
        let job = unsafe { &mut *arg.cast::<Job<F, T>>() };
        if let Some(f) = job.f.take() {
            // A panic must not unwind out of an extern "C" function.
            job.out = Some(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        }
        std::ptr::null_mut()
    }
    let mut job = Job {
        f: Some(f),
        out: None,
    };
    let mut thread: libc::pthread_t = 0;
    // SAFETY: thread is a valid out-pointer; default attributes; the argument outlives
    // the thread because it is joined below before job goes out of scope.
    let rc = unsafe {
        libc::pthread_create(
            &mut thread,
            std::ptr::null(),
            trampoline::<F, T>,
            std::ptr::addr_of_mut!(job).cast(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "cannot start a thread: {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    // SAFETY: thread was created joinable above and is joined exactly once.
    let rc = unsafe { libc::pthread_join(thread, std::ptr::null_mut()) };
    if rc != 0 {
        // The thread may still use job, which lives on this stack: returning is unsound.
        std::process::abort();
    }
    match job.out {
        Some(Ok(value)) => Ok(value),
        _ => Err("internal error in the database thread".into()),
    }
}

impl Session {
    /// Connects within the deadline that starts now.
    fn open(target: &Target) -> Result<Session> {
        let deadline = Instant::now() + target.timeout;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| StoreError::Remote(format!("cannot make a runtime: {e}")))?;
        let connected = runtime.block_on(async {
            tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), connect(target)).await
        });
        match connected {
            Ok(Ok((client, connection))) => Ok(Session {
                runtime,
                client,
                connection,
                deadline,
            }),
            Ok(Err(e)) => Err(StoreError::Remote(format!("{}: {e}", target.name))),
            Err(_) => Err(StoreError::Remote(format!(
                "{}: not connected within {} ms",
                target.name,
                target.timeout.as_millis()
            ))),
        }
    }

    /// Says goodbye to the server (Terminate, then TLS close) within the deadline;
    /// past it, the socket is simply closed with the runtime.
    fn close(self) {
        let Session {
            runtime,
            client,
            connection,
            deadline,
        } = self;
        drop(client);
        let deadline = tokio::time::Instant::from_std(deadline);
        let _ = runtime.block_on(async { tokio::time::timeout_at(deadline, connection).await });
        drop(runtime);
    }
}

/// Opens the stream, negotiates TLS and logs in; the connection's I/O becomes a task
/// on the session's runtime.
async fn connect(
    target: &Target,
) -> std::result::Result<(Client, tokio::task::JoinHandle<()>), String> {
    let login = |e: tokio_postgres::Error| describe(&e);
    match &target.endpoint {
        Endpoint::Tcp(addr) => {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            let _ = tcp.set_nodelay(true);
            match &target.tls {
                Some(tls) => {
                    let (client, conn) = target
                        .pg
                        .connect_raw(tcp, tls.clone())
                        .await
                        .map_err(login)?;
                    Ok((client, spawn_connection(conn)))
                }
                None => {
                    let (client, conn) = target.pg.connect_raw(tcp, NoTls).await.map_err(login)?;
                    Ok((client, spawn_connection(conn)))
                }
            }
        }
        Endpoint::Unix(path) => {
            let unix = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            let (client, conn) = target.pg.connect_raw(unix, NoTls).await.map_err(login)?;
            Ok((client, spawn_connection(conn)))
        }
    }
}

fn spawn_connection<F>(connection: F) -> tokio::task::JoinHandle<()>
where
    F: Future<Output = std::result::Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let _ = connection.await;
    })
}

/// Reads the database password: a regular file, not a symbolic link, root's, readable
/// by root alone. One line; the newline is not part of it.
fn read_password(path: &Path) -> std::result::Result<Zeroizing<String>, String> {
    let what = format!("password_file {}", path.display());
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("{what}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{what}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{what}: not a regular file"));
    }
    if meta.uid() != 0 || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{what}: must be root's with mode 0600 (is uid {}, mode {:04o})",
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    let mut text = Zeroizing::new(String::new());
    file.take(4096)
        .read_to_string(&mut text)
        .map_err(|e| format!("{what}: {e}"))?;
    let password = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_string());
    if password.is_empty() || password.contains(['\n', '\0']) {
        return Err(format!("{what}: must hold the password on one line"));
    }
    Ok(password)
}

/// TLS with rustls: the server's certificate must chain to the CA of `sslrootcert`
/// and name `host`. Channel binding is not offered; verified TLS already binds the
/// server.
#[derive(Clone)]
struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    server: ServerName<'static>,
}

impl RustlsConnect {
    fn new(ca_path: &Path, host: &str) -> Result<RustlsConnect> {
        let what = format!("sslrootcert {}", ca_path.display());
        let insecure = |why: String| StoreError::Insecure(ca_path.to_path_buf(), why);
        // The CA decides which server is trusted with the secrets: only root may change it.
        let mut file = std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(ca_path)
            .map_err(|e| insecure(e.to_string()))?;
        let meta = file.metadata().map_err(|e| insecure(e.to_string()))?;
        check_owner_and_mode(&meta, "the file").map_err(insecure)?;
        let mut pem = Vec::new();
        file.by_ref()
            .take(1 << 20)
            .read_to_end(&mut pem)
            .map_err(|e| insecure(e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| StoreError::Remote(format!("{what}: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| StoreError::Remote(format!("{what}: {e}")))?;
        }
        if roots.is_empty() {
            return Err(StoreError::Remote(format!("{what}: no certificate in it")));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Remote(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server = ServerName::try_from(host.to_string()).map_err(|_| {
            StoreError::Remote(format!("store.host {host:?} is not a name for TLS"))
        })?;
        Ok(RustlsConnect {
            config: Arc::new(config),
            server,
        })
    }
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.config);
            let tls = connector.connect(self.server, stream).await?;
            Ok(RustlsStream(tls))
        })
    }
}

struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}

fn u32_from(v: i64) -> u32 {
    v.clamp(0, i64::from(u32::MAX)) as u32
}

/// A factor's id, user, name and sealed key.
type SealedRow = (i64, String, String, Vec<u8>);

/// A factor's parameters as stored, checked.
fn params_from(
    user: &str,
    name: &str,
    algorithm: &str,
    digits: i64,
    period: i64,
) -> Result<OtpParams> {
    let bad = || StoreError::Corrupt(format!("factor {name:?} of {user:?} has bad parameters"));
    let algorithm: Algorithm = algorithm.parse().map_err(|_| bad())?;
    if !(6..=8).contains(&digits) || !(1..=3600).contains(&period) {
        return Err(bad());
    }
    Ok(OtpParams {
        algorithm,
        digits: digits as u32,
        period: period as u64,
    })
}

/// A source as stored: at most 255 bytes, cut on a character boundary.
fn cut(source: &str) -> &str {
    let mut end = source.len().min(255);
    while !source.is_char_boundary(end) {
        end -= 1;
    }
    &source[..end]
}

/// Whether a statement failed because a table or column it names is not there: a
/// store of another schema version.
fn is_other_schema(e: &Failure) -> bool {
    use tokio_postgres::error::SqlState;
    match e {
        Failure::Pg(e) => matches!(
            e.code(),
            Some(c) if *c == SqlState::UNDEFINED_TABLE || *c == SqlState::UNDEFINED_COLUMN
        ),
        Failure::Store(_) => false,
    }
}

/// The schema version, read after a statement found the tables different.
async fn found_version(c: &Client) -> i64 {
    match query(
        c,
        "SELECT coalesce(max(version), 0) FROM pam_totp.schema_version",
        &[],
    )
    .await
    {
        Ok(rows) => rows.first().and_then(|r| r.try_get(0).ok()).unwrap_or(0),
        Err(_) => 0,
    }
}

impl PgStore {
    /// Every factor's id, user, name and sealed key.
    fn sealed_keys(&self) -> Result<Vec<SealedRow>> {
        let rows = self.query(
            false,
            r#"SELECT id, "user", name, sealed_key FROM pam_totp.factors"#,
            vec![],
        )?;
        rows.iter()
            .map(|r| Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?, get(r, 3)?)))
            .collect()
    }

    /// Re-seals every factor's key under `new` in one transaction (`store rekey`); a
    /// factor changed meanwhile makes the whole run fail, and nothing changes.
    pub fn reseal(&self, new: &HostKey) -> Result<u32> {
        let mut rows = Vec::new();
        for (id, user, name, sealed) in self.sealed_keys()? {
            let secret = self.keys.unseal(&user, &name, &sealed)?;
            rows.push((id, sealed, new.seal(&user, &name, &secret)?));
        }
        self.transaction(move |c| {
            Box::pin(async move {
                for (id, old, new) in &rows {
                    let changed = query(
                        c,
                        "UPDATE pam_totp.factors SET sealed_key = $3
                         WHERE id = $1 AND sealed_key = $2 RETURNING 1",
                        &[P::Int(*id), P::Bytes(old.clone()), P::Bytes(new.clone())],
                    )
                    .await?;
                    if changed.len() != 1 {
                        return Err(StoreError::Remote(
                            "a factor changed during the re-sealing: run store rekey again".into(),
                        )
                        .into());
                    }
                }
                Ok(rows.len() as u32)
            })
        })
    }

    /// Whether every factor's key opens with `key`; `true` without factors.
    pub fn opens_with(&self, key: &HostKey) -> Result<bool> {
        Ok(self
            .sealed_keys()?
            .iter()
            .all(|(_, user, name, sealed)| key.unseal(user, name, sealed).is_some()))
    }

    /// A factor from [`FACTOR_COLUMNS`] at `first..first + 9`, its key unsealed and its
    /// parameters checked.
    fn factor_from_row(&self, user: &str, r: &Row, first: usize) -> Result<Factor> {
        let name: String = get(r, first + 1)?;
        let sealed: Vec<u8> = get(r, first + 2)?;
        let secret = self.keys.unseal(user, &name, &sealed)?;
        let algorithm: String = get(r, first + 3)?;
        let params = params_from(
            user,
            &name,
            &algorithm,
            get(r, first + 4)?,
            get(r, first + 5)?,
        )?;
        if secret.as_bytes().len() < 10 {
            return Err(StoreError::Corrupt(format!(
                "factor {name:?} of {user:?}: key too short"
            )));
        }
        Ok(Factor {
            id: get(r, first)?,
            name,
            secret,
            params,
            created_at: get(r, first + 6)?,
            last_used_at: get(r, first + 7)?,
            last_step: get(r, first + 8)?,
        })
    }

    /// Runs `job` inside BEGIN ... COMMIT (ROLLBACK when it fails).
    fn transaction<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Client) -> BoxFuture<'c, T> + Send + 'static,
    {
        self.run(false, move |c| {
            Box::pin(async move {
                c.batch_execute("BEGIN").await?;
                match job(c).await {
                    Ok(v) => {
                        c.batch_execute("COMMIT").await?;
                        Ok(v)
                    }
                    Err(e) => {
                        let _ = c.batch_execute("ROLLBACK").await;
                        Err(e)
                    }
                }
            })
        })
    }
}

/// Replaces a user's recovery codes (inside the caller's transaction).
async fn write_recovery_codes(
    c: &Client,
    user: &str,
    codes: &[(HashedCode, Option<i64>)],
) -> std::result::Result<(), Failure> {
    query(
        c,
        r#"DELETE FROM pam_totp.recovery_codes WHERE "user" = $1"#,
        &[text(user)],
    )
    .await?;
    for (code, used_at) in codes {
        query(
            c,
            r#"INSERT INTO pam_totp.recovery_codes ("user", salt, hash, used_at)
               VALUES ($1, $2, $3, $4)"#,
            &[
                text(user),
                P::Bytes(code.salt.to_vec()),
                P::Bytes(code.hash.to_vec()),
                P::OptInt(*used_at),
            ],
        )
        .await?;
    }
    Ok(())
}

/// The id and last step of the user's factor `name`, locked until the transaction ends.
async fn current_factor(
    c: &Client,
    user: &str,
    name: &str,
) -> std::result::Result<Option<(i64, Option<i64>)>, Failure> {
    let rows = query(
        c,
        r#"SELECT id, last_step FROM pam_totp.factors WHERE "user" = $1 AND name = $2 FOR UPDATE"#,
        &[text(user), text(name)],
    )
    .await?;
    match rows.first() {
        Some(r) => Ok(Some((get(r, 0)?, get(r, 1)?))),
        None => Ok(None),
    }
}

/// The last step accepted by a removed factor of the user (see `store.rs`).
async fn retired_step(c: &Client, user: &str) -> std::result::Result<Option<i64>, Failure> {
    let rows = query(
        c,
        r#"SELECT retired_step FROM pam_totp.users WHERE "user" = $1"#,
        &[text(user)],
    )
    .await?;
    match rows.first() {
        Some(r) => Ok(get(r, 0)?),
        None => Ok(None),
    }
}

/// Writes a factor row (inside the caller's transaction); returns its id.
#[allow(clippy::too_many_arguments)]
async fn insert_factor(
    c: &Client,
    user: &str,
    name: &str,
    sealed: Vec<u8>,
    params: OtpParams,
    created_at: i64,
    last_used_at: Option<i64>,
    last_step: Option<i64>,
) -> std::result::Result<i64, Failure> {
    let rows = query(
        c,
        r#"INSERT INTO pam_totp.factors ("user", name, sealed_key, algorithm, digits, period,
                                         created_at, last_used_at, last_step)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id"#,
        &[
            text(user),
            text(name),
            P::Bytes(sealed),
            text(params.algorithm.as_str()),
            P::Int(i64::from(params.digits)),
            P::Int(params.period as i64),
            P::Int(created_at),
            P::OptInt(last_used_at),
            P::OptInt(last_step),
        ],
    )
    .await?;
    match rows.first() {
        Some(r) => Ok(get(r, 0)?),
        None => Err(StoreError::Remote("INSERT returned no id".into()).into()),
    }
}

/// A [`Passed`] that can move into a statement's future.
struct OwnedPassed {
    source: String,
    remember: Option<(String, i64)>,
}

impl From<&Passed<'_>> for OwnedPassed {
    fn from(p: &Passed<'_>) -> Self {
        OwnedPassed {
            source: cut(p.source).to_string(),
            remember: p.remember.map(|(s, until)| (cut(s).to_string(), until)),
        }
    }
}

/// The conditional UPDATE of a factor's step; when it changes nothing, a second read
/// tells a replay from a factor that was removed or replaced meanwhile.
async fn step_update(
    c: &Client,
    user: &str,
    factor_id: i64,
    step: i64,
    now: i64,
) -> std::result::Result<StepOutcome, Failure> {
    let changed = query(
        c,
        r#"UPDATE pam_totp.factors SET last_step = $3, last_used_at = $4
           WHERE id = $1 AND "user" = $2 AND (last_step IS NULL OR last_step < $3)
           RETURNING 1"#,
        &[P::Int(factor_id), text(user), P::Int(step), P::Int(now)],
    )
    .await?;
    if changed.len() == 1 {
        return Ok(StepOutcome::Accepted);
    }
    let exists = query(
        c,
        r#"SELECT 1 FROM pam_totp.factors WHERE id = $1 AND "user" = $2"#,
        &[P::Int(factor_id), text(user)],
    )
    .await?;
    Ok(if exists.is_empty() {
        StepOutcome::FactorChanged
    } else {
        StepOutcome::Replayed
    })
}

/// What a success clears and remembers (inside the caller's transaction, the user's
/// row first): one failure of the user's window, the pair's failures, the source.
async fn record_success(
    c: &Client,
    user: &str,
    passed: &OwnedPassed,
) -> std::result::Result<(), Failure> {
    query(
        c,
        r#"UPDATE pam_totp.users SET window_failures = greatest(window_failures - 1, 0)
           WHERE "user" = $1"#,
        &[text(user)],
    )
    .await?;
    query(
        c,
        r#"DELETE FROM pam_totp.throttle WHERE "user" = $1 AND source = $2"#,
        &[text(user), text(&passed.source)],
    )
    .await?;
    if let Some((source, until)) = &passed.remember {
        query(
            c,
            r#"INSERT INTO pam_totp.remembered ("user", source, "until") VALUES ($1, $2, $3)
               ON CONFLICT ("user", source) DO UPDATE SET "until" = excluded."until""#,
            &[text(user), text(source), P::Int(*until)],
        )
        .await?;
    }
    Ok(())
}

/// Forgets every source remembered for the user (inside the caller's transaction).
async fn forget_sources(c: &Client, user: &str) -> std::result::Result<(), Failure> {
    query(
        c,
        r#"DELETE FROM pam_totp.remembered WHERE "user" = $1"#,
        &[text(user)],
    )
    .await?;
    Ok(())
}

impl Store for PgStore {
    /// One statement, which also tells a store of another schema apart. It ends the
    /// session: a person is asked for a code next.
    fn login_state(&self, user: &str, source: &str) -> Result<LoginState> {
        let (user_owned, source) = (user.to_string(), cut(source).to_string());
        let rows = self.run(true, move |c| {
            Box::pin(async move {
                let sql = format!(
                    r#"SELECT v.version, u.window_start, u.window_failures, t.failures,
                              t.locked_until, m."until", {FACTOR_COLUMNS}
                       FROM pam_totp.schema_version v
                       LEFT JOIN pam_totp.users u ON u."user" = $1
                       LEFT JOIN pam_totp.throttle t ON t."user" = $1 AND t.source = $2
                       LEFT JOIN pam_totp.remembered m ON m."user" = $1 AND m.source = $2
                       LEFT JOIN pam_totp.factors f ON f."user" = $1
                       ORDER BY {FACTOR_ORDER}"#
                );
                match query(c, &sql, &[text(&user_owned), text(&source)]).await {
                    Ok(rows) => Ok(rows),
                    Err(e) if is_other_schema(&e) => Err(StoreError::Schema {
                        found: found_version(c).await,
                    }
                    .into()),
                    Err(e) => Err(e),
                }
            })
        })?;
        let Some(first) = rows.first() else {
            return Err(StoreError::Schema { found: 0 });
        };
        let version: i64 = get(first, 0)?;
        if version != SCHEMA_VERSION {
            return Err(StoreError::Schema { found: version });
        }
        let mut factors = Vec::new();
        for r in &rows {
            if get::<Option<i64>>(r, 6)?.is_some() {
                factors.push(self.factor_from_row(user, r, 6)?);
            }
        }
        Ok(LoginState {
            factors,
            user: UserFailures {
                window_start: get::<Option<i64>>(first, 1)?.unwrap_or(0),
                failures: u32_from(get::<Option<i64>>(first, 2)?.unwrap_or(0)),
            },
            pair: PairFailures {
                failures: u32_from(get::<Option<i64>>(first, 3)?.unwrap_or(0)),
                locked_until: get::<Option<i64>>(first, 4)?.unwrap_or(0),
            },
            remembered_until: get(first, 5)?,
        })
    }

    /// One short transaction, atomic across hosts: the user's row is locked first (made
    /// when missing), then the pair's row read; a locked pair or a user at the ceiling
    /// rolls back with nothing written. Every writer of these rows locks the user's row
    /// first, so racing attempts queue on it.
    fn begin_attempt(
        &self,
        user: &str,
        source: &str,
        now: i64,
        config: &ThrottleConfig,
    ) -> Result<Attempt> {
        let (user, source, config) = (user.to_string(), cut(source).to_string(), config.clone());
        self.run(false, move |c| {
            Box::pin(async move {
                c.batch_execute("BEGIN").await?;
                let u = [text(&user)];
                query(
                    c,
                    r#"INSERT INTO pam_totp.users ("user") VALUES ($1) ON CONFLICT ("user") DO NOTHING"#,
                    &u,
                )
                .await?;
                let window = query(
                    c,
                    r#"SELECT window_start, window_failures FROM pam_totp.users
                       WHERE "user" = $1 FOR UPDATE"#,
                    &u,
                )
                .await?;
                let pair = query(
                    c,
                    r#"SELECT failures, locked_until FROM pam_totp.throttle
                       WHERE "user" = $1 AND source = $2"#,
                    &[text(&user), text(&source)],
                )
                .await?;
                let window = match window.first() {
                    Some(r) => UserFailures {
                        window_start: get(r, 0)?,
                        failures: u32_from(get(r, 1)?),
                    },
                    None => UserFailures::default(),
                };
                let known_pair = match pair.first() {
                    Some(r) => Some(PairFailures {
                        failures: u32_from(get(r, 0)?),
                        locked_until: get(r, 1)?,
                    }),
                    None => None,
                };
                let pair = known_pair.unwrap_or_default();
                if let Some(wait_secs) = throttle::wait_secs(pair, window, now, &config) {
                    c.batch_execute("ROLLBACK").await?;
                    return Ok(Attempt::Throttled { wait_secs });
                }
                let pair = throttle::pair_after_failure(pair, now, &config);
                let window = throttle::user_after_failure(window, now);
                query(
                    c,
                    r#"INSERT INTO pam_totp.throttle ("user", source, failures, locked_until,
                                                      last_failure_at)
                       VALUES ($1, $2, $3, $4, $5)
                       ON CONFLICT ("user", source) DO UPDATE SET failures = $3,
                           locked_until = $4, last_failure_at = $5"#,
                    &[
                        text(&user),
                        text(&source),
                        P::Int(i64::from(pair.failures)),
                        P::Int(pair.locked_until),
                        P::Int(now),
                    ],
                )
                .await?;
                query(
                    c,
                    r#"UPDATE pam_totp.users SET window_start = $2, window_failures = $3
                       WHERE "user" = $1"#,
                    &[
                        text(&user),
                        P::Int(window.window_start),
                        P::Int(i64::from(window.failures)),
                    ],
                )
                .await?;
                if known_pair.is_none() {
                    query(
                        c,
                        r#"DELETE FROM pam_totp.throttle WHERE ("user", source) IN (
                               SELECT "user", source FROM pam_totp.throttle
                               WHERE "user" = $1 AND source <> $2
                               ORDER BY locked_until > $3, locked_until, failures
                               LIMIT greatest(0, (SELECT count(*) FROM pam_totp.throttle
                                                  WHERE "user" = $1) - $4))"#,
                        &[text(&user), text(&source), P::Int(now), P::Int(MAX_SOURCES)],
                    )
                    .await?;
                }
                c.batch_execute("COMMIT").await?;
                Ok(Attempt::Allowed)
            })
        })
    }

    /// The user's row first, as everywhere, then the pair's.
    fn attempt_succeeded(&self, user: &str, passed: &Passed<'_>) -> Result<()> {
        let (user, passed) = (user.to_string(), OwnedPassed::from(passed));
        self.transaction(move |c| Box::pin(async move { record_success(c, &user, &passed).await }))
    }

    /// One transaction: the user's row locked first (as by every writer of the throttle
    /// rows), then the conditional UPDATE of the step, then what a success clears and
    /// remembers. Racing logins with the same step queue on the user's row; the first
    /// commits, the others find the step taken and roll back.
    fn accept_login(
        &self,
        user: &str,
        factor_id: i64,
        step: i64,
        now: i64,
        passed: &Passed<'_>,
    ) -> Result<StepOutcome> {
        let (user, passed) = (user.to_string(), OwnedPassed::from(passed));
        self.run(false, move |c| {
            Box::pin(async move {
                c.batch_execute("BEGIN").await?;
                let outcome = async {
                    query(
                        c,
                        r#"SELECT 1 FROM pam_totp.users WHERE "user" = $1 FOR UPDATE"#,
                        &[text(&user)],
                    )
                    .await?;
                    let outcome = step_update(c, &user, factor_id, step, now).await?;
                    if outcome == StepOutcome::Accepted {
                        record_success(c, &user, &passed).await?;
                    }
                    Ok::<_, Failure>(outcome)
                }
                .await;
                match outcome {
                    Ok(StepOutcome::Accepted) => {
                        c.batch_execute("COMMIT").await?;
                        Ok(StepOutcome::Accepted)
                    }
                    other => {
                        let _ = c.batch_execute("ROLLBACK").await;
                        other
                    }
                }
            })
        })
    }

    /// One auto-committed conditional UPDATE: of racing logins on any hosts with the
    /// same step, exactly one changes the row. No transaction, so no loser waits on a
    /// lock held across a round trip. When nothing changed, a second read tells a replay
    /// from a factor that was removed or replaced meanwhile.
    fn accept_step(&self, user: &str, factor_id: i64, step: i64, now: i64) -> Result<StepOutcome> {
        let user = user.to_string();
        self.run(false, move |c| {
            Box::pin(async move { step_update(c, &user, factor_id, step, now).await })
        })
    }

    fn use_recovery_code(&self, user: &str, normalized: &[u8], now: i64) -> Result<bool> {
        let user = user.to_string();
        let normalized = Zeroizing::new(normalized.to_vec());
        self.run(false, move |c| {
            Box::pin(async move {
                let rows = query(
                    c,
                    r#"SELECT salt, hash FROM pam_totp.recovery_codes
                       WHERE "user" = $1 AND used_at IS NULL"#,
                    &[text(&user)],
                )
                .await?;
                let mut found = None;
                for r in &rows {
                    let code = hashed_code(&user, get(r, 0)?, get(r, 1)?)?;
                    if recovery::matches(&code, &normalized) {
                        found = Some(code.salt);
                    }
                }
                let Some(salt) = found else { return Ok(false) };
                // The conditional UPDATE decides between racing logins with the same code.
                let used = query(
                    c,
                    r#"UPDATE pam_totp.recovery_codes SET used_at = $3
                       WHERE "user" = $1 AND salt = $2 AND used_at IS NULL RETURNING 1"#,
                    &[text(&user), P::Bytes(salt.to_vec()), P::Int(now)],
                )
                .await?;
                Ok(used.len() == 1)
            })
        })
    }

    fn first_mandatory_sighting(&self, user: &str, now: i64) -> Result<i64> {
        let rows = self.query(
            false,
            r#"INSERT INTO pam_totp.users ("user", mandatory_since) VALUES ($1, $2)
               ON CONFLICT ("user") DO UPDATE
                   SET mandatory_since = coalesce(pam_totp.users.mandatory_since, $2)
               RETURNING mandatory_since"#,
            vec![text(user), P::Int(now)],
        )?;
        match rows.first() {
            Some(r) => get::<Option<i64>>(r, 0).map(|v| v.unwrap_or(now)),
            None => Ok(now),
        }
    }

    fn enroll(&self, user: &str, e: &Enrollment<'_>, now: i64) -> Result<i64> {
        let sealed = self.keys.seal(user, e.name, e.secret)?;
        let (user, name, params, mode, confirmed) = (
            user.to_string(),
            e.name.to_string(),
            e.params,
            e.mode,
            e.confirmed_step,
        );
        let codes: Option<Vec<(HashedCode, Option<i64>)>> = e
            .recovery_codes
            .map(|codes| codes.iter().map(|c| (c.clone(), None)).collect());
        self.transaction(move |c| {
            Box::pin(async move {
                // The user's row first, locked, as every writer of the user's rows
                // does: two enrollments of one user then count the factors in turn.
                query(
                    c,
                    r#"INSERT INTO pam_totp.users ("user") VALUES ($1) ON CONFLICT ("user") DO NOTHING"#,
                    &[text(&user)],
                )
                .await?;
                query(
                    c,
                    r#"SELECT 1 FROM pam_totp.users WHERE "user" = $1 FOR UPDATE"#,
                    &[text(&user)],
                )
                .await?;
                let current = current_factor(c, &user, &name).await?;
                let count = query(
                    c,
                    r#"SELECT count(*) FROM pam_totp.factors WHERE "user" = $1"#,
                    &[text(&user)],
                )
                .await?;
                let count: i64 = match count.first() {
                    Some(r) => get(r, 0)?,
                    None => 0,
                };
                check_enrollment(
                    &user,
                    &name,
                    mode,
                    current.map(|(id, _)| id),
                    usize::try_from(count).unwrap_or(usize::MAX),
                )?;
                // A replacement keeps the old factor's last step, and any factor starts
                // after the steps of the user's removed ones.
                let mut last_step = confirmed.max(retired_step(c, &user).await?);
                if let Some((id, old_step)) = current {
                    query(
                        c,
                        "DELETE FROM pam_totp.factors WHERE id = $1",
                        &[P::Int(id)],
                    )
                    .await?;
                    last_step = last_step.max(old_step);
                }
                let id =
                    insert_factor(c, &user, &name, sealed, params, now, None, last_step).await?;
                forget_sources(c, &user).await?;
                if let Some(codes) = codes {
                    write_recovery_codes(c, &user, &codes).await?;
                }
                Ok(id)
            })
        })
    }

    fn remove_factors(&self, user: &str, name: Option<&str>) -> Result<u32> {
        let (user, name) = (user.to_string(), name.map(str::to_string));
        self.transaction(move |c| {
            Box::pin(async move {
                // The user's row first, as every writer of the throttle rows does; it
                // keeps the last step of the factors removed.
                query(
                    c,
                    r#"INSERT INTO pam_totp.users ("user", retired_step)
                       SELECT $1, max(last_step) FROM pam_totp.factors
                       WHERE "user" = $1 AND ($2::text IS NULL OR name = $2)
                       ON CONFLICT ("user") DO UPDATE SET retired_step =
                           greatest(pam_totp.users.retired_step, excluded.retired_step)"#,
                    &[text(&user), P::OptText(name.clone())],
                )
                .await?;
                let removed = match &name {
                    Some(name) => {
                        query(
                            c,
                            r#"DELETE FROM pam_totp.factors WHERE "user" = $1 AND name = $2
                               RETURNING 1"#,
                            &[text(&user), text(name)],
                        )
                        .await?
                    }
                    None => {
                        query(
                            c,
                            r#"DELETE FROM pam_totp.factors WHERE "user" = $1 RETURNING 1"#,
                            &[text(&user)],
                        )
                        .await?
                    }
                };
                query(
                    c,
                    r#"DELETE FROM pam_totp.recovery_codes WHERE "user" = $1
                       AND NOT EXISTS (SELECT 1 FROM pam_totp.factors WHERE "user" = $1)"#,
                    &[text(&user)],
                )
                .await?;
                forget_sources(c, &user).await?;
                if name.is_none() {
                    query(
                        c,
                        r#"UPDATE pam_totp.users SET window_start = 0, window_failures = 0
                           WHERE "user" = $1"#,
                        &[text(&user)],
                    )
                    .await?;
                    query(
                        c,
                        r#"DELETE FROM pam_totp.throttle WHERE "user" = $1"#,
                        &[text(&user)],
                    )
                    .await?;
                }
                Ok(removed.len() as u32)
            })
        })
    }

    fn has_records(&self, user: &str) -> Result<bool> {
        let rows = self.query(
            false,
            r#"SELECT EXISTS (SELECT 1 FROM pam_totp.users WHERE "user" = $1)
                   OR EXISTS (SELECT 1 FROM pam_totp.factors WHERE "user" = $1)
                   OR EXISTS (SELECT 1 FROM pam_totp.recovery_codes WHERE "user" = $1)
                   OR EXISTS (SELECT 1 FROM pam_totp.throttle WHERE "user" = $1)
                   OR EXISTS (SELECT 1 FROM pam_totp.remembered WHERE "user" = $1)"#,
            vec![text(user)],
        )?;
        match rows.first() {
            Some(r) => get(r, 0),
            None => Ok(false),
        }
    }

    fn unlock(&self, user: &str) -> Result<bool> {
        let user = user.to_string();
        self.transaction(move |c| {
            Box::pin(async move {
                let window = query(
                    c,
                    r#"UPDATE pam_totp.users SET window_start = 0, window_failures = 0
                       WHERE "user" = $1 AND (window_start <> 0 OR window_failures <> 0)
                       RETURNING 1"#,
                    &[text(&user)],
                )
                .await?;
                let pairs = query(
                    c,
                    r#"DELETE FROM pam_totp.throttle WHERE "user" = $1 RETURNING 1"#,
                    &[text(&user)],
                )
                .await?;
                forget_sources(c, &user).await?;
                Ok(!window.is_empty() || !pairs.is_empty())
            })
        })
    }

    fn replace_recovery_codes(&self, user: &str, codes: &[HashedCode]) -> Result<()> {
        let user = user.to_string();
        let codes: Vec<(HashedCode, Option<i64>)> =
            codes.iter().map(|c| (c.clone(), None)).collect();
        self.transaction(move |c| {
            Box::pin(async move { write_recovery_codes(c, &user, &codes).await })
        })
    }

    fn recovery_codes_left(&self, user: &str) -> Result<u32> {
        let rows = self.query(
            false,
            r#"SELECT count(*)::bigint FROM pam_totp.recovery_codes
               WHERE "user" = $1 AND used_at IS NULL"#,
            vec![text(user)],
        )?;
        match rows.first() {
            Some(r) => Ok(u32_from(get(r, 0)?)),
            None => Ok(0),
        }
    }

    fn list(&self) -> Result<Vec<UserSummary>> {
        let rows = self.query(
            false,
            format!(
                r#"SELECT f."user", f.name, f.algorithm, f.digits, f.period, f.created_at,
                          f.last_used_at,
                          (SELECT count(*)::bigint FROM pam_totp.recovery_codes r
                           WHERE r."user" = f."user" AND r.used_at IS NULL)
                   FROM pam_totp.factors f ORDER BY f."user", {FACTOR_ORDER}"#
            ),
            vec![],
        )?;
        let mut out: Vec<UserSummary> = Vec::new();
        for r in &rows {
            let user: String = get(r, 0)?;
            let name: String = get(r, 1)?;
            let algorithm: String = get(r, 2)?;
            let params = params_from(&user, &name, &algorithm, get(r, 3)?, get(r, 4)?)?;
            let factor = FactorSummary {
                name,
                algorithm: params.algorithm,
                digits: params.digits,
                period: params.period,
                created_at: get(r, 5)?,
                last_used_at: get(r, 6)?,
            };
            match out.last_mut() {
                Some(last) if last.user == user => last.factors.push(factor),
                _ => out.push(UserSummary {
                    user,
                    factors: vec![factor],
                    recovery_codes_left: u32_from(get(r, 7)?),
                }),
            }
        }
        Ok(out)
    }

    fn throttle_state(&self, user: &str) -> Result<(Vec<(String, PairFailures)>, UserFailures)> {
        let pairs = self.query(
            false,
            r#"SELECT source, failures, locked_until FROM pam_totp.throttle
               WHERE "user" = $1 ORDER BY source"#,
            vec![text(user)],
        )?;
        let window = self.query(
            false,
            r#"SELECT window_start, window_failures FROM pam_totp.users WHERE "user" = $1"#,
            vec![text(user)],
        )?;
        let pairs = pairs
            .iter()
            .map(|r| {
                Ok((
                    get(r, 0)?,
                    PairFailures {
                        failures: u32_from(get(r, 1)?),
                        locked_until: get(r, 2)?,
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let window = match window.first() {
            Some(r) => UserFailures {
                window_start: get(r, 0)?,
                failures: u32_from(get(r, 1)?),
            },
            None => UserFailures::default(),
        };
        Ok((pairs, window))
    }

    fn export(&self) -> Result<Vec<EnrolledUser>> {
        let factors = self.query(
            false,
            format!(
                r#"SELECT f."user", {FACTOR_COLUMNS} FROM pam_totp.factors f
                   ORDER BY f."user", {FACTOR_ORDER}"#
            ),
            vec![],
        )?;
        let codes = self.query(
            false,
            r#"SELECT "user", salt, hash, used_at FROM pam_totp.recovery_codes
               ORDER BY "user", salt"#,
            vec![],
        )?;
        let mut out: Vec<EnrolledUser> = Vec::new();
        for r in &factors {
            let user: String = get(r, 0)?;
            let factor = self.factor_from_row(&user, r, 1)?;
            match out.last_mut() {
                Some(last) if last.user == user => last.factors.push(factor),
                _ => out.push(EnrolledUser {
                    user,
                    factors: vec![factor],
                    recovery_codes: Vec::new(),
                }),
            }
        }
        for r in &codes {
            let user: String = get(r, 0)?;
            if let Ok(i) = out.binary_search_by(|u| u.user.as_str().cmp(&user)) {
                let code = hashed_code(&user, get(r, 1)?, get(r, 2)?)?;
                out[i].recovery_codes.push((code, get(r, 3)?));
            }
        }
        Ok(out)
    }

    /// A later step already recorded here is kept: a copy never reopens codes.
    fn import(&self, u: &EnrolledUser) -> Result<()> {
        let mut factors = Vec::with_capacity(u.factors.len());
        for f in &u.factors {
            factors.push((
                f.name.clone(),
                self.keys.seal(&u.user, &f.name, &f.secret)?,
                f.params,
                f.created_at,
                f.last_used_at,
                f.last_step,
            ));
        }
        let (user, codes) = (u.user.clone(), u.recovery_codes.clone());
        self.transaction(move |c| {
            Box::pin(async move {
                let retired = retired_step(c, &user).await?;
                for (name, sealed, params, created_at, last_used_at, last_step) in factors {
                    let mut last_step = last_step.max(retired);
                    if let Some((id, old_step)) = current_factor(c, &user, &name).await? {
                        query(
                            c,
                            "DELETE FROM pam_totp.factors WHERE id = $1",
                            &[P::Int(id)],
                        )
                        .await?;
                        last_step = last_step.max(old_step);
                    }
                    insert_factor(
                        c,
                        &user,
                        &name,
                        sealed,
                        params,
                        created_at,
                        last_used_at,
                        last_step,
                    )
                    .await?;
                }
                forget_sources(c, &user).await?;
                write_recovery_codes(c, &user, &codes).await
            })
        })
    }
}
