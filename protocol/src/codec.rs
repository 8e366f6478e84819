//! The canonical binary encoding's primitives: a writer and a total, strict reader.
//!
//! Every signed or hashed type starts with a 16-byte domain tag and a version byte, then
//! its fields in a fixed order: integers big-endian at fixed width, byte strings of fixed
//! width, text as a one-byte length and printable ASCII, lists as a one-byte count.
//! The reader accepts exactly the bytes the writer produces, so decode → encode is the
//! identity and every value has one encoding (its hash and signature are well defined).

use alloc::string::String;
use alloc::vec::Vec;

use crate::Digest;

/// Why bytes are not a canonical encoding. Decoding never panics: every malformed input
/// maps to one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("truncated: needed {needed} more bytes for {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// How many bytes were missing.
        needed: usize,
    },
    /// Bytes remained after a complete value.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    /// The domain tag names another type (or nothing Tally knows).
    #[error("wrong domain tag: expected {expected}")]
    WrongTag {
        /// The tag's text for the expected type.
        expected: &'static str,
    },
    /// The version byte is one this build does not understand.
    #[error("unsupported version {found} of {kind}")]
    UnsupportedVersion {
        /// The type being decoded.
        kind: &'static str,
        /// The version found.
        found: u8,
    },
    /// A field's value breaks a rule of the encoding (see `docs/protocol.md`).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule broken.
        reason: &'static str,
    },
    /// The input is longer than any valid value of this type can be.
    #[error("input of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// The input's length.
        len: usize,
        /// The type's limit.
        max: usize,
    },
}

impl DecodeError {
    /// A stable machine-readable code for the error's kind (used in vectors and APIs).
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::TrailingBytes(_) => "trailing_bytes",
            DecodeError::WrongTag { .. } => "wrong_tag",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
            DecodeError::Invalid { .. } => "invalid_field",
            DecodeError::TooLong { .. } => "too_long",
        }
    }
}

/// A 16-byte domain-separation tag: ASCII, zero-padded. Distinct per type, so the bytes of
/// one type can never be read, hashed or signed as another.
pub(crate) struct Tag {
    pub(crate) bytes: [u8; 16],
    pub(crate) name: &'static str,
}

impl Tag {
    pub(crate) const fn new(name: &'static str) -> Tag {
        let src = name.as_bytes();
        assert!(src.len() <= 16);
        let mut bytes = [0u8; 16];
        let mut i = 0;
        while i < src.len() {
            bytes[i] = src[i];
            i += 1;
        }
        Tag { bytes, name }
    }
}

/// Appends canonical fields to a buffer.
pub(crate) struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Writer { out }
    }
    pub(crate) fn header(&mut self, tag: &Tag, version: u8) {
        self.out.extend_from_slice(&tag.bytes);
        self.out.push(version);
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u128(&mut self, v: u128) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.out.extend_from_slice(v);
    }
    pub(crate) fn digest(&mut self, d: &Digest) {
        self.out.extend_from_slice(&d.0);
    }
    /// Text: one length byte, then the ASCII bytes. Callers keep text within its limit;
    /// the decoder rejects anything else, so an over-long string cannot round-trip.
    pub(crate) fn text(&mut self, s: &str) {
        let b = s.as_bytes();
        self.out.push(u8::try_from(b.len()).unwrap_or(u8::MAX));
        self.out.extend_from_slice(&b[..b.len().min(255)]);
    }
}

