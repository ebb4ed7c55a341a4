//! The TOML the configuration is written in, read without a general TOML library: the
//! module reads the file at every login, and a full parser cost more than the rest of
//! the login's own work. Everything a pam_totp configuration can hold is read here —
//! `[table]` headers, `key = value` with strings (basic and literal), integers,
//! booleans and arrays of them (over several lines, with comments and a trailing
//! comma), comments (skipped whatever they hold) — as TOML defines them. What TOML
//! allows and no setting here can use (dotted keys, inline tables, array tables,
//! multi-line strings, floats, dates) is refused with its line number, like any other
//! error: the login fails closed.
//!
//! The result is handed to serde as a deserializer, so the configuration types and
//! their checks (`deny_unknown_fields`, types, ranges) are the same for every reader.

use serde::de::value::{Error, SeqDeserializer};
use serde::de::{self, IntoDeserializer, Visitor};
use std::borrow::Cow;

/// A value as read; strings without escapes are borrowed from the text.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    String(Cow<'a, str>),
    Integer(i64),
    Boolean(bool),
    Array(Vec<Value<'a>>),
    Table(Vec<(Cow<'a, str>, Value<'a>)>),
}

/// Reads a whole configuration file into its top-level table.
pub fn parse(text: &str) -> Result<Value<'_>, String> {
    let mut p = Parser {
        src: text,
        pos: 0,
        line: 1,
        depth: 0,
    };
    let mut root: Vec<(Cow<'_, str>, Value<'_>)> = Vec::with_capacity(8);
    // Where `key = value` lines go: the root, or the last [table] (an index in root).
    let mut current: Option<usize> = None;
    loop {
        p.skip_blank_and_comments();
        let Some(c) = p.peek() else { break };
        let line = p.line;
        if c == b'[' {
            p.pos += 1;
            if p.peek() == Some(b'[') {
                return Err(p.unsupported("an array of tables ([[...]])"));
            }
            p.skip_spaces();
            let name = p.key()?;
            p.skip_spaces();
            if p.peek() == Some(b'.') {
                return Err(p.unsupported("a dotted table name"));
            }
            p.expect(b']')?;
            p.end_of_line()?;
            if root.iter().any(|(k, _)| *k == name) {
                return Err(format!("line {line}: table [{name}] is defined twice"));
            }
            root.push((name, Value::Table(Vec::with_capacity(8))));
            current = Some(root.len() - 1);
            continue;
        }
        let key = p.key()?;
        p.skip_spaces();
        if p.peek() == Some(b'.') {
            return Err(p.unsupported("a dotted key"));
        }
        p.expect(b'=')?;
        p.skip_spaces();
        let value = p.value()?;
        p.end_of_line()?;
        let table = match current {
            None => &mut root,
            Some(i) => match &mut root[i].1 {
                Value::Table(t) => t,
                _ => unreachable!("only tables are pushed with an index"),
            },
        };
        if table.iter().any(|(k, _)| *k == key) {
            return Err(format!("line {line}: key {key:?} is set twice"));
        }
        table.push((key, value));
    }
    Ok(Value::Table(root))
}

struct Parser<'a> {
    /// The file. Every position the reader stops at is an ASCII byte (or the end), so
    /// slices of it between two of them are always whole characters.
    src: &'a str,
    pos: usize,
    line: usize,
    /// Arrays open around the current value.
    depth: usize,
}

/// The bytes of a bare key: letters, digits, `_` and `-`.
const BARE_KEY: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        c += 1;
    }
    table
};

