//! The JSON form: byte strings as lowercase hex of exact length, amounts (`u128`) as
//! decimal strings so no JSON parser rounds them. Strict, so JSON → value → JSON is the
//! identity for every value's JSON.

use alloc::string::ToString;
use core::fmt;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

use crate::{Digest, PublicKey, Signature};

fn write_hex<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

struct HexVisitor<const N: usize>;

impl<const N: usize> Visitor<'_> for HexVisitor<N> {
    type Value = [u8; N];
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} lowercase hex digits", 2 * N)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<[u8; N], E> {
        if v.len() != 2 * N || v.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(E::invalid_value(de::Unexpected::Str(v), &self));
        }
        let mut out = [0u8; N];
        hex::decode_to_slice(v, &mut out)
            .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))?;
        Ok(out)
    }
}

macro_rules! hex_serde {
    ($t:ty, $n:literal) => {
        impl serde::Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                write_hex(&self.0, s)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(HexVisitor::<$n>).map(Self)
            }
        }
    };
}
hex_serde!(Digest, 32);
hex_serde!(PublicKey, 32);
hex_serde!(Signature, 64);

/// `u128` amounts as canonical decimal strings (no sign, no leading zeros).
pub(crate) mod amount {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    struct AmountVisitor;

    impl Visitor<'_> for AmountVisitor {
        type Value = u128;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a decimal string of an amount below 2^128, without leading zeros")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u128, E> {
            let canonical = !v.is_empty()
                && v.bytes().all(|c| c.is_ascii_digit())
                && (v == "0" || !v.starts_with('0'));
            if !canonical {
                return Err(E::invalid_value(de::Unexpected::Str(v), &self));
            }
            v.parse::<u128>()
                .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        d.deserialize_str(AmountVisitor)
    }
}

/// Gives a type with field rules its JSON impls: the derived (`remote = "Self"`) field
/// mapping, then the same `check()` the canonical decoder runs, so a JSON value is refused
/// exactly when its canonical encoding would be (`docs/protocol.md` §8).
macro_rules! checked_serde {
    ($t:ident) => {
        $crate::json::checked_serde!($t, check);
    };
    ($t:ident, $check:ident) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $t::serialize(self, s)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = $t::deserialize(d)?;
                v.$check().map_err(serde::de::Error::custom)?;
                Ok(v)
            }
        }
    };
}
pub(crate) use checked_serde;
