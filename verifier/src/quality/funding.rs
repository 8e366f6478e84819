//! The funding graph: escrow deposits and bank transfers as one time-stamped graph of
//! addresses, and the trace that follows each payer's escrow back through it.
//!
//! A trace starts from the payer's deposits (each weighted by its share of the escrow) and
//! walks backwards. Each address is a pool: its own balance `B` plus everything it had
//! received by the time `t` the money left it (`I`), mixed, so a share `I / (B + I)` came
//! from its senders (split by how much each sent) and the rest is the address's own money
//! (an origin). `B` is the least own balance its record allows by then: the largest
//! excess of what it had sent over what it had received, at any time up to `t`. A fresh
//! address that forwards what it gets has `B = 0`; a wallet that spent far more than a
//! small grant it received passes on only that grant's share; what happens after `t`
//! (income the ledger may not show, such as claimed payouts) does not matter. A branch
//! ends:
//!
//! - at an **insider** of the model: that share is insider money;
//! - at an origin that is not an insider: **outside** money;
//! - **unresolved**, never clean, at a hub (an exchange or bridge, by degree), at an
//!   address whose history is incomplete, when it comes back round to an address already
//!   on its path, at the hop limit with senders left, when it carries less than the
//!   smallest followed weight, or when the trace's budget of expanded addresses is spent.
//!
//! Every walk is bounded: at most `trace_budget` expansions per trace, each following at
//! most `1 / trace_min_weight` senders (senders are visited largest first, and the rest,
//! each smaller, are counted as unresolved at once), at most `trace_hops` transfers back
//! from the depositor (hop 0).

use std::collections::HashMap;

use tally_protocol::PublicKey;

use super::{Insider, Ledger, Thresholds, Unresolved};

/// An address, as an index into [`Graph::addresses`].
pub(crate) type Addr = u32;

/// Inflows of an address at most this many, before an outflow's time, are grouped by
/// sender exactly; beyond, the address's whole-history grouping is used (time ignored).
const FAN_IN_EXACT: usize = 1_024;
/// A path longer than this is never checked for a cycle (hops are at most 16).
const NO_PARENT: u32 = u32::MAX;

/// The ledger as a graph over interned addresses (ids in sorted address order, so a
/// trace does not depend on the order of the input).
pub(crate) struct Graph<'a> {
    /// Id → address.
    pub(crate) addresses: Vec<&'a str>,
    index: HashMap<&'a str, Addr>,
    /// Inflows of each address, sorted by time: `in_start[a]..in_start[a + 1]`.
    in_start: Vec<usize>,
    in_time: Vec<u64>,
    in_from: Vec<Addr>,
    /// Running total of the address's inflows, inclusive.
    in_cum: Vec<u128>,
    /// Inflows of each address grouped by sender, largest total first:
    /// `agg_start[a]..agg_start[a + 1]`.
    agg_start: Vec<usize>,
    agg_from: Vec<Addr>,
    agg_amount: Vec<u128>,
    /// The sender's latest transfer to the address (`u64::MAX`: one of unknown time).
    agg_latest: Vec<u64>,
    /// Outflows (transfers and deposits) of each address, sorted by time (unknown =
    /// `u64::MAX`).
    out_start: Vec<usize>,
    out_time: Vec<u64>,
    /// By each outflow, the least balance of its own the address must have held (see
    /// the module docs).
    out_own: Vec<u128>,
    hub: Vec<bool>,
    incomplete: Vec<bool>,
    /// Each payer's deposits: (funder, time as an outflow, amount), sorted.
    deposits: HashMap<PublicKey, Vec<(Addr, u64, u128)>>,
}

/// FNV-1a, 64 bits: the fixed key that orders address ids.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// An outflow's time: unknown (0) means after every inflow.
fn out_time(t: u64) -> u64 {
    if t == 0 { u64::MAX } else { t }
}

