//! The architecture ARCHITECTURE.md draws, enforced: crates depend only on crates below them,
//! no crate's top-level modules import each other in a cycle, and the agent crate's services
//! import only their own layer or lower ones. A new crate or a new `crates/kafka` module must
//! be placed in the tables below, so the map stays true.
//!
//! Imports are read from the source text (`crate::module` paths and `use crate::{...}`
//! groups), not from the compiler: a crude reading, but one that errs towards seeing an
//! import, never towards missing one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

/// The workspace crates, lowest first: each may depend (also for tests) only on earlier ones.
const CRATE_ORDER: &[&str] = &[
    "streamhouse-segment",
    "streamhouse-protocol",
    "streamhouse-metadata",
    "streamhouse-storage",
    "streamhouse-kafka",
    "streamhouse-http",
    "streamhouse",
];

/// `crates/kafka`'s top-level modules by layer, lowest first; a module imports only modules of
/// its own layer or lower ones (and, like every crate, never in a cycle).
const KAFKA_LAYERS: &[(&str, &[&str])] = &[
    (
        "foundations: settings, domain rules, errors, the services with no dependency",
        &[
            "api_error",
            "config",
            "errors",
            "fetch_frame",
            "frame",
            "groups",
            "limits",
            "membership",
            "security",
            "supervisor",
            "topic_config",
            "topics",
        ],
    ),
    ("the write path", &["partitions"]),
    (
        "the services over the write path: controller, maintenance, transactions",
        &["cluster", "maintenance", "txn"],
    ),
    ("the composed agent", &["broker"]),
    (
        "the typed APIs over the broker",
        &["acl_api", "admin_api", "client_api", "groups_api"],
    ),
    ("the Kafka wire handlers", &["handlers"]),
    ("listeners and start-up", &["agent", "connection"]),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every crate directory under `crates/` with its package name.
fn crates() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(workspace().join("crates"))
        .expect("crates/ is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|dir| dir.join("Cargo.toml").exists())
        .map(|dir| {
            (
                manifest(&dir)["package"]["name"].as_str().unwrap().into(),
                dir,
            )
        })
        .collect();
    out.sort();
    out
}

fn manifest(dir: &Path) -> toml::Table {
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml is readable");
    text.parse().expect("Cargo.toml parses")
}

/// The workspace crates `dir`'s manifest depends on, in any section (tests included).
fn workspace_deps(dir: &Path, own_name: &str) -> BTreeSet<String> {
    let manifest = manifest(dir);
    ["dependencies", "dev-dependencies", "build-dependencies"]
        .iter()
        .filter_map(|section| manifest.get(*section).and_then(|s| s.as_table()))
        .flat_map(|deps| deps.keys().cloned())
        .filter(|name| CRATE_ORDER.contains(&name.as_str()) && name != own_name)
        .collect()
}

#[test]
fn crates_depend_only_on_lower_crates() {
    for (name, dir) in crates() {
        let rank = |n: &str| CRATE_ORDER.iter().position(|c| *c == n);
        let own = rank(&name).unwrap_or_else(|| {
            panic!("crate {name} is not placed in CRATE_ORDER (tests/it/architecture.rs)")
        });
        for dep in workspace_deps(&dir, &name) {
            assert!(
                rank(&dep).unwrap() < own,
                "{name} depends on {dep}, which is not below it: an upward dependency"
            );
        }
    }
}

/// Top-level module of each source file (`src/a.rs` and `src/a/**` are `a`; the crate roots
/// are left out) mapped to the top-level modules it names through `crate::`.
fn module_imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let imports = graph.entry(module.clone()).or_default();
        imports.extend(crate_paths(&text).into_iter().filter(|m| *m != module));
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The first segment of every `crate::` path in `text`, comments left out.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let comment = Regex::new(r"(?m)(^|\s)//.*$").unwrap();
    let text = comment.replace_all(text, "");
    let path = Regex::new(r"\bcrate::([a-z_][a-z0-9_]*)").unwrap();
    let mut found: BTreeSet<String> = path
        .captures_iter(&text)
        .map(|c| c[1].to_string())
        .collect();
    for (start, _) in text.match_indices("crate::{") {
        found.extend(group_heads(&text[start + "crate::{".len()..]));
    }
    found
}

/// The first segment of each path directly inside a `use` group, `{` already consumed.
fn group_heads(group: &str) -> Vec<String> {
    let (mut heads, mut depth, mut at_start) = (Vec::new(), 1, true);
    let mut chars = group.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' => depth += 1,
            '}' if depth == 1 => break,
            '}' => depth -= 1,
            ',' if depth == 1 => at_start = true,
            c if at_start && depth == 1 && (c.is_ascii_alphabetic() || c == '_') => {
                let len = group[i..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(group.len() - i);
                heads.push(group[i..i + len].to_string());
                at_start = false;
                for _ in 1..len {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    heads
}

/// A cycle in `graph`, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    for (name, dir) in crates() {
        let graph = module_imports(&dir.join("src"));
        if let Some(cycle) = find_cycle(&graph) {
            panic!(
                "{name}: modules import each other in a cycle: {}",
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_agent_services_import_only_downwards() {
    let graph = module_imports(&workspace().join("crates/kafka/src"));
    let layer_of = |module: &str| {
        KAFKA_LAYERS
            .iter()
            .position(|(_, modules)| modules.contains(&module))
            .unwrap_or_else(|| {
                panic!("crates/kafka module `{module}` is in no layer of KAFKA_LAYERS")
            })
    };
    for (module, imports) in &graph {
        let own = layer_of(module);
        for import in imports {
            let theirs = layer_of(import);
            assert!(
                theirs <= own,
                "crates/kafka: `{module}` ({}) imports `{import}` ({}), a layer above it; \
                 move what it needs down or hand it in",
                KAFKA_LAYERS[own].0,
                KAFKA_LAYERS[theirs].0
            );
        }
    }
}

#[test]
fn the_kafka_handlers_see_only_narrow_views_of_the_metadata_store() {
    let comment = Regex::new(r"(?m)(^|\s)//.*$").unwrap();
    let whole_store = Regex::new(r"\.metadata\(\)|\b(b|broker)\.metadata\b|MetadataStore").unwrap();
    for file in rust_files(&workspace().join("crates/kafka/src/handlers")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let text = comment.replace_all(&text, "");
        if let Some(found) = whole_store.find(&text) {
            panic!(
                "{}: a handler names the whole metadata store (`{}`); use the broker's narrow \
                 views (`catalog()`, `segment_log()`, `txn_store()`) or a service",
                file.display(),
                found.as_str()
            );
        }
    }
}

#[test]
fn the_import_reader_sees_paths_and_groups() {
    let text = "use crate::a::X;\nuse crate::{b, c::{D, E}, d::F};\n// crate::commented\n\
                let x = crate::e::f();";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "d", "e"]);
    let graph = BTreeMap::from([
        ("x".to_string(), BTreeSet::from(["y".to_string()])),
        ("y".to_string(), BTreeSet::from(["x".to_string()])),
    ]);
    assert_eq!(find_cycle(&graph).unwrap(), ["x", "y", "x"]);
}
