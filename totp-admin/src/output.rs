//! What the tool prints: tables for people, JSON for scripts.

use crate::error::{Error, Result};
use pam_totp::auth::format_utc;
use std::fmt::Write as _;
use std::io::Write;

/// Writes `text` to standard output. A closed pipe is an error, not a panic.
pub fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::failed(format!("cannot write to standard output: {e}")))
}

/// A JSON value on one line, then a newline. serde_json writes the control characters
/// below 0x20 as `\u00XX`; the others a terminal acts on (DEL, the C1 range) and the
/// bidirectional overrides are escaped the same way here. They can only occur inside
/// strings, where `\uXXXX` stands for the same character: the JSON means the same.
pub fn emit_json(value: &serde_json::Value) -> Result<()> {
    emit(&format!("{}\n", json_text(value)))
}

/// The JSON text of `value`, compact, with [`is_unsafe`] characters escaped.
pub fn json_text(value: &serde_json::Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters a terminal acts on or that reorder what is shown: the C0 and C1
/// control characters, DEL, and the Unicode bidirectional controls.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Text that came from outside the program (a user name, a source, a factor name, a
/// configured string, a path), made safe to print: every control character shows as
/// `\xNN` (each byte of its UTF-8 form), a bidirectional control as `\u{NNNN}`.
/// Everything else, non-ASCII letters included, passes unchanged.
pub fn escaped(text: &str) -> String {
    if !text.chars().any(is_unsafe) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "\\x{b:02x}");
            }
        } else if is_unsafe(c) {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// A path from outside, escaped like [`escaped`].
pub fn escaped_path(path: &std::path::Path) -> String {
    escaped(&path.to_string_lossy())
}

/// A two-column Field/Value table, boxed like other cluster tools print settings.
pub fn field_table(rows: &[(String, String)]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(k, v)| vec![k.clone(), v.clone()])
        .collect();
    boxed(&["Field", "Value"], &rows)
}

/// A boxed table with a header row. A cell may hold several lines (a list); within a
/// line, anything unsafe to print is escaped here too, whatever the caller did.
pub fn boxed(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| cell.lines().map(escaped).collect::<Vec<_>>().join("\n"))
                .collect()
        })
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows.iter() {
        for (i, cell) in row.iter().enumerate() {
            for line in cell.lines() {
                widths[i] = widths[i].max(line.chars().count());
            }
        }
    }
    let rule = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    let line = |cells: &[&str]| {
        let mut s = String::from("|");
        for (cell, w) in cells.iter().zip(&widths) {
            s.push(' ');
            s.push_str(cell);
            s.push_str(&" ".repeat(w - cell.chars().count() + 1));
            s.push('|');
        }
        s.push('\n');
        s
    };
    let mut out = rule.clone();
    out.push_str(&line(headers));
    out.push_str(&rule);
    for row in rows {
        // A cell with several lines (a list) spreads over several table lines.
        let split: Vec<Vec<&str>> = row.iter().map(|c| c.lines().collect()).collect();
        let height = split.iter().map(|l| l.len().max(1)).max().unwrap_or(1);
        for i in 0..height {
            let cells: Vec<&str> = split
                .iter()
                .map(|l| l.get(i).copied().unwrap_or(""))
                .collect();
            out.push_str(&line(&cells));
        }
    }
    out.push_str(&rule);
    out
}

pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

pub fn time_or_never(t: Option<i64>) -> String {
    t.map_or_else(|| "never".to_string(), format_utc)
}

/// A list for a table cell: one item a line (each escaped), or `-` when empty.
pub fn list_cell<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items
            .iter()
            .map(|i| escaped(&i.to_string()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escaped("alice"), "alice");
        assert_eq!(escaped("Zoë"), "Zoë");
        assert_eq!(escaped("a\nb"), "a\\x0ab");
        assert_eq!(escaped("\x1b[2J\x1b]0;x\x07"), "\\x1b[2J\\x1b]0;x\\x07");
        assert_eq!(escaped("del\x7f"), "del\\x7f");
        // C1 CSI, as its two UTF-8 bytes.
        assert_eq!(escaped("a\u{9b}31m"), "a\\xc2\\x9b31m");
        assert_eq!(escaped("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(escaped("tab\there"), "tab\\x09here");
        for c in (0u32..0x110000).filter_map(char::from_u32) {
            let out = escaped(&c.to_string());
            assert!(!out.chars().any(is_unsafe), "{c:?} -> {out:?}");
        }
    }

    #[test]
    fn json_keeps_its_meaning_and_escapes_controls() {
        let value = serde_json::json!({
            "user": "eve\x1b[31m\u{7f}\u{9b}\u{202e}\n",
            "list": ["a\u{85}b"],
        });
        let text = json_text(&value);
        assert!(!text.chars().any(is_unsafe), "{text:?}");
        assert!(
            text.contains("eve\\u001b[31m\\u007f\\u009b\\u202e\\n"),
            "{text}"
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn table_cells_are_escaped() {
        let t = boxed(&["User"], &[vec!["eve\x1b[2J".into()]]);
        assert!(t.contains("| eve\\x1b[2J |"), "{t}");
        assert!(!t.contains('\x1b'));
        assert_eq!(list_cell(&["a\x07", "b"]), "a\\x07\nb");
    }

    #[test]
    fn boxed_table() {
        let t = field_table(&[
            ("mandatory".into(), "no".into()),
            ("groups".into(), "a\nbb".into()),
        ]);
        assert_eq!(
            t,
            "+-----------+-------+\n\
             | Field     | Value |\n\
             +-----------+-------+\n\
             | mandatory | no    |\n\
             | groups    | a     |\n\
             |           | bb    |\n\
             +-----------+-------+\n"
        );
    }
}
