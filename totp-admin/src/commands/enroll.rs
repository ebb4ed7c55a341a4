//! `enroll`: a new factor, interactively (QR code, key, URI, confirmation code) or
//! from a known key on standard input (root, for migrations and automation).

use super::{
    new_recovery_codes, now, prove_possession, recovery_codes_json, recovery_codes_text, Ctx,
    MAX_TRIES, SOURCE,
};
use crate::audit;
use crate::caller;
use crate::cli::{EnrollArgs, QrChoice};
use crate::error::{Error, Result};
use crate::output::{emit, emit_json, escaped};
use crate::pam_client;
use crate::terminal::{ask, colour_terminal_size, say};
use pam_totp::config::QrStyle;
use pam_totp::enroll::{self, confirmation_step, NewFactor};
use pam_totp::otp::{decode_base32, grouped_base32};
use pam_totp::qr::{qr_lines, qr_lines_ansi, whole_cell_size};
use pam_totp::recovery::HashedCode;
use pam_totp::store::{EnrollMode, Store, StoreError, DEFAULT_FACTOR, MAX_FACTORS};
use serde_json::json;
use std::io::Read;
use zeroize::Zeroizing;

/// Longest input `--secret-stdin` reads: a 1024-bit key in base32 with spaces.
const MAX_SECRET_INPUT: u64 = 1024;

/// The factor an enrollment is for: `--name`, checked, or `default`.
pub fn factor_name(name: Option<&str>) -> Result<&str> {
    let name = name.unwrap_or(DEFAULT_FACTOR);
    enroll::check_factor_name(name).map_err(Error::failed)?;
    Ok(name)
}

/// An audit detail, naming the factor when it is not `default`.
pub fn about_factor(detail: &str, factor: &str) -> String {
    if factor == DEFAULT_FACTOR {
        detail.to_string()
    } else {
        format!("{detail}, factor {factor}")
    }
}

/// `enroll --user U --secret-stdin [--name N] [--replace] [--json]` (root).
pub fn known_secret(ctx: &Ctx, args: &EnrollArgs) -> Result<()> {
    ctx.caller.require_root("enroll --secret-stdin")?;
    let factor_name = factor_name(args.name.as_deref())?;
    let name = ctx.caller.target(args.user.as_deref())?.name;
    let mut input = Zeroizing::new(Vec::with_capacity(256));
    std::io::stdin()
        .lock()
        .take(MAX_SECRET_INPUT + 1)
        .read_to_end(&mut input)
        .map_err(|e| Error::failed(format!("cannot read the key from standard input: {e}")))?;
    if input.len() as u64 > MAX_SECRET_INPUT {
        return Err(Error::failed("standard input: too long for a key"));
    }
    let text = std::str::from_utf8(&input)
        .map_err(|_| Error::failed("standard input: the key is not text"))?;
    let key =
        decode_base32(text.trim()).map_err(|e| Error::failed(format!("standard input: {e}")))?;
    let config = ctx.config()?;
    let store = ctx.store_for_changes(&config)?;
    let factors = store.login_state(&name, SOURCE)?.factors;
    let existing = factors.iter().any(|f| f.name == factor_name);
    if existing && !args.replace {
        return Err(already_enrolled(&name, factor_name, "--replace"));
    }
    let another = !factors.iter().all(|f| f.name == factor_name);
    let factor = enroll::factor_from_secret(&config, &name, factor_name, &enroll::hostname(), key);
    let mode = if args.replace {
        EnrollMode::Replace { expected: None }
    } else {
        EnrollMode::New
    };
    let new_codes = (!another).then_some(config.recovery.codes);
    let codes = store_factor(ctx, &*store, &factor, factor_name, mode, new_codes, None)?;
    let detail = match (existing, another) {
        (true, _) => "replaced factor, key from standard input",
        (false, true) => "another factor, key from standard input",
        (false, false) => "key from standard input",
    };
    audit::done(
        &ctx.caller,
        "enroll",
        &name,
        &about_factor(detail, factor_name),
    );
    if ctx.json {
        if another {
            return emit_json(&json!({
                "user": name,
                "factor": factor_name,
                "recovery_codes": [],
            }));
        }
        return emit(&recovery_codes_json(&name, &codes));
    }
    let shown = escaped(&name);
    if another {
        let verb = if existing { "Replaced" } else { "Added" };
        return emit(&format!(
            "{verb} the factor {factor_name} of {shown}; the recovery codes are unchanged.\n"
        ));
    }
    let verb = if existing {
        format!("Replaced the factor {factor_name} of")
    } else {
        "Enrolled".to_string()
    };
    emit(&format!("{verb} {shown}.\n\n"))?;
    emit(&recovery_codes_text(&codes))
}

