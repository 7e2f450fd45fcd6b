//! Server-sent events framing (the WHATWG rules MCP's Streamable HTTP uses): enough to read
//! JSON-RPC messages out of an upstream's `text/event-stream` answer and to write events.

/// One event. `data` joins multi-line data with `\n`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
}

/// One block of a stream as it arrived: the lines up to and including the blank line that
/// ends it, and what they set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Block {
    /// The event the block dispatches: none for comments, `retry:` and id-only blocks (no
    /// data, or only empty data).
    pub event: Option<Event>,
    /// The block's `id:`, whether or not it dispatches an event: an id-only block still moves
    /// the client's last event id, the point it resumes from (`Last-Event-ID`).
    pub id: Option<String>,
    /// The block's `retry:` when valid (ASCII digits): the client's reconnection delay, ms.
    pub retry: Option<u64>,
    /// The block's bytes as they came (kept by [`Parser::push_blocks`] only).
    pub raw: Vec<u8>,
}

impl Block {
    /// The block re-framed around new `data` (an event the gateway rewrote): every line but
    /// the `data:` ones (`id:`, `event:`, `retry:`, comments, fields unknown to SSE) is kept
    /// as it came and where it came, so the client's resumption point and reconnection delay
    /// are the upstream's; the new data goes where the first `data:` line was, one `data:`
    /// line per line of `data`. Needs the raw bytes ([`Parser::push_blocks`]).
    pub fn with_data(&self, data: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.raw.len() + data.len());
        let mut placed = false;
        let mut place = |out: &mut Vec<u8>| {
            if !std::mem::replace(&mut placed, true) {
                for line in data.split('\n') {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(line.as_bytes());
                    out.push(b'\n');
                }
            }
        };
        for line in self.raw.split_inclusive(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(without_eol(line));
            match text.as_ref() {
                // The blank line that ends the block.
                "" => {
                    place(&mut out);
                    out.extend_from_slice(line);
                }
                l if matches!(field(l), Some(("data", _))) => place(&mut out),
                _ => out.extend_from_slice(line),
            }
        }
        out
    }
}

/// A line without its `\n` or `\r\n`.
fn without_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The field name and value of a non-blank line (one leading space of the value dropped);
/// `None` for a comment.
fn field(line: &str) -> Option<(&str, &str)> {
    if line.starts_with(':') {
        return None;
    }
    Some(match line.split_once(':') {
        Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
        None => (line, ""),
    })
}

/// Incremental parser: feed chunks as they arrive, take complete events.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    current: Event,
    has_data: bool,
    /// The `id:` and `retry:` of the block being read.
    id: Option<String>,
    retry: Option<u64>,
    /// The bytes of the block being read (kept by [`Parser::push_blocks`] only).
    raw: Vec<u8>,
}

/// Largest event (or unfinished line) kept while waiting for its end: a peer that never ends
/// a line or an event cannot make the gateway buffer without bound.
const MAX_EVENT: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("SSE event longer than {MAX_EVENT} bytes")]
pub struct LineTooLong;

impl Parser {
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, LineTooLong> {
        Ok(self
            .read(chunk, false)?
            .into_iter()
            .filter_map(|b| b.event)
            .collect())
    }

    /// Like [`Parser::push`], with every complete block's own bytes, so a relay can pass on
    /// exactly what it checked (comments, which keep idle connections open, included).
    pub fn push_blocks(&mut self, chunk: &[u8]) -> Result<Vec<Block>, LineTooLong> {
        self.read(chunk, true)
    }

    fn read(&mut self, chunk: &[u8], keep_raw: bool) -> Result<Vec<Block>, LineTooLong> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            if keep_raw {
                self.raw.extend_from_slice(&self.buf[start..=start + pos]);
            }
            let line =
                String::from_utf8_lossy(without_eol(&self.buf[start..=start + pos])).into_owned();
            start += pos + 1;
            if line.is_empty() {
                // WHATWG: an event whose data is empty is not dispatched (a priming event,
                // `id: 7` + `data:`, sets the client's last event id and nothing else).
                let event = if self.has_data && !self.current.data.is_empty() {
                    Some(std::mem::take(&mut self.current))
                } else {
                    self.current = Event::default();
                    None
                };
                self.has_data = false;
                out.push(Block {
                    event,
                    id: self.id.take(),
                    retry: self.retry.take(),
                    raw: std::mem::take(&mut self.raw),
                });
                continue;
            }
            let Some((name, value)) = field(&line) else {
                continue;
            };
            match name {
                "data" => {
                    if self.current.data.len() + value.len() >= MAX_EVENT {
                        return Err(LineTooLong);
                    }
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                "event" => self.current.event = Some(value.to_owned()),
                "id" => {
                    self.current.id = Some(value.to_owned());
                    self.id = Some(value.to_owned());
                }
                // WHATWG: only ASCII digits set the reconnection time; anything else is ignored.
                "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                    self.retry = value.parse().ok();
                }
                _ => {}
            }
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_EVENT || self.raw.len() > 2 * MAX_EVENT {
            return Err(LineTooLong);
        }
        Ok(out)
    }
}

