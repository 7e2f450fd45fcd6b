//! Strict JSON for client messages: one reading, whatever parser the upstream uses.
//!
//! `serde_json` keeps the *last* of two members with the same name; other parsers keep the
//! first, or merge, or match names case-insensitively. A message the gateway judged by one
//! reading and forwarded as raw bytes could mean something else upstream (a hidden tool
//! called under an allowed name). So client messages are parsed here, with every duplicate
//! member name (at any depth) reported, and the gateway forwards the value it parsed,
//! re-serialized, never the client's bytes.
//!
//! The grammar is exactly `serde_json`'s (RFC 8259, no BOM, no trailing commas, strings
//! valid UTF-8 without lone surrogates, nesting up to 127 levels, numbers as `serde_json`
//! reads them); the property tests in this module check that both accept the same texts
//! and build the same values. One thing is kept that a `serde_json::Value` loses: a number
//! whose text `serde_json` would write differently (integers past 64 bits, more digits than
//! an `f64` holds, `1E5`) is written upstream exactly as the client wrote it, so
//! re-serializing never changes a number (see [`Numbers`]).
//!
//! Cost: one pass over the bytes; strings without escapes are copied once.

use std::collections::BTreeMap;

use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// Nesting limit, `serde_json`'s (its 128th level is refused).
const MAX_DEPTH: usize = 127;

/// Why bytes are not JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not valid JSON at byte {at}: {what}")]
pub struct SyntaxError {
    pub at: usize,
    pub what: &'static str,
}

/// The first member name found twice in one object, and where that object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// JSON Pointer (RFC 6901) of the object holding the name twice.
    pub object: String,
    pub key: String,
}

/// A parsed text: its value and what the value alone does not say.
#[derive(Debug, Clone)]
pub struct Document {
    /// The value, with the first of duplicate members kept (the value is not meant to be used
    /// when [`Self::duplicate`] is set, but it is complete so callers can still read an id).
    pub value: Value,
    pub numbers: Numbers,
    /// The first duplicate member name, if any (the text is otherwise valid).
    pub duplicate: Option<DuplicateKey>,
    /// Every member name the top-level object holds more than once.
    pub root_duplicates: Vec<String>,
}

/// Parses `bytes` as one JSON text.
pub fn parse(bytes: &[u8]) -> Result<Document, SyntaxError> {
    let mut p = Parser {
        b: bytes,
        i: 0,
        depth: 0,
        path: String::new(),
        numbers: BTreeMap::new(),
        duplicate: None,
        root_duplicates: Vec::new(),
    };
    p.ws();
    let value = p.value()?;
    p.ws();
    if p.i != bytes.len() {
        return Err(p.err("trailing characters"));
    }
    Ok(Document {
        value,
        numbers: Numbers(p.numbers),
        duplicate: p.duplicate,
        root_duplicates: p.root_duplicates,
    })
}

/// Numbers whose text differs from how `serde_json` writes the parsed value, by JSON Pointer
/// from the value they were parsed with: written as the client wrote them as long as the
/// value there is still the number parsed (a member the gateway replaced is written as it
/// is now).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Numbers(BTreeMap<String, (Box<str>, Number)>);

impl Numbers {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The numbers of item `index` of an array document, relative to that item.
    pub fn of_item(&self, index: usize) -> Numbers {
        let prefix = format!("/{index}");
        Numbers(
            self.0
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter_map(|(k, v)| {
                    let rest = &k[prefix.len()..];
                    (rest.is_empty() || rest.starts_with('/')).then(|| (rest.to_owned(), v.clone()))
                })
                .collect(),
        )
    }

    /// `value` serialized, with the kept number texts.
    pub fn to_vec(&self, value: &Value) -> Vec<u8> {
        if self.0.is_empty() {
            // A Value always serializes.
            return serde_json::to_vec(value).unwrap_or_default();
        }
        let mut out = Vec::with_capacity(128);
        let mut path = String::new();
        self.write(value, &mut path, &mut out);
        out
    }