/// Stores the factor with [`write`], with a new set of `new_codes` recovery codes,
/// or with `None` keeping the user's set: recovery codes are the user's, made with
/// their first factor, and another factor keeps them. Returns the new codes, to be
/// shown once.
fn store_factor(
    ctx: &Ctx,
    store: &dyn Store,
    factor: &NewFactor,
    factor_name: &str,
    mode: EnrollMode,
    new_codes: Option<u32>,
    confirmed_step: Option<u64>,
) -> Result<Vec<Zeroizing<String>>> {
    let (codes, hashed) = match new_codes {
        Some(count) => {
            let (codes, hashed) = new_recovery_codes(count)?;
            (codes, Some(hashed))
        }
        None => (Vec::new(), None),
    };
    write(
        ctx,
        store,
        factor,
        factor_name,
        mode,
        hashed.as_deref(),
        confirmed_step,
    )?;
    Ok(codes)
}

/// The refusal to enroll over a factor without `--replace`.
pub fn already_enrolled(user: &str, factor: &str, flag: &str) -> Error {
    let what = if factor == DEFAULT_FACTOR {
        "a second factor".to_string()
    } else {
        format!("a factor named {factor}")
    };
    let another = if factor == DEFAULT_FACTOR {
        "; to add another one, give it a name with --name NAME"
    } else {
        ""
    };
    Error::failed(format!(
        "{} already has {what}: to replace it, add {flag}{another}",
        escaped(user)
    ))
}

/// The refusal of a factor beyond [`MAX_FACTORS`], before any key is shown.
fn too_many(user: &str) -> Error {
    Error::failed(
        StoreError::TooManyFactors {
            user: escaped(user),
        }
        .to_string()
            + " (totp-admin disable --name NAME)",
    )
}

/// Writes the factor `factor_name` and, when given, the new recovery codes in one
/// transaction. The store refuses (and nothing is written) when what it finds is not
/// what `mode` expects: another enrollment or a reset won the race.
pub fn write(
    ctx: &Ctx,
    store: &dyn Store,
    factor: &NewFactor,
    factor_name: &str,
    mode: EnrollMode,
    recovery: Option<&[HashedCode]>,
    confirmed_step: Option<u64>,
) -> Result<i64> {
    enroll::activate(
        store,
        factor,
        factor_name,
        mode,
        recovery,
        confirmed_step,
        now(),
    )
    .map_err(|e| {
        let why = match e {
            StoreError::Exists { .. } | StoreError::FactorsChanged { .. } => "enrolled meanwhile",
            StoreError::TooManyFactors { .. } => "too many factors",
            _ => "",
        };
        if !why.is_empty() {
            audit::refused(&ctx.caller, "enroll", &factor.user, why);
        }
        Error::from(e)
    })
}

