//! The crate's modules form a layered graph: no module uses, directly or
//! through others, a module that uses it back. Read from the sources, so a
//! new `use crate::...` that closes a cycle fails here, with the cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The top-level modules each top-level module refers to as `crate::name`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in sources(&src) {
        let relative = file.strip_prefix(&src).expect("under src");
        let first = relative.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        // The crate root declares every module; the unit tests use them all.
        if module == "lib" || module == "tests" {
            continue;
        }
        let text = fs::read_to_string(&file).expect("readable source");
        let uses = graph.entry(module.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name != module && name.chars().next().is_some_and(char::is_lowercase) {
                uses.insert(name);
            }
        }
    }
    graph
}

/// A cycle through `node`, if depth-first search finds one.
fn cycle_from(
    node: &str,
    graph: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(start) = path.iter().position(|n| n == node) {
        let mut cycle = path[start..].to_vec();
        cycle.push(node.to_owned());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_owned());
    for next in graph.get(node).into_iter().flatten() {
        if let Some(cycle) = cycle_from(next, graph, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(node.to_owned());
    None
}

#[test]
fn modules_form_no_cycle() {
    let graph = graph();
    assert!(graph.len() > 10, "read the modules: {graph:?}");
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        let cycle = cycle_from(module, &graph, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "module cycle: {}",
            cycle.unwrap().join(" -> ")
        );
    }
}

#[test]
fn the_leaf_modules_use_no_other_module() {
    let graph = graph();
    for leaf in ["outcome", "time", "money"] {
        assert_eq!(graph[leaf], BTreeSet::new(), "{leaf} must stay a leaf");
    }
}