    fn write(&self, value: &Value, path: &mut String, out: &mut Vec<u8>) {
        match value {
            Value::Number(n) => match self.0.get(path.as_str()) {
                Some((text, parsed)) if parsed == n => out.extend_from_slice(text.as_bytes()),
                _ => out.extend_from_slice(n.to_string().as_bytes()),
            },
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    let len = path.len();
                    path.push('/');
                    path.push_str(itoa(i, &mut [0u8; 20]));
                    self.write(item, path, out);
                    path.truncate(len);
                }
                out.push(b']');
            }
            Value::Object(map) => {
                out.push(b'{');
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(k, out);
                    out.push(b':');
                    let len = path.len();
                    push_pointer_segment(path, k);
                    self.write(v, path, out);
                    path.truncate(len);
                }
                out.push(b'}');
            }
            other => {
                let _ = serde_json::to_writer(&mut *out, other);
            }
        }
    }
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, s);
}

fn itoa(mut n: usize, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// Appends `/key` to a JSON Pointer (`~` and `/` escaped, RFC 6901).
fn push_pointer_segment(path: &mut String, key: &str) {
    path.push('/');
    if key.contains(['~', '/']) {
        path.push_str(&key.replace('~', "~0").replace('/', "~1"));
    } else {
        path.push_str(key);
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    depth: usize,
    /// JSON Pointer of the value being parsed.
    path: String,
    numbers: BTreeMap<String, (Box<str>, Number)>,
    duplicate: Option<DuplicateKey>,
    root_duplicates: Vec<String>,
}

impl Parser<'_> {
    fn err(&self, what: &'static str) -> SyntaxError {
        SyntaxError { at: self.i, what }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn literal(&mut self, word: &'static [u8], v: Value) -> Result<Value, SyntaxError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("unexpected characters"))
        }
    }

    fn value(&mut self) -> Result<Value, SyntaxError> {
        match self.peek() {
            None => Err(self.err("unexpected end")),
            Some(b'{') => self.nested(Self::object),
            Some(b'[') => self.nested(Self::array),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("expected a value")),
        }
    }

    fn nested(
        &mut self,
        f: fn(&mut Self) -> Result<Value, SyntaxError>,
    ) -> Result<Value, SyntaxError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.depth += 1;
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn array(&mut self) -> Result<Value, SyntaxError> {
        self.i += 1; // [
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.ws();
            let len = self.path.len();
            self.path.push('/');
            self.path.push_str(itoa(items.len(), &mut [0u8; 20]));
            let v = self.value();
            self.path.truncate(len);
            items.push(v?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.err("expected , or ]")),
            }
        }
    }

    fn object(&mut self) -> Result<Value, SyntaxError> {
        self.i += 1; // {
        let mut map = Map::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Value::Object(map));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a member name"));
            }
            let key = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected :"));
            }
            self.i += 1;
            self.ws();
            let len = self.path.len();
            push_pointer_segment(&mut self.path, &key);
            let v = self.value();
            self.path.truncate(len);
            let v = v?;
            match map.entry(key) {
                Entry::Vacant(e) => {
                    e.insert(v);
                }
                Entry::Occupied(e) => {
                    // Reported, and the text still read to its end: a syntax error later on
                    // is the answer then, and otherwise the caller can still tell whether
                    // the message's id is unambiguous.
                    if self.depth == 1 {
                        self.root_duplicates.push(e.key().clone());
                    }
                    if self.duplicate.is_none() {
                        self.duplicate = Some(DuplicateKey {
                            object: self.path.clone(),
                            key: e.key().clone(),
                        });
                    }
                }
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Value::Object(map));
                }
                _ => return Err(self.err("expected , or }")),
            }
        }
    }

    fn number(&mut self) -> Result<Value, SyntaxError> {
        let start = self.i;
        let b = self.b;
        let digits = |i: &mut usize| {
            let s = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i - s
        };
        let mut i = self.i;
        if b[i] == b'-' {
            i += 1;
        }
        let int_start = i;
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                digits(&mut i);
            }
            _ => {
                self.i = i;
                return Err(self.err("invalid number"));
            }
        }
        let int_len = i - int_start;
        let mut plain = true;
        if b.get(i) == Some(&b'.') {
            plain = false;
            i += 1;
            if digits(&mut i) == 0 {
                self.i = i;
                return Err(self.err("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = b.get(i) {
            plain = false;
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            if digits(&mut i) == 0 {
                self.i = i;
                return Err(self.err("invalid number"));
            }
        }
        self.i = i;
        // Only ASCII was consumed.
        let text = std::str::from_utf8(&b[start..i]).map_err(|_| self.err("invalid number"))?;
        // Short plain integers are what nearly every message carries: read them here.
        if plain && int_len <= 18 && text != "-0" {
            let n: i64 = text.parse().map_err(|_| self.err("invalid number"))?;
            return Ok(Value::Number(if n >= 0 {
                Number::from(n as u64)
            } else {
                Number::from(n)
            }));
        }
        // Anything else is read by serde_json itself, so both readings agree by construction.
        let n: Number = serde_json::from_str(text).map_err(|_| SyntaxError {
            at: start,
            what: "number out of range",
        })?;
        if n.to_string() != text {
            self.numbers
                .insert(self.path.clone(), (text.into(), n.clone()));
        }
        Ok(Value::Number(n))
    }

    fn hex4(&mut self) -> Result<u16, SyntaxError> {
        let h = self
            .b
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.err("unexpected end"))?;
        let mut n = 0u16;
        for &c in h {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(self.err("invalid \\u escape")),
            };
            n = n * 16 + u16::from(d);
        }
        self.i += 4;
        Ok(n)
    }

    /// A string; `self.i` at its opening quote.
    fn string(&mut self) -> Result<String, SyntaxError> {
        self.i += 1;
        let start = self.i;
        // Fast path: no escape.
        loop {
            match self.b.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    let s = std::str::from_utf8(&self.b[start..self.i])
                        .map_err(|_| SyntaxError {
                            at: start,
                            what: "invalid UTF-8",
                        })?
                        .to_owned();
                    self.i += 1;
                    return Ok(s);
                }
                Some(b'\\') => break,
                Some(c) if *c < 0x20 => return Err(self.err("control character in string")),
                Some(_) => self.i += 1,
            }
        }
        let mut buf: Vec<u8> = self.b[start..self.i].to_vec();
        loop {
            match self.b.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return String::from_utf8(buf).map_err(|_| SyntaxError {
                        at: start,
                        what: "invalid UTF-8",
                    });
                }
                Some(b'\\') => {
                    self.i += 1;
                    let Some(&c) = self.b.get(self.i) else {
                        return Err(self.err("unterminated string"));
                    };
                    self.i += 1;
                    let simple = match c {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let ch = self.unicode_escape()?;
                            let mut tmp = [0u8; 4];
                            buf.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
                            continue;
                        }
                        _ => return Err(self.err("invalid escape")),
                    };
                    buf.push(simple);
                }
                Some(c) if *c < 0x20 => return Err(self.err("control character in string")),
                Some(&c) => {
                    buf.push(c);
                    self.i += 1;
                }
            }
        }
    }

    /// The character of a `\u` escape (after `\u`), surrogate pairs joined; lone surrogates
    /// are refused, as `serde_json` refuses them.
    fn unicode_escape(&mut self) -> Result<char, SyntaxError> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                    return Err(self.err("lone leading surrogate"));
                }
                self.i += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.err("lone leading surrogate"));
                }
                0x10000 + ((u32::from(first) - 0xD800) << 10) + (u32::from(second) - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.err("lone trailing surrogate")),
            n => u32::from(n),
        };
        char::from_u32(code).ok_or_else(|| self.err("invalid \\u escape"))
    }
}