impl<'a> Graph<'a> {
    /// Builds the graph of `ledger`. `hub_degree` sets what a hub is (see
    /// [`Thresholds::hub_degree`]).
    pub(crate) fn new(ledger: &'a Ledger, hub_degree: u32) -> Graph<'a> {
        // Intern every address (one lookup per occurrence, keeping each endpoint's id),
        // then number them in (FNV-1a hash, address) order: a fixed order that does not
        // depend on the input's, and cheaper than sorting the strings. The map keeps std's
        // randomly keyed hash: addresses are chosen by whoever transacts, and a fixed hash
        // would let them collide on purpose.
        let mut index: HashMap<&str, Addr> =
            HashMap::with_capacity(ledger.transfers.len() + ledger.deposits.len() / 2 + 16);
        let mut seen: Vec<&str> = Vec::new();
        let mut intern = |a: &'a str| -> Addr {
            let next = seen.len() as Addr;
            let id = *index.entry(a).or_insert(next);
            if id == next {
                seen.push(a);
            }
            id
        };
        let mut edges: Vec<(Addr, Addr)> = ledger
            .transfers
            .iter()
            .map(|t| (intern(&t.from), intern(&t.to)))
            .collect();
        let mut funder_ids: Vec<Addr> = ledger.deposits.iter().map(|d| intern(&d.funder)).collect();
        ledger.payouts.iter().for_each(|p| {
            intern(&p.to);
        });
        let mut incomplete_ids: Vec<Addr> = ledger.incomplete.iter().map(|a| intern(a)).collect();
        let mut order: Vec<(u64, &str, Addr)> = seen
            .iter()
            .enumerate()
            .map(|(i, a)| (fnv(a.as_bytes()), *a, i as Addr))
            .collect();
        drop(seen);
        order.sort_unstable();
        let mut remap = vec![0 as Addr; order.len()];
        for (canonical, (_, _, first)) in order.iter().enumerate() {
            remap[*first as usize] = canonical as Addr;
        }
        let addresses: Vec<&str> = order.iter().map(|o| o.1).collect();
        drop(order);
        for id in index.values_mut() {
            *id = remap[*id as usize];
        }
        for (from, to) in &mut edges {
            *from = remap[*from as usize];
            *to = remap[*to as usize];
        }
        for id in funder_ids.iter_mut().chain(incomplete_ids.iter_mut()) {
            *id = remap[*id as usize];
        }
        drop(remap);
        let n = addresses.len();

        // Inflows, grouped by sender first (for the per-sender totals and hub degree).
        let moved = |k: &usize| {
            let (from, to) = edges[*k];
            from != to && ledger.transfers[*k].amount > 0
        };
        let mut inflows: Vec<(Addr, Addr, u64, u128)> = (0..edges.len())
            .filter(moved)
            .map(|k| {
                let t = &ledger.transfers[k];
                (edges[k].1, edges[k].0, t.time_ms, t.amount)
            })
            .collect();
        inflows.sort_unstable();
        let mut agg: Vec<(Addr, Addr, u128, u64)> = Vec::new();
        for &(to, from, time, amount) in &inflows {
            match agg.last_mut() {
                Some(last) if last.0 == to && last.1 == from => {
                    last.2 = last.2.saturating_add(amount);
                    last.3 = last.3.max(out_time(time));
                }
                _ => agg.push((to, from, amount, out_time(time))),
            }
        }
        let mut eff_in = vec![0.0f64; n];
        let mut total_in = vec![0u128; n];
        {
            let mut i = 0;
            while i < agg.len() {
                let to = agg[i].0;
                let mut j = i;
                let (mut sum, mut squares) = (0.0f64, 0.0f64);
                let mut exact = 0u128;
                while j < agg.len() && agg[j].0 == to {
                    let x = agg[j].2 as f64;
                    sum += x;
                    squares += x * x;
                    exact = exact.saturating_add(agg[j].2);
                    j += 1;
                }
                if squares > 0.0 {
                    eff_in[to as usize] = sum * sum / squares;
                }
                total_in[to as usize] = exact;
                i = j;
            }
        }
        // Largest sender first within each address.
        agg.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.2.cmp(&a.2)).then(a.1.cmp(&b.1)));
        let agg_start = starts(n, agg.iter().map(|a| a.0));
        let agg_from = agg.iter().map(|a| a.1).collect();
        let agg_amount = agg.iter().map(|a| a.2).collect();
        let agg_latest = agg.iter().map(|a| a.3).collect();
        drop(agg);

        // Inflows by time.
        inflows.sort_unstable_by_key(|a| (a.0, a.2, a.1, a.3));
        let in_start = starts(n, inflows.iter().map(|i| i.0));
        let in_time_v: Vec<u64> = inflows.iter().map(|i| i.2).collect();
        let in_from = inflows.iter().map(|i| i.1).collect();
        let mut in_cum = Vec::with_capacity(inflows.len());
        for (k, i) in inflows.iter().enumerate() {
            let prev = if k > 0 && inflows[k - 1].0 == i.0 {
                in_cum[k - 1]
            } else {
                0
            };
            in_cum.push(u128::saturating_add(prev, i.3));
        }
        drop(inflows);

        // Payers, for deposit recipients' ids in the degree count.
        let mut payers: Vec<PublicKey> = ledger.deposits.iter().map(|d| d.payer).collect();
        payers.sort_unstable();
        payers.dedup();
        let payer_id = |p: &PublicKey| payers.binary_search(p).unwrap_or(0) as u64;

        // Outflows: transfers and deposits, by time; distinct recipients.
        let mut outflows: Vec<(Addr, u64, u64, u128)> = (0..edges.len())
            .filter(moved)
            .map(|k| {
                let t = &ledger.transfers[k];
                (
                    edges[k].0,
                    out_time(t.time_ms),
                    u64::from(edges[k].1),
                    t.amount,
                )
            })
            .chain(
                ledger
                    .deposits
                    .iter()
                    .zip(&funder_ids)
                    .filter(|(d, _)| d.amount > 0)
                    .map(|(d, funder)| {
                        (
                            *funder,
                            out_time(d.time_ms),
                            (1u64 << 32) | payer_id(&d.payer),
                            d.amount,
                        )
                    }),
            )
            .collect();
        let mut recipients: Vec<(Addr, u64)> = outflows.iter().map(|o| (o.0, o.2)).collect();
        recipients.sort_unstable();
        recipients.dedup();
        let mut out_degree = vec![0u32; n];
        for (from, _) in &recipients {
            out_degree[*from as usize] = out_degree[*from as usize].saturating_add(1);
        }
        drop(recipients);
        outflows.sort_unstable();
        let out_start = starts(n, outflows.iter().map(|o| o.0));
        let out_time_v = outflows.iter().map(|o| o.1).collect();
        let mut out_cum: Vec<u128> = Vec::with_capacity(outflows.len());
        for (k, o) in outflows.iter().enumerate() {
            let prev = if k > 0 && outflows[k - 1].0 == o.0 {
                out_cum[k - 1]
            } else {
                0
            };
            out_cum.push(prev.saturating_add(o.3));
        }
        // The least balance of its own each address must have held, by each of its
        // outflows, for its record to balance: the running max of (sent − received),
        // inflows first at equal times.
        let mut out_own = vec![0u128; out_cum.len()];
        for a in 0..n {
            let (ins, outs) = (in_start[a]..in_start[a + 1], out_start[a]..out_start[a + 1]);
            let mut i = ins.start;
            let (mut received, mut deficit) = (0u128, 0u128);
            for o in outs {
                while i < ins.end && in_time_v[i] <= outflows[o].1 {
                    received = in_cum[i];
                    i += 1;
                }
                deficit = deficit.max(out_cum[o].saturating_sub(received));
                out_own[o] = deficit;
            }
        }
        let mut total_out = vec![0u128; n];
        for (a, total) in total_out.iter_mut().enumerate() {
            if out_start[a + 1] > out_start[a] {
                *total = out_cum[out_start[a + 1] - 1];
            }
        }
        drop(outflows);

        let h = f64::from(hub_degree.max(1));
        let hub = (0..n)
            .map(|a| {
                eff_in[a] >= h
                    || (out_degree[a] >= hub_degree.max(1)
                        && total_in[a].saturating_mul(2) < total_out[a])
            })
            .collect();
        let mut incomplete = vec![false; n];
        for i in incomplete_ids {
            incomplete[i as usize] = true;
        }

        let mut deposits: HashMap<PublicKey, Vec<(Addr, u64, u128)>> = HashMap::new();
        for (d, funder) in ledger.deposits.iter().zip(&funder_ids) {
            deposits
                .entry(d.payer)
                .or_default()
                .push((*funder, out_time(d.time_ms), d.amount));
        }
        for list in deposits.values_mut() {
            list.sort_unstable();
        }
        Graph {
            addresses,
            index,
            in_start,
            in_time: in_time_v,
            in_from,
            in_cum,
            agg_start,
            agg_from,
            agg_amount,
            agg_latest,
            out_start,
            out_time: out_time_v,
            out_own,
            hub,
            incomplete,
            deposits,
        }
    }

    /// The id of `address`, if it appears in the ledger.
    pub(crate) fn id(&self, address: &str) -> Option<Addr> {
        self.index.get(address).copied()
    }

    /// Whether `a` is a hub.
    #[cfg(test)]
    pub(crate) fn is_hub(&self, a: Addr) -> bool {
        self.hub[a as usize]
    }

    /// The number of addresses.
    pub(crate) fn len(&self) -> usize {
        self.addresses.len()
    }

    /// Traces `payer`'s escrow back; `insiders[a]` is the role of address `a` if it is an
    /// insider of the model (a table of [`Graph::len`] entries).
    pub(crate) fn trace(
        &self,
        payer: &PublicKey,
        insiders_of: &[Option<Insider>],
        t: &Thresholds,
    ) -> Trace {
        let insider = |a: Addr| insiders_of.get(a as usize).copied().flatten();
        let mut out = Trace::default();
        let deposits = self.deposits.get(payer).map_or(&[][..], Vec::as_slice);
        let total = deposits.iter().fold(0u128, |a, d| a.saturating_add(d.2));
        if total == 0 {
            out.unresolved.no_deposit = 1.0;
            return out;
        }
        let hops = t.trace_hops.min(super::MAX_TRACE_HOPS);
        let budget = t.trace_budget.min(super::MAX_TRACE_BUDGET);
        let min_weight = t.trace_min_weight.max(0.0);
        let mut stack: Vec<Step> = deposits
            .iter()
            .rev()
            .map(|&(funder, time, amount)| Step {
                addr: funder,
                cutoff: time,
                weight: amount as f64 / total as f64,
                hop: 0,
                parent: NO_PARENT,
            })
            .collect();
        // The expanded addresses, each with its parent, for the cycle check.
        let mut path: Vec<(Addr, u32)> = Vec::new();
        let mut flows: Vec<(Addr, f64)> = Vec::new();
        let mut insiders: Vec<(Addr, Insider, u32, f64)> = Vec::new();
        let mut expanded = 0u32;
        let mut senders: Vec<(Addr, u128, u64)> = Vec::new();
        while let Some(step) = stack.pop() {
            let Step {
                addr,
                cutoff,
                weight,
                hop,
                parent,
            } = step;
            if on_path(&path, parent, addr) {
                out.unresolved.cycle += weight;
                continue;
            }
            if let Some(role) = insider(addr) {
                out.insider += weight;
                insiders.push((addr, role, hop, weight));
                flows.push((addr, weight));
                continue;
            }
            if self.hub[addr as usize] {
                out.unresolved.hub += weight;
                continue;
            }
            flows.push((addr, weight));
            if self.incomplete[addr as usize] {
                out.unresolved.incomplete += weight;
                continue;
            }
            let a = addr as usize;
            let ins = &self.in_time[self.in_start[a]..self.in_start[a + 1]];
            let before = ins.partition_point(|&x| x <= cutoff);
            let in_before = if before == 0 {
                0
            } else {
                self.in_cum[self.in_start[a] + before - 1]
            };
            // A pool: what it held at `cutoff` is its own balance plus what it had
            // received, mixed, and money leaves in proportion.
            let outs = &self.out_time[self.out_start[a]..self.out_start[a + 1]];
            let upto = outs.partition_point(|&x| x <= cutoff);
            let own = if upto == 0 {
                0
            } else {
                self.out_own[self.out_start[a] + upto - 1]
            };
            let covered = if in_before == 0 {
                0.0
            } else {
                in_before as f64 / (own as f64 + in_before as f64)
            };
            out.outside += weight * (1.0 - covered);
            let carried = weight * covered;
            if carried <= 0.0 {
                continue;
            }
            if hop >= hops {
                out.unresolved.hop_limit += carried;
                out.cut = true;
                continue;
            }
            if expanded >= budget {
                out.unresolved.limit += carried;
                out.cut = true;
                continue;
            }
            expanded += 1;
            let me = path.len() as u32;
            path.push((addr, parent));

            // The senders of what it had by `cutoff`, largest first.
            senders.clear();
            let scale;
            if before == ins.len() || before > FAN_IN_EXACT {
                // Everything it received counts (or too many inflows to regroup: use the
                // whole history's grouping, scaled to what it had by then).
                let range = self.agg_start[a]..self.agg_start[a + 1];
                senders.extend(range.map(|k| {
                    (
                        self.agg_from[k],
                        self.agg_amount[k],
                        if before == ins.len() {
                            self.agg_latest[k]
                        } else {
                            self.agg_latest[k].min(cutoff)
                        },
                    )
                }));
                let all = self.in_cum[self.in_start[a + 1] - 1];
                scale = carried / all as f64;
            } else {
                let base = self.in_start[a];
                for k in 0..before {
                    let amount =
                        self.in_cum[base + k] - if k == 0 { 0 } else { self.in_cum[base + k - 1] };
                    senders.push((
                        self.in_from[base + k],
                        amount,
                        out_time(self.in_time[base + k]),
                    ));
                }
                senders.sort_unstable_by_key(|s| s.0);
                senders.dedup_by(|next, kept| {
                    if next.0 == kept.0 {
                        kept.1 = kept.1.saturating_add(next.1);
                        kept.2 = kept.2.max(next.2);
                        true
                    } else {
                        false
                    }
                });
                senders.sort_unstable_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
                scale = carried / in_before as f64;
            }
            let mut followed = 0.0;
            let mut stopped = false;
            for &(from, amount, latest) in &senders {
                let w = amount as f64 * scale;
                if w < min_weight {
                    stopped = true;
                    break;
                }
                followed += w;
                stack.push(Step {
                    addr: from,
                    cutoff: latest,
                    weight: w,
                    hop: hop + 1,
                    parent: me,
                });
            }
            if stopped {
                // Every sender left is smaller than the first one not followed.
                out.unresolved.limit += (carried - followed).max(0.0);
                out.cut = true;
            }
        }

        // Per insider: its total share and the fewest hops it was found at.
        insiders.sort_unstable_by_key(|i| i.0);
        for (addr, role, hops, w) in insiders {
            match out.insiders.last_mut() {
                Some(last) if last.0 == addr => {
                    last.2 = last.2.min(hops);
                    last.3 += w;
                }
                _ => out.insiders.push((addr, role, hops, w)),
            }
        }
        out.insiders
            .sort_by(|a, b| b.3.total_cmp(&a.3).then(a.0.cmp(&b.0)));
        flows.sort_unstable_by_key(|f| f.0);
        let mut i = 0;
        while i < flows.len() {
            let addr = flows[i].0;
            let mut w = 0.0;
            while i < flows.len() && flows[i].0 == addr {
                w += flows[i].1;
                i += 1;
            }
            if w >= t.cluster_min_share {
                out.ancestors.push(addr);
            }
        }
        out
    }
}

