//! Step 6, the report: everyone claims, the demo prints who received what and enforces
//! conservation to the unit, writes the chain view the auditor reads, and audits the
//! aggregator's API against the chain as an online auditor would.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, ensure};
use tally_aggregator::chain::Chain;
use tally_contracts::msg::{BalanceResponse, HostResponse, QueryMsg};
use tally_devnet::{Devnet, DevnetAccount, DevnetRest};
use tally_protocol::{Digest, PublicKey, SigningKey};

use super::epochs::Epochs;
use super::{BOND, Cast, Deployment, DevChain, Host, b, contributors};
use crate::audit;
use crate::workload::Model;
use tally_auditor::{
    BatchView, ChainReader, ChainView, DepositView, EscrowView, HostView, ModelView, PayoutView,
    RestOptions, TransferView, WithdrawalView,
};

/// Whether conservation held and the online audit passed.
pub(super) struct Verdict {
    /// Escrow debited = receipts = batches = revenue paid, supply unchanged.
    pub(super) conserved: bool,
    /// The aggregator's checkpoints match the chain.
    pub(super) online: bool,
    /// The chain view read back through a REST node is the one written.
    pub(super) rest: bool,
}

/// Claims, checks conservation, writes the chain view and audits online.
pub(super) async fn settle_up(
    cast: &Cast,
    chain: &DevChain,
    dep: &Deployment,
    epochs: &Epochs,
    hr: &HostResponse,
    dir: &Path,
) -> anyhow::Result<Verdict> {
    let models = &cast.models;
    let guest = cast.guest;
    let payers = &cast.payers;
    let (n_hosts, dishonest) = (cast.n_hosts, cast.dishonest);
    let agg_key = &cast.agg_key;
    let DevChain {
        devnet,
        watcher,
        sink,
        supply,
        ..
    } = chain;
    let supply = *supply;
    let Deployment { url, hosts, .. } = dep;
    let Epochs {
        settle_log,
        fees_by_payer,
    } = epochs;
    let mut parties: Vec<(String, String)> = Vec::new(); // (account name, role)
    for m in models.iter() {
        for (n, _) in contributors(m) {
            parties.push((n, format!("contributor of {}", m.name)));
        }
    }
    for (h, host) in hosts.iter().enumerate() {
        let role = if h == dishonest {
            format!("host {h} (slashed)")
        } else {
            format!("host {h}")
        };
        parties.push((host.operator.clone(), role));
    }
    parties.push(("protocol-sink".into(), "protocol fee sink".into()));
    parties.push(("watcher".into(), "challenger".into()));
    let mut payouts = Vec::new();
    for (name, role) in &parties {
        let account = devnet.account(name);
        let address = account.address();
        let owed: BalanceResponse = account
            .query(&QueryMsg::Balance {
                address: address.clone(),
            })
            .await?;
        let before = devnet.balance(&address);
        if owed.amount.u128() > 0 {
            account
                .claim()
                .await
                .with_context(|| format!("claim of {name}"))?;
        }
        let received = devnet.balance(&address) - before;
        ensure!(
            received == owed.amount.u128(),
            "{name} was owed {} and received {received}",
            owed.amount
        );
        payouts.push(PayoutView {
            name: name.clone(),
            address,
            role: role.clone(),
            amount: received,
            model: None,
            time_ms: 0,
        });
    }
    println!();
    println!("{:<28} {:<36} {:>16}", "account", "role", "received (µ)");
    for p in &payouts {
        println!("{:<28} {:<36} {:>16}", p.name, p.role, p.amount);
    }

    let mut deposited = 0u128;
    let mut left = 0u128;
    for key in payers.iter() {
        let e = watcher.escrow(&key.public_key()).await?;
        left += e.balance.u128() + e.reserved.u128();
    }
    let moves = watcher.escrow_moves(0).await?;
    for m in &moves {
        deposited += m.amount;
    }
    let debited = deposited - left;
    let fees_settled: u128 = settle_log.iter().map(|s| s.total).sum();
    let fees_attested: u128 = fees_by_payer.values().sum();
    let slashed = hr.slashed.u128();
    let paid: u128 = payouts.iter().map(|p| p.amount).sum();
    let revenue_paid = paid.saturating_sub(slashed);
    println!();
    println!("conservation (to the unit, µ):");
    println!("  escrow debited                   {debited:>16}");
    println!("  fees of the honest receipts      {fees_attested:>16}");
    println!("  debits of finalized batches      {fees_settled:>16}");
    println!("  paid out as revenue              {revenue_paid:>16}");
    println!("  paid out from the slashed bond   {slashed:>16}");
    let supply_ok = devnet.supply() == supply;
    let bonds: u128 = BOND * n_hosts as u128 - slashed;
    let contract_ok = devnet.balance(&devnet.contract()) == left + bonds;
    let ok = debited == fees_attested
        && debited == fees_settled
        && debited == revenue_paid
        && paid == debited + slashed
        && supply_ok
        && contract_ok;
    println!(
        "  {}: debited = receipts = batches = revenue paid; supply unchanged: {supply_ok}; contract holds escrows + bonds: {contract_ok}",
        if ok { "OK" } else { "FAILED" }
    );

    // ---- The chain view the auditor reads. ----
    let view = chain_view(
        devnet,
        watcher,
        models,
        hosts,
        &agg_key.public_key(),
        sink,
        guest,
        payers,
        &moves,
        payouts,
    )
    .await?;
    std::fs::write(
        dir.join(audit::CHAIN_FILE),
        serde_json::to_string_pretty(&view)?,
    )?;
    // The same view read back from the chain through a Cosmos REST node, as the auditor
    // of a real deployment reads it (`tally audit --chain-rest URL --contract ADDR`).
    let rest = DevnetRest::new(devnet.clone())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let rest_url = format!("http://{}", listener.local_addr()?);
    let node = tokio::spawn(rest.serve(listener));
    let reader = ChainReader::new(&rest_url, &view.contract, RestOptions::default())?;
    let read_start = std::time::Instant::now();
    let from_rest = reader.read().await;
    let read_secs = read_start.elapsed().as_secs_f64();
    node.abort();
    let differences = differences(&view, &from_rest?);
    println!();
    println!(
        "chain view read back through a REST node ({} requests, {} KiB, {read_secs:.2} s): {}",
        reader.requests(),
        reader.bytes().div_ceil(1024),
        if differences.is_empty() {
            "the same batches, registries, deposits, escrows, payouts and transfers"
        } else {
            "DIFFERENT"
        }
    );
    for d in &differences {
        println!("  {d}");
    }
    // The aggregator's API checked against the chain, as an auditor online would.
    println!();
    let online =
        tally_auditor::audit_online(url, &view, audit::cores(), &audit::Bars::default()).await?;
    audit::print_online(url, &view, &online);
    let online = online.passed();
    println!("verdict: {}", if online { "PASS" } else { "FAIL" });
    Ok(Verdict {
        conserved: ok,
        online,
        rest: differences.is_empty(),
    })
}

