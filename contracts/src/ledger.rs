//! The two records a batch touches per debit, the payer's [`Escrow`] and the [`Channel`],
//! kept in a compact binary form, and their lazy settlement.
//!
//! They are the contract's only per-channel storage, so their size is what a channel costs
//! in storage gas (a Cosmos chain charges 30 gas per byte written, key included): each is
//! a few LEB128 integers under a 34-byte key (`0x01`, a letter, the 32-byte id) instead of
//! a JSON object under a namespaced key. Keys starting with `0x01` cannot meet a
//! cw-storage-plus key: a map's key starts with its namespace's length (`0x00` for any name
//! under 256 bytes) and an item's with its ASCII name.
//!
//! A submission tags what it reserves and collects with its number; nothing is written back
//! when it is finalized or voided. [`Fates`] tells which happened (one `has` on the voided
//! set per submission, cached for the transaction), and [`Fates::escrow`] /
//! [`Fates::channel`] return the records as they stand.

use std::collections::BTreeMap;

use cosmwasm_std::{StdError, StdResult, Storage};

use crate::state::{Channel, Escrow, Head, PendingCollect, VOIDED_SUBMISSIONS};

const ESCROW_PREFIX: [u8; 2] = [0x01, b'e'];
const CHANNEL_PREFIX: [u8; 2] = [0x01, b'c'];

fn key(prefix: [u8; 2], id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + id.len());
    k.extend_from_slice(&prefix);
    k.extend_from_slice(id);
    k
}

/// Appends `v` as an unsigned LEB128 integer.
fn put(out: &mut Vec<u8>, mut v: u128) {
    loop {
        let low = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn corrupt() -> StdError {
    StdError::msg("corrupt compact record")
}

/// Reads one unsigned LEB128 integer (canonical: no redundant high zero bytes, ≤ 128 bits).
fn get(input: &mut &[u8]) -> StdResult<u128> {
    let mut v = 0u128;
    for i in 0..19u32 {
        let (&byte, rest) = input.split_first().ok_or_else(corrupt)?;
        *input = rest;
        let bits = u128::from(byte & 0x7f);
        if i == 18 && bits > 0x03 {
            return Err(corrupt());
        }
        v |= bits << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(corrupt());
            }
            return Ok(v);
        }
    }
    Err(corrupt())
}

fn get_u64(input: &mut &[u8]) -> StdResult<u64> {
    u64::try_from(get(input)?).map_err(|_| corrupt())
}

impl Escrow {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        put(&mut out, self.balance);
        put(&mut out, self.reserved);
        if self.reserved > 0 {
            put(&mut out, u128::from(self.reserved_for));
        }
        out
    }

    fn decode(mut b: &[u8]) -> StdResult<Escrow> {
        let balance = get(&mut b)?;
        let reserved = get(&mut b)?;
        let reserved_for = if reserved > 0 { get_u64(&mut b)? } else { 0 };
        if !b.is_empty() {
            return Err(corrupt());
        }
        Ok(Escrow {
            balance,
            reserved,
            reserved_for,
        })
    }
}

impl Channel {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40);
        put(&mut out, self.collected);
        put(&mut out, u128::from(self.last_seq));
        if let Some(p) = self.pending {
            put(&mut out, u128::from(p.submission));
            put(&mut out, p.total);
            put(&mut out, u128::from(p.seq));
        }
        out
    }

    fn decode(mut b: &[u8]) -> StdResult<Channel> {
        let collected = get(&mut b)?;
        let last_seq = get_u64(&mut b)?;
        let pending = if b.is_empty() {
            None
        } else {
            Some(PendingCollect {
                submission: get_u64(&mut b)?,
                total: get(&mut b)?,
                seq: get_u64(&mut b)?,
            })
        };
        if !b.is_empty() {
            return Err(corrupt());
        }
        Ok(Channel {
            collected,
            last_seq,
            pending,
        })
    }
}

/// The stored escrow of `payer` (zero if it never deposited), not yet settled.
pub(crate) fn load_escrow(storage: &dyn Storage, payer: &[u8]) -> StdResult<Escrow> {
    match storage.get(&key(ESCROW_PREFIX, payer)) {
        Some(b) => Escrow::decode(&b),
        None => Ok(Escrow::default()),
    }
}

/// Whether `payer` has an escrow record.
pub(crate) fn has_escrow(storage: &dyn Storage, payer: &[u8]) -> bool {
    storage.get(&key(ESCROW_PREFIX, payer)).is_some()
}

pub(crate) fn save_escrow(storage: &mut dyn Storage, payer: &[u8], e: &Escrow) {
    storage.set(&key(ESCROW_PREFIX, payer), &e.encode());
}

/// The stored record of `channel` (zero if never debited), not yet settled.
pub(crate) fn load_channel(storage: &dyn Storage, channel: &[u8]) -> StdResult<Channel> {
    match storage.get(&key(CHANNEL_PREFIX, channel)) {
        Some(b) => Channel::decode(&b),
        None => Ok(Channel::default()),
    }
}

pub(crate) fn save_channel(storage: &mut dyn Storage, channel: &[u8], c: &Channel) {
    storage.set(&key(CHANNEL_PREFIX, channel), &c.encode());
}

