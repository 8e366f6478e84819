//! Server-sent events, as far as the proxy and the client SDK need them: cutting a byte
//! stream into whole events without changing a byte, and reading an event's name and data.
//!
//! An event ends at a blank line (`\n\n`, `\r\n\r\n` or `\r\r`, per the WHATWG spec).
//! The splitter keeps each event's exact bytes, terminator included, so the digest of the
//! events relayed equals the digest of the bytes the upstream sent.

use bytes::{Bytes, BytesMut};

/// Cuts a byte stream into whole events, holding at most `max_event` bytes of an
/// unfinished one.
#[derive(Debug)]
pub struct Splitter {
    buf: BytesMut,
    /// Where the search for the next terminator resumes (bytes before it hold none).
    scanned: usize,
    max_event: usize,
}

/// An event longer than the configured bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTooLong;

impl Splitter {
    /// A splitter refusing events longer than `max_event` bytes.
    pub fn new(max_event: usize) -> Splitter {
        Splitter {
            buf: BytesMut::new(),
            scanned: 0,
            max_event,
        }
    }

    /// Adds `chunk` and moves every event it completes, in order, to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Bytes>) -> Result<(), EventTooLong> {
        self.buf.extend_from_slice(chunk);
        while let Some(end) = event_end(&self.buf, self.scanned) {
            out.push(self.buf.split_to(end).freeze());
            self.scanned = 0;
        }
        // A terminator may straddle chunks: rescan its first bytes next time.
        self.scanned = self.buf.len().saturating_sub(3);
        if self.buf.len() > self.max_event {
            return Err(EventTooLong);
        }
        Ok(())
    }

    /// The bytes of an unfinished last event (the stream ended without a blank line).
    pub fn finish(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }
}

/// The end (exclusive) of the first event in `buf`, searching from `from`.
fn event_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        match buf[i] {
            b'\n' if buf.get(i + 1) == Some(&b'\n') => return Some(i + 2),
            b'\r' if buf.get(i + 1) == Some(&b'\r') => return Some(i + 2),
            b'\r' if buf.get(i + 1..i + 4) == Some(b"\n\r\n") => return Some(i + 4),
            _ => i += 1,
        }
    }
    None
}

/// One event's name and data, as a client would dispatch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any (a client dispatches it as `message` when absent).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n` (one leading space of each removed).
    pub data: String,
}

/// Reads one event's fields; comments, `id:`, `retry:` and unknown fields are ignored.
pub fn parse_event(event: &[u8]) -> SseEvent {
    let text = String::from_utf8_lossy(event);
    let mut name = None;
    let mut data: Option<String> = None;
    for line in text.split(['\n', '\r']) {
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => name = Some(value.to_owned()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    SseEvent {
        event: name,
        data: data.unwrap_or_default(),
    }
}

/// Splits a whole received stream into `(offset, event bytes)` pairs, the last one possibly
/// unterminated: what a client reads back to find the receipt event and what precedes it.
pub fn events(stream: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(end) = event_end(stream, start) {
        out.push((start, &stream[start..end]));
        start = end;
    }
    if start < stream.len() {
        out.push((start, &stream[start..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Bytes> {
        let mut s = Splitter::new(1024);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out).unwrap();
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn events_keep_their_exact_bytes_whatever_the_chunking() {
        let stream: &[u8] = b"data: a\n\ndata: b\r\n\r\nevent: x\ndata: c\r\rdata: [DONE]\n\n";
        let whole = split(&[stream]);
        assert_eq!(whole.len(), 4);
        assert_eq!(whole.concat(), stream);
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(split(&[a, b]), whole, "cut at {cut}");
        }
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(split(&bytewise), whole);
        let offsets: Vec<usize> = events(stream).iter().map(|e| e.0).collect();
        assert_eq!(offsets, [0, 9, 20, 38]);
    }

    #[test]
    fn fields_are_read_as_a_browser_would() {
        let e = parse_event(b": comment\nevent: tally.receipt\ndata: ab\ndata:cd\nid: 7\n\n");
        assert_eq!(e.event.as_deref(), Some("tally.receipt"));
        assert_eq!(e.data, "ab\ncd");
    }

    #[test]
    fn an_event_longer_than_the_bound_is_refused() {
        let mut s = Splitter::new(8);
        let mut out = Vec::new();
        assert_eq!(s.push(b"data: 0123456789", &mut out), Err(EventTooLong));
    }
}