/// Where a chain view read through REST differs from the demo's own. Names, roles and
/// times are the demo's to give (the chain has no names, the demo no clock for deposits
/// and claims); zero payouts and empty escrows are left out of both, as is the order of
/// registries, deposits and transfers.
pub(super) fn differences(demo: &ChainView, rest: &ChainView) -> Vec<String> {
    let mut out = Vec::new();
    let mut same = |what: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{what}: demo {a}, REST {b}"));
        }
    };
    same("chain id", demo.chain_id.clone(), rest.chain_id.clone());
    same("contract", demo.contract.clone(), rest.contract.clone());
    same(
        "aggregator",
        demo.aggregator_key.to_string(),
        rest.aggregator_key.to_string(),
    );
    same("guest", demo.guest.to_string(), rest.guest.to_string());
    same(
        "protocol sink",
        demo.protocol_sink.clone(),
        rest.protocol_sink.clone(),
    );
    let models = |v: &ChainView| {
        let mut m: Vec<String> = v
            .models
            .iter()
            .map(|m| format!("{} {:?} {:?}", m.id, m.contributors, m.schedule))
            .collect();
        m.sort();
        format!("{m:?}")
    };
    same("models", models(demo), models(rest));
    let hosts = |v: &ChainView| {
        let mut h: Vec<String> = v
            .hosts
            .iter()
            .map(|h| format!("{} {} {} {}", h.key, h.operator, h.bond, h.slashed))
            .collect();
        h.sort();
        format!("{h:?}")
    };
    same("hosts", hosts(demo), hosts(rest));
    let batches = |v: &ChainView| {
        format!(
            "{:?}",
            v.batches
                .iter()
                .map(|b| (
                    b.number,
                    b.status,
                    b.header_hash,
                    b.root,
                    b.tree_size,
                    b.prev_tree_size,
                    b.total
                ))
                .collect::<Vec<_>>()
        )
    };
    same("batches", batches(demo), batches(rest));
    let deposits = |v: &ChainView| {
        let mut d: Vec<String> = v
            .deposits
            .iter()
            .map(|d| format!("{} {} {} {}", d.payer, d.funder, d.amount, d.height))
            .collect();
        d.sort();
        format!("{d:?}")
    };
    same("deposits", deposits(demo), deposits(rest));
    let escrows = |v: &ChainView| {
        let mut e: Vec<String> = v
            .escrows
            .iter()
            .filter(|e| e.balance > 0)
            .map(|e| format!("{} {}", e.payer, e.balance))
            .collect();
        e.sort();
        format!("{e:?}")
    };
    same("escrows", escrows(demo), escrows(rest));
    let payouts = |v: &ChainView| {
        let mut by: std::collections::BTreeMap<&str, u128> = Default::default();
        for p in v.payouts.iter().filter(|p| p.amount > 0) {
            *by.entry(p.address.as_str()).or_default() += p.amount;
        }
        format!("{by:?}")
    };
    same("payouts", payouts(demo), payouts(rest));
    let transfers = |v: &ChainView| {
        let mut t: Vec<String> = v
            .transfers
            .iter()
            .map(|t| format!("{} {} {} {}", t.from, t.to, t.amount, t.time_ms))
            .collect();
        t.sort();
        format!("{t:?}")
    };
    same("transfers", transfers(demo), transfers(rest));
    same(
        "incomplete",
        format!("{:?}", demo.incomplete),
        format!("{:?}", rest.incomplete),
    );
    out
}