/// `enroll [--user U] [--name N] [--replace]`: the interactive enrollment.
///
/// The order keeps the store free while people type: a first look (read-only)
/// decides what must be proven; the password check runs in a child before the store
/// is opened for changes; a code proving a current factor is checked in short store
/// steps; the new key is shown and confirmed with no transaction open; the factor (and,
/// for a first factor or a replacement, new recovery codes) is written in one
/// transaction at the end, and only then printed.
///
/// What a user must prove: their password for a first factor; a current code of one
/// of their factors (or a recovery code) to add another one or to replace one, so
/// that a password alone never adds a factor to an enrolled account.
pub fn interactive(ctx: &Ctx, args: &EnrollArgs) -> Result<()> {
    let factor_name = factor_name(args.name.as_deref())?;
    let name = ctx.caller.target(args.user.as_deref())?.name;
    let for_self = name == ctx.caller.name();
    let config = ctx.config()?;
    let seen: Vec<(i64, String)> = {
        let store = ctx.store_for_reading(&config)?;
        store
            .login_state(&name, SOURCE)?
            .factors
            .into_iter()
            .map(|f| (f.id, f.name))
            .collect()
    };
    let existed = seen.iter().any(|(_, n)| n == factor_name);
    if existed && !args.replace {
        let flag = if for_self {
            "--replace"
        } else {
            "--user USER --replace"
        };
        return Err(already_enrolled(&name, factor_name, flag));
    }
    if !existed && seen.len() >= MAX_FACTORS {
        audit::refused(&ctx.caller, "enroll", &name, "too many factors");
        return Err(too_many(&name));
    }
    let first = seen.is_empty();
    if first && !ctx.caller.is_root() {
        // A first enrollment by a user: their password, so that someone at an
        // unlocked terminal cannot bind their own phone to the account.
        // An account that logs in with a key alone has no password to type here.
        if pam_client::has_usable_password(&name) == Some(false) {
            audit::refused(&ctx.caller, "enroll", &name, "no password to confirm with");
            let advice = pam_client::no_password_advice(&name, config.policy.enroll_at_login);
            return Err(Error::refused(advice));
        }
        say(&format!(
            "Setting up two-factor authentication for {}.",
            escaped(&name)
        ))?;
        let checked = caller::in_child_as_caller(&ctx.process, || {
            pam_client::check_password(&name, &ctx.caller.tty)
        });
        if let Err(e) = checked {
            audit::refused(&ctx.caller, "enroll", &name, "password not accepted");
            return Err(e);
        }
    }
    let store = ctx.store_for_changes(&config)?;
    let factors = store.login_state(&name, SOURCE)?.factors;
    let current = factors.iter().find(|f| f.name == factor_name).map(|f| f.id);
    // Your own enrolled account (root's too): prove you hold one of its factors.
    let must_prove = for_self && !first;
    let mode = match current {
        // Enrolled meanwhile, after the first look: the first enrollment wins.
        Some(_) if !existed => return Err(Error::from(enrolled_meanwhile(&name, factor_name))),
        // Removed meanwhile (a reset): what must be proven changed; start again.
        None if existed || (must_prove && factors.is_empty()) => {
            return Err(Error::failed(format!(
                "the factors of {} were changed meanwhile: run totp-admin enroll again",
                escaped(&name)
            )))
        }
        _ if must_prove => {
            // A replacement then replaces that factor and no other; another factor is
            // written only while the user still has one.
            say(&if current.is_some() {
                format!(
                    "You already have a factor named {factor_name}: type a code of one of \
                     your factors to replace it."
                )
            } else {
                "You already have a second factor: type a code of it to add another one."
                    .to_string()
            })?;
            prove_possession(ctx, &config, &*store, &name, factors.clone(), "enroll")?;
            match current {
                Some(id) => EnrollMode::Replace { expected: Some(id) },
                None => EnrollMode::Another,
            }
        }
        // Root, for another user: whatever is there is replaced.
        Some(_) => EnrollMode::Replace { expected: None },
        None if first && !ctx.caller.is_root() => EnrollMode::First,
        None => EnrollMode::New,
    };
    let sole = factors.iter().all(|f| f.name == factor_name);

    let factor = enroll::new_factor(&config, &name, factor_name, &enroll::hostname())
        .map_err(|e| Error::failed(format!("cannot make a key: {e}")))?;
    emit(&factor_text(&factor, drawing(args.qr, config.enroll.qr)))?;
    let confirm_codes = config.policy.enroll_confirm_codes;
    let Some(step) = confirm(&factor, config.totp.window, confirm_codes)? else {
        audit::refused(&ctx.caller, "enroll", &name, "not confirmed");
        return Err(Error::refused(
            "enrollment not confirmed: nothing was changed",
        ));
    };
    // The confirmation code is recorded as used: it cannot also open a login.
    let new_codes = sole.then_some(config.recovery.codes);
    let codes = store_factor(
        ctx,
        &*store,
        &factor,
        factor_name,
        mode,
        new_codes,
        Some(step),
    )?;
    let detail = match mode {
        EnrollMode::Replace { .. } => "replaced factor",
        _ if sole => "new factor",
        _ => "another factor",
    };
    audit::done(
        &ctx.caller,
        "enroll",
        &name,
        &about_factor(detail, factor_name),
    );
    if !sole {
        return emit(&format!(
            "\nThe factor {factor_name} is set up for {}: a code from it or from another of \
             your factors is accepted from now on. Your recovery codes are unchanged.\n",
            escaped(&name)
        ));
    }
    emit(&format!(
        "\nTwo-factor authentication is set up for {}. From now on, type the code \
         from your app after your password.\n\n",
        escaped(&name)
    ))?;
    emit(&recovery_codes_text(&codes))
}

