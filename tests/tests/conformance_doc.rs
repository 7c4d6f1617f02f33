//! Keeps `docs/conformance.md` honest.
//!
//! The document has one table row per normative statement of MQTT 3.1.1, saying which tests
//! check it (as `path/to/file.rs::module::test_name`) or why none does. This test fails when:
//!
//! - a test the document names does not exist (no `fn test_name` in that file, or a module on
//!   the way is missing), so a renamed or deleted test cannot leave a stale claim behind;
//! - a statement id cited anywhere in the sources (`tests/`, `broker/`, `protocol/`) has no row,
//!   so a test for a statement the document forgot, or a mistyped id, is caught;
//! - a row is neither tested (names a test), `n/a: <why>` nor `not tested: <why>`, an id has two
//!   rows, or the summary counts at the top disagree with the table.
//!
//! Hand-written scanning only: no regex or other dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The workspace root: this package lives in `<root>/tests`.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// If `s` starts with a statement id (`MQTT-` then `d.d.d-d`, each a run of digits), returns it.
fn id_at(s: &str) -> Option<&str> {
    let rest = s.strip_prefix("MQTT-")?;
    let bytes = rest.as_bytes();
    let mut i = 0;
    // Four runs of digits separated by '.', '.', '-'.
    for sep in [Some(b'.'), Some(b'.'), Some(b'-'), None] {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        if let Some(sep) = sep {
            if bytes.get(i) != Some(&sep) {
                return None;
            }
            i += 1;
        }
    }
    Some(&s[.."MQTT-".len() + i])
}

/// Every statement id in `text`, with its 1-based line number.
fn ids_in(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (line_no, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(pos) = line[from..].find("MQTT-") {
            let at = from + pos;
            if let Some(id) = id_at(&line[at..]) {
                found.push((line_no + 1, id.to_string()));
            }
            from = at + "MQTT-".len();
        }
    }
    found
}

/// `.rs` files under `dir`, recursively, skipping build output and hidden directories.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The parts of a markdown table row, without the outer pipes.
fn cells(line: &str) -> Vec<&str> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(str::trim).collect()
}

/// Text between backticks in `cell`.
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Status {
    Tested,
    NotApplicable,
    NotTested,
}

struct Row {
    line: usize,
    id: String,
    status: Status,
    tests: Vec<String>,
}

/// The statement rows: table rows whose first cell is a statement id. The last cell says how
/// the statement is checked.
fn statement_rows(doc: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    for (i, line) in doc.lines().enumerate() {
        if !line.trim_start().starts_with('|') {
            continue;
        }
        let cells = cells(line);
        let first = cells[0].trim_matches(|c| c == '`' || c == '[' || c == ']');
        let Some(id) = id_at(first) else { continue };
        assert_eq!(id, first, "line {}: first cell is not just a statement id", i + 1);
        assert!(cells.len() >= 3, "line {}: a statement row needs at least 3 cells", i + 1);
        let last = *cells.last().unwrap();
        let tests: Vec<String> =
            code_spans(last).into_iter().filter(|s| s.contains(".rs::")).map(String::from).collect();
        let status = if last.starts_with("n/a:") {
            Status::NotApplicable
        } else if last.starts_with("not tested:") {
            Status::NotTested
        } else {
            Status::Tested
        };
        rows.push(Row { line: i + 1, id: id.to_string(), status, tests });
    }
    rows
}

/// Does `source` define `fn name` (followed by `(` or `<`)?
fn defines_fn(source: &str, name: &str) -> bool {
    let needle = format!("fn {name}");
    source.match_indices(&needle).any(|(at, _)| {
        let before_ok = at == 0 || !is_ident(source.as_bytes()[at - 1]);
        let after = source[at + needle.len()..].trim_start();
        before_ok && (after.starts_with('(') || after.starts_with('<'))
    })
}

/// Does `source` declare `mod name` (inline or not)?
fn declares_mod(source: &str, name: &str) -> bool {
    let needle = format!("mod {name}");
    source.match_indices(&needle).any(|(at, _)| {
        let before_ok = at == 0 || !is_ident(source.as_bytes()[at - 1]);
        let after = source[at + needle.len()..].trim_start();
        before_ok && (after.starts_with('{') || after.starts_with(';'))
    })
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Checks one `path/file.rs::module::name` reference; the error says what is missing.
fn check_test_ref(reference: &str) -> Result<(), String> {
    let (file, path) = reference.split_once(".rs::").ok_or_else(|| format!("`{reference}` is not `file.rs::name`"))?;
    let file = format!("{file}.rs");
    let full = root().join(&file);
    let source = fs::read_to_string(&full).map_err(|e| format!("`{reference}`: cannot read {file}: {e}"))?;
    let segments: Vec<&str> = path.split("::").collect();
    let (name, modules) = segments.split_last().expect("split yields at least one part");
    if name.is_empty() || !name.bytes().all(is_ident) {
        return Err(format!("`{reference}`: `{name}` is not a function name"));
    }
    for module in modules {
        if !declares_mod(&source, module) {
            return Err(format!("`{reference}`: no `mod {module}` in {file}"));
        }
    }
    if !defines_fn(&source, name) {
        return Err(format!("`{reference}`: no `fn {name}` in {file}"));
    }
    Ok(())
}

/// The numbers of the `Summary:` line: the count before each of the words `statements`,
/// `tested`, `n/a` and `not tested`.
fn summary(doc: &str) -> BTreeMap<&'static str, usize> {
    let line = doc
        .lines()
        .find(|l| l.trim_start().starts_with("Summary:"))
        .expect("docs/conformance.md must have a `Summary:` line");
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == ',' || c == '.' || c == ':' || c == '*')
        .filter(|w| !w.is_empty())
        .collect();
    let mut counts = BTreeMap::new();
    for (i, w) in words.iter().enumerate() {
        let Ok(n) = w.parse::<usize>() else { continue };
        let key = match (words.get(i + 1), words.get(i + 2)) {
            (Some(&"statements"), _) => "statements",
            (Some(&"n/a"), _) => "n/a",
            (Some(&"not"), Some(&"tested")) => "not tested",
            (Some(&"tested"), _) => "tested",
            _ => continue,
        };
        counts.insert(key, n);
    }
    counts
}