/// One event carrying a JSON message, framed for the wire.
pub fn message_event(json: &serde_json::Value) -> String {
    format!("event: message\ndata: {json}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_crlf_and_comments() {
        let mut p = Parser::default();
        assert!(p.push(b": keepalive\n\nevent: mess").unwrap().is_empty());
        let evs = p
            .push(b"age\r\nid: 7\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\ndata:x\n\n")
            .unwrap();
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].event.as_deref(), Some("message"));
        assert_eq!(evs[0].id.as_deref(), Some("7"));
        assert_eq!(evs[0].data, "{\"a\":\n1}");
        assert_eq!(evs[1].data, "x");
        assert_eq!(evs[1].event, None, "fields do not leak into the next event");
        // An event with an id but no data (a priming event) is not dispatched.
        assert!(p.push(b"id: 9\n\n").unwrap().is_empty());
        assert!(p.push(b"id: 10\ndata:\n\n").unwrap().is_empty());
        let blocks = p.push_blocks(b"id: 11\nretry: 500\ndata: \n\n").unwrap();
        assert_eq!(
            (blocks.len(), &blocks[0].event),
            (1, &None),
            "passed on as bytes"
        );
        let framed = message_event(&serde_json::json!({"k": 1}));
        assert_eq!(p.push(framed.as_bytes()).unwrap()[0].data, "{\"k\":1}");
    }

    #[test]
    fn blocks_keep_their_bytes_comments_included() {
        let mut p = Parser::default();
        let text = b": keepalive\n\nid: 1\r\nevent: message\r\ndata: {}\r\n\r\ndata: x";
        let blocks = p.push_blocks(text).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].event, None);
        assert_eq!(blocks[0].raw, b": keepalive\n\n");
        assert_eq!(blocks[1].event.as_ref().unwrap().data, "{}");
        assert_eq!(
            blocks[1].raw,
            b"id: 1\r\nevent: message\r\ndata: {}\r\n\r\n"
        );
        let rest = p.push_blocks(b"\n\n").unwrap();
        assert_eq!(rest[0].raw, b"data: x\n\n");
        assert_eq!(rest[0].event.as_ref().unwrap().data, "x");
    }

    /// Re-framing (issue 23, item 5): the ids, `retry:` lines and comments of a rewritten
    /// event stay, in their place; id-only and `retry:` blocks are blocks of their own, with
    /// what they set.
    #[test]
    fn a_rewritten_event_keeps_its_id_retry_and_comments() {
        let mut p = Parser::default();
        let blocks = p
            .push_blocks(
                b"id: 1\n\nretry: 3000\n\n: note\r\nid: 2\r\nretry: 500\r\nevent: message\r\n\
                  data: {\"a\":\r\ndata: 1}\r\nx-unknown: y\r\n\r\n",
            )
            .unwrap();
        assert_eq!(blocks.len(), 3);
        assert_eq!(
            (&blocks[0].event, blocks[0].id.as_deref(), blocks[0].retry),
            (&None, Some("1"), None),
            "an id-only block sets the resumption point"
        );
        assert_eq!(
            (&blocks[1].event, &blocks[1].id, blocks[1].retry),
            (&None, &None, Some(3000))
        );
        let event = &blocks[2];
        assert_eq!((event.id.as_deref(), event.retry), (Some("2"), Some(500)));
        assert_eq!(
            String::from_utf8(event.with_data("{\"b\":2}\nnext")).unwrap(),
            ": note\r\nid: 2\r\nretry: 500\r\nevent: message\r\ndata: {\"b\":2}\ndata: next\n\
             x-unknown: y\r\n\r\n"
        );
        // A block without a data line (never dispatched, so never rewritten) still ends
        // with its data.
        assert_eq!(blocks[1].with_data("x"), b"retry: 3000\ndata: x\n\n");
        // Not digits: ignored, as browsers do.
        let odd = p
            .push_blocks(b"retry: 1e3\nretry: -5\ndata: x\n\n")
            .unwrap();
        assert_eq!(odd[0].retry, None);
    }

    #[test]
    fn an_event_that_never_ends_is_refused_not_buffered() {
        let mut p = Parser::default();
        let lines = format!("data: {}\n", "x".repeat(1024)).repeat(1024);
        let refused = (0..32).any(|_| p.push(lines.as_bytes()).is_err());
        assert!(refused, "32 MiB of one unfinished event were buffered");
    }

    /// One generated block: its lines in any order, each ended by `\n` or `\r\n`.
    #[derive(Debug, Clone)]
    struct Gen {
        id: Option<String>,
        event: Option<String>,
        retry: Option<u64>,
        comment: Option<String>,
        data: Vec<String>,
        crlf: Vec<bool>,
        order: Vec<usize>,
    }

    impl Gen {
        fn bytes(&self) -> Vec<u8> {
            let mut lines: Vec<String> = Vec::new();
            if let Some(c) = &self.comment {
                lines.push(format!(":{c}"));
            }
            if let Some(i) = &self.id {
                lines.push(format!("id: {i}"));
            }
            if let Some(e) = &self.event {
                lines.push(format!("event: {e}"));
            }
            if let Some(r) = self.retry {
                lines.push(format!("retry: {r}"));
            }
            // Data lines keep their order among themselves: the rest moves around them.
            let mut fixed: Vec<String> = Vec::new();
            for (k, l) in lines.into_iter().enumerate() {
                let at = self.order.get(k).copied().unwrap_or(0) % (fixed.len() + 1);
                fixed.insert(at, l);
            }
            let at = self.order.last().copied().unwrap_or(0) % (fixed.len() + 1);
            for (k, d) in self.data.iter().enumerate() {
                fixed.insert(at + k, format!("data: {d}"));
            }
            fixed.push(String::new());
            let mut out = Vec::new();
            for (k, l) in fixed.iter().enumerate() {
                out.extend_from_slice(l.as_bytes());
                let crlf = self.crlf.get(k).copied().unwrap_or(false);
                out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            }
            out
        }

        /// WHATWG: an event is dispatched when its data buffer is not empty.
        fn dispatches(&self) -> bool {
            !self.data.join("\n").is_empty()
        }
    }

    fn block() -> impl proptest::strategy::Strategy<Value = Gen> {
        use proptest::prelude::*;
        // Values without line ends (they end lines) or NUL; anything else goes.
        let value = "[^\r\n\u{0}]{0,12}";
        (
            proptest::option::of(value),
            proptest::option::of("[a-z]{1,8}"),
            proptest::option::of(0u64..100_000),
            proptest::option::of(value),
            proptest::collection::vec(value, 0..4),
            proptest::collection::vec(any::<bool>(), 8),
            proptest::collection::vec(0usize..8, 5),
        )
            .prop_map(|(id, event, retry, comment, data, crlf, order)| Gen {
                id,
                event,
                retry,
                comment,
                data,
                crlf,
                order,
            })
    }

    /// What a client keeps of a block: id, reconnection time, event name and data.
    fn seen(b: &Block) -> (Option<String>, Option<u64>, Option<String>, Option<String>) {
        (
            b.id.clone(),
            b.retry,
            b.event.as_ref().and_then(|e| e.event.clone()),
            b.event.as_ref().map(|e| e.data.clone()),
        )
    }

    proptest::proptest! {
        /// However the stream is cut into chunks, the same blocks come out, each with the
        /// id, retry, event name and data that were written.
        #[test]
        fn blocks_read_the_same_in_any_chunks(
            gens in proptest::collection::vec(block(), 0..6),
            cuts in proptest::collection::vec(0usize..400, 0..6),
        ) {
            let stream: Vec<u8> = gens.iter().flat_map(Gen::bytes).collect();
            let whole = Parser::default().push_blocks(&stream).unwrap();
            proptest::prop_assert_eq!(whole.len(), gens.len());
            for (b, g) in whole.iter().zip(&gens) {
                proptest::prop_assert_eq!(&b.raw, &g.bytes());
                proptest::prop_assert_eq!(&b.id, &g.id);
                proptest::prop_assert_eq!(b.retry, g.retry);
                proptest::prop_assert_eq!(b.event.is_some(), g.dispatches());
                if let Some(e) = &b.event {
                    proptest::prop_assert_eq!(&e.data, &g.data.join("\n"));
                    proptest::prop_assert_eq!(&e.event, &g.event);
                    proptest::prop_assert_eq!(&e.id, &g.id);
                }
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            cuts.sort_unstable();
            let mut p = Parser::default();
            let mut pieces = Vec::new();
            let mut from = 0;
            for c in cuts.into_iter().chain([stream.len()]) {
                pieces.extend(p.push_blocks(&stream[from..c]).unwrap());
                from = c;
            }
            proptest::prop_assert_eq!(pieces, whole);
        }

        /// Re-framing a parsed stream (every event's data rewritten, everything else passed
        /// as it came, as the relay does) keeps every block's id, retry and event name, and
        /// the data is the new data.
        #[test]
        fn reframing_keeps_ids_retry_and_data(gens in proptest::collection::vec(block(), 0..6)) {
            let stream: Vec<u8> = gens.iter().flat_map(Gen::bytes).collect();
            let blocks = Parser::default().push_blocks(&stream).unwrap();
            let rewrite = |d: &str| format!("[{}]\n{}", d.len(), d.to_uppercase());
            let mut out = Vec::new();
            for b in &blocks {
                match &b.event {
                    Some(e) => out.extend(b.with_data(&rewrite(&e.data))),
                    None => out.extend_from_slice(&b.raw),
                }
            }
            let again = Parser::default().push_blocks(&out).unwrap();
            proptest::prop_assert_eq!(again.len(), blocks.len());
            for (a, b) in again.iter().zip(&blocks) {
                let mut expected = seen(b);
                expected.3 = expected.3.map(|d| rewrite(&d));
                proptest::prop_assert_eq!(seen(a), expected);
                if b.event.is_none() {
                    proptest::prop_assert_eq!(&a.raw, &b.raw);
                }
            }
        }
    }
}