fn enrolled_meanwhile(user: &str, factor: &str) -> StoreError {
    StoreError::Exists {
        user: user.to_string(),
        name: factor.to_string(),
    }
}

/// How the QR code is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drawing {
    /// Black and white background colours, for a terminal of `columns` × `rows` cells.
    Colour { columns: usize, rows: usize },
    /// Half blocks without escapes, for a background of that style.
    Plain(QrStyle),
}

/// The drawing for `--qr`: colours only when standard output is a terminal that takes
/// them; otherwise (a pipe, a file, TERM=dumb) the half blocks of the `[enroll] qr`
/// style the login uses.
fn drawing(choice: QrChoice, configured: QrStyle) -> Drawing {
    match choice {
        QrChoice::Color => match colour_terminal_size() {
            Some((columns, rows)) => Drawing::Colour { columns, rows },
            None => Drawing::Plain(configured),
        },
        QrChoice::DarkTerminal => Drawing::Plain(QrStyle::DarkTerminal),
        QrChoice::LightTerminal => Drawing::Plain(QrStyle::LightTerminal),
        QrChoice::None => Drawing::Plain(QrStyle::None),
    }
}

/// What the user sees to add the factor to an app: the QR code, the key in groups of
/// four, the URI. The key and the URI are always shown: a QR code may not render.
fn factor_text(factor: &NewFactor, drawing: Drawing) -> Zeroizing<String> {
    let uri = factor.uri.as_str();
    let (intro, lines) = match drawing {
        Drawing::Colour { columns, rows } => match whole_cell_size(uri) {
            // Two spaces per module: exact in every font.
            Some((need_columns, need_rows)) if need_columns <= columns && need_rows <= rows => (
                "Scan this QR code with your authenticator app:".to_string(),
                qr_lines_ansi(uri, true),
            ),
            // Half blocks: fits, but the seams of some fonts can keep it from scanning.
            Some((need_columns, need_rows)) => (
                format!(
                    "Scan this QR code with your authenticator app. If it does not scan, make \
                     the terminal\nat least {need_columns} columns wide and {need_rows} rows \
                     high and run totp-admin enroll again, or type the key below:"
                ),
                qr_lines_ansi(uri, false),
            ),
            None => (String::new(), Vec::new()),
        },
        Drawing::Plain(style) => {
            let background = match style {
                QrStyle::DarkTerminal => "dark",
                QrStyle::LightTerminal => "light",
                QrStyle::None => "",
            };
            (
                format!(
                    "Scan this QR code with your authenticator app (drawn for a terminal with \
                     a {background}\nbackground). If it does not scan, type the key below into \
                     your app:"
                ),
                qr_lines(uri, style),
            )
        }
    };
    let lines = Zeroizing::new(lines);
    let mut text = Zeroizing::new(String::new());
    if lines.is_empty() {
        text.push_str("Add this key to your authenticator app");
    } else {
        text.push_str(&intro);
        text.push_str("\n\n");
        for line in lines.iter() {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("\nor type the key by hand");
    }
    let p = &factor.params;
    text.push_str(&format!(
        " (time-based, {}, {} digits, every {} s):\n\nKey: ",
        p.algorithm, p.digits, p.period
    ));
    text.push_str(&grouped_base32(&factor.secret));
    text.push_str("\nURI: ");
    text.push_str(&factor.uri);
    text.push_str("\n\n");
    text
}

/// Asks for the code the app shows (and a later one, when two are asked for) until
/// it is right, at most [`MAX_TRIES`] times. Returns the last confirmed time step. A
/// wrong code never reveals the expected one.
fn confirm(factor: &NewFactor, window: u64, count: u32) -> Result<Option<u64>> {
    if count >= 2 {
        say("To confirm, type the code your app shows, then the next one.")?;
    } else {
        say("To confirm, type the code your app shows.")?;
    }
    for _ in 0..MAX_TRIES {
        let answer = ask("Code: ", false)?;
        let Some(step) = confirmation_step(factor, &answer, unix_now(), window, None) else {
            say("That code is not right. Check that your phone's clock is right, and try again.")?;
            continue;
        };
        if count < 2 {
            return Ok(Some(step));
        }
        say("Now wait until your app shows the next code.")?;
        let answer = ask("Next code: ", false)?;
        match confirmation_step(factor, &answer, unix_now(), window, Some(step)) {
            Some(next) => return Ok(Some(next)),
            None => say("That is not a newer code. Start again with the code your app shows now.")?,
        }
    }
    Ok(None)
}

fn unix_now() -> u64 {
    u64::try_from(now()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pam_totp::config::Config;
    use pam_totp::secret::SecretKey;

    fn factor() -> NewFactor {
        let mut config = Config::default();
        config.totp.issuer = "Example Corp".into();
        let key = SecretKey::from_bytes(b"12345678901234567890".to_vec());
        enroll::factor_from_secret(&config, "alice", DEFAULT_FACTOR, "bastion", key)
    }

    fn uri_line(text: &str) -> &str {
        text.lines().find_map(|l| l.strip_prefix("URI: ")).unwrap()
    }

    /// The lines of `text` from the first QR line on, as many as `qr` has.
    fn drawn<'a>(text: &'a str, qr: &[String]) -> Vec<&'a str> {
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.iter().position(|l| *l == qr[0]).expect("the QR code");
        lines[start..start + qr.len()].to_vec()
    }

    // The drawings themselves are scanned back in pam_totp's qr tests: here, that the
    // one chosen is printed whole, with the URI it encodes beside it.
    #[test]
    fn the_drawing_fits_the_terminal() {
        let f = factor();
        let (columns, rows) = whole_cell_size(&f.uri).unwrap();
        let roomy = factor_text(&f, Drawing::Colour { columns, rows });
        let wide = qr_lines_ansi(&f.uri, true);
        assert_eq!(drawn(&roomy, &wide), wide);
        assert_eq!(uri_line(&roomy), f.uri.as_str());
        assert!(!roomy.contains("does not scan"));

        let small = factor_text(
            &f,
            Drawing::Colour {
                columns: 80,
                rows: 24,
            },
        );
        let compact = qr_lines_ansi(&f.uri, false);
        assert_eq!(drawn(&small, &compact), compact);
        assert!(small.contains(&format!("at least {columns} columns wide and {rows} rows")));

        for (style, background) in [
            (QrStyle::DarkTerminal, "a dark\nbackground"),
            (QrStyle::LightTerminal, "a light\nbackground"),
        ] {
            let text = factor_text(&f, Drawing::Plain(style));
            assert!(!text.contains('\x1b'));
            assert!(text.contains(background), "{}", text.as_str());
            assert!(text.contains("If it does not scan, type the key below"));
            let plain = qr_lines(&f.uri, style);
            assert_eq!(drawn(&text, &plain), plain);
        }
    }

    #[test]
    fn no_colours_unless_asked_for_a_terminal() {
        let configured = QrStyle::LightTerminal;
        if colour_terminal_size().is_none() {
            // Standard output is a pipe or a file (as under cargo test, mostly).
            assert_eq!(
                drawing(QrChoice::Color, configured),
                Drawing::Plain(configured)
            );
        }
        assert_eq!(
            drawing(QrChoice::DarkTerminal, configured),
            Drawing::Plain(QrStyle::DarkTerminal)
        );
        assert_eq!(
            drawing(QrChoice::None, configured),
            Drawing::Plain(QrStyle::None)
        );
    }

    #[test]
    fn key_and_uri_are_shown_without_a_qr_code() {
        let text = factor_text(&factor(), Drawing::Plain(QrStyle::None));
        assert!(!text.contains("QR"));
        assert!(text.contains("Key: GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ\n"));
        assert!(uri_line(&text).starts_with("otpauth://totp/Example%20Corp:alice%40bastion?"));
    }
}
