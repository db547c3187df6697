//! The crate graph is part of the design. ARCHITECTURE.md lists which wharf
//! crates each crate may use, and these tests hold every Cargo.toml to it, so
//! an arrow is added on purpose (table and manifest in one commit), never by
//! accident. Some arrows are refused whatever the table says: the data plane
//! and the leaf crates never reach into the control plane, and the CLI talks
//! to a server only through the typed client.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Crates that may use no wharf crate but the ones named: what they do must
/// stay testable and reusable without a store, a controller or a server.
const LEAVES: &[(&str, &[&str])] = &[
    ("wharf-vars", &[]),
    ("wharf-spec", &["wharf-vars"]),
    ("wharf-proxy", &[]),
    ("wharf-dns", &[]),
    ("wharf-logs", &[]),
    ("wharf-runtime", &["wharf-vars"]),
    ("wharf-demo", &[]),
    ("wharf-secrets", &[]),
];

/// (crate, crates it must never use directly).
const NEVER: &[(&str, &[&str])] = &[
    // The CLI reaches a server through the typed client; only `wharf server`
    // and `wharf up` start one, through the server crate.
    ("wharf", &["wharf-control", "wharf-runtime", "wharf-store", "wharf-proxy", "wharf-dns", "wharf-api"]),
    // The client and the API's types are what other programs link: no server inside.
    ("wharf-client", &["wharf-control", "wharf-runtime", "wharf-store", "wharf-proxy", "wharf-api", "wharf-server"]),
    ("wharf-api-types", &["wharf-control", "wharf-runtime", "wharf-store", "wharf-proxy", "wharf-api", "wharf-server"]),
    // The controllers do not know how they are served or assembled.
    ("wharf-control", &["wharf-api", "wharf-server", "wharf-client"]),
    ("wharf-api", &["wharf-server"]),
];

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Each workspace crate → the wharf crates it uses (normal and build
/// dependencies; dev-dependencies are the tests' own business).
fn manifests() -> Graph {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace())
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let mut graph = Graph::new();
    for package in meta["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("package name").to_string();
        let deps = package["dependencies"].as_array().expect("dependencies");
        let uses = deps
            .iter()
            .filter(|d| d["kind"].as_str() != Some("dev"))
            .filter_map(|d| d["name"].as_str())
            .filter(|d| is_wharf(d))
            .map(str::to_string)
            .collect();
        graph.insert(name, uses);
    }
    graph
}

fn is_wharf(name: &str) -> bool {
    name == "wharf" || name.starts_with("wharf-")
}

/// The table in ARCHITECTURE.md: rows "| `crate` (dir) | job | `dep`, `dep` |".
fn documented() -> Graph {
    let path = workspace().join("ARCHITECTURE.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut graph = Graph::new();
    for line in text.lines().filter(|l| l.starts_with("| `wharf")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let name = ticked(cells[0]).next().unwrap_or_default().to_string();
        let uses = ticked(cells.last().unwrap()).filter(|d| is_wharf(d)).map(str::to_string).collect();
        let previous = graph.insert(name.clone(), uses);
        assert!(previous.is_none(), "ARCHITECTURE.md lists {name} twice");
    }
    assert!(!graph.is_empty(), "ARCHITECTURE.md has no crate table (rows starting with \"| `wharf\")");
    graph
}

/// The `quoted` words of a table cell.
fn ticked(cell: &str) -> impl Iterator<Item = &str> {
    cell.split('`').skip(1).step_by(2)
}

fn row(uses: &BTreeSet<String>) -> String {
    if uses.is_empty() {
        return "—".into();
    }
    uses.iter().map(|d| format!("`{d}`")).collect::<Vec<_>>().join(", ")
}

#[test]
fn every_dependency_between_wharf_crates_is_the_one_architecture_md_draws() {
    let (actual, documented) = (manifests(), documented());
    let mut wrong = Vec::new();
    for (name, uses) in &actual {
        match documented.get(name) {
            None => wrong.push(format!("{name} is not in ARCHITECTURE.md's crate table: add a row for it")),
            Some(doc) if doc != uses => {
                for extra in uses.difference(doc) {
                    wrong.push(format!("{name} depends on {extra}, an arrow ARCHITECTURE.md does not draw"));
                }
                for gone in doc.difference(uses) {
                    wrong.push(format!("ARCHITECTURE.md draws {name} → {gone}, which Cargo.toml no longer has"));
                }
                wrong.push(format!("  (its dependencies today: {})", row(uses)));
            }
            Some(_) => {}
        }
    }
    for name in documented.keys().filter(|n| !actual.contains_key(*n)) {
        wrong.push(format!("ARCHITECTURE.md lists {name}, which is not a workspace crate"));
    }
    assert!(wrong.is_empty(), "the crate graph and ARCHITECTURE.md disagree:\n{}", wrong.join("\n"));
}

#[test]
fn no_crate_uses_what_it_must_not() {
    let actual = manifests();
    let mut wrong = Vec::new();
    for (leaf, allowed) in LEAVES {
        let uses = actual.get(*leaf).unwrap_or_else(|| panic!("{leaf} is not a workspace crate"));
        for dep in uses.iter().filter(|d| !allowed.contains(&d.as_str())) {
            wrong.push(format!("{leaf} depends on {dep}: it may use only {allowed:?}"));
        }
    }
    for (name, never) in NEVER {
        let Some(uses) = actual.get(*name) else { continue };
        for dep in uses.iter().filter(|d| never.contains(&d.as_str())) {
            wrong.push(format!("{name} depends on {dep}, which it must never use directly"));
        }
    }
    for (name, uses) in &actual {
        if uses.contains("wharf") {
            wrong.push(format!("{name} depends on the wharf binary's crate: move what it needs into a library"));
        }
        if uses.contains("wharf-server") && name != "wharf" {
            wrong.push(format!("{name} depends on wharf-server: only the binary assembles a server"));
        }
    }
    assert!(wrong.is_empty(), "forbidden dependency arrows:\n{}", wrong.join("\n"));
}
