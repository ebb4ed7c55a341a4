//! QR codes for terminals, drawn with UTF-8 half blocks (two modules per character).

use crate::config::QrStyle;
use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};

/// The QR code for `data` as lines of text, for `style`:
/// - `DarkTerminal`: light modules are drawn as blocks, so the code reads right where
///   blocks show light on a dark background (the usual terminal);
/// - `LightTerminal`: dark modules are drawn as blocks;
/// - `None`: no lines.
///
/// No escape sequences: over SSH, OpenSSH's client prints them literally.
pub fn qr_lines(data: &str, style: QrStyle) -> Vec<String> {
    let Ok(code) = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::L) else {
        return Vec::new();
    };
    let renderer = &mut code.render::<Dense1x2>();
    let image = match style {
        QrStyle::None => return Vec::new(),
        QrStyle::LightTerminal => renderer
            .dark_color(Dense1x2::Dark)
            .light_color(Dense1x2::Light)
            .quiet_zone(true)
            .build(),
        QrStyle::DarkTerminal => renderer
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    };
    image.lines().map(str::to_string).collect()
}

/// The QR code forced black-on-white with 256-colour escapes, for a local terminal
/// whatever its theme (`totp-admin enroll`).
pub fn qr_lines_ansi(data: &str) -> Vec<String> {
    qr_lines(data, QrStyle::LightTerminal)
        .into_iter()
        .map(|line| format!("\x1b[38;5;16;48;5;231m{line}\x1b[0m"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dark_and_light_are_inverses() {
        let dark = qr_lines("otpauth://totp/x", QrStyle::DarkTerminal);
        let light = qr_lines("otpauth://totp/x", QrStyle::LightTerminal);
        assert_eq!(dark.len(), light.len());
        let flip = |c: char| match c {
            ' ' => '█',
            '█' => ' ',
            '▀' => '▄',
            '▄' => '▀',
            other => other,
        };
        // Every full row pair is the exact inverse (the last row may be half a row).
        for (d, l) in dark.iter().zip(&light).take(dark.len() - 1) {
            assert_eq!(d.chars().map(flip).collect::<String>(), *l);
        }
        assert!(qr_lines("x", QrStyle::None).is_empty());
    }

    #[test]
    fn no_escape_sequences_for_login() {
        for line in qr_lines("otpauth://totp/x", QrStyle::DarkTerminal) {
            assert!(!line.contains('\x1b'));
        }
        assert!(qr_lines_ansi("x")[0].starts_with("\x1b[38;5;16;48;5;231m"));
    }
}