/// Arrays nested deeper than this are refused (no setting nests them at all; the
/// limit keeps the reader's recursion short).
const MAX_DEPTH: usize = 8;

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn error(&self, what: &str) -> String {
        format!("line {}: {what}", self.line)
    }

    fn unsupported(&self, what: &str) -> String {
        self.error(&format!("{what} is not used in this file"))
    }

    /// How many bytes from here on are `wanted`.
    #[inline(always)]
    fn run_of(&self, wanted: impl Fn(u8) -> bool) -> usize {
        let rest = &self.src.as_bytes()[self.pos..];
        rest.iter().position(|&c| !wanted(c)).unwrap_or(rest.len())
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// A comment runs to the end of its line.
    fn skip_comment(&mut self) {
        if self.peek() == Some(b'#') {
            let rest = &self.src.as_bytes()[self.pos..];
            self.pos += memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        }
    }

    /// Blank lines and comment lines before the next table, key or the end.
    fn skip_blank_and_comments(&mut self) {
        let text = self.src.as_bytes();
        let mut pos = self.pos;
        loop {
            while matches!(text.get(pos), Some(b' ' | b'\t')) {
                pos += 1;
            }
            match text.get(pos) {
                Some(b'#') => {
                    pos += memchr::memchr(b'\n', &text[pos..]).unwrap_or(text.len() - pos)
                }
                Some(b'\n') => {
                    pos += 1;
                    self.line += 1;
                }
                Some(b'\r') if text.get(pos + 1) == Some(&b'\n') => pos += 1,
                _ => break,
            }
        }
        self.pos = pos;
    }

    /// Spaces, a comment, then the end of the line (or of the file).
    fn end_of_line(&mut self) -> Result<(), String> {
        self.skip_spaces();
        self.skip_comment();
        if self.peek() == Some(b'\r') {
            self.pos += 1;
        }
        match self.peek() {
            None => Ok(()),
            Some(b'\n') => {
                self.pos += 1;
                self.line += 1;
                Ok(())
            }
            Some(_) => Err(self.error("expected the end of the line")),
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected `{}`", c as char)))
        }
    }

    /// A bare key (letters, digits, `_`, `-`) or a quoted one.
    fn key(&mut self) -> Result<Cow<'a, str>, String> {
        match self.peek() {
            Some(b'"') => self.basic_string(),
            Some(b'\'') => self.literal_string(),
            _ => {
                let start = self.pos;
                self.pos += self.src.as_bytes()[start..]
                    .iter()
                    .take_while(|&&c| BARE_KEY[usize::from(c)])
                    .count();
                if self.pos == start {
                    return Err(self.error("expected a key"));
                }
                Ok(Cow::Borrowed(self.str(start, self.pos)?))
            }
        }
    }

    /// The text from `start` to `end`.
    fn str(&self, start: usize, end: usize) -> Result<&'a str, String> {
        self.src
            .get(start..end)
            .ok_or_else(|| self.error("text that is not UTF-8"))
    }

    fn value(&mut self) -> Result<Value<'a>, String> {
        match self.peek() {
            Some(b'"') => self.basic_string().map(Value::String),
            Some(b'\'') => self.literal_string().map(Value::String),
            Some(b'[') => self.array(),
            Some(b'{') => Err(self.unsupported("an inline table")),
            Some(b't') if self.src.as_bytes()[self.pos..].starts_with(b"true") => {
                self.pos += 4;
                self.word_ends()?;
                Ok(Value::Boolean(true))
            }
            Some(b'f') if self.src.as_bytes()[self.pos..].starts_with(b"false") => {
                self.pos += 5;
                self.word_ends()?;
                Ok(Value::Boolean(false))
            }
            Some(c) if c.is_ascii_digit() || c == b'+' || c == b'-' => self.integer(),
            _ => Err(self.error("expected a value")),
        }
    }

    /// After `true`/`false`: nothing that would make it a longer word.
    fn word_ends(&self) -> Result<(), String> {
        match self.peek() {
            Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.' => {
                Err(self.error("expected a value"))
            }
            _ => Ok(()),
        }
    }

    /// Decimal (optional sign, `_` between digits, no leading zero) or `0x`/`0o`/`0b`.
    fn integer(&mut self) -> Result<Value<'a>, String> {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'+' | b'-' | b'.' | b':'))
        {
            self.pos += 1;
        }
        let word = self.str(start, self.pos)?;
        let bad = || self.error(&format!("{word:?} is not an integer"));
        let (radix, digits) = match word.get(..2) {
            Some("0x") => (16, &word[2..]),
            Some("0o") => (8, &word[2..]),
            Some("0b") => (2, &word[2..]),
            _ => (10, word),
        };
        let (negative, digits) = match digits.as_bytes().first() {
            Some(b'-') if radix == 10 => (true, &digits[1..]),
            Some(b'+') if radix == 10 => (false, &digits[1..]),
            _ => (false, digits),
        };
        let bytes = digits.as_bytes();
        let well_formed = !bytes.is_empty()
            && bytes[0] != b'_'
            && bytes[bytes.len() - 1] != b'_'
            && !digits.contains("__")
            && bytes
                .iter()
                .all(|&b| b == b'_' || (b as char).is_digit(radix))
            && !(radix == 10 && bytes.len() > 1 && bytes[0] == b'0');
        if !well_formed {
            if word.contains(['.', 'e', 'E', ':']) || word.contains("inf") || word.contains("nan") {
                return Err(self.unsupported("a float or a date"));
            }
            return Err(bad());
        }
        // Checked as it goes, with the sign applied to each digit: i64::MIN is read,
        // one more is refused.
        let mut value: i64 = 0;
        for digit in digits.chars().filter_map(|c| c.to_digit(radix)) {
            let digit = i64::from(digit);
            value = value
                .checked_mul(i64::from(radix))
                .and_then(|v| {
                    if negative {
                        v.checked_sub(digit)
                    } else {
                        v.checked_add(digit)
                    }
                })
                .ok_or_else(bad)?;
        }
        Ok(Value::Integer(value))
    }

    /// `"..."` on one line, with TOML's escapes; borrowed when it has none.
    fn basic_string(&mut self) -> Result<Cow<'a, str>, String> {
        if self.src.as_bytes()[self.pos..].starts_with(b"\"\"\"") {
            return Err(self.unsupported("a multi-line string"));
        }
        self.pos += 1;
        let start = self.pos;
        // Plain text up to the closing quote is the common case: borrowed, no copy.
        self.pos +=
            self.run_of(|c| c != b'"' && c != b'\\' && (c >= 0x20 || c == b'\t') && c != 0x7f);
        let mut out: Option<Vec<u8>> = None;
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error("a string is not closed"));
            };
            match c {
                b'"' => break,
                b'\\' => {
                    let buf =
                        out.get_or_insert_with(|| self.src.as_bytes()[start..self.pos].to_vec());
                    self.pos += 1;
                    let e = self
                        .peek()
                        .ok_or_else(|| self.error("a string is not closed"))?;
                    self.pos += 1;
                    match e {
                        b'b' => buf.push(0x08),
                        b't' => buf.push(b'\t'),
                        b'n' => buf.push(b'\n'),
                        b'f' => buf.push(0x0c),
                        b'r' => buf.push(b'\r'),
                        b'"' => buf.push(b'"'),
                        b'\\' => buf.push(b'\\'),
                        b'u' | b'U' => {
                            let n = if e == b'u' { 4 } else { 8 };
                            let ch = self
                                .src
                                .as_bytes()
                                .get(self.pos..self.pos + n)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .and_then(char::from_u32)
                                .ok_or_else(|| self.error("a bad \\u escape"))?;
                            self.pos += n;
                            let mut utf8 = [0u8; 4];
                            buf.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
                        }
                        _ => return Err(self.error("an unknown escape in a string")),
                    }
                    continue;
                }
                b'\n' => return Err(self.error("a string is not closed")),
                c if (c < 0x20 && c != b'\t') || c == 0x7f => {
                    return Err(self.error("a control character in a string"))
                }
                c => {
                    if let Some(buf) = &mut out {
                        buf.push(c);
                    }
                }
            }
            self.pos += 1;
        }
        let end = self.pos;
        self.pos += 1;
        match out {
            None => Ok(Cow::Borrowed(self.str(start, end)?)),
            Some(buf) => String::from_utf8(buf)
                .map(Cow::Owned)
                .map_err(|_| self.error("text that is not UTF-8")),
        }
    }

    /// `'...'` on one line, taken as written.
    fn literal_string(&mut self) -> Result<Cow<'a, str>, String> {
        if self.src.as_bytes()[self.pos..].starts_with(b"'''") {
            return Err(self.unsupported("a multi-line string"));
        }
        self.pos += 1;
        let start = self.pos;
        loop {
            match self.peek() {
                None | Some(b'\n') => return Err(self.error("a string is not closed")),
                Some(b'\'') => break,
                Some(c) if (c < 0x20 && c != b'\t') || c == 0x7f => {
                    return Err(self.error("a control character in a string"))
                }
                Some(_) => self.pos += 1,
            }
        }
        let text = self.str(start, self.pos)?;
        self.pos += 1;
        Ok(Cow::Borrowed(text))
    }

    /// `[a, b, ...]`, over as many lines as it takes, comments and a trailing comma
    /// allowed.
    fn array(&mut self) -> Result<Value<'a>, String> {
        if self.depth == MAX_DEPTH {
            return Err(self.error("arrays nested too deep"));
        }
        self.depth += 1;
        let items = self.array_items();
        self.depth -= 1;
        items
    }

    fn array_items(&mut self) -> Result<Value<'a>, String> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_array_blank()?;
            if self.peek() == Some(b']') {
                self.pos += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value()?);
            self.skip_array_blank()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("expected `,` or `]` in an array")),
            }
        }
    }

    fn skip_array_blank(&mut self) -> Result<(), String> {
        loop {
            self.skip_spaces();
            match self.peek() {
                Some(b'#') => self.skip_comment(),
                Some(b'\r') if self.src.as_bytes().get(self.pos + 1) == Some(&b'\n') => {
                    self.pos += 1
                }
                Some(b'\n') => {
                    self.pos += 1;
                    self.line += 1;
                }
                None => return Err(self.error("an array is not closed")),
                _ => return Ok(()),
            }
        }
    }
}

