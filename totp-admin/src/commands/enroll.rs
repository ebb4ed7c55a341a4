//! `enroll`: a new factor, interactively (QR code, key, URI, confirmation code) or
//! from a known key on standard input (root, for migrations and automation).

use super::{
    new_recovery_codes, now, prove_possession, recovery_codes_json, recovery_codes_text, Ctx,
    MAX_TRIES, SOURCE,
};
use crate::audit;
use crate::caller::lookup_existing;
use crate::cli::QrChoice;
use crate::error::{Error, Result};
use crate::output::emit;
use crate::pam_client;
use crate::terminal::{ask, say};
use pam_totp::config::QrStyle;
use pam_totp::enroll::{self, confirmation_step, NewFactor};
use pam_totp::otp::{decode_base32, grouped_base32};
use pam_totp::qr::{qr_lines, qr_lines_ansi};
use pam_totp::store::{EnrollMode, Store, DEFAULT_FACTOR};
use std::io::Read;
use zeroize::Zeroizing;

/// Longest input `--secret-stdin` reads: a 1024-bit key in base32 with spaces.
const MAX_SECRET_INPUT: u64 = 1024;

/// `enroll --user U --secret-stdin [--json]` (root).
pub fn known_secret(ctx: &Ctx, user: Option<&str>) -> Result<()> {
    ctx.caller.require_root("enroll --secret-stdin")?;
    let name = ctx.caller.target_name(user)?;
    lookup_existing(&name)?;
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
    let store = ctx.store(&config)?;
    let factor = enroll::factor_from_secret(&config, &name, &enroll::hostname(), key);
    let (codes, hashed) = new_recovery_codes(config.recovery.codes)?;
    // As before named factors: a known key replaces whatever the user had.
    enroll::activate(
        &store,
        &factor,
        DEFAULT_FACTOR,
        EnrollMode::Replace { expected: None },
        Some(&hashed),
        None,
        now(),
    )?;
    audit::done(&ctx.caller, "enroll", &name, "key from standard input");
    if ctx.json {
        return emit(&recovery_codes_json(&name, &codes));
    }
    emit(&format!("Enrolled {name}.\n\n"))?;
    emit(&recovery_codes_text(&codes))
}

/// `enroll [--user U]`: the interactive enrollment.
pub fn interactive(ctx: &Ctx, user: Option<&str>, qr: QrChoice) -> Result<()> {
    let name = ctx.caller.target_name(user)?;
    let for_self = name == ctx.caller.name();
    if !for_self {
        lookup_existing(&name)?;
    }
    let config = ctx.config()?;
    let store = ctx.store(&config)?;
    let existing = store
        .login_state(&name, SOURCE)?
        .factors
        .into_iter()
        .find(|f| f.name == DEFAULT_FACTOR);
    match &existing {
        // Replacing a factor: prove you hold it. Root replacing someone else's factor
        // could as well reset it, so needs no code.
        Some(factor) if for_self => {
            say("You already have a second factor: confirm it to replace it.")?;
            prove_possession(ctx, &config, &store, &name, "enroll")?;
        }
        Some(_) => {}
        // A first enrollment by a user: their password, so that someone at an
        // unlocked terminal cannot bind their own phone to the account.
        None if !ctx.caller.is_root() => {
            // An account that logs in with a key alone has no password to type here.
            if pam_client::has_usable_password(&name) == Some(false) {
                audit::refused(&ctx.caller, "enroll", &name, "no password to confirm with");
                let advice = pam_client::no_password_advice(&name, config.policy.enroll_at_login);
                return Err(Error::refused(advice));
            }
            say(&format!("Setting up two-factor authentication for {name}."))?;
            if let Err(e) = pam_client::check_password(&name) {
                audit::refused(&ctx.caller, "enroll", &name, "password not accepted");
                return Err(e);
            }
        }
        None => {}
    }

    let factor = enroll::new_factor(&config, &name, &enroll::hostname())
        .map_err(|e| Error::failed(format!("cannot make a key: {e}")))?;
    emit(&factor_text(&factor, qr))?;
    let confirm_codes = config.policy.enroll_confirm_codes;
    let Some(step) = confirm(&factor, config.totp.window, confirm_codes)? else {
        audit::refused(&ctx.caller, "enroll", &name, "not confirmed");
        return Err(Error::refused(
            "enrollment not confirmed: nothing was changed",
        ));
    };
    let (codes, hashed) = new_recovery_codes(config.recovery.codes)?;
    // The confirmation code is recorded as used: it cannot also open a login.
    // A user replaces the factor they proved they hold, and only that one; root
    // replaces whatever is there.
    let mode = match &existing {
        Some(f) if for_self => EnrollMode::Replace {
            expected: Some(f.id),
        },
        Some(_) => EnrollMode::Replace { expected: None },
        None => EnrollMode::New,
    };
    enroll::activate(
        &store,
        &factor,
        DEFAULT_FACTOR,
        mode,
        Some(&hashed),
        Some(step),
        now(),
    )?;
    let detail = if existing.is_some() {
        "replaced factor"
    } else {
        "new factor"
    };
    audit::done(&ctx.caller, "enroll", &name, detail);
    emit(&format!(
        "\nTwo-factor authentication is set up for {name}. From now on, type the code \
         from your app after your password.\n\n"
    ))?;
    emit(&recovery_codes_text(&codes))
}