/// Reads canonical fields; every method fails with a typed error instead of panicking.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let rest = self.buf.len() - self.pos;
        if rest < n {
            return Err(DecodeError::Truncated {
                field,
                needed: n - rest,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }
    /// Checks the domain tag and returns the version byte; the caller accepts or refuses it.
    pub(crate) fn header(&mut self, tag: &Tag) -> Result<u8, DecodeError> {
        let t = self.take(16, tag.name)?;
        if t != tag.bytes {
            return Err(DecodeError::WrongTag { expected: tag.name });
        }
        self.u8(tag.name)
    }
    /// Checks the tag and that the version is `version`.
    pub(crate) fn expect_header(&mut self, tag: &Tag, version: u8) -> Result<(), DecodeError> {
        let found = self.header(tag)?;
        if found != version {
            return Err(DecodeError::UnsupportedVersion {
                kind: tag.name,
                found,
            });
        }
        Ok(())
    }
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
    pub(crate) fn u128(&mut self, field: &'static str) -> Result<u128, DecodeError> {
        Ok(u128::from_be_bytes(self.array(field)?))
    }
    pub(crate) fn bytes32(&mut self, field: &'static str) -> Result<[u8; 32], DecodeError> {
        self.array(field)
    }
    pub(crate) fn bytes64(&mut self, field: &'static str) -> Result<[u8; 64], DecodeError> {
        self.array(field)
    }
    pub(crate) fn digest(&mut self, field: &'static str) -> Result<Digest, DecodeError> {
        Ok(Digest(self.array(field)?))
    }
    /// Text of 1..=`max` printable ASCII bytes (0x21..=0x7e: no spaces, no controls).
    pub(crate) fn text(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let len = usize::from(self.u8(field)?);
        let b = self.take(len, field)?;
        check_text(b, field, max)?;
        // `check_text` proved the bytes are ASCII, hence UTF-8.
        Ok(b.iter().map(|&c| char::from(c)).collect())
    }
    /// Fails unless every byte was consumed.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        let rest = self.buf.len() - self.pos;
        if rest != 0 {
            return Err(DecodeError::TrailingBytes(rest));
        }
        Ok(())
    }
}

/// The rule for every text field: 1..=`max` bytes of printable ASCII without spaces.
pub(crate) fn check_text(b: &[u8], field: &'static str, max: usize) -> Result<(), DecodeError> {
    if b.is_empty() || b.len() > max {
        return Err(DecodeError::Invalid {
            field,
            reason: "length out of range",
        });
    }
    if !b.iter().all(|c| (0x21..=0x7e).contains(c)) {
        return Err(DecodeError::Invalid {
            field,
            reason: "not printable ASCII",
        });
    }
    Ok(())
}

/// Rejects inputs longer than a type's maximum before any parsing work is done.
pub(crate) fn check_len(buf: &[u8], max: usize) -> Result<(), DecodeError> {
    if buf.len() > max {
        return Err(DecodeError::TooLong {
            len: buf.len(),
            max,
        });
    }
    Ok(())
}

/// A type with one canonical encoding. Crate-internal: each type gets public `encode`,
/// `encode_to` and `decode` through [`canonical_api!`], so callers need no trait import.
pub(crate) trait Codec: Sized {
    /// The type's domain tag.
    const TAG: &'static Tag;
    /// The largest valid encoding, in bytes; decoders refuse longer input up front.
    const MAX_LEN: usize;
    /// Appends the canonical encoding.
    fn write(&self, w: &mut Writer<'_>);
    /// Reads one value (nested values are read in place).
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

/// Decodes exactly one value: anything left over is an error.
pub(crate) fn decode_exact<T: Codec>(buf: &[u8]) -> Result<T, DecodeError> {
    // The tag first: "this is another type" says more than "this is too long".
    if buf.len() >= 16 && buf[..16] != T::TAG.bytes {
        return Err(DecodeError::WrongTag {
            expected: T::TAG.name,
        });
    }
    check_len(buf, T::MAX_LEN)?;
    let mut r = Reader::new(buf);
    let v = T::read(&mut r)?;
    r.finish()?;
    Ok(v)
}

/// Gives a [`Codec`] type its public encode/decode methods.
macro_rules! canonical_api {
    ($t:ty) => {
        impl $t {
            /// The largest valid canonical encoding of this type, in bytes.
            pub const MAX_ENCODED_LEN: usize = <$t as $crate::codec::Codec>::MAX_LEN;

            /// The canonical encoding (see `docs/protocol.md`).
            pub fn encode(&self) -> alloc::vec::Vec<u8> {
                let mut out = alloc::vec::Vec::with_capacity(256);
                self.encode_to(&mut out);
                out
            }

            /// Appends the canonical encoding to `out`.
            pub fn encode_to(&self, out: &mut alloc::vec::Vec<u8>) {
                $crate::codec::Codec::write(self, &mut $crate::codec::Writer::new(out));
            }

            /// Decodes exactly one canonical value; any deviation is a typed error.
            pub fn decode(buf: &[u8]) -> Result<Self, $crate::DecodeError> {
                $crate::codec::decode_exact(buf)
            }
        }
    };
}
pub(crate) use canonical_api;
