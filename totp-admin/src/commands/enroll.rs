//! `enroll`: a new factor, interactively (QR code, key, URI, confirmation code) or
//! from a known key on standard input (root, for migrations and automation).

use super::{
    new_recovery_codes, now, prove_possession, recovery_codes_json, recovery_codes_text, Ctx,
    MAX_TRIES, SOURCE,
};
use crate::audit;
use crate::caller;
use crate::cli::QrChoice;
use crate::error::{Error, Result};
use crate::output::{emit, escaped};
use crate::pam_client;
use crate::terminal::{ask, colour_terminal_size, say};
use pam_totp::config::QrStyle;
use pam_totp::enroll::{self, confirmation_step, NewFactor};
use pam_totp::otp::{decode_base32, grouped_base32};
use pam_totp::qr::{qr_lines, qr_lines_ansi, whole_cell_size};
use pam_totp::recovery::HashedCode;
use pam_totp::store::{EnrollMode, Factor, Store, StoreError, DEFAULT_FACTOR};
use std::io::Read;
use zeroize::Zeroizing;

/// Longest input `--secret-stdin` reads: a 1024-bit key in base32 with spaces.
const MAX_SECRET_INPUT: u64 = 1024;

/// `enroll --user U --secret-stdin [--replace] [--json]` (root).
pub fn known_secret(ctx: &Ctx, user: Option<&str>, replace: bool) -> Result<()> {
    ctx.caller.require_root("enroll --secret-stdin")?;
    let name = ctx.caller.target(user)?.name;
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
    let existing = default_factor_id(&*store, &name)?;
    if existing.is_some() && !replace {
        return Err(already_enrolled(&name, "--replace"));
    }
    let factor = enroll::factor_from_secret(&config, &name, &enroll::hostname(), key);
    let (codes, hashed) = new_recovery_codes(config.recovery.codes)?;
    let mode = if replace {
        EnrollMode::Replace { expected: None }
    } else {
        EnrollMode::New
    };
    write(ctx, &*store, &factor, mode, &hashed, None)?;
    let detail = if existing.is_some() {
        "replaced factor, key from standard input"
    } else {
        "key from standard input"
    };
    audit::done(&ctx.caller, "enroll", &name, detail);
    if ctx.json {
        return emit(&recovery_codes_json(&name, &codes));
    }
    let verb = if existing.is_some() {
        "Replaced the factor of"
    } else {
        "Enrolled"
    };
    emit(&format!("{verb} {}.\n\n", escaped(&name)))?;
    emit(&recovery_codes_text(&codes))
}

/// The id of the user's factor named `default`, if there is one.
pub fn default_factor_id(store: &dyn Store, user: &str) -> Result<Option<i64>> {
    Ok(store
        .login_state(user, SOURCE)?
        .factors
        .iter()
        .find(|f| f.name == DEFAULT_FACTOR)
        .map(|f| f.id))
}

/// The refusal to replace a factor without `--replace`.
pub fn already_enrolled(user: &str, flag: &str) -> Error {
    Error::failed(format!(
        "{} already has a second factor: to replace it, add {flag}",
        escaped(user)
    ))
}

/// Writes the factor `default` and the new recovery codes in one transaction. The
/// store refuses (and nothing is written) when the factor it finds is not the one
/// `mode` expects: another enrollment won the race.
pub fn write(
    ctx: &Ctx,
    store: &dyn Store,
    factor: &NewFactor,
    mode: EnrollMode,
    recovery: &[HashedCode],
    confirmed_step: Option<u64>,
) -> Result<i64> {
    enroll::activate(
        store,
        factor,
        DEFAULT_FACTOR,
        mode,
        Some(recovery),
        confirmed_step,
        now(),
    )
    .map_err(|e| {
        if let StoreError::Exists { .. } = e {
            audit::refused(&ctx.caller, "enroll", &factor.user, "enrolled meanwhile");
        }
        Error::from(e)
    })
}

/// `enroll [--user U] [--replace]`: the interactive enrollment.
///
/// The order keeps the store free while people type: a first look (read-only)
/// decides what must be proven; the password check runs in a child before the store
/// is opened for changes; a code proving the current factor is checked in short store
/// steps; the new key is shown and confirmed with no transaction open; the factor and
/// recovery codes are written in one transaction at the end, and only then printed.
pub fn interactive(ctx: &Ctx, user: Option<&str>, qr: QrChoice, replace: bool) -> Result<()> {
    let name = ctx.caller.target(user)?.name;
    let for_self = name == ctx.caller.name();
    let config = ctx.config()?;
    let existed = {
        let store = ctx.store_for_reading(&config)?;
        default_factor_id(&*store, &name)?.is_some()
    };
    if existed && !replace {
        let flag = if for_self {
            "--replace"
        } else {
            "--user USER --replace"
        };
        return Err(already_enrolled(&name, flag));
    }
    if !existed && !ctx.caller.is_root() {
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
    let mode = match default_factor(&*store, &name)? {
        // Replacing your own factor: prove you hold it; the write then replaces that
        // factor and no other. Root replacing someone else's could as well reset it.
        Some(current) if for_self && existed => {
            say("You already have a second factor: confirm it to replace it.")?;
            let expected = current.id;
            prove_possession(ctx, &config, &*store, &name, vec![current], "enroll")?;
            EnrollMode::Replace {
                expected: Some(expected),
            }
        }
        Some(_) if existed => EnrollMode::Replace { expected: None },
        // Enrolled meanwhile, after the first look: the first enrollment wins.
        Some(_) => return Err(Error::from(enrolled_meanwhile(&name))),
        // Removed meanwhile (a reset): a first enrollment after all, which for a user
        // needs the password that was not asked.
        None if existed && !ctx.caller.is_root() => {
            return Err(Error::failed(
                "your second factor was removed meanwhile: run totp-admin enroll again",
            ))
        }
        None => EnrollMode::New,
    };

    let factor = enroll::new_factor(&config, &name, &enroll::hostname())
        .map_err(|e| Error::failed(format!("cannot make a key: {e}")))?;
    emit(&factor_text(&factor, drawing(qr, config.enroll.qr)))?;
    let confirm_codes = config.policy.enroll_confirm_codes;
    let Some(step) = confirm(&factor, config.totp.window, confirm_codes)? else {
        audit::refused(&ctx.caller, "enroll", &name, "not confirmed");
        return Err(Error::refused(
            "enrollment not confirmed: nothing was changed",
        ));
    };
    let (codes, hashed) = new_recovery_codes(config.recovery.codes)?;
    // The confirmation code is recorded as used: it cannot also open a login.
    write(ctx, &*store, &factor, mode, &hashed, Some(step))?;
    let detail = match mode {
        EnrollMode::New => "new factor",
        EnrollMode::Replace { .. } => "replaced factor",
    };
    audit::done(&ctx.caller, "enroll", &name, detail);
    emit(&format!(
        "\nTwo-factor authentication is set up for {}. From now on, type the code \
         from your app after your password.\n\n",
        escaped(&name)
    ))?;
    emit(&recovery_codes_text(&codes))
}

/// The user's factor named `default`, if there is one.
fn default_factor(store: &dyn Store, user: &str) -> Result<Option<Factor>> {
    Ok(store
        .login_state(user, SOURCE)?
        .factors
        .into_iter()
        .find(|f| f.name == DEFAULT_FACTOR))
}

fn enrolled_meanwhile(user: &str) -> StoreError {
    StoreError::Exists {
        user: user.to_string(),
        name: DEFAULT_FACTOR.to_string(),
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
        enroll::factor_from_secret(&config, "alice", "bastion", key)
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
