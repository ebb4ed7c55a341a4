//! `import google-authenticator --user U [FILE]`: the key, the options this module can
//! honour and the unused scratch codes of a `~/.google_authenticator` file, so that
//! the user's app and remaining scratch codes keep working.
//!
//! The file format is parsed by [`pam_totp::gauth`]; this command reads the file
//! (small, not a symlink, the user's own) and activates what it holds.

use super::Ctx;
use crate::audit;
use crate::cli::ImportGoogleArgs;
use crate::error::{Error, Result};
use crate::output::{emit, escaped, escaped_path};
use pam_totp::enroll::{self, NewFactor};
use pam_totp::gauth::parse_google_authenticator;
use pam_totp::otp::{Algorithm, OtpParams};
use pam_totp::recovery::{self, HashedCode};
use pam_totp::store::{EnrollMode, DEFAULT_FACTOR};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// google-authenticator itself refuses files over 1 kB; allow some slack.
const MAX_FILE_BYTES: u64 = 4096;

/// `import google-authenticator --user U [FILE]` (root).
pub fn google_authenticator(ctx: &Ctx, args: &ImportGoogleArgs) -> Result<()> {
    ctx.caller.require_root("import")?;
    let account = ctx.caller.target(Some(&args.user))?;
    let name = account.name.clone();
    // The user's own file must be theirs (or root's); a file root names is trusted.
    let (path, owner) = match &args.file {
        Some(p) => (p.clone(), None),
        None => (
            PathBuf::from(&account.home).join(".google_authenticator"),
            Some(account.uid),
        ),
    };
    let text = read_small_file(&path, owner)?;
    let parsed = parse_google_authenticator(&text)
        .map_err(|why| Error::failed(format!("{}: {why}", escaped_path(&path))))?;
    let config = ctx.config()?;
    let store = ctx.store_for_changes(&config)?;
    let params = OtpParams {
        algorithm: Algorithm::Sha1,
        digits: 6,
        period: parsed.period,
    };
    let host = enroll::hostname();
    let issuer = if config.totp.issuer.is_empty() {
        host.clone()
    } else {
        config.totp.issuer.clone()
    };
    let uri = enroll::otpauth_uri(&issuer, &format!("{name}@{host}"), &parsed.secret, &params);
    let factor = NewFactor {
        user: name.clone(),
        secret: parsed.secret,
        params,
        uri,
    };
    let hashed = parsed
        .scratch_codes
        .iter()
        .map(|c| recovery::hash_new(c))
        .collect::<std::io::Result<Vec<HashedCode>>>()
        .map_err(|e| Error::failed(format!("cannot store the scratch codes: {e}")))?;
    let last_used = parsed.used_steps.iter().copied().max();
    let existed = store
        .login_state(&name, super::SOURCE)?
        .factors
        .iter()
        .any(|f| f.name == DEFAULT_FACTOR);
    if existed && !args.replace {
        return Err(super::enroll::already_enrolled(
            &name,
            DEFAULT_FACTOR,
            "--replace",
        ));
    }
    let mode = if args.replace {
        EnrollMode::Replace { expected: None }
    } else {
        EnrollMode::New
    };
    super::enroll::write(
        ctx,
        &*store,
        &factor,
        DEFAULT_FACTOR,
        mode,
        Some(&hashed),
        last_used,
    )?;
    let summary = format!(
        "key (every {} s) and {} scratch codes from {}",
        params.period,
        hashed.len(),
        path.display()
    );
    let detail = if existed {
        format!("replaced factor: {summary}")
    } else {
        summary.clone()
    };
    audit::done(&ctx.caller, "import", &name, &detail);
    let mut out = format!(
        "Imported for {}: the {}; the scratch codes work as recovery codes.\n",
        escaped(&name),
        escaped(&summary)
    );
    for note in &parsed.notes {
        out.push_str(&format!("Note: {}.\n", escaped(note)));
    }
    emit(&out)
}

/// Reads a small regular file without following a symlink; `owner`, when given, must
/// own it (or root).
fn read_small_file(path: &Path, owner: Option<libc::uid_t>) -> Result<Zeroizing<String>> {
    let fail = |why: String| Error::failed(format!("{}: {why}", escaped_path(path)));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => fail("is a symbolic link: refused".into()),
            _ => fail(format!("cannot open: {e}")),
        })?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    if let Some(uid) = owner {
        if meta.uid() != uid && meta.uid() != 0 {
            return Err(fail(format!(
                "owned by uid {}, not by the user: refused",
                meta.uid()
            )));
        }
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(fail("too large for a google-authenticator file".into()));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    (&file)
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| fail("not a text file".into()))?;
    Ok(Zeroizing::new(text.to_string()))
}
