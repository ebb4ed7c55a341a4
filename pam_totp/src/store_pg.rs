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
use crate::otp::OtpParams;
use crate::recovery::{self, HashedCode};
use crate::secret::SecretKey;
use crate::store::{
    hashed_code, EnrolledUser, Enrollment, Factor, LoginState, Result, Store, StoreError,
    UserSummary,
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

/// The tables, in their own schema so that they can share a database. Column names
/// follow the SQLite store; `name` stands for SQLite's `user`, a reserved word here.
const SCHEMA_V1: &str = "
CREATE TABLE pam_totp.users (
    name text PRIMARY KEY,
    secret bytea,
    algorithm text,
    digits bigint,
    period bigint,
    created_at bigint,
    confirmed_at bigint,
    last_used_at bigint,
    last_step bigint,
    mandatory_since bigint,
    window_start bigint NOT NULL DEFAULT 0,
    window_failures bigint NOT NULL DEFAULT 0
);
CREATE TABLE pam_totp.throttle (
    name text NOT NULL,
    source text NOT NULL,
    failures bigint NOT NULL,
    locked_until bigint NOT NULL,
    PRIMARY KEY (name, source)
);
CREATE TABLE pam_totp.recovery_codes (
    name text NOT NULL,
    salt bytea NOT NULL,
    hash bytea NOT NULL,
    used_at bigint,
    PRIMARY KEY (name, salt)
);
";

/// What the module's own database role may do: read factors and state, move the
/// replay step, count and clear failures, note a first mandatory sighting and mark a
/// recovery code used. It can neither write a secret nor remove a user. `{role}` is
/// replaced by a checked identifier.
pub const LOGIN_GRANTS: &str = "
GRANT USAGE ON SCHEMA pam_totp TO {role};
GRANT SELECT ON pam_totp.schema_version, pam_totp.users, pam_totp.throttle,
    pam_totp.recovery_codes TO {role};
GRANT UPDATE (last_step, last_used_at, window_start, window_failures, mandatory_since)
    ON pam_totp.users TO {role};
GRANT INSERT (name, mandatory_since) ON pam_totp.users TO {role};
GRANT INSERT, UPDATE, DELETE ON pam_totp.throttle TO {role};
GRANT UPDATE (used_at) ON pam_totp.recovery_codes TO {role};
";

/// The columns of a factor, in the order [`factor_from_row`] reads them.
const FACTOR_COLUMNS: &str = "u.secret, u.algorithm, u.digits, u.period, u.created_at, \
                              u.confirmed_at, u.last_used_at, u.last_step";

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
    Int(i64),
    OptInt(Option<i64>),
    Bytes(Vec<u8>),
    /// A secret key: wiped when the statement is done.
    Secret(Zeroizing<Vec<u8>>),
}

