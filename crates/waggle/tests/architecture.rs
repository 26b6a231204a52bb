//! Architecture tests in the style of rust-analyzer's `tidy`: rules about the workspace's
//! shape, checked by `cargo test` from the manifests (`cargo metadata`) and the source text.
//! Each failure names its rule and where it broke (`file:line`, or a crate and the dependency
//! path that reaches the forbidden one).
//!
//! 1. `waggle-core` is the pure model: no runtime, network or randomness crate among its
//!    normal dependencies, however indirect.
//! 2. `waggle-balance` and `waggle-resilience` name no registry or gRPC-library types: no such
//!    crate among their normal dependencies, no such path in their sources.
//! 3. No front-end module of `waggle-server` (gRPC, Consul HTTP, DNS, UI) imports another.
//! 4. Every Rust file opens with a `//!` line saying what it is.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use serde_json::Value;

/// The workspace root: two levels above this crate.
fn root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    dir.canonicalize().unwrap_or(dir)
}

/// `path` relative to the workspace root, for messages.
fn shown(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

/// Fails with every violation of `rule`, one per line.
fn check(rule: &str, violations: &[String]) {
    assert!(violations.is_empty(), "{rule}: {} violation(s):\n  {}", violations.len(), violations.join("\n  "));
}

// ---------------------------------------------------------------------------------------------
// Dependencies (rules 1 and 2)

/// The resolved dependency graph for the host platform: package names and normal
/// (non-dev, non-build) dependency edges.
struct Graph {
    /// Package id → name.
    names: HashMap<String, String>,
    /// Package id → the ids it depends on normally.
    normal: HashMap<String, Vec<String>>,
}

fn graph() -> &'static Graph {
    static GRAPH: OnceLock<Graph> = OnceLock::new();
    GRAPH.get_or_init(|| {
        let cargo = env!("CARGO");
        // The host platform only: the graph a build here links, and no download of other
        // platforms' crates.
        let version = run(Command::new(cargo).arg("-vV"));
        let host = version.lines().find_map(|l| l.strip_prefix("host: ")).expect("`cargo -vV` names the host");
        let manifest = root().join("Cargo.toml");
        let mut metadata = Command::new(cargo);
        metadata
            .args(["metadata", "--format-version", "1", "--filter-platform", host])
            .arg("--manifest-path")
            .arg(manifest);
        let metadata = run(&mut metadata);
        let metadata: Value = serde_json::from_str(&metadata).expect("cargo metadata prints JSON");
        let names = metadata["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| (text(&p["id"]), text(&p["name"])))
            .collect();
        let normal = metadata["resolve"]["nodes"]
            .as_array()
            .expect("resolve.nodes")
            .iter()
            .map(|node| {
                let deps = node["deps"].as_array().expect("deps");
                let normal = deps
                    .iter()
                    .filter(|d| d["dep_kinds"].as_array().is_some_and(|k| k.iter().any(|k| k["kind"].is_null())))
                    .map(|d| text(&d["pkg"]))
                    .collect();
                (text(&node["id"]), normal)
            })
            .collect();
        Graph { names, normal }
    })
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}")).to_owned()
}

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(out.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

impl Graph {
    /// Every package `krate` reaches through normal dependencies, with the shortest path to
    /// it (`krate -> a -> b`), by package name.
    fn reachable(&self, krate: &str) -> BTreeMap<String, String> {
        let start = self.names.iter().find(|(_, name)| *name == krate).map(|(id, _)| id.clone());
        let start = start.unwrap_or_else(|| panic!("no package {krate} in the workspace"));
        let mut paths = HashMap::from([(start.clone(), krate.to_owned())]);
        let mut queue = VecDeque::from([start]);
        while let Some(id) = queue.pop_front() {
            for dep in self.normal.get(&id).into_iter().flatten() {
                if !paths.contains_key(dep) {
                    let path = format!("{} -> {}", paths[&id], self.names[dep]);
                    paths.insert(dep.clone(), path);
                    queue.push_back(dep.clone());
                }
            }
        }
        paths.into_iter().map(|(id, path)| (self.names[&id].clone(), path)).filter(|(name, _)| name != krate).collect()
    }

    /// A violation for every crate of `forbidden` that `krate` reaches.
    fn forbidden(&self, krate: &str, forbidden: &[&str], why: &str) -> Vec<String> {
        let reachable = self.reachable(krate);
        forbidden
            .iter()
            .filter_map(|f| reachable.get(*f).map(|path| format!("{krate} depends on {f} ({why}): {path}")))
            .collect()
    }
}

#[test]
fn rule_1_waggle_core_is_the_pure_model() {
    let violations = graph().forbidden(
        "waggle-core",
        &["tokio", "tonic", "openraft", "rand", "mio", "hyper"],
        "the model runs no runtime, network, consensus or randomness",
    );
    check("rule 1 (waggle-core depends on no runtime, network, Raft or rand crate)", &violations);
}

/// What `waggle-balance` and `waggle-resilience` must not name.
const REGISTRY_OR_GRPC: [&str; 5] = ["waggle-core", "waggle-proto", "waggle-client", "waggle-server", "tonic"];

#[test]
fn rule_2_balance_and_resilience_name_no_registry_or_grpc_types() {
    let mut violations = Vec::new();
    for krate in ["waggle-balance", "waggle-resilience"] {
        violations.extend(graph().forbidden(krate, &REGISTRY_OR_GRPC, "usable without the registry"));
        for file in rust_files(&root().join("crates").join(krate).join("src")) {
            let source = read(&file);
            let tokens = tokenize(&source);
            for (i, token) in tokens.iter().enumerate() {
                let path_follows = tokens.get(i + 1).is_some_and(|t| t.tok == Tok::Path);
                let named = match &token.tok {
                    Tok::Ident(name) if name == "waggle_core" || name == "waggle_proto" => name.as_str(),
                    Tok::Ident(name) if name == "tonic" && path_follows => "tonic::",
                    _ => continue,
                };
                violations.push(format!("{}:{}: {krate} names {named}", shown(&file), token.line));
            }
        }
    }
    check("rule 2 (waggle-balance and waggle-resilience name no registry or gRPC types)", &violations);
}

// ---------------------------------------------------------------------------------------------
// Front-ends (rule 3)

/// The front-end modules of `waggle-server`: each a folder `src/<name>/` or a file
/// `src/<name>.rs` (or both).
const FRONT_ENDS: [&str; 4] = ["grpc", "consul", "dns", "ui"];

#[test]
fn rule_3_server_front_ends_do_not_import_each_other() {
    let src = root().join("crates/waggle-server/src");
    let mut violations = Vec::new();
    for front_end in FRONT_ENDS {
        for (file, module) in module_files(&src, front_end) {
            for reference in root_references(&read(&file), &module) {
                if reference.module != front_end && FRONT_ENDS.contains(&reference.module.as_str()) {
                    violations.push(format!(
                        "{}:{}: front-end {front_end} imports front-end {} ({}{}::...)",
                        shown(&file),
                        reference.line,
                        reference.module,
                        reference.written,
                        reference.module
                    ));
                }
            }
        }
    }
    check("rule 3 (no front-end of waggle-server imports another)", &violations);
}

/// The files of module `name` under `src`, each with its module path (`src/grpc.rs` →
/// `[grpc]`, `src/grpc/kv.rs` → `[grpc, kv]`, `src/grpc/kv/mod.rs` → `[grpc, kv]`).
fn module_files(src: &Path, name: &str) -> Vec<(PathBuf, Vec<String>)> {
    let mut files = Vec::new();
    let top = src.join(format!("{name}.rs"));
    if top.is_file() {
        files.push((top, vec![name.to_owned()]));
    }
    for file in rust_files(&src.join(name)) {
        let relative = file.strip_prefix(src).expect("under src").with_extension("");
        let mut module: Vec<String> = relative.iter().map(|c| c.to_string_lossy().into_owned()).collect();
        if module.last().is_some_and(|last| last == "mod") {
            module.pop();
        }
        files.push((file, module));
    }
    files
}

/// A path in the source that starts at the crate root: `crate::dns::...`, a member of a
/// `use crate::{..}` group, or `super::dns` from a module one level down.
#[derive(Debug, PartialEq)]
struct RootReference {
    line: usize,
    /// The first segment under the crate root (`dns`).
    module: String,
    /// How the root was written: `crate::` or `super::` (repeated).
    written: String,
}

/// Every path in `source` that names a module at the crate root, where `module` is the file's
/// module path (empty for the crate root). Comments and string and character literals are
/// skipped; `use` groups are expanded (only their top level is at the root); inline
/// `mod name { .. }` blocks are followed for `super`.
fn root_references(source: &str, module: &[String]) -> Vec<RootReference> {
    let tokens = tokenize(source);
    let mut found = Vec::new();
    // Inline modules open around the current token: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i].tok {
            Tok::Open => {
                depth += 1;
                if i >= 2
                    && tokens[i - 2].tok == Tok::Ident("mod".into())
                    && let Tok::Ident(name) = &tokens[i - 1].tok
                {
                    inline.push((name.clone(), depth));
                }
            }
            Tok::Close => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(word) if word == "crate" => {
                let macro_crate = i > 0 && tokens[i - 1].tok == Tok::Dollar;
                if !macro_crate && tokens.get(i + 1).is_some_and(|t| t.tok == Tok::Path) {
                    first_segments(&tokens, i + 2, "crate::", &mut found);
                }
            }
            Tok::Ident(word) if word == "super" && (i == 0 || tokens[i - 1].tok != Tok::Path) => {
                let mut ups = 0;
                let mut j = i;
                while tokens.get(j).is_some_and(|t| t.tok == Tok::Ident("super".into()))
                    && tokens.get(j + 1).is_some_and(|t| t.tok == Tok::Path)
                {
                    ups += 1;
                    j += 2;
                }
                if ups > 0 && ups == module.len() + inline.len() {
                    first_segments(&tokens, j, &"super::".repeat(ups), &mut found);
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The first segments of the path(s) starting at `tokens[at]`: one identifier, or every item
/// at the top level of a `{ .. }` group.
fn first_segments(tokens: &[Token], at: usize, written: &str, found: &mut Vec<RootReference>) {
    let mut push = |token: &Token| {
        if let Tok::Ident(name) = &token.tok
            && name != "self"
        {
            found.push(RootReference { line: token.line, module: name.clone(), written: written.to_owned() });
        }
    };
    match tokens.get(at).map(|t| &t.tok) {
        Some(Tok::Ident(_)) => push(&tokens[at]),
        Some(Tok::Open) => {
            let mut depth = 0;
            let mut item_starts = false;
            for token in &tokens[at..] {
                match token.tok {
                    Tok::Open => {
                        depth += 1;
                        item_starts = depth == 1;
                        continue;
                    }
                    Tok::Close => {
                        depth -= 1;
                        if depth == 0 {
                            return;
                        }
                    }
                    Tok::Comma if depth == 1 => {
                        item_starts = true;
                        continue;
                    }
                    _ if item_starts => push(token),
                    _ => {}
                }
                item_starts = false;
            }
        }
        _ => {}
    }
}

/// What the scanner needs of Rust's tokens. Comments, literals and whitespace are dropped.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    /// `{`
    Open,
    /// `}`
    Close,
    Comma,
    /// `$` (as in `$crate`)
    Dollar,
    Other,
}

#[derive(Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

fn tokenize(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        let start_line = line;
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '/' if at(i + 1) == '/' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if at(i + 1) == '*' => {
                let mut nesting = 0;
                while i < chars.len() {
                    if chars[i] == '/' && at(i + 1) == '*' {
                        nesting += 1;
                        i += 2;
                    } else if chars[i] == '*' && at(i + 1) == '/' {
                        nesting -= 1;
                        i += 2;
                        if nesting == 0 {
                            break;
                        }
                    } else {
                        line += usize::from(chars[i] == '\n');
                        i += 1;
                    }
                }
            }
            '"' => i = skip_string(&chars, i, &mut line),
            '\'' => {
                // A character literal ('x', '\n', '\'') or a lifetime ('a, dropped).
                if at(i + 1) == '\\' {
                    i += 2;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if at(i + 2) == '\'' {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let begin = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[begin..i].iter().collect();
                let prefix = matches!(word.as_str(), "b" | "c" | "r" | "br" | "cr");
                if prefix && at(i) == '"' {
                    // b"..", c"..", r".." (raw: no escapes).
                    let raw = word.contains('r');
                    i = if raw { skip_raw_string(&chars, i, 0, &mut line) } else { skip_string(&chars, i, &mut line) };
                } else if prefix && word.contains('r') && at(i) == '#' {
                    let mut hashes = 0;
                    while at(i + hashes) == '#' {
                        hashes += 1;
                    }
                    if at(i + hashes) == '"' {
                        i = skip_raw_string(&chars, i + hashes, hashes, &mut line);
                    } else {
                        // A raw identifier, r#name.
                        i += 1;
                        let begin = i;
                        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                            i += 1;
                        }
                        tokens.push(Token { tok: Tok::Ident(chars[begin..i].iter().collect()), line: start_line });
                    }
                } else if word == "b" && at(i) == '\'' {
                    // A byte literal: the quote is handled as a character literal next.
                } else {
                    tokens.push(Token { tok: Tok::Ident(word), line: start_line });
                }
            }
            c if c.is_ascii_digit() => {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                tokens.push(Token { tok: Tok::Other, line });
            }
            ':' if at(i + 1) == ':' => {
                tokens.push(Token { tok: Tok::Path, line });
                i += 2;
            }
            _ => {
                let tok = match c {
                    '{' => Tok::Open,
                    '}' => Tok::Close,
                    ',' => Tok::Comma,
                    '$' => Tok::Dollar,
                    _ => Tok::Other,
                };
                tokens.push(Token { tok, line });
                i += 1;
            }
        }
    }
    tokens
}

/// Skips a string literal whose opening quote is at `i`; returns the index after it.
fn skip_string(chars: &[char], mut i: usize, line: &mut usize) -> usize {
    i += 1;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                *line += usize::from(chars.get(i + 1) == Some(&'\n'));
                i += 2;
            }
            '"' => return i + 1,
            c => {
                *line += usize::from(c == '\n');
                i += 1;
            }
        }
    }
    i
}

