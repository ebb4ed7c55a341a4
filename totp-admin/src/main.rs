//! `totp-admin`: enroll, reset and inspect pam_totp two-factor authentication.
//!
//! Installed setuid root (like `passwd`) so users can enroll into the root-owned
//! store. The order in `main` is the security argument: harden the process
//! ([`caller::harden`]), parse the arguments (which opens nothing), find out who the
//! caller really is from the real uid, refuse what they may not ask for (`--config`,
//! another user, root-only commands), and only then read the configuration and the
//! store. Exit status: 0 done, 1 refused or failed (one line on stderr), 2 usage.

mod accounts;
mod audit;
mod caller;
mod cgroup;
mod cli;
mod commands;
mod error;
mod output;
mod pam_client;
mod sessions;
mod terminal;

use caller::{Caller, Process};
use clap::Parser;
use cli::{Cli, Command, ImportCommand, PolicyCommand, StoreCommand};
use commands::Ctx;
use error::{Error, Result};
use pam_totp::config::DEFAULT_CONFIG_PATH;
use std::path::PathBuf;

fn main() {
    let process = caller::harden();
    // Usage errors exit 2, --help and --version 0 (clap's own codes).
    let cli = Cli::try_parse().unwrap_or_else(|e| e.exit());
    audit::open();
    if cli.json {
        terminal::prompts_to_stderr();
    }
    match run(&process, cli) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("totp-admin: {e}");
            std::process::exit(1);
        }
    }
}

fn run(process: &Process, cli: Cli) -> Result<()> {
    let caller = Caller::identify(process)?;
    preflight(&caller, &cli)?;
    if !process.effective_root {
        return Err(Error::failed(
            "not running as root: totp-admin must be installed owned by root with mode 4755",
        ));
    }
    // Every command a user may run opens the store, and any SQLite connection, a
    // read-only one too, can be stopped holding a lock every login needs (rebuilding
    // the shared-memory index of the WAL takes it exclusively).
    if !caller.is_root() {
        refuse_freezable_cgroup(process)?;
    }
    let ctx = Ctx {
        process: process.clone(),
        caller,
        config_path: cli
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH)),
        json: cli.json,
    };
    match &cli.command {
        Command::Enroll(a) if a.secret_stdin => commands::enroll::known_secret(&ctx, a),
        Command::Enroll(a) => commands::enroll::interactive(&ctx, a),
        Command::Status(a) => commands::status::status(&ctx, a.user.as_deref()),
        Command::Disable(a) => commands::manage::disable(&ctx, a.name.as_deref()),
        Command::Reset(a) => commands::manage::reset(&ctx, a),
        Command::Unlock(a) => commands::manage::unlock(&ctx, &a.user),
        Command::List => commands::status::list(&ctx),
        Command::RecoveryCodes(a) => commands::manage::recovery_codes(&ctx, a.user.as_deref()),
        Command::Policy(PolicyCommand::Show(a)) => commands::policy::show(&ctx, a.user.as_deref()),
        Command::Policy(PolicyCommand::Set(a)) => commands::policy::set(&ctx, a),
        Command::Import(ImportCommand::GoogleAuthenticator(a)) => {
            commands::import::google_authenticator(&ctx, a)
        }
        Command::Doctor => commands::doctor::run(&ctx),
        Command::Store(StoreCommand::Init(a)) => commands::store::init(&ctx, a),
        Command::Store(StoreCommand::Rekey) => commands::store::rekey(&ctx),
        Command::Store(StoreCommand::Copy(a)) => commands::store::copy(&ctx, a),
    }
}

/// A command run by a user from a cgroup they could freeze (a frozen tool would hold
/// the store while every login waits) is refused before it opens anything.
fn refuse_freezable_cgroup(process: &Process) -> Result<()> {
    let ids = cgroup::Ids {
        uid: process.real_uid,
        gid: process.real_gid,
        groups: process.groups.clone(),
    };
    match cgroup::check(&ids) {
        cgroup::Verdict::Safe => Ok(()),
        cgroup::Verdict::Freezable(file) => Err(Error::refused(format!(
            "you can freeze cgroup {} ({} is writable by you), which would stop totp-admin \
             while it holds the store: run it from a login session (ssh or a console login)",
            output::escaped(&file.cgroup),
            file.name
        ))),
        cgroup::Verdict::Unchecked(u) => Err(Error::refused(format!(
            "cannot tell whether you can freeze cgroup {} ({}): run it from a login session \
             (ssh or a console login)",
            output::escaped(&u.cgroup),
            output::escaped(&u.why)
        ))),
    }
}

/// Everything a caller may not ask for, refused before any file is opened.
fn preflight(caller: &Caller, cli: &Cli) -> Result<()> {
    if cli.config.is_some() {
        caller.require_root("--config")?;
    }
    let root_only = match &cli.command {
        Command::Enroll(a) if a.secret_stdin => Some("enroll --secret-stdin"),
        Command::Reset(_) => Some("reset"),
        Command::Unlock(_) => Some("unlock"),
        Command::List => Some("list"),
        Command::Policy(PolicyCommand::Set(_)) => Some("policy set"),
        Command::Import(_) => Some("import"),
        Command::Doctor => Some("doctor"),
        Command::Store(_) => Some("store"),
        _ => None,
    };
    if let Some(what) = root_only {
        caller.require_root(what)?;
    }
    let user = match &cli.command {
        Command::Enroll(a) => a.user.as_deref(),
        Command::Status(a) | Command::RecoveryCodes(a) => a.user.as_deref(),
        Command::Policy(PolicyCommand::Show(a)) => a.user.as_deref(),
        Command::Reset(a) => Some(a.user.as_str()),
        Command::Unlock(a) => Some(a.user.as_str()),
        Command::Import(ImportCommand::GoogleAuthenticator(a)) => Some(a.user.as_str()),
        _ => None,
    };
    caller.resolve(user).map(|_| ())
}
