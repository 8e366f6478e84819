//! A chain-backed [`EscrowView`]: a cache refreshed from the chain in the background, read
//! by ingest without ever waiting on the chain.
//!
//! Ingest compares a payer's *all-time* sum of channel totals with the view, so the view is
//! the payer's all-time allowance, not its current balance (which finalized batches have
//! already debited): everything deposited, less what was paid out by withdrawals, less what
//! is thawing now (it is about to leave, so usage beyond it must not be accepted).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tally_protocol::PublicKey;

use super::{Chain, ChainError, MoveKind};
use crate::check::EscrowView;

#[derive(Default)]
struct Totals {
    deposited: u128,
    withdrawn: u128,
    thawing: u128,
}

#[derive(Default)]
struct Inner {
    /// The next height whose movements are still to be read.
    next_height: u64,
    totals: HashMap<PublicKey, Totals>,
    /// What [`EscrowView::balance`] answers.
    allowance: HashMap<PublicKey, u128>,
}

/// The escrow allowances as last read from the chain (see the module docs).
#[derive(Default)]
pub struct ChainEscrow {
    inner: RwLock<Inner>,
    /// One refresh at a time, so no movement is counted twice.
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ChainEscrow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainEscrow").finish_non_exhaustive()
    }
}

impl ChainEscrow {
    /// An empty view: every payer has 0 until the first [`ChainEscrow::refresh`].
    pub fn new() -> ChainEscrow {
        ChainEscrow::default()
    }

    /// Reads the movements since the last refresh and every known payer's thawing amount,
    /// then swaps the new allowances in (the lock is held only for the swap).
    pub async fn refresh<C: Chain>(&self, chain: &C) -> Result<(), ChainError> {
        let _one = self.refreshing.lock().await;
        let tip = chain.now().await?.height;
        let from = self.read().next_height;
        let moves = chain.escrow_moves(from).await?;
        let mut fresh: HashMap<PublicKey, (u128, u128)> = HashMap::new();
        for m in moves.iter().filter(|m| m.height <= tip) {
            let e = fresh.entry(m.payer).or_default();
            match m.kind {
                MoveKind::Deposit => e.0 = e.0.saturating_add(m.amount),
                MoveKind::Withdraw => e.1 = e.1.saturating_add(m.amount),
            }
        }
        let mut payers: std::collections::HashSet<PublicKey> =
            self.read().totals.keys().copied().collect();
        payers.extend(fresh.keys().copied());
        let mut thawing = HashMap::with_capacity(payers.len());
        for p in &payers {
            thawing.insert(*p, chain.escrow(p).await?.thawing.u128());
        }
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        for (payer, (d, w)) in fresh {
            let t = inner.totals.entry(payer).or_default();
            t.deposited = t.deposited.saturating_add(d);
            t.withdrawn = t.withdrawn.saturating_add(w);
        }
        for (payer, th) in thawing {
            inner.totals.entry(payer).or_default().thawing = th;
        }
        let allowance = inner
            .totals
            .iter()
            .map(|(k, t)| {
                let a = t
                    .deposited
                    .saturating_sub(t.withdrawn)
                    .saturating_sub(t.thawing);
                (*k, a)
            })
            .collect();
        inner.allowance = allowance;
        inner.next_height = tip.saturating_add(1);
        Ok(())
    }

    /// Refreshes every `interval` until the returned task is aborted; a failed refresh is
    /// logged and the previous view kept.
    pub fn spawn_refresher<C: Chain>(
        self: &Arc<Self>,
        chain: Arc<C>,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                if let Err(e) = this.refresh(chain.as_ref()).await {
                    tracing::warn!(error = %e, "escrow refresh failed; keeping the last view");
                }
            }
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl EscrowView for ChainEscrow {
    fn balance(&self, payer: &PublicKey) -> u128 {
        self.read().allowance.get(payer).copied().unwrap_or(0)
    }
}
