//! Receipt streams in and out: JSON lines and length-prefixed binary records (the formats
//! are described on [`read_jsonl`] and [`read_binary`]).

use std::io::{self, BufRead, ErrorKind, Read, Write};

use tally_protocol::{DecodeError, SignedReceipt};

/// Longest JSON line accepted, in bytes (without its line ending). A receipt's JSON is
/// about 2.5 KiB; the bound keeps a reader's memory flat on hostile input.
pub const MAX_JSON_LINE_LEN: usize = 16 * 1024;

/// Why a record of a stream could not be read. Each names where it happened, counting
/// lines and records from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// A JSON line is not a valid `SignedReceipt` JSON. Reading goes on with the next line.
    #[error("line {line}, column {column}: {message}")]
    Json {
        /// The line's number.
        line: u64,
        /// Where in the line the parser stopped (1-based).
        column: usize,
        /// The parser's explanation.
        message: String,
    },
    /// A JSON line is longer than [`MAX_JSON_LINE_LEN`]. It is skipped.
    #[error("line {line}: longer than {MAX_JSON_LINE_LEN} bytes")]
    LineTooLong {
        /// The line's number.
        line: u64,
    },
    /// A binary record's length exceeds [`SignedReceipt::MAX_ENCODED_LEN`]. The framing is
    /// lost, so the stream ends here.
    #[error("record {record} at byte {offset}: length {len} exceeds {max}", max = SignedReceipt::MAX_ENCODED_LEN)]
    RecordTooLong {
        /// The record's number.
        record: u64,
        /// The byte offset of the record's length prefix.
        offset: u64,
        /// The length it claims.
        len: u32,
    },
    /// The binary stream ends inside a record. The stream ends here.
    #[error("record {record} at byte {offset}: the stream ends inside the record")]
    Truncated {
        /// The record's number.
        record: u64,
        /// The byte offset of the record's length prefix.
        offset: u64,
    },
    /// A binary record is not a canonical `SignedReceipt` encoding. Reading goes on with
    /// the next record.
    #[error("record {record} at byte {offset}: {error}")]
    Decode {
        /// The record's number.
        record: u64,
        /// The byte offset of the record's length prefix.
        offset: u64,
        /// What the decoder rejected.
        error: DecodeError,
    },
    /// Reading failed. The stream ends here.
    #[error("line or record {position}: read failed: {message}")]
    Io {
        /// The line (JSON lines) or record (binary) being read.
        position: u64,
        /// The I/O error's kind.
        kind: ErrorKind,
        /// The I/O error's message.
        message: String,
    },
}