/// Reads what the auditor needs from the chain: every batch, the registries, the deposit
/// history with funders, the escrows and the payouts.
#[allow(
    clippy::too_many_arguments,
    reason = "the demo's parts, passed in plainly"
)]
pub(super) async fn chain_view(
    devnet: &Devnet,
    chain: &DevnetAccount,
    models: &[Model],
    hosts: &[Arc<Host>],
    aggregator: &PublicKey,
    sink: &str,
    guest: Digest,
    payers: &[SigningKey],
    moves: &[tally_aggregator::chain::EscrowMove],
    payouts: Vec<PayoutView>,
) -> anyhow::Result<ChainView> {
    let head = chain.head().await?;
    let last = head.pending_batch.unwrap_or(head.finalized_batch) + 1;
    let mut batches = Vec::new();
    for n in 1..=last {
        let Some(r) = chain.batch(n).await? else {
            continue;
        };
        batches.push(BatchView {
            number: n,
            status: r.status,
            header_hash: digest(&r.header_hash)?,
            root: digest(&r.root)?,
            tree_size: r.tree_size,
            prev_tree_size: r.prev_tree_size,
            total: r.total.u128(),
        });
    }
    let mut host_views = Vec::new();
    for h in hosts {
        let r: HostResponse = chain
            .query(&QueryMsg::Host {
                key: b(&h.key.public_key().0),
            })
            .await?;
        host_views.push(HostView {
            key: h.key.public_key(),
            operator: r.operator.to_string(),
            bond: r.bond.u128(),
            slashed: r.slashed.u128(),
        });
    }
    let mut escrows = Vec::new();
    for p in payers {
        let e = chain.escrow(&p.public_key()).await?;
        escrows.push(EscrowView {
            payer: p.public_key(),
            balance: e.balance.u128() + e.reserved.u128(),
        });
    }
    Ok(ChainView {
        chain_id: devnet.chain_id(),
        contract: devnet.contract(),
        aggregator_key: *aggregator,
        guest,
        protocol_sink: sink.into(),
        models: models
            .iter()
            .map(|m| ModelView {
                id: m.id(),
                name: m.name.into(),
                contributors: contributors(m)
                    .iter()
                    .map(|(n, w)| (devnet.addr(n), *w))
                    .collect(),
                schedule: m.schedule.clone(),
            })
            .collect(),
        hosts: host_views,
        batches,
        deposits: moves
            .iter()
            .filter(|m| m.kind == tally_aggregator::chain::MoveKind::Deposit)
            .map(|m| DepositView {
                payer: m.payer,
                funder: m.party.clone(),
                amount: m.amount,
                height: m.height,
                time_ms: 0,
            })
            .collect(),
        withdrawals: moves
            .iter()
            .filter(|m| m.kind == tally_aggregator::chain::MoveKind::Withdraw)
            .map(|m| WithdrawalView {
                payer: m.payer,
                recipient: m.party.clone(),
                amount: m.amount,
                height: m.height,
                time_ms: 0,
            })
            .collect(),
        escrows,
        payouts,
        transfers: devnet
            .sends()
            .into_iter()
            .map(|t| TransferView {
                from: t.from,
                to: t.to,
                amount: t.amount,
                time_ms: t.time.saturating_mul(1000),
            })
            .collect(),
        incomplete: Vec::new(),
    })
}