/// One address waiting to be expanded.
struct Step {
    addr: Addr,
    /// The time its money left it (`u64::MAX`: unknown, after everything).
    cutoff: u64,
    /// Share of the escrow this branch carries.
    weight: f64,
    /// Transfers between it and the deposit (0 for a depositor).
    hop: u32,
    /// Index into the path arena of the address it sent to (or [`NO_PARENT`]).
    parent: u32,
}

/// Whether `addr` is already on the path that ends at `parent`.
fn on_path(path: &[(Addr, u32)], mut parent: u32, addr: Addr) -> bool {
    while parent != NO_PARENT {
        let (a, up) = path[parent as usize];
        if a == addr {
            return true;
        }
        parent = up;
    }
    false
}

/// CSR offsets: `starts[a]..starts[a + 1]` are the rows of `a` in `keys` (sorted).
fn starts(n: usize, keys: impl Iterator<Item = Addr>) -> Vec<usize> {
    let mut counts = vec![0usize; n + 1];
    for k in keys {
        counts[k as usize + 1] += 1;
    }
    for a in 0..n {
        counts[a + 1] += counts[a];
    }
    counts
}

/// Where one payer's escrow came from.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Trace {
    pub(crate) insider: f64,
    pub(crate) outside: f64,
    pub(crate) unresolved: Unresolved,
    /// (insider, role, fewest transfers before the deposit, share), largest share first.
    pub(crate) insiders: Vec<(Addr, Insider, u32, f64)>,
    /// Addresses (not hubs) that carried at least the cluster share, sorted.
    pub(crate) ancestors: Vec<Addr>,
    /// Whether a limit cut part of it (hops, budget, small branches).
    pub(crate) cut: bool,
}

