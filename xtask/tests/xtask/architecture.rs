//! The dependency rules of ARCHITECTURE.md ("Dependency invariants"), checked against
//! `cargo metadata`, so a new `[dependencies]` line that breaks one fails the tests
//! instead of silently re-coupling the crates.
//!
//! Only normal dependencies count (what a user of the crate links); dev-dependencies
//! and build-dependencies may reach further.
#![allow(clippy::expect_used, reason = "tests fail loudly")]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// The workspace's resolved graph: package name → names of its normal dependencies.
fn normal_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().expect("id"),
                p["name"].as_str().expect("name"),
            )
        })
        .collect();
    let mut graph = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().expect("resolve.nodes") {
        let name = names[node["id"].as_str().expect("id")].to_string();
        let deps: BTreeSet<String> = node["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .expect("dep_kinds")
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| names[d["pkg"].as_str().expect("pkg")].to_string())
            .collect();
        graph.entry(name).or_insert_with(BTreeSet::new).extend(deps);
    }
    graph
}

/// Every package `krate` links, directly or not (itself excluded).
fn closure(graph: &BTreeMap<String, BTreeSet<String>>, krate: &str) -> BTreeSet<String> {
    assert!(graph.contains_key(krate), "{krate} is not in the workspace");
    let mut seen = BTreeSet::new();
    let mut todo = vec![krate.to_string()];
    while let Some(next) = todo.pop() {
        for dep in graph.get(&next).into_iter().flatten() {
            if seen.insert(dep.clone()) {
                todo.push(dep.clone());
            }
        }
    }
    seen
}

fn assert_never_links(graph: &BTreeMap<String, BTreeSet<String>>, krate: &str, banned: &[&str]) {
    let linked = closure(graph, krate);
    let found: Vec<&&str> = banned.iter().filter(|b| linked.contains(**b)).collect();
    assert!(
        found.is_empty(),
        "{krate} links {found:?}, which ARCHITECTURE.md forbids"
    );
}