/// A value and where it sits (table and key), as serde reads it: an error names the
/// key it is about (`policy.grace_period: invalid type ...`). The name is put together
/// only when there is an error.
pub struct At<'a> {
    value: Value<'a>,
    table: Option<Cow<'a, str>>,
    key: Option<Cow<'a, str>>,
}

impl<'a> At<'a> {
    /// The whole file's table, for `Config::deserialize`.
    pub fn root(value: Value<'a>) -> At<'a> {
        At {
            value,
            table: None,
            key: None,
        }
    }
}

/// `table.key`, `table` or `key`, whichever are known.
fn path(table: Option<&str>, key: Option<&str>) -> String {
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (Some(t), None) => t.to_string(),
        (None, Some(k)) => k.to_string(),
        (None, None) => String::new(),
    }
}

fn located(place: String, e: Error) -> Error {
    if place.is_empty() {
        e
    } else {
        de::Error::custom(format!("{place}: {e}"))
    }
}

impl<'de, 'a> IntoDeserializer<'de, Error> for At<'a> {
    type Deserializer = At<'a>;

    fn into_deserializer(self) -> At<'a> {
        self
    }
}

/// The entries of a table, each value deserialized with its place.
struct Entries<'a> {
    entries: std::vec::IntoIter<(Cow<'a, str>, Value<'a>)>,
    next: Option<(Cow<'a, str>, Value<'a>)>,
    /// This table's name (none for the top level).
    table: Option<Cow<'a, str>>,
}

