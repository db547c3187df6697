//! The broken-file corpus: every `tests/broken/NAME.toml` must be rejected,
//! and its first diagnostic must match `NAME.expected`:
//!
//! ```text
//! LINE:COL
//! substring of the message
//! substring of the hint        (optional line)
//! ```

use std::fs;
use std::path::{Path, PathBuf};

const MIN_CASES: usize = 24;

struct Expected {
    line: usize,
    column: usize,
    message: String,
    hint: Option<String>,
}

fn read_expected(path: &Path) -> Expected {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let position = lines.next().unwrap_or_default();
    let (line, column) = position
        .split_once(':')
        .and_then(|(l, c)| Some((l.trim().parse().ok()?, c.trim().parse().ok()?)))
        .unwrap_or_else(|| panic!("{}: first line must be LINE:COL", path.display()));
    let message = lines
        .next()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| panic!("{}: second line must be a message substring", path.display()))
        .to_string();
    let hint = lines.next().filter(|h| !h.is_empty()).map(str::to_string);
    Expected { line, column, message, hint }
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken");
    let mut cases: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    cases
}

#[test]
fn broken_files_report_the_expected_first_diagnostic() {
    let cases = cases();
    assert!(cases.len() >= MIN_CASES, "only {} broken files; the corpus needs at least {MIN_CASES}", cases.len());
    let mut failures = Vec::new();
    for toml_path in &cases {
        let name = toml_path.file_name().unwrap().to_string_lossy().into_owned();
        let expected = read_expected(&toml_path.with_extension("expected"));
        let text = fs::read_to_string(toml_path).unwrap();
        let file = format!("tests/broken/{name}");
        let err = match wharf_spec::parse(&text, &file) {
            Ok(_) => {
                failures.push(format!("{name}: parsed, but should be rejected"));
                continue;
            }
            Err(err) => err,
        };
        let first = &err.diagnostics()[0];
        let mut problems = Vec::new();
        if (first.line, first.column) != (expected.line, expected.column) {
            problems
                .push(format!("at {}:{}, expected {}:{}", first.line, first.column, expected.line, expected.column));
        }
        if !first.message.contains(&expected.message) {
            problems.push(format!("message lacks {:?}", expected.message));
        }
        if let Some(hint) = &expected.hint {
            if !first.hint.as_deref().unwrap_or("").contains(hint.as_str()) {
                problems.push(format!("hint lacks {hint:?}"));
            }
        }
        if first.file != file {
            problems.push(format!("file is {:?}", first.file));
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {}\n{err}\n", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Every broken file's first problem comes with a hint on how to fix it.
#[test]
fn every_first_diagnostic_has_a_hint() {
    let mut missing = Vec::new();
    for toml_path in cases() {
        let text = fs::read_to_string(&toml_path).unwrap();
        let err = wharf_spec::parse(&text, "wharf.toml").expect_err("broken files are rejected");
        if err.diagnostics()[0].hint.is_none() {
            missing.push(format!("{}: {}", toml_path.file_name().unwrap().to_string_lossy(), err.diagnostics()[0]));
        }
    }
    assert!(missing.is_empty(), "no hint:\n{}", missing.join("\n"));
}

/// Every `.expected` has its `.toml`, so a renamed case cannot go unnoticed.
#[test]
fn every_expectation_has_a_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken");
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "expected") {
            assert!(path.with_extension("toml").exists(), "{} has no .toml", path.display());
        }
    }
}

#[test]
fn json_schema_describes_the_top_level_keys() {
    let schema = wharf_spec::json_schema();
    let text = serde_json::to_string(&schema).expect("schema serializes");
    let reparsed: serde_json::Value = serde_json::from_str(&text).expect("schema is valid JSON");
    let properties = reparsed["properties"].as_object().expect("properties object");
    for key in ["app", "service", "route"] {
        assert!(properties.contains_key(key), "schema lacks `{key}`");
        assert!(properties[key]["description"].is_string(), "`{key}` lacks a description");
    }
    assert_eq!(reparsed["additionalProperties"], false);
}