impl InputError {
    fn io(position: u64, e: &io::Error) -> InputError {
        InputError::Io {
            position,
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// Reads a JSON-lines stream of receipts: one `SignedReceipt` in its JSON form
/// (`docs/protocol.md` §5) per line, lines ending in `\n` or `\r\n`, blank lines skipped,
/// each line at most [`MAX_JSON_LINE_LEN`] bytes. A bad line gives an error naming its line
/// and reading goes on; a read error ends the stream.
pub fn read_jsonl<R: BufRead>(
    reader: R,
) -> impl Iterator<Item = Result<SignedReceipt, InputError>> {
    JsonLines {
        reader,
        line: 0,
        buf: Vec::new(),
        done: false,
    }
}

/// Reads a binary stream of receipts, the form [`write_binary`] writes: a sequence of
/// records, each `len: u32` big-endian, then `len` bytes of a canonical `SignedReceipt`
/// encoding (`docs/protocol.md` §2.10). The stream ends cleanly only at a record boundary.
///
/// Every `len` is checked against [`SignedReceipt::MAX_ENCODED_LEN`] (897) before anything
/// is read, so a hostile length cannot make the reader allocate. It also means a binary
/// stream's first byte is always `0x00`, which no JSON text starts with ([`read_receipts`]
/// relies on that).
///
/// Give it a buffered reader: it reads each record in two small reads. A record that does
/// not decode gives an error naming it and reading goes on; a bad length, a truncated
/// record or a read error ends the stream.
pub fn read_binary<R: Read>(reader: R) -> impl Iterator<Item = Result<SignedReceipt, InputError>> {
    BinaryRecords {
        reader,
        record: 0,
        offset: 0,
        buf: Vec::with_capacity(SignedReceipt::MAX_ENCODED_LEN),
        done: false,
    }
}

/// Reads a stream in either form, told apart by its first byte (`0x00` for binary, see
/// [`read_binary`]), so a command can take a file without asking which form it is in.
pub fn read_receipts<R: BufRead>(
    mut reader: R,
) -> impl Iterator<Item = Result<SignedReceipt, InputError>> {
    let sniffed = loop {
        match reader.fill_buf() {
            Ok(bytes) => break Ok(bytes.first() == Some(&0)),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break Err(InputError::io(1, &e)),
        }
    };
    let (json, binary, error) = match sniffed {
        Ok(false) => (Some(read_jsonl(reader)), None, None),
        Ok(true) => (None, Some(read_binary(reader)), None),
        Err(e) => (None, None, Some(Err(e))),
    };
    json.into_iter()
        .flatten()
        .chain(binary.into_iter().flatten())
        .chain(error)
}

/// Writes one receipt as a binary record (`len: u32` big-endian, then its canonical
/// encoding): the compact form for exporting logs, read back by [`read_binary`].
pub fn write_binary<W: Write>(writer: &mut W, receipt: &SignedReceipt) -> io::Result<()> {
    let bytes = receipt.encode();
    // An encoding is at most `SignedReceipt::MAX_ENCODED_LEN` bytes, far below 2^32.
    let len = u32::try_from(bytes.len()).map_err(|_| io::Error::from(ErrorKind::InvalidInput))?;
    writer.write_all(&len.to_be_bytes())?;
    writer.write_all(&bytes)
}

struct JsonLines<R> {
    reader: R,
    /// The number of the last line read.
    line: u64,
    buf: Vec<u8>,
    done: bool,
}

impl<R: BufRead> JsonLines<R> {
    /// Reads the next line into `buf` (without its line ending); `None` at the end.
    fn next_line(&mut self) -> Option<Result<(), InputError>> {
        self.buf.clear();
        self.line += 1;
        let limit = MAX_JSON_LINE_LEN as u64 + 2; // the content, then "\r\n"
        let n = match (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.buf)
        {
            Ok(n) => n,
            Err(e) => return Some(Err(InputError::io(self.line, &e))),
        };
        if n == 0 {
            return None;
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        } else if n as u64 == limit {
            // No line ending within the limit: skip to the end of the line.
            if let Err(e) = self.reader.skip_until(b'\n') {
                return Some(Err(InputError::io(self.line, &e)));
            }
            return Some(Err(InputError::LineTooLong { line: self.line }));
        }
        if self.buf.len() > MAX_JSON_LINE_LEN {
            return Some(Err(InputError::LineTooLong { line: self.line }));
        }
        Some(Ok(()))
    }
}

impl<R: BufRead> Iterator for JsonLines<R> {
    type Item = Result<SignedReceipt, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.next_line() {
                None => self.done = true,
                Some(Err(e @ InputError::Io { .. })) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(())) if self.buf.iter().all(u8::is_ascii_whitespace) => {}
                Some(Ok(())) => {
                    return Some(serde_json::from_slice(&self.buf).map_err(|e| {
                        let message = e.to_string();
                        // The line is parsed alone, so the parser's own "line 1" would mislead.
                        let message = match message.rsplit_once(" at line ") {
                            Some((m, _)) => m.to_owned(),
                            None => message,
                        };
                        InputError::Json {
                            line: self.line,
                            column: e.column(),
                            message,
                        }
                    }));
                }
            }
        }
        None
    }
}

struct BinaryRecords<R> {
    reader: R,
    /// The number of the last record read.
    record: u64,
    /// The byte offset of the next record.
    offset: u64,
    buf: Vec<u8>,
    done: bool,
}

impl<R: Read> BinaryRecords<R> {
    fn read_record(&mut self) -> Option<Result<SignedReceipt, InputError>> {
        self.record += 1;
        let (record, offset) = (self.record, self.offset);
        let mut prefix = [0u8; 4];
        match read_full(&mut self.reader, &mut prefix) {
            Ok(0) => return None,
            Ok(4) => {}
            Ok(_) => return Some(Err(InputError::Truncated { record, offset })),
            Err(e) => return Some(Err(InputError::io(record, &e))),
        }
        let len = u32::from_be_bytes(prefix);
        let size = match usize::try_from(len) {
            Ok(size) if size <= SignedReceipt::MAX_ENCODED_LEN => size,
            _ => {
                return Some(Err(InputError::RecordTooLong {
                    record,
                    offset,
                    len,
                }));
            }
        };
        self.buf.resize(size, 0);
        match read_full(&mut self.reader, &mut self.buf) {
            Ok(n) if n == size => {}
            Ok(_) => return Some(Err(InputError::Truncated { record, offset })),
            Err(e) => return Some(Err(InputError::io(record, &e))),
        }
        self.offset += 4 + u64::from(len);
        Some(
            SignedReceipt::decode(&self.buf).map_err(|error| InputError::Decode {
                record,
                offset,
                error,
            }),
        )
    }
}

impl<R: Read> Iterator for BinaryRecords<R> {
    type Item = Result<SignedReceipt, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.read_record();
        // Only a record that does not decode leaves the framing intact.
        if !matches!(item, Some(Ok(_)) | Some(Err(InputError::Decode { .. }))) {
            self.done = true;
        }
        item
    }
}

/// Fills `buf` unless the stream ends first; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