impl<'de, 'a> de::MapAccess<'de> for Entries<'a> {
    type Error = Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let result = seed.deserialize(key.as_ref().into_deserializer());
        self.next = Some((key, value));
        result.map(Some).map_err(|e: Error| {
            let place = match &self.table {
                Some(t) => format!("[{t}]"),
                None => "the top level".to_string(),
            };
            located(place, e)
        })
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let (key, value) = self
            .next
            .take()
            .ok_or_else(|| <Error as de::Error>::custom("a value without its key"))?;
        seed.deserialize(At {
            value,
            table: self.table.clone(),
            key: Some(key),
        })
    }
}

impl<'de, 'a> de::Deserializer<'de> for At<'a> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let At { value, table, key } = self;
        let result = match value {
            Value::String(Cow::Borrowed(s)) => visitor.visit_str(s),
            Value::String(Cow::Owned(s)) => visitor.visit_string(s),
            Value::Integer(i) => visitor.visit_i64(i),
            Value::Boolean(b) => visitor.visit_bool(b),
            Value::Array(items) => {
                // The array's place is added once, below.
                let items = items.into_iter().map(At::root);
                visitor.visit_seq(SeqDeserializer::new(items))
            }
            Value::Table(entries) => {
                // A table's own name: `policy` (tables hold no tables here).
                return visitor.visit_map(Entries {
                    entries: entries.into_iter(),
                    next: None,
                    table: key,
                });
            }
        };
        result.map_err(|e| located(path(table.as_deref(), key.as_deref()), e))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.value {
            Value::String(s) => visitor
                .visit_enum(s.as_ref().into_deserializer())
                .map_err(|e: Error| located(path(self.table.as_deref(), self.key.as_deref()), e)),
            _ => self.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(v: Value<'_>) -> Vec<(Cow<'_, str>, Value<'_>)> {
        match v {
            Value::Table(t) => t,
            other => panic!("not a table: {other:?}"),
        }
    }

    #[test]
    fn what_a_configuration_holds() {
        let text = "# top\r\n[policy] # c\nmandatory = true\n\"mandatory_groups\" = [ \"a\", 'b\\c', # x\n\n  \"\\u00e9\\t\", ]\n\n[ totp ]\ndigits=8\nperiod = +3_0 # s\nhex = 0x1F\nempty = []\n";
        let root = table(parse(text).unwrap());
        assert_eq!(root.len(), 2);
        let policy = table(root[0].1.clone());
        assert_eq!(policy[0], ("mandatory".into(), Value::Boolean(true)));
        assert!(
            matches!(policy[0].0, Cow::Borrowed(_)),
            "keys are not copied"
        );
        assert_eq!(
            policy[1].1,
            Value::Array(vec![
                Value::String("a".into()),
                Value::String("b\\c".into()),
                Value::String("é\t".into()),
            ])
        );
        let totp = table(root[1].1.clone());
        assert_eq!(totp[0].1, Value::Integer(8));
        assert_eq!(totp[1].1, Value::Integer(30));
        assert_eq!(totp[2], ("hex".into(), Value::Integer(31)));
        assert_eq!(totp[3], ("empty".into(), Value::Array(vec![])));
        assert!(parse("[t]\nneg = -0x10\n").is_err(), "no sign on hex");
    }

    #[test]
    fn integers_reach_the_ends_of_i64_and_no_further() {
        for (text, value) in [
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
            ("0x7fff_ffff_ffff_ffff", i64::MAX),
            ("0b101", 5),
            ("0o17", 15),
            ("-0", 0),
        ] {
            let line = format!("x = {text}\n");
            let root = table(parse(&line).unwrap());
            assert_eq!(root[0].1, Value::Integer(value), "{text}");
        }
        for text in [
            "9223372036854775808",
            "-9223372036854775809",
            "0x8000000000000000",
        ] {
            let err = parse(&format!("x = {text}\n")).unwrap_err();
            assert!(err.contains("is not an integer"), "{text}: {err}");
        }
    }

    #[test]
    fn what_is_refused_names_its_line() {
        for (text, line) in [
            ("[a]\nx = 1\nx = 2\n", 3),
            ("[a]\n[a]\n", 2),
            ("[a]\nx = \"open\n", 2),
            ("[a]\nx = 1.5\n", 2),
            ("[a]\nx = 1979-05-27\n", 2),
            ("[a]\nx = {y = 1}\n", 2),
            ("[a.b]\n", 1),
            ("[[a]]\n", 1),
            ("\n\na.b = 1\n", 3),
            ("[a]\nx = \"\"\"\nlong\"\"\"\n", 2),
            ("[a]\nx = 1 2\n", 2),
            ("[a]\nx = 01\n", 2),
            ("[a]\nx = 1__0\n", 2),
            ("[a]\nx = truely\n", 2),
            ("[a]\nx = [1,\n2\n", 4),
            ("[a]\nx = \"\\q\"\n", 2),
            ("[a]\nx = 99999999999999999999\n", 2),
            ("[a]\nx =\n", 2),
            ("[a]\nx = [[[[[[[[[[1]]]]]]]]]]\n", 2),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with(&format!("line {line}:")), "{text:?}: {err}");
        }
    }
}
