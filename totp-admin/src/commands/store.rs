//! `store init`: create the store, or migrate it to this version's schema.

use super::Ctx;
use crate::audit;
use crate::error::Result;
use crate::output::emit;
use pam_totp::store::SCHEMA_VERSION;

pub fn init(ctx: &Ctx) -> Result<()> {
    ctx.caller.require_root("store init")?;
    let config = ctx.config()?;
    let store = ctx.store(&config)?;
    store.integrity_check()?;
    audit::done(
        &ctx.caller,
        "store-init",
        "-",
        &config.store.path.display().to_string(),
    );
    emit(&format!(
        "Store {} is ready (schema version {SCHEMA_VERSION}).\n",
        config.store.path.display()
    ))
}
