//! The crate's layers, checked: a top-level module imports (`crate::<module>`) modules of its
//! own layer or lower ones, never a higher one, and no top-level modules import each other in
//! a cycle. `cargo test` fails on a change that breaks either, naming each `file:line`.

/// Every top-level module by layer, lowest first.
const LAYERS: &[(u8, &[&str])] = &[
    // Foundations that know nothing of the service's data: settings, cryptography (tokens,
    // digests, MACs), logging and correlation ids, identifiers.
    (0, &["config", "crypto", "telemetry", "ids", "fence"]),
    // Storage: the databases and the object store.
    (1, &["store", "objects"]),
    // Runtimes and clients over storage that know no domain: the queue (told what to run by
    // the composition), signed OAuth state, the platforms' HTTP APIs and signatures, retries.
    (2, &["jobs", "oauth_state", "platforms", "retry"]),
    // The application state: configuration, stores, object store, platform clients.
    (3, &["state"]),
    // The domain, returning typed results and its own errors: what the connect flows share,
    // Shopify, Facebook, backups, the test job kind; polls, which use both platforms.
    (
        4,
        &[
            "connect", "shopify", "facebook", "backup", "testkit", "poll",
        ],
    ),
    // The HTTP edge: errors as answers, the merchant's cookies, routes and pages.
    (5, &["error", "session", "routes", "web"]),
    // Composition: start-up, the command line, the demo (on the simulators' crate).
    (6, &["startup", "cli", "demo"]),
];

/// Files of `src` that are not a top-level module's: the crate roots and this check (whose
/// tests hold deliberately bad samples).
const NOT_MODULES: &[&str] = &["lib.rs", "main.rs", "layers.rs"];

fn layer(module: &str) -> Option<u8> {
    LAYERS
        .iter()
        .find(|(_, modules)| modules.contains(&module))
        .map(|(layer, _)| *layer)
}

/// The top-level module a file (its path under `src`) belongs to.
fn module_of(path: &str) -> &str {
    let first = path.split(['/', '\\']).next().unwrap_or(path);
    first.strip_suffix(".rs").unwrap_or(first)
}

