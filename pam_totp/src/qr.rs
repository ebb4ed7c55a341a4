//! QR codes for terminals.
//!
//! At login the text travels through OpenSSH's client, which prints escape sequences
//! literally: there the modules of one colour are drawn with the UTF-8 half blocks
//! `█ ▀ ▄` on whatever background the terminal has, two modules per character cell
//! ([`qr_lines`]). In a terminal of its own (`totp-admin enroll`) the code is drawn in
//! explicit black and white background colours ([`qr_lines_ansi`]), two spaces per
//! module when the terminal has room: a background fills the whole cell, where a block
//! glyph of a TrueType font often does not (xterm with DejaVu Sans Mono leaves seams
//! between cells that break the dark modules apart).

use crate::config::QrStyle;
use qrcode::{Color, EcLevel, QrCode};

/// Light modules around the code on every side, as the QR standard asks.
const QUIET_ZONE: usize = 4;
/// Black and white of the 256-colour cube (16 is #000000, 231 #ffffff). Unlike the
/// first 16 colours, which themes redefine, the cube looks the same in every terminal.
const BLACK: u8 = 16;
const WHITE: u8 = 231;

/// The modules of the QR code for `data`, quiet zone included: `true` is dark.
struct Modules {
    width: usize,
    dark: Vec<bool>,
}

impl Modules {
    fn new(data: &str) -> Option<Modules> {
        let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::L).ok()?;
        let inner = code.width();
        let width = inner + 2 * QUIET_ZONE;
        let mut dark = vec![false; width * width];
        for (i, color) in code.to_colors().into_iter().enumerate() {
            let (x, y) = (i % inner + QUIET_ZONE, i / inner + QUIET_ZONE);
            dark[y * width + x] = color == Color::Dark;
        }
        Some(Modules { width, dark })
    }

    /// Each character row: the (upper, lower) modules of every column. With an odd
    /// number of rows the last lower half is `None`, below the code.
    fn row_pairs(&self) -> impl Iterator<Item = Vec<(bool, Option<bool>)>> + '_ {
        let w = self.width;
        (0..w.div_ceil(2)).map(move |r| {
            (0..w)
                .map(|x| {
                    let upper = self.dark[2 * r * w + x];
                    let lower = self.dark.get((2 * r + 1) * w + x).copied();
                    (upper, lower)
                })
                .collect()
        })
    }
}

/// The QR code for `data` as lines of text without escape sequences, for `style`:
/// - `DarkTerminal`: light modules are drawn as blocks, so the code reads right where
///   blocks show light on a dark background (the usual terminal);
/// - `LightTerminal`: dark modules are drawn as blocks;
/// - `None`: no lines.
pub fn qr_lines(data: &str, style: QrStyle) -> Vec<String> {
    let ink_is_dark = match style {
        QrStyle::None => return Vec::new(),
        QrStyle::LightTerminal => true,
        QrStyle::DarkTerminal => false,
    };
    let Some(modules) = Modules::new(data) else {
        return Vec::new();
    };
    modules
        .row_pairs()
        .map(|row| {
            row.into_iter()
                .map(|(upper, lower)| {
                    // Below the code (odd height) is the terminal's own background.
                    let ink = |m: bool| m == ink_is_dark;
                    match (ink(upper), lower.is_some_and(ink)) {
                        (true, true) => '█',
                        (true, false) => '▀',
                        (false, true) => '▄',
                        (false, false) => ' ',
                    }
                })
                .collect()
        })
        .collect()
}

/// The character cells (columns, rows) the QR code for `data` needs when drawn with
/// whole cells (`qr_lines_ansi(data, true)`).
pub fn whole_cell_size(data: &str) -> Option<(usize, usize)> {
    Modules::new(data).map(|m| (2 * m.width, m.width))
}

