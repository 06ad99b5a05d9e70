//! The house rule, held by a test: each layer of `src/` imports only from the layers below it, the workflows never
//! import each other, and no two top-level modules reach each other in a cycle. The layer order is stated once, here;
//! `src/lib.rs` draws it. The same holds for `crates/input`, whose layers `crates/input/src/lib.rs` draws.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use crate::common::repo_root;

/// From the top down. `main.rs` and `lib.rs` wire everything and stand above all of these.
const LAYERS: &[(&str, &[&str])] = &[
    ("handler", &["handler"]),
    ("app", &["app"]),
    ("workflows", &["cleanup", "restore", "index"]),
    ("config", &["config"]),
    (
        "concerns",
        &[
            "wave",
            "trust",
            "locate",
            "steps",
            "notify",
            "monitoring",
            "telemetry",
            "store",
        ],
    ),
    (
        "data",
        &[
            "summary",
            "changes",
            "registration",
            "instance",
            "table",
            "lease",
            "deadline",
        ],
    ),
    // `input` is the spot-cleanup-input crate, re-exported: the wire formats, which know no AWS client.
    ("leaves", &["aws", "input"]),
];

/// Layers whose modules must not import one another.
const APART: &[&str] = &["workflows"];

/// All the handler may import: `App` (its one door to the workflows and concerns, and the answer types they return),
/// the wire formats it parses, the entry point it is (config), the invocation's deadline and the summaries it shapes
/// into an answer. No workflow (cleanup, restore, index) and no concern (trust, steps, ...): those are `App`'s.
const HANDLER_SEES: &[&str] = &["app", "input", "config", "deadline", "summary"];

/// `crates/input/src`, from the top down; a module imports only from its own layer or the ones below it. Its
/// `lib.rs` only declares and re-exports, and stands above all of these.
const INPUT_LAYERS: &[(&str, &[&str])] = &[
    // The one place a payload is told apart and every carried message parsed.
    ("dispatch", &["dispatch"]),
    // EventBridge's router: source and detail-type pick the parser.
    ("router", &["eventbridge"]),
    // One wire format each: the parsers, and the transports that only return the messages they carry.
    (
        "formats",
        &[
            "agent",
            "spot",
            "rebalance",
            "state_change",
            "lifecycle",
            "health",
            "scheduled",
            "cloudtrail",
            "restore",
            "sqs",
            "sns",
        ],
    ),
    // What everything above shares: the EventBridge envelope, carriers, what parsing returns, values, errors, names.
    (
        "leaves",
        &[
            "envelope",
            "carrier",
            "invocation",
            "message",
            "request",
            "index_update",
            "trigger",
            "values",
            "error",
            "kinds",
            "quoted",
        ],
    ),
];

/// Layers of `crates/input` whose modules must not import one another.
const INPUT_APART: &[&str] = &["formats"];

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, modules))| modules.contains(&module))
        .map(|(depth, (name, _))| (depth, *name))
}

/// The top-level module a file belongs to: `src/steps/claim.rs` is `steps`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("under src");
    let first = relative.components().next().unwrap().as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The file's code without its `#[cfg(test)]` items, which may reach anywhere.
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            let mut depth = 0i32;
            let mut opened = false;
            for inner in lines.by_ref() {
                depth += inner.matches('{').count() as i32 - inner.matches('}').count() as i32;
                opened |= inner.contains('{');
                // `#[cfg(test)] mod testing;` has no body.
                if (opened && depth <= 0) || (!opened && inner.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        let code = line.split("//").next().unwrap_or("");
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Every top-level module a file's code names through `crate::`, in `crate::x` and `crate::{x, y::z}` forms.
fn imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Which top-level module of `src/` imports which, from the code outside tests.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    graph_of(&repo_root().join("src"))
}

/// Which top-level module of the crate whose sources are in `src` imports which, from the code outside tests.
fn graph_of(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let module = module_of(src, &file);
        // `tests.rs` files are test modules (`#[cfg(test)] mod tests;`), which may reach anywhere.
        if matches!(module.as_str(), "main" | "lib" | "testing") || file.ends_with("tests.rs") {
            continue;
        }
        let code = without_tests(&std::fs::read_to_string(&file).unwrap());
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(imports(&code).into_iter().filter(|m| *m != module));
    }
    graph
}