/// Skips a raw string literal whose opening quote is at `i`, closed by `"` and `hashes` `#`s.
fn skip_raw_string(chars: &[char], mut i: usize, hashes: usize, line: &mut usize) -> usize {
    i += 1;
    while i < chars.len() {
        if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        *line += usize::from(chars[i] == '\n');
        i += 1;
    }
    i
}

// ---------------------------------------------------------------------------------------------
// File headers (rule 4)

#[test]
fn rule_4_every_rust_file_opens_with_a_doc_line() {
    let root = root();
    let mut dirs = vec![root.join("examples")];
    for krate in fs::read_dir(root.join("crates")).expect("crates/").flatten() {
        dirs.extend(["src", "tests", "benches"].map(|d| krate.path().join(d)));
    }
    let mut violations = Vec::new();
    for file in dirs.iter().flat_map(|d| rust_files(d)) {
        let source = read(&file);
        let first = source.lines().next().unwrap_or("");
        if first.contains("@generated") {
            continue;
        }
        if !first.starts_with("//!") {
            violations
                .push(format!("{}:1: opens with {first:?}, not a `//!` line saying what the file is", shown(&file)));
        }
    }
    check("rule 4 (every Rust file opens with a `//!` line)", &violations);
}

/// Every `.rs` file under `dir` (none if it does not exist), skipping `target/`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if entry.file_name() != "target" {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// The scanner of rule 3 (and 2), on snippets: the rules can fail.