impl P {
    fn typed(&self) -> (&(dyn ToSql + Sync), Type) {
        match self {
            P::Text(v) => (v, Type::TEXT),
            P::Int(v) => (v, Type::INT8),
            P::OptInt(v) => (v, Type::INT8),
            P::Bytes(v) => (v, Type::BYTEA),
            P::Secret(v) => (&**v, Type::BYTEA),
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
        self.run(false, |c| {
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
                if found < 1 {
                    c.batch_execute(SCHEMA_V1).await?;
                    c.batch_execute("INSERT INTO pam_totp.schema_version VALUES (1)")
                        .await?;
                }
                c.batch_execute("COMMIT").await?;
                Ok(found)
            })
        })
    }

    /// Grants the module's role what a login needs, and nothing more ([`LOGIN_GRANTS`]).
    pub fn grant_login_role(&self, role: &str) -> Result<()> {
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
        let sql = LOGIN_GRANTS.replace("{role}", role);
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

/// A factor from columns `first..first + 8` (see [`FACTOR_COLUMNS`]).
fn factor_from_row(user: &str, r: &Row, first: usize) -> Result<Option<Factor>> {
    let Some(secret) = get::<Option<Vec<u8>>>(r, first)? else {
        return Ok(None);
    };
    let secret = SecretKey::from_bytes(secret);
    let algorithm = get::<Option<String>>(r, first + 1)?
        .unwrap_or_default()
        .parse()
        .map_err(StoreError::Corrupt)?;
    let digits = get::<Option<i64>>(r, first + 2)?.unwrap_or(0);
    let period = get::<Option<i64>>(r, first + 3)?.unwrap_or(0);
    if !(6..=8).contains(&digits) || !(1..=3600).contains(&period) || secret.as_bytes().len() < 10 {
        return Err(StoreError::Corrupt(format!(
            "factor of {user:?} has bad parameters"
        )));
    }
    Ok(Some(Factor {
        secret,
        params: OtpParams {
            algorithm,
            digits: digits as u32,
            period: period as u64,
        },
        created_at: get::<Option<i64>>(r, first + 4)?.unwrap_or(0),
        confirmed_at: get(r, first + 5)?,
        last_used_at: get(r, first + 6)?,
        last_step: get(r, first + 7)?,
    }))
}

/// Replaces a user's recovery codes (inside the caller's transaction).
async fn write_recovery_codes(
    c: &Client,
    user: &str,
    codes: &[(HashedCode, Option<i64>)],
) -> std::result::Result<(), Failure> {
    query(
        c,
        "DELETE FROM pam_totp.recovery_codes WHERE name = $1",
        &[text(user)],
    )
    .await?;
    for (code, used_at) in codes {
        query(
            c,
            "INSERT INTO pam_totp.recovery_codes (name, salt, hash, used_at) VALUES ($1, $2, $3, $4)",
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

impl Store for PgStore {
    /// One statement, which also checks the schema version. It ends the session: a
    /// person is asked for a code next.
    fn login_state(&self, user: &str, source: &str) -> Result<LoginState> {
        let rows = self.query(
            true,
            "SELECT v.version, u.secret, u.algorithm, u.digits, u.period, u.created_at,
                    u.confirmed_at, u.last_used_at, u.last_step,
                    u.window_start, u.window_failures, t.failures, t.locked_until
             FROM pam_totp.schema_version v
             LEFT JOIN pam_totp.users u ON u.name = $1
             LEFT JOIN pam_totp.throttle t ON t.name = $1 AND t.source = $2",
            vec![text(user), text(source)],
        )?;
        let Some(r) = rows.first() else {
            return Err(StoreError::Schema { found: 0 });
        };
        let version: i64 = get(r, 0)?;
        if version != SCHEMA_VERSION || rows.len() != 1 {
            return Err(StoreError::Schema { found: version });
        }
        Ok(LoginState {
            factor: factor_from_row(user, r, 1)?,
            user: UserFailures {
                window_start: get::<Option<i64>>(r, 9)?.unwrap_or(0),
                failures: u32_from(get::<Option<i64>>(r, 10)?.unwrap_or(0)),
            },
            pair: PairFailures {
                failures: u32_from(get::<Option<i64>>(r, 11)?.unwrap_or(0)),
                locked_until: get::<Option<i64>>(r, 12)?.unwrap_or(0),
            },
        })
    }

    /// One auto-committed conditional UPDATE: of racing logins on any hosts with the
    /// same step, exactly one changes the row. No transaction, so no loser waits on a
    /// lock held across a round trip.
    fn accept_step(&self, user: &str, step: i64, now: i64) -> Result<bool> {
        let rows = self.query(
            false,
            "UPDATE pam_totp.users SET last_step = $2, last_used_at = $3
             WHERE name = $1 AND secret IS NOT NULL AND (last_step IS NULL OR last_step < $2)
             RETURNING 1",
            vec![text(user), P::Int(step), P::Int(now)],
        )?;
        Ok(rows.len() == 1)
    }

    fn use_recovery_code(&self, user: &str, normalized: &[u8], now: i64) -> Result<bool> {
        let user = user.to_string();
        let normalized = Zeroizing::new(normalized.to_vec());
        self.run(false, move |c| {
            Box::pin(async move {
                let rows = query(
                    c,
                    "SELECT salt, hash FROM pam_totp.recovery_codes WHERE name = $1 AND used_at IS NULL",
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
                    "UPDATE pam_totp.recovery_codes SET used_at = $3
                     WHERE name = $1 AND salt = $2 AND used_at IS NULL RETURNING 1",
                    &[text(&user), P::Bytes(salt.to_vec()), P::Int(now)],
                )
                .await?;
                if used.len() != 1 {
                    return Ok(false);
                }
                query(
                    c,
                    "UPDATE pam_totp.users SET last_used_at = $2 WHERE name = $1",
                    &[text(&user), P::Int(now)],
                )
                .await?;
                Ok(true)
            })
        })
    }

    fn clear_failures(&self, user: &str, source: &str) -> Result<()> {
        self.query(
            false,
            "DELETE FROM pam_totp.throttle WHERE name = $1 AND source = $2",
            vec![text(user), text(source)],
        )?;
        Ok(())
    }

    /// One short transaction: the pair's row and the user's row are locked (in that
    /// order, everywhere), the new counts computed by [`throttle`], written, committed.
    fn record_failure(
        &self,
        user: &str,
        source: &str,
        now: i64,
        config: &ThrottleConfig,
    ) -> Result<(PairFailures, UserFailures)> {
        let (user, source, config) = (user.to_string(), source.to_string(), config.clone());
        self.run(false, move |c| {
            Box::pin(async move {
                c.batch_execute("BEGIN").await?;
                let key = [text(&user), text(&source)];
                query(
                    c,
                    "INSERT INTO pam_totp.throttle (name, source, failures, locked_until)
                     VALUES ($1, $2, 0, 0) ON CONFLICT (name, source) DO NOTHING",
                    &key,
                )
                .await?;
                let pair = query(
                    c,
                    "SELECT failures, locked_until FROM pam_totp.throttle
                     WHERE name = $1 AND source = $2 FOR UPDATE",
                    &key,
                )
                .await?;
                let window = query(
                    c,
                    "SELECT window_start, window_failures FROM pam_totp.users
                     WHERE name = $1 FOR UPDATE",
                    &[text(&user)],
                )
                .await?;
                let pair = match pair.first() {
                    Some(r) => PairFailures {
                        failures: u32_from(get(r, 0)?),
                        locked_until: get(r, 1)?,
                    },
                    None => PairFailures::default(),
                };
                let window = match window.first() {
                    Some(r) => UserFailures {
                        window_start: get(r, 0)?,
                        failures: u32_from(get(r, 1)?),
                    },
                    None => UserFailures::default(),
                };
                let pair = throttle::pair_after_failure(pair, now, &config);
                let window = throttle::user_after_failure(window, now);
                query(
                    c,
                    "UPDATE pam_totp.throttle SET failures = $3, locked_until = $4
                     WHERE name = $1 AND source = $2",
                    &[
                        text(&user),
                        text(&source),
                        P::Int(i64::from(pair.failures)),
                        P::Int(pair.locked_until),
                    ],
                )
                .await?;
                query(
                    c,
                    "UPDATE pam_totp.users SET window_start = $2, window_failures = $3
                     WHERE name = $1",
                    &[
                        text(&user),
                        P::Int(window.window_start),
                        P::Int(i64::from(window.failures)),
                    ],
                )
                .await?;
                c.batch_execute("COMMIT").await?;
                Ok((pair, window))
            })
        })
    }

    fn first_mandatory_sighting(&self, user: &str, now: i64) -> Result<i64> {
        let rows = self.query(
            false,
            "INSERT INTO pam_totp.users (name, mandatory_since) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE
                 SET mandatory_since = coalesce(pam_totp.users.mandatory_since, $2)
             RETURNING mandatory_since",
            vec![text(user), P::Int(now)],
        )?;
        match rows.first() {
            Some(r) => get::<Option<i64>>(r, 0).map(|v| v.unwrap_or(now)),
            None => Ok(now),
        }
    }

    fn enroll(&self, user: &str, e: &Enrollment<'_>, now: i64) -> Result<()> {
        let user = user.to_string();
        let secret = Zeroizing::new(e.secret.as_bytes().to_vec());
        let params = e.params;
        let codes: Vec<(HashedCode, Option<i64>)> =
            e.recovery_codes.iter().map(|c| (c.clone(), None)).collect();
        self.run(false, move |c| {
            Box::pin(async move {
                c.batch_execute("BEGIN").await?;
                // The last accepted step is kept: re-importing the same key must not
                // reopen codes that were already used.
                query(
                    c,
                    "INSERT INTO pam_totp.users (name, secret, algorithm, digits, period,
                                                 created_at, confirmed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $6)
                     ON CONFLICT (name) DO UPDATE SET secret = $2, algorithm = $3, digits = $4,
                         period = $5, created_at = $6, confirmed_at = $6, last_used_at = NULL",
                    &[
                        text(&user),
                        P::Secret(secret.clone()),
                        text(params.algorithm.as_str()),
                        P::Int(i64::from(params.digits)),
                        P::Int(params.period as i64),
                        P::Int(now),
                    ],
                )
                .await?;
                write_recovery_codes(c, &user, &codes).await?;
                c.batch_execute("COMMIT").await?;
                Ok(())
            })
        })
    }

    fn remove_user(&self, user: &str) -> Result<bool> {
        let user = user.to_string();
        self.run(false, move |c| {
            Box::pin(async move {
                c.batch_execute("BEGIN").await?;
                // The grace-period sighting and the last step stay.
                let removed = query(
                    c,
                    "UPDATE pam_totp.users SET secret = NULL, algorithm = NULL, digits = NULL,
                         period = NULL, created_at = NULL, confirmed_at = NULL,
                         last_used_at = NULL, window_start = 0, window_failures = 0
                     WHERE name = $1 AND secret IS NOT NULL RETURNING 1",
                    &[text(&user)],
                )
                .await?;
                for sql in [
                    "DELETE FROM pam_totp.recovery_codes WHERE name = $1",
                    "DELETE FROM pam_totp.throttle WHERE name = $1",
                ] {
                    query(c, sql, &[text(&user)]).await?;
                }
                c.batch_execute("COMMIT").await?;
                Ok(removed.len() == 1)
            })
        })
    }

    fn unlock(&self, user: &str) -> Result<()> {
        let user = user.to_string();
        self.run(false, move |c| {
            Box::pin(async move {
                c.batch_execute("BEGIN").await?;
                for sql in [
                    "DELETE FROM pam_totp.throttle WHERE name = $1",
                    "UPDATE pam_totp.users SET window_start = 0, window_failures = 0 WHERE name = $1",
                ] {
                    query(c, sql, &[text(&user)]).await?;
                }
                c.batch_execute("COMMIT").await?;
                Ok(())
            })
        })
    }

    fn replace_recovery_codes(&self, user: &str, codes: &[HashedCode]) -> Result<()> {
        let user = user.to_string();
        let codes: Vec<(HashedCode, Option<i64>)> =
            codes.iter().map(|c| (c.clone(), None)).collect();
        self.run(false, move |c| {
            Box::pin(async move {
                c.batch_execute("BEGIN").await?;
                write_recovery_codes(c, &user, &codes).await?;
                c.batch_execute("COMMIT").await?;
                Ok(())
            })
        })
    }

    fn recovery_codes_left(&self, user: &str) -> Result<u32> {
        let rows = self.query(
            false,
            "SELECT count(*)::bigint FROM pam_totp.recovery_codes WHERE name = $1 AND used_at IS NULL",
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
            "SELECT u.name, u.algorithm, u.digits, u.period, u.created_at, u.last_used_at,
                    (SELECT count(*)::bigint FROM pam_totp.recovery_codes r
                     WHERE r.name = u.name AND r.used_at IS NULL)
             FROM pam_totp.users u WHERE u.secret IS NOT NULL ORDER BY u.name",
            vec![],
        )?;
        rows.iter()
            .map(|r| {
                Ok(UserSummary {
                    user: get(r, 0)?,
                    algorithm: get::<Option<String>>(r, 1)?
                        .unwrap_or_default()
                        .parse()
                        .map_err(StoreError::Corrupt)?,
                    digits: u32_from(get::<Option<i64>>(r, 2)?.unwrap_or(0)),
                    period: get::<Option<i64>>(r, 3)?.unwrap_or(0).max(0) as u64,
                    created_at: get::<Option<i64>>(r, 4)?.unwrap_or(0),
                    last_used_at: get(r, 5)?,
                    recovery_codes_left: u32_from(get(r, 6)?),
                })
            })
            .collect()
    }

    fn throttle_state(&self, user: &str) -> Result<(Vec<(String, PairFailures)>, UserFailures)> {
        let pairs = self.query(
            false,
            "SELECT source, failures, locked_until FROM pam_totp.throttle
             WHERE name = $1 ORDER BY source",
            vec![text(user)],
        )?;
        let window = self.query(
            false,
            "SELECT window_start, window_failures FROM pam_totp.users WHERE name = $1",
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
        let sql = format!(
            "SELECT u.name, {FACTOR_COLUMNS} FROM pam_totp.users u
             WHERE u.secret IS NOT NULL ORDER BY u.name"
        );
        let users = self.query(false, sql, vec![])?;
        let codes = self.query(
            false,
            "SELECT name, salt, hash, used_at FROM pam_totp.recovery_codes ORDER BY name, salt",
            vec![],
        )?;
        let mut out = Vec::new();
        for r in &users {
            let user: String = get(r, 0)?;
            let Some(factor) = factor_from_row(&user, r, 1)? else {
                continue;
            };
            out.push(EnrolledUser {
                user,
                factor,
                recovery_codes: Vec::new(),
            });
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

    fn import(&self, u: &EnrolledUser) -> Result<()> {
        let u = u.clone();
        self.run(false, move |c| {
            Box::pin(async move {
                let f = &u.factor;
                c.batch_execute("BEGIN").await?;
                // A later step already recorded here is kept: a copy never reopens codes.
                query(
                    c,
                    "INSERT INTO pam_totp.users (name, secret, algorithm, digits, period,
                         created_at, confirmed_at, last_used_at, last_step)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (name) DO UPDATE SET secret = $2, algorithm = $3, digits = $4,
                         period = $5, created_at = $6, confirmed_at = $7, last_used_at = $8,
                         last_step = greatest(pam_totp.users.last_step, $9)",
                    &[
                        text(&u.user),
                        P::Secret(Zeroizing::new(f.secret.as_bytes().to_vec())),
                        text(f.params.algorithm.as_str()),
                        P::Int(i64::from(f.params.digits)),
                        P::Int(f.params.period as i64),
                        P::Int(f.created_at),
                        P::OptInt(f.confirmed_at),
                        P::OptInt(f.last_used_at),
                        P::OptInt(f.last_step),
                    ],
                )
                .await?;
                write_recovery_codes(c, &u.user, &u.recovery_codes).await?;
                c.batch_execute("COMMIT").await?;
                Ok(())
            })
        })
    }
}