/// Every import of the graph that breaks the house rule, in words.
fn wrong_imports(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut wrong = Vec::new();
    for target in graph.get("handler").into_iter().flatten() {
        if !HANDLER_SEES.contains(&target.as_str()) {
            wrong.push(format!(
                "handler imports {target}: the handler reaches workflows and concerns through App only (it may \
                 import {})",
                HANDLER_SEES.join(", ")
            ));
        }
    }
    for (module, edges) in graph {
        let Some((depth, layer)) = layer_of(module) else {
            wrong.push(format!("src/{module} is in no layer: add it to LAYERS"));
            continue;
        };
        for target in edges {
            let Some((target_depth, _)) = layer_of(target) else {
                wrong.push(format!("{module} imports crate::{target}, which is in no layer"));
                continue;
            };
            if target_depth < depth {
                wrong.push(format!("{module} ({layer}) imports {target}, a layer above it"));
            } else if target_depth == depth && APART.contains(&layer) {
                wrong.push(format!(
                    "{module} imports {target}: two {layer} must not import each other"
                ));
            }
        }
    }
    wrong
}

#[test]
fn every_import_goes_down_and_the_workflows_stand_apart() {
    let graph = graph();
    let wrong = wrong_imports(&graph);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        graph.contains_key("cleanup") && graph["cleanup"].contains("steps"),
        "{graph:?}"
    );
    assert!(graph["handler"].contains("app"), "{graph:?}");
}

/// The rule fails when it should: a handler that calls a workflow or a concern directly, as it once called
/// `restore::run` and named `trust::Refusal`, is reported, and only those imports are.
#[test]
fn a_handler_that_skips_app_is_reported() {
    let mut graph = graph();
    let handler = graph.get_mut("handler").expect("src/handler");
    handler.extend(["restore", "trust"].map(String::from));
    let wrong = wrong_imports(&graph);
    assert_eq!(wrong.len(), 2, "{wrong:#?}");
    assert!(wrong[0].starts_with("handler imports restore: "), "{wrong:#?}");
    assert!(wrong[1].starts_with("handler imports trust: "), "{wrong:#?}");
}

#[test]
fn no_two_modules_reach_each_other() {
    let graph = graph();
    // A cycle exists when some module reaches itself through its imports.
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut next: Vec<&String> = graph[start].iter().collect();
        while let Some(module) = next.pop() {
            assert_ne!(module, start, "{start} reaches itself through its imports: {graph:?}");
            if seen.insert(module.clone()) {
                next.extend(graph.get(module).into_iter().flatten());
            }
        }
    }
}

#[test]
fn the_reader_sees_tests_and_nested_imports_the_way_the_compiler_does() {
    let code = "use crate::{aws::Pace, deadline::Deadline};\nuse crate::summary::Summary; // crate::app\n\
                #[cfg(test)]\nmod tests {\n    use crate::app::App;\n}\nfn f() -> crate::table::Item { todo!() }\n";
    let found = imports(&without_tests(code));
    assert_eq!(
        found,
        ["aws", "deadline", "summary", "table"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}

/// Some loop of imports, as the modules along it (`a -> b -> a`), if there is one: the shortest through the first
/// module, in name order, that is on one.
fn cycle_in(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    for start in graph.keys() {
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([start.as_str()]);
        while let Some(module) = queue.pop_front() {
            for next in graph.get(module).into_iter().flatten() {
                if next == start {
                    let mut path = vec![start.clone()];
                    let mut at = module;
                    while at != start {
                        path.push(at.to_owned());
                        at = parent[at];
                    }
                    path.push(start.clone());
                    path.reverse();
                    return Some(path);
                }
                if !parent.contains_key(next.as_str()) {
                    parent.insert(next, module);
                    queue.push_back(next);
                }
            }
        }
    }
    None
}

fn input_layer_of(module: &str) -> Option<(usize, &'static str)> {
    INPUT_LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, modules))| modules.contains(&module))
        .map(|(depth, (name, _))| (depth, *name))
}

fn input_graph() -> BTreeMap<String, BTreeSet<String>> {
    graph_of(&repo_root().join("crates/input/src"))
}