/// (line, module, written) of every root reference in `source`, as the file `module`.
fn refs(source: &str, module: &[&str]) -> Vec<(usize, String, String)> {
    let module: Vec<String> = module.iter().map(|m| (*m).to_owned()).collect();
    root_references(source, &module).into_iter().map(|r| (r.line, r.module, r.written)).collect()
}

fn found(list: &[(usize, &str, &str)]) -> Vec<(usize, String, String)> {
    list.iter().map(|(l, m, w)| (*l, (*m).to_owned(), (*w).to_owned())).collect()
}

#[test]
fn scanner_expands_use_groups() {
    assert_eq!(refs("use crate::{a, consul::x};", &["dns"]), found(&[(1, "a", "crate::"), (1, "consul", "crate::")]));
    let nested = "use crate::{\n    a::{b, grpc},\n    dns::{self, Q},\n    self,\n    ui as face,\n};";
    assert_eq!(
        refs(nested, &["consul"]),
        found(&[(2, "a", "crate::"), (3, "dns", "crate::"), (5, "ui", "crate::")]),
        "only the group's top level is at the root; `self` is the root itself"
    );
    assert_eq!(refs("fn f() { crate :: dns :: answer(); }", &["grpc"]), found(&[(1, "dns", "crate::")]));
}

#[test]
fn scanner_skips_comments_literals_and_macro_crate() {
    let source = r##"
// crate::grpc::x
/* crate::grpc /* nested */ crate::grpc */
/// crate::grpc in a doc comment
let s = "crate::grpc::y \" crate::grpc";
let r = r#"crate::grpc "quoted" "#;
let b = b"crate::grpc";
let c = '"'; let d = '\''; let e = b'{';
fn f<'a>(x: &'a str) -> crate::ui::T { $crate::dns::x() }
"##;
    assert_eq!(refs(source, &["consul"]), found(&[(9, "ui", "crate::")]));
}

