//! The host's layers: each module imports only modules of its own layer or below, with no
//! cycle (docs/architecture.md). The check reads `crate::` paths in the non-test code of
//! `host/src` and fails on any import that goes up a layer or closes a cycle, naming it. A
//! layer is a folder (`model/`, `store/`, `records/`, `plugins/`, `service/`, `http/`) or, for
//! the binary's side, the files and folders at the root; a module is the longest path below
//! listed here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, lowest first, and the modules in each, by path below `crate::`.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "model (pure: no I/O)",
        &[
            "model",
            "model::error",
            "model::identity",
            "model::limits",
            "model::phone",
            "model::clock",
            "model::caches",
            "model::activation",
            "model::refusal",
            "model::role",
            "model::metrics",
        ],
    ),
    (
        "storage",
        &["store", "store::secrets", "store::private_files"],
    ),
    (
        "records",
        &[
            "records",
            "records::events",
            "records::anchor",
            "records::users",
            "records::roles",
            "records::tokens",
            "records::import",
            "records::directory",
        ],
    ),
    ("plugins", &["plugins", "plugins::check"]),
    ("the activation service", &["service"]),
    (
        "surfaces",
        &[
            "http",
            "http::api",
            "http::web",
            "http::server",
            "http::tls",
            "http::access",
        ],
    ),
    // `cli` and `daemon` belong to the binary (`main.rs` declares them), on top of everything.
    // `smartcard` is the CLI's card responder (PC/SC), beside the client that uses it.
    (
        "the binary's side",
        &["config", "client", "smartcard", "cli", "daemon"],
    ),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// The listed module a path below `crate::` falls in: its longest listed prefix.
fn module_for(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|p| layer_of(p).is_some())
}

/// The module a source file belongs to, or its own path when no module is listed for it.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    let path = parts.join("::");
    module_for(&path).unwrap_or(path)
}

/// The paths below `crate::` a file's non-test code names (`crate::model::error::Error`
/// names `model::error`; an item's own name is kept only when lowercase, and `module_for`
/// drops it).
fn imports(text: &str) -> BTreeSet<String> {
    let code = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let mut segments = Vec::new();
            let mut tail = rest;
            loop {
                let name: String = tail
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if name.is_empty() {
                    break;
                }
                tail = &tail[name.len()..];
                segments.push(name);
                match tail.strip_prefix("::") {
                    Some(t) => tail = t,
                    None => break,
                }
            }
            if !segments.is_empty() {
                out.insert(segments.join("::"));
            }
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every import between two modules of the host's library: from -> {to}.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let module = module_of(&src, &file);
        // The binary's entry point is the top by definition (it imports `rolegate::`).
        if module == "main" || module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for path in imports(&text) {
            let to = module_for(&path).unwrap_or(path);
            if to != module {
                graph.entry(module.clone()).or_default().insert(to);
            }
        }
        graph.entry(module).or_default();
    }
    graph
}

#[test]
fn every_module_has_a_layer() {
    let unplaced: Vec<String> = graph()
        .keys()
        .filter(|m| layer_of(m).is_none())
        .cloned()
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules with no layer in tests/layers.rs: {unplaced:?}"
    );
}

#[test]
fn no_module_imports_a_layer_above_it_or_closes_a_cycle() {
    let graph = graph();
    let mut upward = BTreeSet::new();
    for (from, tos) in &graph {
        for to in tos {
            let (Some(a), Some(b)) = (layer_of(from), layer_of(to)) else {
                continue;
            };
            if b > a {
                upward.insert((from.clone(), to.clone()));
            }
        }
    }
    // Within a layer, imports must not go round: an edge on a cycle is reported.
    for (from, tos) in &graph {
        for to in tos {
            if layer_of(from) == layer_of(to) && reaches(&graph, to, from) {
                upward.insert((from.clone(), to.clone()));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that go up a layer or close a cycle (from, to): {upward:?} — move the code to \
         the layer it belongs to, or pass what is needed down (see docs/architecture.md)"
    );
}

/// Whether `to` is reached from `from` through the graph.
fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(m) = stack.pop() {
        if m == to {
            return true;
        }
        if seen.insert(m.clone())
            && let Some(next) = graph.get(&m)
        {
            stack.extend(next.iter().cloned());
        }
    }
    false
}

#[test]
fn the_check_reads_imports_as_written() {
    let text = "use crate::model::error::{Error, Result};\nfn f() { crate::model::metrics::appended(1, None); }\n// crate::comment\n#[cfg(test)]\nmod tests { use crate::http::api; }";
    let got: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(got, ["model::error", "model::metrics::appended"]);
    let modules: Vec<Option<String>> = got.iter().map(|p| module_for(p)).collect();
    assert_eq!(
        modules,
        [Some("model::error".into()), Some("model::metrics".into())]
    );
    assert_eq!(
        module_for("store::store_event_head").as_deref(),
        Some("store")
    );
    assert_eq!(
        module_for("store::secrets").as_deref(),
        Some("store::secrets")
    );
}
