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
/// ends it, and the event they make (none for comments, `retry:` and id-only blocks).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Block {
    pub event: Option<Event>,
    pub raw: Vec<u8>,
}

/// Incremental parser: feed chunks as they arrive, take complete events.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    current: Event,
    has_data: bool,
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
            let mut line = &self.buf[start..start + pos];
            if keep_raw {
                self.raw.extend_from_slice(&self.buf[start..=start + pos]);
            }
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
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
                    raw: std::mem::take(&mut self.raw),
                });
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
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
                "id" => self.current.id = Some(value.to_owned()),
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

    #[test]
    fn an_event_that_never_ends_is_refused_not_buffered() {
        let mut p = Parser::default();
        let lines = format!("data: {}\n", "x".repeat(1024)).repeat(1024);
        let refused = (0..32).any(|_| p.push(lines.as_bytes()).is_err());
        assert!(refused, "32 MiB of one unfinished event were buffered");
    }
}