#[test]
fn scanner_resolves_super_from_the_module_path() {
    // From the top file of a front-end, `super` is the crate root.
    assert_eq!(refs("use super::{dns, http};", &["grpc"]), found(&[(1, "dns", "super::"), (1, "http", "super::")]));
    // One level down it is the front-end itself; two levels up from there is the root.
    assert_eq!(refs("use super::dns;", &["grpc", "kv"]), found(&[]));
    assert_eq!(refs("use super::super::dns::Q;", &["grpc", "kv"]), found(&[(1, "dns", "super::super::")]));
    // Inline modules count: `super` in `mod tests` of the top file is the front-end.
    let inline =
        "mod tests {\n    use super::*;\n    use super::dns::X;\n    use super::super::ui::Y;\n}\nuse super::consul;";
    assert_eq!(refs(inline, &["grpc"]), found(&[(4, "ui", "super::super::"), (6, "consul", "super::")]));
}

#[test]
fn scanner_reads_module_paths_of_front_end_files() {
    let src = root().join("crates/waggle-server/src");
    for (file, module) in module_files(&src, "dns") {
        assert_eq!(module.first().map(String::as_str), Some("dns"), "{}", file.display());
    }
    assert!(module_files(&src, "no-such-front-end").is_empty());
}

#[test]
fn dependency_rules_see_indirect_dependencies() {
    // The SDK reaches tonic directly and tokio through it, so rules 1 and 2 can fail.
    let found = graph().forbidden("waggle-client", &["tonic", "mio", "waggle-core"], "a probe");
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[1].ends_with("-> mio") && found[1].matches(" -> ").count() >= 2, "an indirect path: {found:?}");
}