pub(super) fn digest(bytes: &[u8]) -> anyhow::Result<Digest> {
    Ok(Digest(
        bytes.try_into().context("a chain hash is not 32 bytes")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_auditor::BatchStatus;

    fn view() -> ChainView {
        ChainView {
            chain_id: "c".into(),
            contract: "k".into(),
            aggregator_key: PublicKey([1; 32]),
            guest: Digest([2; 32]),
            protocol_sink: "sink".into(),
            models: Vec::new(),
            hosts: Vec::new(),
            batches: vec![BatchView {
                number: 1,
                status: BatchStatus::Finalized,
                header_hash: Digest([3; 32]),
                root: Digest([4; 32]),
                tree_size: 5,
                prev_tree_size: 0,
                total: 6,
            }],
            deposits: Vec::new(),
            withdrawals: Vec::new(),
            escrows: Vec::new(),
            payouts: vec![
                PayoutView {
                    name: "lab".into(),
                    address: "a".into(),
                    role: "contributor".into(),
                    amount: 6,
                    model: None,
                    time_ms: 0,
                },
                PayoutView {
                    name: "watcher".into(),
                    address: "w".into(),
                    role: "challenger".into(),
                    amount: 0,
                    model: None,
                    time_ms: 0,
                },
            ],
            transfers: Vec::new(),
            incomplete: Vec::new(),
        }
    }

    #[test]
    fn views_differ_in_what_the_chain_says_not_in_the_demos_names() {
        let demo = view();
        let mut rest = view();
        // Names, roles, times and zero payouts are the demo's own.
        rest.payouts.truncate(1);
        rest.payouts[0].name = "a".into();
        rest.payouts[0].role = "contributor".into();
        rest.payouts[0].time_ms = 7;
        assert!(differences(&demo, &rest).is_empty());
        // Two claims adding up to one payout are the same money.
        let mut split = rest.clone();
        split.payouts[0].amount = 2;
        split.payouts.push(PayoutView {
            amount: 4,
            ..split.payouts[0].clone()
        });
        assert!(differences(&demo, &split).is_empty());
        rest.payouts[0].amount = 7;
        rest.batches[0].root = Digest([0; 32]);
        let d = differences(&demo, &rest);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d[0].starts_with("batches") && d[1].starts_with("payouts"),
            "{d:?}"
        );
    }
}