#[test]
fn the_dependency_invariants_hold() {
    let graph = normal_graph();
    // The payer's SDK: no sandbox, no async runtime, no HTTP stack (it builds for wasm32
    // and the Python and TypeScript SDKs are built on it).
    assert_never_links(
        &graph,
        "tally-client",
        &[
            "wasmtime",
            "tokio",
            "axum",
            "hyper",
            "reqwest",
            "tally-sandbox",
            "tally-attestor",
            "tally-verifier",
            "tally-aggregator",
        ],
    );
    // The SDKs' bindings link what the client links and nothing of the host's side: the
    // Python module and the wasm module bind tally-client, they re-implement nothing.
    for krate in ["tally-client-py", "tally-client-js"] {
        assert!(
            graph[krate].contains("tally-client"),
            "{krate} must bind tally-client"
        );
        assert_never_links(
            &graph,
            krate,
            &[
                "wasmtime",
                "tokio",
                "axum",
                "hyper",
                "reqwest",
                "tally-sandbox",
                "tally-attestor",
                "tally-verifier",
                "tally-aggregator",
                "tally-contracts",
                "cosmwasm-vm",
                "wasmer",
            ],
        );
        let own: Vec<&String> = graph[krate]
            .iter()
            .filter(|d| d.starts_with("tally-"))
            .collect();
        assert_eq!(
            own,
            ["tally-client", "tally-protocol"],
            "{krate}'s workspace crates"
        );
    }
    // The client re-meters fees with the guest's own source, natively: never the sandbox.
    assert!(graph["tally-client"].contains("tally-guest"));

    // The protocol crate stands alone: every other crate builds on it, never the reverse.
    assert_never_links(
        &graph,
        "tally-protocol",
        &[
            "tally-guest",
            "tally-sandbox",
            "tally-client",
            "tally-attestor",
            "tally-verifier",
            "tally-aggregator",
            "tally-contracts",
            "wasmtime",
            "tokio",
        ],
    );
    // The guest is deterministic integer code over the protocol crate only.
    assert_eq!(
        graph["tally-guest"]
            .iter()
            .filter(|d| d.starts_with("tally-"))
            .collect::<Vec<_>>(),
        ["tally-protocol"]
    );
    // The sandbox runs the guest; it knows nothing of hosts, logs or chains.
    assert_never_links(
        &graph,
        "tally-sandbox",
        &[
            "tokio",
            "tally-attestor",
            "tally-verifier",
            "tally-aggregator",
            "tally-client",
        ],
    );
    // Auditors and clients never link the host's code; the offline verifier links no
    // database, no async runtime and no HTTP stack either (the auditor, which reads a
    // deployment's store and API, is a crate of its own).
    assert_never_links(
        &graph,
        "tally-verifier",
        &[
            "tally-attestor",
            "tally-aggregator",
            "sqlx",
            "tokio",
            "reqwest",
        ],
    );
    assert_never_links(
        &graph,
        "tally-auditor",
        &["tally-attestor", "cosmwasm-vm", "wasmer"],
    );
    // The aggregator checks receipts itself; it does not link the host's attestor or
    // the offline verifier.
    assert_never_links(
        &graph,
        "tally-aggregator",
        &["tally-attestor", "tally-verifier"],
    );
    // The aggregator talks to chains as a client; the in-process chain (a VM running the
    // contract) is the devnet crate's, which only tests, demos and the binary link.
    assert_never_links(
        &graph,
        "tally-aggregator",
        &["cosmwasm-vm", "wasmer", "tally-devnet"],
    );
    // The host's side never links a chain VM or the aggregator.
    for krate in [
        "tally-attestor",
        "tally-verifier",
        "tally-sandbox",
        "tally-client",
    ] {
        assert_never_links(
            &graph,
            krate,
            &[
                "cosmwasm-vm",
                "wasmer",
                "tally-contracts",
                "tally-aggregator",
            ],
        );
    }
    // Only the devnet, the contract's own tests and the binary link the chain VM.
    for (krate, deps) in &graph {
        if krate.starts_with("tally-") && deps.contains("cosmwasm-vm") {
            assert_eq!(krate, "tally-devnet", "{krate} links cosmwasm-vm");
        }
    }
    // Test fixtures (the throwaway PostgreSQL server, the test schedules) live in the
    // testkit; no library a deployment runs links it (only the binary, for `tally bench
    // ingest`'s throwaway server, and tests and benches as a dev-dependency).
    for (krate, deps) in &graph {
        if krate.starts_with("tally-") && krate != "tally-testkit" {
            assert!(
                !deps.contains("tally-testkit"),
                "{krate} links the testkit as a normal dependency"
            );
        }
    }
    assert_never_links(
        &graph,
        "tally-testkit",
        &[
            "tally-attestor",
            "tally-aggregator",
            "tally-verifier",
            "wasmtime",
            "cosmwasm-vm",
        ],
    );
    // No library links the binary or the build tooling, nor the SDK bindings.
    for (krate, deps) in &graph {
        assert!(
            !deps.contains("tally-client-py") && !deps.contains("tally-client-js"),
            "{krate} depends on an SDK binding"
        );
    }
    for (krate, deps) in &graph {
        assert!(
            !deps.contains("tally") && !deps.contains("xtask"),
            "{krate} depends on the binary or xtask"
        );
    }
}

#[test]
fn a_broken_rule_is_caught() {
    // The checker itself can fail: a graph where the client links wasmtime is refused.
    let mut graph = BTreeMap::new();
    graph.insert(
        "tally-client".to_string(),
        BTreeSet::from(["tally-protocol".to_string()]),
    );
    graph.insert(
        "tally-protocol".to_string(),
        BTreeSet::from(["wasmtime".to_string()]),
    );
    let result =
        std::panic::catch_unwind(|| assert_never_links(&graph, "tally-client", &["wasmtime"]));
    assert!(result.is_err());
    assert_eq!(
        closure(&graph, "tally-client"),
        BTreeSet::from(["tally-protocol".to_string(), "wasmtime".to_string()])
    );
}