/// What the user sees to add the factor to an app: the QR code, the key in groups of
/// four, the URI. The key and the URI are always shown: a QR code may not render.
fn factor_text(factor: &NewFactor, qr: QrChoice) -> Zeroizing<String> {
    let lines = Zeroizing::new(match qr {
        QrChoice::Color => qr_lines_ansi(&factor.uri),
        QrChoice::DarkTerminal => qr_lines(&factor.uri, QrStyle::DarkTerminal),
        QrChoice::LightTerminal => qr_lines(&factor.uri, QrStyle::LightTerminal),
        QrChoice::None => Vec::new(),
    });
    let mut text = Zeroizing::new(String::new());
    if lines.is_empty() {
        text.push_str("Add this key to your authenticator app");
    } else {
        text.push_str("Scan this QR code with your authenticator app:\n\n");
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

    /// Draws the half-block lines as pixels (a cell is 1 wide and 2 tall, scaled) and
    /// decodes the QR code with rqrr.
    fn decode_qr(lines: &[&str], blocks_are_dark: bool) -> String {
        let strip = |l: &str| {
            l.replace("\x1b[38;5;16;48;5;231m", "")
                .replace("\x1b[0m", "")
                .chars()
                .collect::<Vec<char>>()
        };
        let rows: Vec<Vec<char>> = lines.iter().map(|l| strip(l)).collect();
        let scale = 4;
        let (w, h) = (rows[0].len(), rows.len() * 2);
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w * scale, h * scale, |x, y| {
            let (x, y) = (x / scale, y / scale);
            let top = y % 2 == 0;
            let block = match rows[y / 2].get(x).copied().unwrap_or(' ') {
                '█' => true,
                '▀' => top,
                '▄' => !top,
                _ => false,
            };
            if block == blocks_are_dark {
                0
            } else {
                255
            }
        });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code");
        grids[0].decode().unwrap().1
    }

    fn qr_part(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| l.contains('█') || l.contains('▀') || l.contains('▄'))
            .collect()
    }

    fn uri_line(text: &str) -> &str {
        text.lines().find_map(|l| l.strip_prefix("URI: ")).unwrap()
    }

    #[test]
    fn the_qr_code_decodes_to_the_printed_uri() {
        let f = factor();
        let colour = factor_text(&f, QrChoice::Color);
        assert!(colour.contains("\x1b[38;5;16;48;5;231m"));
        assert_eq!(decode_qr(&qr_part(&colour), true), uri_line(&colour));
        assert_eq!(uri_line(&colour), f.uri.as_str());
        let light = factor_text(&f, QrChoice::LightTerminal);
        assert_eq!(decode_qr(&qr_part(&light), true), uri_line(&light));
        let dark = factor_text(&f, QrChoice::DarkTerminal);
        assert!(!dark.contains('\x1b'));
        assert_eq!(decode_qr(&qr_part(&dark), false), uri_line(&dark));
    }

    #[test]
    fn key_and_uri_are_shown_without_a_qr_code() {
        let text = factor_text(&factor(), QrChoice::None);
        assert!(qr_part(&text).is_empty());
        assert!(text.contains("Key: GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ\n"));
        assert!(uri_line(&text).starts_with("otpauth://totp/Example%20Corp:alice%40bastion?"));
    }
}