fn doc() -> String {
    read(&root().join("docs/conformance.md"))
}

#[test]
fn named_tests_exist() {
    let doc = doc();
    let rows = statement_rows(&doc);
    assert!(rows.len() > 100, "only {} statement rows found: is the table intact?", rows.len());
    let mut errors = Vec::new();
    for row in &rows {
        for reference in &row.tests {
            if let Err(e) = check_test_ref(reference) {
                errors.push(format!("line {} ({}): {e}", row.line, row.id));
            }
        }
    }
    assert!(errors.is_empty(), "docs/conformance.md names tests that do not exist:\n{}", errors.join("\n"));
}

#[test]
fn every_cited_statement_has_a_row() {
    let doc = doc();
    let documented: BTreeSet<String> = statement_rows(&doc).into_iter().map(|r| r.id).collect();
    let mut files = Vec::new();
    for dir in ["tests", "broker", "protocol"] {
        rust_files(&root().join(dir), &mut files);
    }
    files.sort();
    assert!(files.len() > 10, "source scan found only {} files", files.len());
    let mut missing = Vec::new();
    for file in &files {
        for (line, id) in ids_in(&read(file)) {
            if !documented.contains(&id) {
                let shown = file.strip_prefix(root()).unwrap_or(file).display().to_string();
                missing.push(format!("{shown}:{line}: {id}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "statement ids cited in the sources but missing from docs/conformance.md (a typo, or a row to add):\n{}",
        missing.join("\n")
    );
}

#[test]
fn rows_are_well_formed_and_the_summary_adds_up() {
    let doc = doc();
    let rows = statement_rows(&doc);
    let mut seen = BTreeSet::new();
    let mut errors = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &rows {
        if !seen.insert(row.id.clone()) {
            errors.push(format!("line {}: {} has a second row", row.line, row.id));
        }
        match row.status {
            Status::Tested if row.tests.is_empty() => errors.push(format!(
                "line {}: {} names no test (`file.rs::name`) and is not `n/a:` or `not tested:`",
                row.line, row.id
            )),
            Status::NotApplicable | Status::NotTested if !row.tests.is_empty() => {
                errors.push(format!("line {}: {} names tests but says it is n/a or not tested", row.line, row.id))
            }
            _ => {}
        }
        let key = match row.status {
            Status::Tested => "tested",
            Status::NotApplicable => "n/a",
            Status::NotTested => "not tested",
        };
        *counts.entry(key).or_default() += 1;
    }
    counts.insert("statements", rows.len());
    let stated = summary(&doc);
    for key in ["statements", "tested", "n/a", "not tested"] {
        let actual = counts.get(key).copied().unwrap_or(0);
        match stated.get(key) {
            Some(&n) if n == actual => {}
            Some(&n) => errors.push(format!("Summary says {n} {key}, the table has {actual}")),
            None => errors.push(format!("Summary line has no count for `{key}` (the table has {actual})")),
        }
    }
    assert!(errors.is_empty(), "docs/conformance.md:\n{}", errors.join("\n"));
}

#[test]
fn the_id_scanner_works() {
    // Ids are assembled at run time so that this file cites none itself.
    let id = |rest: &str| format!("{}-{rest}", "MQTT");
    assert_eq!(id_at(&id("3.1.0-1]")), Some(id("3.1.0-1").as_str()));
    assert_eq!(id_at(&id("3.10.4-12, x")), Some(id("3.10.4-12").as_str()));
    assert_eq!(id_at(&id("3.3.3")), None, "a section reference is not a statement id");
    assert_eq!(id_at(&id("3-8.3-4")), None);
    assert_eq!(id_at(&id("4.3.1 ")), None);
    let text = format!("a [{}] b {} c\n[{}, {}]", id("1.5.3-1"), id("2.2.2"), id("4.6.0-2"), id("4.6.0-3"));
    let expected = vec![(1, id("1.5.3-1")), (2, id("4.6.0-2")), (2, id("4.6.0-3"))];
    assert_eq!(ids_in(&text), expected);
    assert!(defines_fn("async fn second_connect() {", "second_connect"));
    assert!(defines_fn("fn generic<T>(t: T) {", "generic"));
    assert!(!defines_fn("fn second_connect_x() {", "second_connect"));
    assert!(!defines_fn("fn xsecond_connect() {", "second_connect"));
    assert!(declares_mod("#[cfg(test)]\nmod tests {", "tests"));
    assert!(!declares_mod("mod tests_more {", "tests"));
}