#[test]
fn crates_input_imports_go_down_and_the_formats_stand_apart() {
    let graph = input_graph();
    let mut wrong = Vec::new();
    for (_, modules) in INPUT_LAYERS {
        for module in *modules {
            if !graph.contains_key(*module) {
                wrong.push(format!(
                    "INPUT_LAYERS names {module}, which crates/input/src does not have"
                ));
            }
        }
    }
    for (module, edges) in &graph {
        let Some((depth, layer)) = input_layer_of(module) else {
            wrong.push(format!(
                "crates/input/src/{module} is in no layer: add it to INPUT_LAYERS"
            ));
            continue;
        };
        for target in edges {
            if !graph.contains_key(target) {
                // A name the crate root re-exports hides which module it comes from, and so the edge.
                wrong.push(format!(
                    "crates/input: {module} names crate::{target}, which is no module: import it from the module \
                     that defines it"
                ));
                continue;
            }
            let Some((target_depth, _)) = input_layer_of(target) else {
                continue; // reported above as in no layer
            };
            if target_depth < depth {
                wrong.push(format!(
                    "crates/input: {module} ({layer}) imports {target}, a layer above it"
                ));
            } else if target_depth == depth && INPUT_APART.contains(&layer) {
                wrong.push(format!(
                    "crates/input: {module} imports {target}: two {layer} must not import each other"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        graph["dispatch"].contains("sqs") && graph["spot"].contains("envelope"),
        "{graph:?}"
    );
}

#[test]
fn crates_input_has_no_loop_of_imports() {
    let graph = input_graph();
    if let Some(cycle) = cycle_in(&graph) {
        panic!(
            "crates/input has a loop of imports: {}\nits graph: {graph:?}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn a_loop_is_found_and_named_along_its_way() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", &["b"][..]),
        ("b", &["c"][..]),
        ("c", &["a", "d"][..]),
        ("d", &[][..]),
    ]
    .into_iter()
    .map(|(m, edges)| (m.to_owned(), edges.iter().map(|e| e.to_string()).collect()))
    .collect();
    assert_eq!(cycle_in(&graph), Some(["a", "b", "c", "a"].map(String::from).to_vec()));
    let mut acyclic = graph.clone();
    acyclic.get_mut("c").unwrap().remove("a");
    assert_eq!(cycle_in(&acyclic), None);
}

/// The workflows whose own files are held to a one-way order: `mod.rs`, the orchestrator, imports its phases and
/// helpers; a phase or helper imports only the files beside it that stand below it, never `mod.rs`, and no two of
/// them reach each other in a loop.
const WORKFLOW_DIRS: &[&str] = &["cleanup", "restore", "index"];

/// The first segment of every path a file's code names after `prefix` (`super::` or `crate::cleanup::`), in the
/// `prefix x::y` and `prefix {x, y::z}` forms.
fn named_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        rest = &rest[at + prefix.len()..];
        let names: Vec<String> = match rest.strip_prefix('{') {
            // Split at the group's own commas, not those of a nested `{...}`.
            Some(group) => {
                let (mut depth, mut part, mut parts) = (0, String::new(), Vec::new());
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => parts.push(std::mem::take(&mut part)),
                        _ => {}
                    }
                    part.push(c);
                }
                parts.push(part);
                parts.iter().map(|p| ident(p.trim_start_matches(','))).collect()
            }
            None => vec![ident(rest)],
        };
        found.extend(names.into_iter().filter(|n| !n.is_empty()));
    }
    found
}

#[test]
fn a_workflows_files_import_one_way_and_never_their_orchestrator() {
    let src = repo_root().join("src");
    let mut wrong = Vec::new();
    for workflow in WORKFLOW_DIRS {
        let dir = src.join(workflow);
        let mut files: BTreeMap<String, std::path::PathBuf> = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                files.insert(stem, path.join("mod.rs"));
            } else if path.extension().is_some_and(|e| e == "rs") && stem != "mod" {
                files.insert(stem, path);
            }
        }
        let own = format!("crate::{workflow}::");
        let mut order: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for (stem, path) in &files {
            let code = without_tests(&std::fs::read_to_string(path).unwrap());
            let named = named_after(&code, "super::")
                .into_iter()
                .chain(named_after(&code, &own));
            for name in named {
                if files.contains_key(&name) {
                    order.entry(stem).or_default().insert(name);
                } else {
                    wrong.push(format!(
                        "src/{workflow}/{stem}.rs imports {name} from src/{workflow}/mod.rs, its orchestrator: a \
                         phase imports only the files below it; move {name} into one of them"
                    ));
                }
            }
        }
        for start in order.keys() {
            let mut seen = BTreeSet::new();
            let mut next: Vec<&String> = order[start].iter().collect();
            while let Some(file) = next.pop() {
                if file == start {
                    wrong.push(format!(
                        "src/{workflow}/{start}.rs reaches itself through the files beside it: {order:?}"
                    ));
                    break;
                }
                if seen.insert(file.clone()) {
                    next.extend(order.get(file.as_str()).into_iter().flatten());
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_workflow_reader_sees_super_and_own_crate_paths() {
    let code = "use super::{context::{Clock, Work}, report::Report};\nuse super::ledger;\n\
                use crate::cleanup::assemble::x;\nuse crate::steps::y;\n";
    assert_eq!(
        named_after(code, "super::"),
        ["context", "ledger", "report"].map(String::from).into_iter().collect()
    );
    assert_eq!(
        named_after(code, "crate::cleanup::"),
        ["assemble"].map(String::from).into_iter().collect()
    );
}