/// What became of a submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// In its challenge window (or being finalized): its reservations hold.
    Pending,
    /// Finalized: its reservations were debited and its collections made.
    Finalized,
    /// Voided by a challenge: its reservations and collections lapsed.
    Voided,
}

/// The fate of submissions as of one head, cached for a transaction.
pub(crate) struct Fates {
    pending: Option<u64>,
    known: BTreeMap<u64, Fate>,
}

impl Fates {
    /// Fates as the head stands: submission `head.submissions` is pending if a batch is.
    pub(crate) fn new(head: &Head) -> Fates {
        Fates {
            pending: head.pending.map(|_| head.submissions),
            known: BTreeMap::new(),
        }
    }

    /// The fate of `submission` (any number a record was tagged with: it was accepted).
    pub(crate) fn of(&mut self, storage: &dyn Storage, submission: u64) -> Fate {
        if self.pending == Some(submission) {
            return Fate::Pending;
        }
        *self.known.entry(submission).or_insert_with(|| {
            if VOIDED_SUBMISSIONS.has(storage, submission) {
                Fate::Voided
            } else {
                Fate::Finalized
            }
        })
    }

    /// `e` as it stands: a finalized submission's reservation debited, a voided one's
    /// dropped; a pending one's kept.
    pub(crate) fn settle_escrow(&mut self, storage: &dyn Storage, e: Escrow) -> Escrow {
        if e.reserved == 0 {
            return Escrow {
                reserved_for: 0,
                ..e
            };
        }
        match self.of(storage, e.reserved_for) {
            Fate::Pending => e,
            // `reserved ≤ balance` is kept by every writer; saturate rather than trust it.
            Fate::Finalized => Escrow {
                balance: e.balance.saturating_sub(e.reserved),
                reserved: 0,
                reserved_for: 0,
            },
            Fate::Voided => Escrow {
                balance: e.balance,
                reserved: 0,
                reserved_for: 0,
            },
        }
    }

    /// `c` as it stands: a finalized submission's collection made, a voided one's dropped;
    /// a pending one's kept.
    pub(crate) fn settle_channel(&mut self, storage: &dyn Storage, c: Channel) -> Channel {
        let Some(p) = c.pending else {
            return c;
        };
        match self.of(storage, p.submission) {
            Fate::Pending => c,
            Fate::Finalized => Channel {
                collected: p.total,
                last_seq: p.seq,
                pending: None,
            },
            Fate::Voided => Channel { pending: None, ..c },
        }
    }

    /// The escrow of `payer`, settled.
    pub(crate) fn escrow(&mut self, storage: &dyn Storage, payer: &[u8]) -> StdResult<Escrow> {
        let e = load_escrow(storage, payer)?;
        Ok(self.settle_escrow(storage, e))
    }

    /// The record of `channel`, settled.
    pub(crate) fn channel(&mut self, storage: &dyn Storage, channel: &[u8]) -> StdResult<Channel> {
        let c = load_channel(storage, channel)?;
        Ok(self.settle_channel(storage, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn leb128_examples_and_rejections() {
        let enc = |v: u128| {
            let mut out = Vec::new();
            put(&mut out, v);
            out
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(u128::MAX).len(), 19);
        // Redundant high zero byte, overflow past 128 bits, truncation.
        for bad in [&[0x80, 0x00][..], &[0xff; 18][..], &[0x80][..], &[][..]] {
            let mut b = bad;
            assert!(get(&mut b).is_err(), "{bad:?}");
        }
        let mut over = vec![0xffu8; 18];
        over.push(0x04);
        assert!(get(&mut over.as_slice()).is_err());
        let mut max = vec![0xffu8; 18];
        max.push(0x03);
        assert_eq!(get(&mut max.as_slice()).unwrap(), u128::MAX);
    }

    #[test]
    fn records_are_small() {
        let e = Escrow {
            balance: 10_000_000_000,
            reserved: 123_456,
            reserved_for: 7,
        };
        assert_eq!(e.encode().len(), 5 + 3 + 1);
        let c = Channel {
            collected: 1_000_000,
            last_seq: 300,
            pending: Some(PendingCollect {
                submission: 7,
                total: 2_000_000,
                seq: 600,
            }),
        };
        assert_eq!(c.encode().len(), 3 + 2 + 1 + 3 + 2);
    }

    proptest! {
        #[test]
        fn escrow_round_trips(balance: u128, reserved: u128, reserved_for: u64) {
            let reserved_for = if reserved == 0 { 0 } else { reserved_for };
            let e = Escrow { balance, reserved, reserved_for };
            prop_assert_eq!(Escrow::decode(&e.encode()).unwrap(), e);
        }

        #[test]
        fn channel_round_trips(
            collected: u128,
            last_seq: u64,
            pending in proptest::option::of((any::<u64>(), any::<u128>(), any::<u64>())),
        ) {
            let c = Channel {
                collected,
                last_seq,
                pending: pending.map(|(submission, total, seq)| PendingCollect {
                    submission,
                    total,
                    seq,
                }),
            };
            prop_assert_eq!(Channel::decode(&c.encode()).unwrap(), c);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..48)) {
            let _ = Escrow::decode(&bytes);
            let _ = Channel::decode(&bytes);
        }
    }
}