/// A line without its `//` comment (a `//` inside a string literal is kept).
fn code_of(line: &str) -> &str {
    let mut in_string = false;
    let mut escaped = false;
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The top-level modules a line of code names as `crate::<module>`.
fn imports(code: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = code;
    let mut offset = 0;
    while let Some(i) = rest.find("crate::") {
        let start = offset + i;
        let before = code[..start].chars().next_back();
        let name_start = start + "crate::".len();
        let name: &str = code[name_start..]
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        // `salesbot_crate::x` is not ours; `$crate::x` (in a macro) is.
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && !name.is_empty() {
            found.push(name);
        }
        offset = name_start;
        rest = &code[offset..];
    }
    found
}

/// An import of one top-level module by another, where it is.
struct Edge {
    from: String,
    to: String,
    at: String,
}

/// Every problem with `files` (path under `src`, contents): imports of a higher layer, modules
/// missing from `LAYERS`, and cycles between top-level modules.
fn check(files: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut edges: Vec<Edge> = Vec::new();
    for (path, text) in files {
        let from = module_of(path);
        for (n, line) in text.lines().enumerate() {
            for to in imports(code_of(line)) {
                if to != from && !edges.iter().any(|e| e.from == from && e.to == to) {
                    edges.push(Edge {
                        from: from.to_string(),
                        to: to.to_string(),
                        at: format!("{path}:{}", n + 1),
                    });
                }
                match (layer(from), layer(to)) {
                    (Some(a), Some(b)) if b > a => problems.push(format!(
                        "{path}:{}: {from} (layer {a}) imports {to} (layer {b})",
                        n + 1
                    )),
                    (None, _) | (_, None) if to != from => {
                        let missing = if layer(from).is_none() { from } else { to };
                        problems.push(format!(
                            "{path}:{}: module {missing} has no layer: add it to LAYERS",
                            n + 1
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    problems.extend(cycles(&edges));
    problems
}

/// Cycles listed at most: a tangle has many, and the first few show where to cut.
const MAX_CYCLES: usize = 20;

/// One line per cycle found, e.g. `cycle: a -> b -> a (a/x.rs:3, b/y.rs:9)`.
fn cycles(edges: &[Edge]) -> Vec<String> {
    let mut modules: Vec<&str> = edges.iter().map(|e| e.from.as_str()).collect();
    modules.sort_unstable();
    modules.dedup();
    let mut found = Vec::new();
    for start in &modules {
        let mut path = vec![*start];
        walk(edges, start, &mut path, &mut found);
    }
    if found.len() > MAX_CYCLES {
        found.truncate(MAX_CYCLES);
        found.push(format!("(more cycles; the first {MAX_CYCLES} are listed)"));
    }
    found
}

/// Depth-first from the last module of `path`; reports each cycle once, from its smallest
/// module.
fn walk<'a>(edges: &'a [Edge], start: &str, path: &mut Vec<&'a str>, found: &mut Vec<String>) {
    let last = *path.last().expect("the path starts with its module");
    for e in edges.iter().filter(|e| e.from == last) {
        if found.len() > MAX_CYCLES {
            return;
        }
        if e.to == start {
            let mut names: Vec<&str> = path.clone();
            names.push(start);
            let at: Vec<&str> = path
                .iter()
                .zip(names.iter().skip(1))
                .filter_map(|(a, b)| edges.iter().find(|e| e.from == *a && e.to == *b))
                .map(|e| e.at.as_str())
                .collect();
            found.push(format!("cycle: {} ({})", names.join(" -> "), at.join(", ")));
        } else if e.to.as_str() > start && !path.contains(&e.to.as_str()) {
            path.push(&e.to);
            walk(edges, start, path, found);
            path.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `.rs` file under `dir`, as (path under `root`, contents).
    fn read_tree(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                read_tree(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                if !NOT_MODULES.contains(&rel.as_str()) {
                    out.push((rel, std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
    }

    fn files(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn lower_layers_never_import_higher_ones_and_nothing_is_in_a_cycle() {
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
        let mut tree = Vec::new();
        read_tree(root, root, &mut tree);
        assert!(
            tree.len() > 50,
            "the sources were read ({} files)",
            tree.len()
        );
        let problems = check(&tree);
        assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    }

    #[test]
    fn an_upward_import_is_named_by_file_and_line() {
        let bad = files(&[
            (
                "store/mod.rs",
                "//! Mentions crate::web in a comment: fine.\n\
                 use crate::objects::ObjectKey;\n\
                 fn f() { crate::web::page(); } // crate::routes in a comment: fine\n\
                 fn g() { let _ = (\"https://x\", crate::state::X); }\n",
            ),
            ("objects/keys.rs", "use crate::config::Settings;\n"),
        ]);
        assert_eq!(
            check(&bad),
            vec![
                "store/mod.rs:3: store (layer 1) imports web (layer 5)",
                "store/mod.rs:4: store (layer 1) imports state (layer 3)",
            ]
        );
    }

    #[test]
    fn a_cycle_is_named_with_where_each_import_is() {
        let bad = files(&[
            ("shopify/oauth.rs", "use crate::facebook::pages;\n"),
            ("facebook/mod.rs", "\nuse crate::poll::Target;\n"),
            ("poll.rs", "use crate::shopify::jobs;\n"),
        ]);
        assert_eq!(
            check(&bad),
            vec![
                "cycle: facebook -> poll -> shopify -> facebook \
                 (facebook/mod.rs:2, poll.rs:1, shopify/oauth.rs:1)"
            ]
        );
    }

    #[test]
    fn a_module_without_a_layer_is_reported() {
        let bad = files(&[("newthing.rs", "use crate::store::Db;\n")]);
        assert_eq!(
            check(&bad),
            vec!["newthing.rs:1: module newthing has no layer: add it to LAYERS"]
        );
    }
}