/// The QR code for `data` in black and white, whatever the terminal's theme and font,
/// for a terminal that takes colour escapes (`totp-admin enroll`). Each line ends with a
/// reset.
///
/// With `whole_cells` (when the terminal has room: [`whole_cell_size`]), a module is two
/// spaces on its background colour: a background fills the whole cell in every font, so
/// the code comes out exact. Otherwise it is half as wide and high: a cell whose two
/// modules match is a space on that colour, else an upper half block in the upper
/// module's colour on the lower one's. That fits an 80-column terminal, but the block
/// glyph of many TrueType fonts leaves thin seams at the cell's edges that can keep the
/// code from scanning.
pub fn qr_lines_ansi(data: &str, whole_cells: bool) -> Vec<String> {
    let Some(modules) = Modules::new(data) else {
        return Vec::new();
    };
    let colour = |dark: bool| if dark { BLACK } else { WHITE };
    if whole_cells {
        return modules
            .dark
            .chunks(modules.width)
            .map(|row| {
                let mut line = String::new();
                let mut current = None;
                for &dark in row {
                    if current != Some(dark) {
                        line.push_str(&format!("\x1b[48;5;{}m", colour(dark)));
                        current = Some(dark);
                    }
                    line.push_str("  ");
                }
                line.push_str("\x1b[0m");
                line
            })
            .collect();
    }
    modules
        .row_pairs()
        .map(|row| {
            let mut line = String::new();
            let mut current = None;
            for (upper, lower) in row {
                // Below the code (odd height) the quiet zone goes on: white.
                let cell = (colour(upper), colour(lower.unwrap_or(false)));
                if current != Some(cell) {
                    line.push_str(&format!("\x1b[38;5;{};48;5;{}m", cell.0, cell.1));
                    current = Some(cell);
                }
                line.push(if cell.0 == cell.1 { ' ' } else { '▀' });
            }
            line.push_str("\x1b[0m");
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const URI: &str = "otpauth://totp/Example%20Corp:alice%40bastion?secret=\
                       GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Example%20Corp&algorithm=SHA1&digits=6&period=30";

    /// One character cell of a drawing: the colours of its upper and lower halves
    /// (`true` is dark) as a screen shows them, `on_dark` telling the terminal's
    /// background where the drawing sets none.
    fn cells(line: &str, on_dark: bool) -> Vec<(bool, bool)> {
        let mut out = Vec::new();
        let (mut fg, mut bg): (Option<bool>, Option<bool>) = (None, None);
        let mut rest = line;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("\x1b[") {
                let end = after.find('m').expect("an SGR sequence");
                let params: Vec<u32> = after[..end]
                    .split(';')
                    .map(|p| p.parse().unwrap_or(0))
                    .collect();
                match params[..] {
                    [0] => (fg, bg) = (None, None),
                    [38, 5, f, 48, 5, b] => (fg, bg) = (Some(f == 16), Some(b == 16)),
                    [48, 5, b] => bg = Some(b == 16),
                    _ => panic!("unexpected escape {params:?}"),
                }
                rest = &after[end + 1..];
                continue;
            }
            let back = bg.unwrap_or(on_dark);
            let fore = fg.unwrap_or(!on_dark);
            out.push(match c {
                ' ' => (back, back),
                '█' => (fore, fore),
                '▀' => (fore, back),
                '▄' => (back, fore),
                other => panic!("unexpected character {other:?}"),
            });
            rest = &rest[c.len_utf8()..];
        }
        out
    }

    /// Paints the drawing as a screen would (a cell 1 × 2 modules, scaled, on the
    /// terminal's background with a margin) and decodes it with rqrr.
    fn scan(lines: &[String], on_dark: bool) -> String {
        const SCALE: usize = 3;
        const MARGIN: usize = 4;
        let rows: Vec<Vec<(bool, bool)>> = lines.iter().map(|l| cells(l, on_dark)).collect();
        let width = rows[0].len();
        assert!(rows.iter().all(|r| r.len() == width), "ragged drawing");
        let (w, h) = (width + 2 * MARGIN, rows.len() * 2 + 2 * MARGIN);
        let mut image =
            rqrr::PreparedImage::prepare_from_greyscale(w * SCALE, h * SCALE, |x, y| {
                let (x, y) = (x / SCALE, y / SCALE);
                let dark = if x < MARGIN || y < MARGIN || x >= width + MARGIN || y >= h - MARGIN {
                    on_dark
                } else {
                    let (upper, lower) = rows[(y - MARGIN) / 2][x - MARGIN];
                    if (y - MARGIN) % 2 == 0 {
                        upper
                    } else {
                        lower
                    }
                };
                if dark {
                    0
                } else {
                    255
                }
            });
        let grids = image.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code");
        grids[0].decode().expect("the QR code decodes").1
    }

    #[test]
    fn each_drawing_scans_on_the_background_it_is_made_for() {
        assert_eq!(scan(&qr_lines(URI, QrStyle::DarkTerminal), true), URI);
        assert_eq!(scan(&qr_lines(URI, QrStyle::LightTerminal), false), URI);
        // The colour drawings set every cell themselves: they scan on either background.
        for whole_cells in [false, true] {
            let lines = qr_lines_ansi(URI, whole_cells);
            assert_eq!(scan(&lines, true), URI);
            assert_eq!(scan(&lines, false), URI);
        }
        assert!(qr_lines(URI, QrStyle::None).is_empty());
    }

    #[test]
    fn whole_cells_or_half_blocks() {
        // 41 modules + the quiet zone: 98 columns, 49 rows of spaces.
        assert_eq!(whole_cell_size(URI), Some((98, 49)));
        let wide = qr_lines_ansi(URI, true);
        assert_eq!(wide.len(), 49);
        for line in &wide {
            assert_eq!(cells(line, true).len(), 98);
            assert!(!line.contains('▀'), "{line:?}");
        }
        // The half-height drawing fits an 80-column terminal.
        let compact = qr_lines_ansi(URI, false);
        assert_eq!(compact.len(), 25);
        assert!(compact.iter().all(|l| cells(l, true).len() == 49));
    }

    #[test]
    fn a_drawing_on_the_wrong_background_is_inverted() {
        // What a light-background SSH client shows of the dark-terminal drawing: every
        // module flipped, so the finder patterns are not there to be found.
        let dark = qr_lines(URI, QrStyle::DarkTerminal);
        let light = qr_lines(URI, QrStyle::LightTerminal);
        assert_eq!(dark.len(), light.len());
        for (d, l) in dark.iter().zip(&light).take(dark.len() - 1) {
            let flipped: Vec<(bool, bool)> =
                cells(l, false).into_iter().map(|(u, b)| (!u, !b)).collect();
            assert_eq!(cells(d, false), flipped);
        }
    }

    #[test]
    fn no_escape_sequences_for_login() {
        for style in [QrStyle::DarkTerminal, QrStyle::LightTerminal] {
            for line in qr_lines(URI, style) {
                assert!(!line.contains('\x1b'), "{line:?}");
            }
        }
        let coloured = [qr_lines_ansi(URI, false), qr_lines_ansi(URI, true)].concat();
        assert!(coloured.iter().all(|l| l.ends_with("\x1b[0m")));
        // Only the two colours of the cube are used.
        let all = coloured.concat();
        for sgr in all.split("\x1b[").skip(1) {
            let params = &sgr[..sgr.find('m').unwrap()];
            assert!(
                params == "0"
                    || params == "48;5;16"
                    || params == "48;5;231"
                    || [
                        "38;5;16;48;5;16",
                        "38;5;16;48;5;231",
                        "38;5;231;48;5;16",
                        "38;5;231;48;5;231"
                    ]
                    .contains(&params),
                "{params}"
            );
        }
    }
}
