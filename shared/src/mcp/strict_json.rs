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
        path: Vec::new(),
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

/// One step of the path to the value being parsed.
#[derive(Clone, Copy)]
enum Step {
    /// The member whose name's opening quote is at this offset (decoded only when needed).
    Member(usize),
    Item(usize),
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    depth: usize,
    /// Where the value being parsed is; made into a JSON Pointer only for the rare number
    /// kept as written or a duplicate, so the common path costs a push and a pop.
    path: Vec<Step>,
    numbers: BTreeMap<String, (Box<str>, Number)>,
    duplicate: Option<DuplicateKey>,
    root_duplicates: Vec<String>,
}

impl Parser<'_> {
    /// The JSON Pointer of the value being parsed.
    fn pointer(&self) -> String {
        let mut out = String::new();
        for step in &self.path {
            match *step {
                Step::Item(i) => {
                    out.push('/');
                    out.push_str(itoa(i, &mut [0u8; 20]));
                }
                Step::Member(at) => {
                    // Read before, so it reads again.
                    let mut again = Parser {
                        b: self.b,
                        i: at,
                        depth: 0,
                        path: Vec::new(),
                        numbers: BTreeMap::new(),
                        duplicate: None,
                        root_duplicates: Vec::new(),
                    };
                    push_pointer_segment(&mut out, &again.string().unwrap_or_default());
                }
            }
        }
        out
    }

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
            self.path.push(Step::Item(items.len()));
            let v = self.value();
            self.path.pop();
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
            let key_at = self.i;
            let key = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected :"));
            }
            self.i += 1;
            self.ws();
            self.path.push(Step::Member(key_at));
            let v = self.value();
            self.path.pop();
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
                            object: self.pointer(),
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
                .insert(self.pointer(), (text.into(), n.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn accepts_like_serde(text: &[u8]) {
        let ours = parse(text);
        let theirs = serde_json::from_slice::<Value>(text);
        match (&ours, &theirs) {
            (Ok(doc), Ok(v)) => {
                if doc.duplicate.is_none() {
                    assert_eq!(&doc.value, v, "{}", String::from_utf8_lossy(text));
                }
            }
            (Err(_), Err(_)) => {}
            _ => panic!(
                "strict {:?} but serde_json {:?} for {:?}",
                ours.map(|d| d.value),
                theirs,
                String::from_utf8_lossy(text)
            ),
        }
    }

    #[test]
    fn duplicates_are_found_at_any_depth_and_named() {
        let cases = [
            (r#"{"method":"a","method":"b"}"#, "", "method"),
            (r#"{"params":{"name":"x","name":"y"}}"#, "/params", "name"),
            (r#"{"p":[1,{"a~/b":{"k":1,"k":2}}]}"#, "/p/1/a~0~1b", "k"),
            // The same name written two ways is the same name.
            (r#"{"name":1,"n\u0061me":2}"#, "", "name"),
        ];
        for (text, object, key) in cases {
            let doc = parse(text.as_bytes()).unwrap();
            let dup = doc.duplicate.expect(text);
            assert_eq!((dup.object.as_str(), dup.key.as_str()), (object, key));
        }
        let doc = parse(br#"{"id":1,"id":2,"x":{"y":1,"y":1}}"#).unwrap();
        assert_eq!(doc.root_duplicates, ["id"]);
        assert_eq!(
            doc.value["id"], 1,
            "the first is kept, the text read to its end"
        );
        assert!(
            parse(br#"{"a":{"b":1},"c":{"b":1}}"#)
                .unwrap()
                .duplicate
                .is_none()
        );
        // A duplicate does not hide a syntax error after it.
        assert!(parse(br#"{"a":1,"a":2,}"#).is_err());
    }

    #[test]
    fn edge_cases_read_as_serde_json_reads_them() {
        for text in [
            "",
            " ",
            "\u{feff}{}",
            "{}",
            "[]",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "-",
            "-0",
            "-0.0",
            "1.",
            ".5",
            "1e",
            "1e+",
            "1E5",
            "1e400",
            "1e-400",
            "-1e400",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "0.1000000000000000055511151231257827",
            "tru",
            "nul",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"\\ud83d\\ude00\"",
            "\"\\u00e9\"",
            "\"\\x\"",
            "\"a\tb\"",
            "\"\\/\"",
            "\"\u{7f}\"",
            "[1] x",
            "[1]\n\t ",
            "{\"a\" 1}",
            "{1:2}",
            "\"\\u12\"",
            "\"\\uZZZZ\"",
            "[\"\\\"\"]",
        ] {
            accepts_like_serde(text.as_bytes());
        }
        accepts_like_serde(b"\"\xff\"");
        accepts_like_serde(b"\"\xc3\xa9\"");
        for depth in [126, 127, 128, 129] {
            accepts_like_serde(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).as_bytes());
            let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            accepts_like_serde(objects.as_bytes());
        }
    }

    #[test]
    fn numbers_keep_the_clients_text_unless_replaced() {
        let text = r#"{"big":123456789012345678901234567890,"e":1E5,"n":[-0,2.50],"plain":7}"#;
        let doc = parse(text.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(doc.numbers.to_vec(&doc.value)).unwrap(),
            text,
            "every number as written (keys already in serde_json's order)"
        );
        let mut v = doc.value.clone();
        v["big"] = json!(5);
        v["n"][0] = json!("x");
        let out = String::from_utf8(doc.numbers.to_vec(&v)).unwrap();
        assert_eq!(out, r#"{"big":5,"e":1E5,"n":["x",2.50],"plain":7}"#);
        let batch = parse(br#"[{"a":1E2},{"a":1e2},{"a":100}]"#).unwrap();
        let item = batch.numbers.of_item(1);
        assert_eq!(item.to_vec(&batch.value[1]), br#"{"a":1e2}"#);
        assert!(batch.numbers.of_item(2).is_empty());
    }

    /// Any JSON value, with keys from a small alphabet (so objects are often alike).
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".*".prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-dA-D_é\"\\\\/~]{0,4}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// `v` serialized with member `pick` (counting members of non-empty objects in document
    /// order) written twice.
    fn with_duplicate(v: &Value, pick: &mut usize, out: &mut String) -> bool {
        match v {
            Value::Array(items) => {
                out.push('[');
                let mut done = false;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    done |= with_duplicate(item, pick, out);
                }
                out.push(']');
                done
            }
            Value::Object(map) => {
                out.push('{');
                let mut done = false;
                for (i, (k, item)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let key = serde_json::to_string(k).unwrap();
                    if *pick == 0 && !done {
                        // The same name again, first, with another value.
                        out.push_str(&format!("{key}:null,"));
                        done = true;
                    }
                    *pick = pick.saturating_sub(1);
                    out.push_str(&key);
                    out.push(':');
                    done |= with_duplicate(item, pick, out);
                }
                out.push('}');
                done
            }
            other => {
                out.push_str(&other.to_string());
                false
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Without duplicates, the strict reading is serde_json's, and what the gateway writes
        /// reads back as the same value.
        #[test]
        fn reads_what_serde_json_reads(v in arb_json(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            let doc = parse(text.as_bytes()).unwrap();
            prop_assert!(doc.duplicate.is_none());
            let theirs: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(&doc.value, &theirs);
            let written = doc.numbers.to_vec(&doc.value);
            prop_assert_eq!(serde_json::from_slice::<Value>(&written).unwrap(), theirs);
        }

        /// A member written twice anywhere is always found.
        #[test]
        fn refuses_any_injected_duplicate(v in arb_json(), pick in any::<usize>()) {
            let members: usize = count_members(&v);
            prop_assume!(members > 0);
            let mut out = String::new();
            prop_assert!(with_duplicate(&v, &mut (pick % members), &mut out));
            let doc = parse(out.as_bytes()).unwrap();
            prop_assert!(doc.duplicate.is_some(), "{}", out);
        }

        /// Arbitrary bytes: never a panic, and accepted exactly when serde_json accepts them.
        #[test]
        fn never_panics_and_agrees_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            accepts_like_serde(&bytes);
        }

        /// Near-valid texts (a valid one with a few bytes changed) find the grammar's corners.
        #[test]
        fn agrees_on_mutated_json(
            v in arb_json(),
            edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let mut bytes = serde_json::to_vec(&v).unwrap();
            for (at, byte, op) in edits {
                let at = at % (bytes.len() + 1);
                match op {
                    0 => bytes.insert(at, byte),
                    1 if at < bytes.len() => bytes[at] = byte,
                    _ if at < bytes.len() => { bytes.remove(at); }
                    _ => {}
                }
            }
            accepts_like_serde(&bytes);
        }

        /// Strings built from escapes (surrogates, invalid ones) read as serde_json reads them.
        #[test]
        fn agrees_on_escapes(parts in prop::collection::vec(prop_oneof![
            Just("\\ud800"), Just("\\udbff"), Just("\\udc00"), Just("\\udfff"), Just("\\u0041"),
            Just("\\u00"), Just("\\n"), Just("\\\\"), Just("\\\""), Just("\\/"), Just("\\x"),
            Just("a"), Just("é"), Just("\t"), Just("\\"), Just("\""),
        ], 0..6)) {
            let text = format!("\"{}\"", parts.concat());
            accepts_like_serde(text.as_bytes());
        }

        /// Every number serde_json reads is written upstream exactly as the client wrote it.
        #[test]
        fn numbers_travel_as_written(
            n in "-?(0|[1-9][0-9]{0,40})(\\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?",
        ) {
            let text = format!("{{\"a\":[{n}],\"b\":{n}}}");
            prop_assume!(serde_json::from_str::<Value>(&text).is_ok());
            let doc = parse(text.as_bytes()).unwrap();
            prop_assert_eq!(String::from_utf8(doc.numbers.to_vec(&doc.value)).unwrap(), text);
        }
    }

    fn count_members(v: &Value) -> usize {
        match v {
            Value::Array(items) => items.iter().map(count_members).sum(),
            Value::Object(map) => map.len() + map.values().map(count_members).sum::<usize>(),
            _ => 0,
        }
    }
}