impl Unresolved {
    /// The total unresolved share.
    pub(crate) fn total(&self) -> f64 {
        self.hub + self.hop_limit + self.cycle + self.limit + self.incomplete + self.no_deposit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::{Funding, Transfer};

    fn key(i: u8) -> PublicKey {
        PublicKey([i; 32])
    }

    fn ledger(transfers: &[(&str, &str, u128, u64)], deposits: &[(u8, &str, u128, u64)]) -> Ledger {
        Ledger {
            transfers: transfers
                .iter()
                .map(|&(from, to, amount, time_ms)| Transfer {
                    from: from.into(),
                    to: to.into(),
                    amount,
                    time_ms,
                })
                .collect(),
            deposits: deposits
                .iter()
                .map(|&(payer, funder, amount, time_ms)| Funding {
                    payer: key(payer),
                    funder: funder.into(),
                    amount,
                    time_ms,
                })
                .collect(),
            ..Ledger::default()
        }
    }

    fn trace_of(l: &Ledger, payer: u8, insiders: &[&str], t: &Thresholds) -> Trace {
        let g = Graph::new(l, t.hub_degree);
        let mut table = vec![None; g.len()];
        for a in insiders.iter().filter_map(|a| g.id(a)) {
            table[a as usize] = Some(Insider::Contributor);
        }
        g.trace(&key(payer), &table, t)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn two_hops_of_laundering_trace_to_the_insider() {
        let l = ledger(
            &[
                ("alice", "fresh1", 1_000, 10),
                ("fresh1", "fresh2", 1_000, 20),
            ],
            &[(1, "fresh2", 600, 30), (2, "fresh2", 400, 31)],
        );
        let t = Thresholds::default();
        let tr = trace_of(&l, 1, &["alice"], &t);
        assert!(close(tr.insider, 1.0), "{tr:?}");
        assert_eq!(tr.insiders.len(), 1);
        assert_eq!(tr.insiders[0].2, 2, "two transfers before the deposit");
        // Following one transfer only, it is unresolved, not clean.
        let t2 = Thresholds {
            trace_hops: 1,
            ..Thresholds::default()
        };
        let tr = trace_of(&l, 1, &["alice"], &t2);
        assert!(
            close(tr.insider, 0.0) && close(tr.unresolved.hop_limit, 1.0),
            "{tr:?}"
        );
        assert!(close(tr.outside, 0.0));
    }

    #[test]
    fn money_received_after_the_deposit_does_not_fund_it() {
        // The wallet deposited its own money at 10 and was paid by a contributor at 20.
        let l = ledger(
            &[("alice", "wallet", 5_000, 20)],
            &[(1, "wallet", 1_000, 10)],
        );
        let tr = trace_of(&l, 1, &["alice"], &Thresholds::default());
        assert!(close(tr.outside, 1.0), "{tr:?}");
        // Without times (0 = unknown), the trace must assume it could have.
        let l = ledger(&[("alice", "wallet", 5_000, 0)], &[(1, "wallet", 1_000, 0)]);
        let tr = trace_of(&l, 1, &["alice"], &Thresholds::default());
        assert!(close(tr.insider, 1.0), "{tr:?}");
    }

    #[test]
    fn mixed_funds_are_split_by_amount() {
        // The wallet had 3,000 from a stranger and 1,000 from the contributor, then
        // deposited 2,000: a quarter traces to the insider.
        let l = ledger(
            &[("bob", "wallet", 3_000, 1), ("alice", "wallet", 1_000, 2)],
            &[(1, "wallet", 2_000, 5)],
        );
        let tr = trace_of(&l, 1, &["alice"], &Thresholds::default());
        assert!(close(tr.insider, 0.25), "{tr:?}");
        assert!(close(tr.outside, 0.75), "{tr:?}");
        // The wallet sent more than it received: the rest is its own money.
        let l = ledger(&[("alice", "wallet", 1_000, 1)], &[(1, "wallet", 4_000, 5)]);
        let tr = trace_of(&l, 1, &["alice"], &Thresholds::default());
        assert!(close(tr.insider, 0.25) && close(tr.outside, 0.75), "{tr:?}");
    }

    #[test]
    fn a_hub_stops_the_trace_as_unresolved_never_clean() {
        // An exchange with 30 customers; the contributor is one of them.
        let mut transfers: Vec<(String, String, u128, u64)> = (0..30)
            .map(|i| (format!("user{i}"), "exchange".to_owned(), 1_000, 1))
            .collect();
        transfers.push(("alice".into(), "exchange".into(), 1_000, 2));
        transfers.push(("exchange".into(), "fresh".into(), 1_000, 3));
        let transfers: Vec<(&str, &str, u128, u64)> = transfers
            .iter()
            .map(|(a, b, x, t)| (a.as_str(), b.as_str(), *x, *t))
            .collect();
        let l = ledger(&transfers, &[(1, "fresh", 1_000, 4)]);
        let tr = trace_of(&l, 1, &["alice"], &Thresholds::default());
        assert!(close(tr.unresolved.hub, 1.0), "{tr:?}");
        assert!(close(tr.insider, 0.0) && close(tr.outside, 0.0));
        // The hub is not a funding ancestor; the fresh address is.
        let g = Graph::new(&l, 25);
        assert_eq!(tr.ancestors, vec![g.id("fresh").unwrap_or(0)]);
        assert!(g.is_hub(g.id("exchange").unwrap_or(0)));
    }

    #[test]
    fn dust_from_many_senders_does_not_make_a_hub() {
        // 100 senders of 1 unit and the contributor's 1,000,000: one effective sender.
        let mut transfers: Vec<(String, String, u128, u64)> = (0..100)
            .map(|i| (format!("dust{i}"), "fresh".to_owned(), 1, 1))
            .collect();
        transfers.push(("alice".into(), "fresh".into(), 1_000_000, 2));
        let transfers: Vec<(&str, &str, u128, u64)> = transfers
            .iter()
            .map(|(a, b, x, t)| (a.as_str(), b.as_str(), *x, *t))
            .collect();
        let l = ledger(&transfers, &[(1, "fresh", 1_000_000, 4)]);
        let tr = trace_of(&l, 1, &["alice"], &Thresholds::default());
        assert!(tr.insider > 0.99, "{tr:?}");
        // The dust branches are each below the smallest weight followed.
        assert!(tr.unresolved.limit > 0.0 && tr.unresolved.limit < 0.001);
    }

    #[test]
    fn cycles_and_missing_history_are_unresolved() {
        let l = ledger(
            &[
                ("a", "b", 1_000, 1),
                ("b", "a", 1_000, 2),
                ("a", "b", 1_000, 3),
            ],
            &[(1, "b", 1_000, 4)],
        );
        let t = Thresholds {
            trace_hops: 8,
            ..Thresholds::default()
        };
        let tr = trace_of(&l, 1, &[], &t);
        assert!(tr.unresolved.cycle > 0.0, "{tr:?}");
        assert!(close(tr.insider + tr.outside + tr.unresolved.total(), 1.0));
        let mut l = ledger(&[("alice", "w", 1_000, 1)], &[(1, "w", 1_000, 4)]);
        l.incomplete.push("w".into());
        let tr = trace_of(&l, 1, &["alice"], &Thresholds::default());
        assert!(close(tr.unresolved.incomplete, 1.0), "{tr:?}");
        // No deposit at all: unresolved.
        let tr = trace_of(&l, 9, &["alice"], &Thresholds::default());
        assert!(close(tr.unresolved.no_deposit, 1.0), "{tr:?}");
    }

    #[test]
    fn a_huge_fan_in_is_bounded_by_budget_and_weight() {
        // A complete layered graph: 4 layers of 40 addresses, every address of a layer
        // paying every one of the next. Without bounds this is 40⁴ paths.
        let mut owned = Vec::new();
        for layer in 0..4 {
            for i in 0..40 {
                for j in 0..40 {
                    owned.push((
                        format!("l{layer}n{i}"),
                        format!("l{}n{j}", layer + 1),
                        1_000u128,
                        1 + layer as u64,
                    ));
                }
            }
        }
        owned.push(("l4n0".into(), "payerwallet".into(), 1_000, 10));
        let transfers: Vec<(&str, &str, u128, u64)> = owned
            .iter()
            .map(|(a, b, x, t)| (a.as_str(), b.as_str(), *x, *t))
            .collect();
        let l = ledger(&transfers, &[(1, "payerwallet", 1_000, 11)]);
        let t = Thresholds {
            trace_hops: 6,
            hub_degree: 1_000,
            trace_budget: 50,
            ..Thresholds::default()
        };
        let tr = trace_of(&l, 1, &["l0n0"], &t);
        assert!(tr.cut);
        assert!(
            close(tr.insider + tr.outside + tr.unresolved.total(), 1.0),
            "{tr:?}"
        );
        assert!(tr.unresolved.limit > 0.5, "{tr:?}");
    }
}
