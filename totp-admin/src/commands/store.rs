//! `store init`: create the store (and the host key), or migrate it to this version's
//! schema.
//! `store rekey`: a new host key, every factor's key re-sealed under it.
//! `store copy --to CONFIG`: copy every enrollment into another configuration's store.

use super::Ctx;
use crate::audit;
use crate::cli::{StoreCopyArgs, StoreInitArgs};
use crate::error::{Error, Result};
use crate::output::{emit, escaped};
use pam_totp::config::{Backend, Config};
use pam_totp::store::{init_store, open_for_changes, open_for_reading, rekey_store};

pub fn init(ctx: &Ctx, args: &StoreInitArgs) -> Result<()> {
    ctx.caller.require_root("store init")?;
    let config = ctx.config()?;
    let text = match config.store.backend {
        Backend::Sqlite => {
            if args.login_role.is_some() {
                return Err(Error::failed(
                    "--login-role is for backend = \"postgresql\"",
                ));
            }
            let report = init_store(&config)?;
            let path = describe(&config);
            let mut text = key_text(&config, report.key_created);
            text.push_str(&match report.found {
                0 => format!(
                    "Created store {path} (schema version {}).\n",
                    report.version
                ),
                v if v < report.version => format!(
                    "Migrated store {path} from schema version {v} to {}.\n",
                    report.version
                ),
                _ => format!(
                    "Store {path} is ready (schema version {}).\n",
                    report.version
                ),
            });
            text
        }
        Backend::Postgresql => {
            let created = pam_totp::store::seal::create_host_key(&config.store.key)?;
            let mut text = key_text(&config, created);
            text.push_str(&init_postgresql(&config, args.login_role.as_deref())?);
            text
        }
    };
    audit::done(&ctx.caller, "store-init", "-", &describe(&config));
    emit(&text)
}

/// What became of the host key.
fn key_text(config: &Config, created: bool) -> String {
    let key = config.store.key.display();
    if !created {
        return String::new();
    }
    let mut text = format!(
        "Created the host key {key} (mode 0400): it seals every factor's key. Back it up \
         apart from the store: without it no enrolled user can log in.\n"
    );
    if config.store.backend == Backend::Postgresql {
        text.push_str(&format!(
            "Every host of the fleet needs this same file: copy {key} to them.\n"
        ));
    }
    text
}

/// `store rekey` (root).
pub fn rekey(ctx: &Ctx) -> Result<()> {
    ctx.caller.require_root("store rekey")?;
    let config = ctx.config()?;
    let report = rekey_store(&config)?;
    let key = config.store.key.display();
    let mut text = if report.finished_earlier_run {
        audit::done(
            &ctx.caller,
            "store-rekey",
            "-",
            "finished an interrupted run",
        );
        format!(
            "An earlier store rekey had re-sealed the factors but not replaced {key}: \
             it is replaced now.\n"
        )
    } else {
        audit::done(
            &ctx.caller,
            "store-rekey",
            "-",
            &format!("{} factors re-sealed", report.factors),
        );
        format!(
            "Re-sealed {} factor keys under a new host key, now in {key}. Back it up; \
             the old key opens nothing any more.\n",
            report.factors
        )
    };
    if config.store.backend == Backend::Postgresql {
        text.push_str(&format!(
            "Copy {key} to every other host of the fleet now: until then their logins fail.\n"
        ));
    }
    emit(&text)
}

fn init_postgresql(config: &Config, login_role: Option<&str>) -> Result<String> {
    let found = pam_totp::store::init_postgresql(config, login_role)?;
    let version = pam_totp::store::PG_SCHEMA_VERSION;
    let mut text = match found {
        0 => format!(
            "Created the pam_totp schema in {} (schema version {version}).\n",
            describe(config)
        ),
        v if v < version => format!(
            "Migrated the pam_totp schema in {} from version {v} to {version}.\n",
            describe(config)
        ),
        _ => format!(
            "Store {} is ready (schema version {version}).\n",
            describe(config)
        ),
    };
    if let Some(role) = login_role {
        text.push_str(&format!(
            "Granted role {} what a login needs (read factors, update steps and throttle rows).\n",
            escaped(role)
        ));
    }
    Ok(text)
}

/// The store a configuration names, for messages (escaped: the strings come from a
/// configuration file).
fn describe(config: &Config) -> String {
    let s = &config.store;
    escaped(&match s.backend {
        Backend::Sqlite => s.path.display().to_string(),
        Backend::Postgresql => {
            format!("postgresql://{}@{}:{}/{}", s.user, s.host, s.port, s.dbname)
        }
    })
}

pub fn copy(ctx: &Ctx, args: &StoreCopyArgs) -> Result<()> {
    ctx.caller.require_root("store copy")?;
    let from_config = ctx.config()?;
    let to_config = Config::load(&args.to)?;
    let (from, to) = (describe(&from_config), describe(&to_config));
    if from == to {
        return Err(Error::failed(format!(
            "{from} is both source and destination"
        )));
    }
    let source = open_for_reading(&from_config)?;
    let destination = open_for_changes(&to_config)?;
    let users = source.export()?;
    for user in &users {
        destination.import(user)?;
    }
    audit::done(
        &ctx.caller,
        "store-copy",
        "-",
        &format!("{} users from {from} to {to}", users.len()),
    );
    emit(&format!(
        "Copied {} enrolled users (factors, recovery codes, last used steps) from {from} to {to}.\n",
        users.len()
    ))
}
