//! What the tool prints: tables for people, JSON for scripts.

use crate::error::{Error, Result};
use pam_totp::auth::format_utc;
use std::io::Write;

/// Writes `text` to standard output. A closed pipe is an error, not a panic.
pub fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::failed(format!("cannot write to standard output: {e}")))
}

/// A JSON value on one line, then a newline.
pub fn emit_json(value: &serde_json::Value) -> Result<()> {
    emit(&format!("{value}\n"))
}

/// A two-column Field/Value table, boxed like other cluster tools print settings.
pub fn field_table(rows: &[(String, String)]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(k, v)| vec![k.clone(), v.clone()])
        .collect();
    boxed(&["Field", "Value"], &rows)
}

/// A boxed table with a header row.
pub fn boxed(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
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

/// A list for a table cell: one item a line, or `-` when empty.
pub fn list_cell<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
