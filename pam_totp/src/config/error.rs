//! What is wrong with a configuration, and where: the file, the line and the key, so
//! that whoever reads the log or the error knows what to change
//! (`/etc/pam_totp/config.toml:7: policy.grace_period: "7" has no unit; write ...`).

use std::fmt;
use std::path::Path;
use toml::de::{DeTable, DeValue};

/// A configuration that does not load: not TOML, an unknown key, a value of the wrong
/// type or out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    line: Option<usize>,
    key: Option<String>,
    message: String,
}

impl Invalid {
    /// The line the problem is on (from 1), when it is on one.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The key it is about, as `table.key`, when there is one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// What is wrong, and what to write instead.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// A value of `key` (`table.key`) that TOML allows and the configuration does not.
    pub(crate) fn at(key: &str, message: impl Into<String>) -> Invalid {
        Invalid {
            line: None,
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    /// Something about the whole file (its size).
    pub(crate) fn whole_file(message: &str) -> Invalid {
        Invalid {
            line: None,
            key: None,
            message: message.to_string(),
        }
    }

    /// The file is not UTF-8 (TOML is): the line of the first byte that is not.
    pub(crate) fn not_utf8(e: &std::string::FromUtf8Error) -> Invalid {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        Invalid {
            line: Some(line_of(good, good.len())),
            key: None,
            message: "not UTF-8 text; TOML files are UTF-8".to_string(),
        }
    }

    /// Text that is not TOML.
    pub(crate) fn syntax(text: &str, e: &toml::de::Error) -> Invalid {
        let span = e
            .span()
            .map(|span| span.start.min(text.len())..span.end.min(text.len()));
        let at = span.as_ref().map(|span| span.start);
        let bytes = text.as_bytes();
        // TOML ends a line with LF or CR LF; a lone CR (old Mac OS line endings, or a
        // stray byte) is an error, never the end of a line.
        let lone_cr = at
            .is_some_and(|at| bytes.get(at) == Some(&b'\r') || (at > 0 && bytes[at - 1] == b'\r'));
        let mut key = None;
        let message = if lone_cr {
            "a carriage return (CR) without a line feed: TOML lines end with LF or CR LF; \
             convert the file (e.g. mac2unix FILE, from dos2unix)"
                .to_string()
        } else if let (Some(span), "duplicate key") = (&span, e.message()) {
            key = first_setting(text, span.clone());
            "set twice; keep one".to_string()
        } else {
            one_line(e.message())
        };
        Invalid {
            line: at.map(|at| line_of(bytes, at)),
            key,
            message,
        }
    }

    /// Valid TOML whose keys or values the configuration does not accept: the key is
    /// found from where the error is.
    pub(crate) fn value(text: &str, e: &toml::de::Error) -> Invalid {
        let at = e.span().map(|span| span.start.min(text.len()));
        let key = at.and_then(|at| {
            let document = DeTable::parse(text).ok()?;
            let path = key_path_at(document.get_ref(), at)?;
            Some(path.join("."))
        });
        Invalid {
            line: at.map(|at| line_of(text.as_bytes(), at)),
            key,
            message: plain_words(&one_line(e.message())),
        }
    }

    /// Adds the line `self.key` is set on in `text` (none when the key is not in the
    /// file: a default that conflicts with a value that is).
    pub(crate) fn located(mut self, text: &str) -> Invalid {
        if self.line.is_none() {
            if let (Some(key), Ok(document)) = (&self.key, DeTable::parse(text)) {
                self.line =
                    key_span(document.get_ref(), key).map(|at| line_of(text.as_bytes(), at));
            }
        }
        self
    }

    /// `FILE:LINE: KEY: MESSAGE`, leaving out what is not known.
    pub(crate) fn fmt_in(&self, path: &Path, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        self.fmt_key_and_message(f)
    }

    fn fmt_key_and_message(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// `line 7: policy.grace_period: ...` (without a file: the text came from elsewhere).
impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        self.fmt_key_and_message(f)
    }
}

impl std::error::Error for Invalid {}

impl From<Invalid> for String {
    fn from(e: Invalid) -> String {
        e.to_string()
    }
}

/// The line (from 1) holding byte `at` of `text`.
fn line_of(text: &[u8], at: usize) -> usize {
    1 + text[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Messages are one line in a log.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// serde's words put for the admin: "unknown field `x`, expected one of ..." names the
/// key again (it is already in front of the message), "expected u32" and "expected
/// struct PolicyConfig" name Rust types.
fn plain_words(message: &str) -> String {
    if let Some((_, expected)) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once("`, "))
    {
        return format!("unknown key; {expected}");
    }
    for (rust, plain) in [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number of at least 0"),
    ] {
        if let Some(start) = message.strip_suffix(rust) {
            return format!("{start}{plain}");
        }
    }
    match message.rsplit_once("expected struct ") {
        Some((start, _)) => format!("{start}expected a table"),
        None => message.to_string(),
    }
}

/// The keys (`policy`, `grace_period`) leading to the innermost key or value at byte
/// `at`: the table headers, dotted keys and inline tables are all seen as one tree.
fn key_path_at(table: &DeTable<'_>, at: usize) -> Option<Vec<String>> {
    for (key, value) in table.iter() {
        if key.span().contains(&at) {
            return Some(vec![key.get_ref().to_string()]);
        }
        let inner = match value.get_ref() {
            DeValue::Table(t) => key_path_at(t, at),
            DeValue::Array(items) => items.iter().find_map(|item| match item.get_ref() {
                DeValue::Table(t) => key_path_at(t, at),
                _ => None,
            }),
            _ => None,
        };
        if let Some(mut path) = inner {
            path.insert(0, key.get_ref().to_string());
            return Some(path);
        }
        if value.span().contains(&at) {
            return Some(vec![key.get_ref().to_string()]);
        }
    }
    None
}

/// The full name (`policy.mandatory`) of the key that `span` sets a second time: of
/// the keys with its name read before it, the last.
fn first_setting(text: &str, span: std::ops::Range<usize>) -> Option<String> {
    fn visit(
        table: &DeTable<'_>,
        name: &str,
        before: usize,
        path: &mut Vec<String>,
        best: &mut Option<(usize, String)>,
    ) {
        for (key, value) in table.iter() {
            path.push(key.get_ref().to_string());
            let start = key.span().start;
            if key.get_ref() == name && start < before && best.as_ref().is_none_or(|b| start > b.0)
            {
                *best = Some((start, path.join(".")));
            }
            if let DeValue::Table(t) = value.get_ref() {
                visit(t, name, before, path, best);
            }
            path.pop();
        }
    }
    // The key as written (quoted or bare), read as a key.
    let written = format!("{} = 0", text.get(span.clone())?);
    let name = DeTable::parse(&written)
        .ok()?
        .into_inner()
        .into_iter()
        .next()?
        .0
        .into_inner()
        .into_owned();
    let (document, _) = DeTable::parse_recoverable(text);
    let mut best = None;
    visit(
        document.get_ref(),
        &name,
        span.start,
        &mut Vec::new(),
        &mut best,
    );
    Some(best.map_or(name, |(_, path)| path))
}

/// Where `path` (`table.key`) is set: the start of its key.
fn key_span(table: &DeTable<'_>, path: &str) -> Option<usize> {
    let (first, rest) = match path.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (path, None),
    };
    let (key, value) = table.get_key_value(first)?;
    match (rest, value.get_ref()) {
        (None, _) => Some(key.span().start),
        (Some(rest), DeValue::Table(t)) => key_span(t, rest),
        (Some(_), _) => None,
    }
}
