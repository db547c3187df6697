//! The key reference (`docs/wharf.toml.md`), written from the description in
//! `schema.rs` so that the documented keys, types and defaults cannot drift
//! from what the checker accepts; a test compares the file with [`markdown`].

use serde_json::Value;

use crate::schema::{json_schema, Table};

/// Where the reference lives, relative to the repository root.
pub(crate) const PATH: &str = "docs/wharf.toml.md";

/// The whole reference: one table of keys per table of the file.
pub(crate) fn markdown() -> String {
    let schema = json_schema();
    let mut out = String::from(
        "# wharf.toml keys\n\n\
         Every key of every table, with its type, default and meaning. Written from the one description\n\
         of the format (`crates/spec/src/schema.rs`, which also gives `wharf schema` and the keys\n\
         `wharf check` accepts); `cargo test -p wharf-spec` fails when this file differs from it.\n\
         The README's \"wharf.toml reference\" shows the keys in an example.\n",
    );
    for table in Table::ALL {
        out.push_str(&format!("\n## {}\n\n| key | type | default | meaning |\n|---|---|---|---|\n", table.heading()));
        let properties = schema.pointer(table.pointer()).expect("every table is in the schema");
        for key in table.keys() {
            let p = &properties[*key];
            let default = p.get("default").map_or(String::new(), |d| format!("`{}`", toml_value(d)));
            let meaning =
                p["description"].as_str().unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ");
            out.push_str(&format!("| `{key}` | {} | {default} | {} |\n", cell(&kind(&schema, p)), cell(&meaning)));
        }
    }
    out
}

/// A JSON value as it is written in TOML.
pub(crate) fn toml_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// A short name for the type a schema allows.
fn kind(root: &Value, s: &Value) -> String {
    if let Some(name) = s.get("$ref").and_then(Value::as_str).and_then(|r| r.rsplit('/').next()) {
        return if name.ends_with("Table") { "table".into() } else { kind(root, &root["definitions"][name]) };
    }
    if let Some([only]) = s.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
        return kind(root, only);
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        return any.iter().map(|v| kind(root, v)).collect::<Vec<_>>().join(" or ");
    }
    if let Some(choices) = s.get("enum").and_then(Value::as_array) {
        return format!("one of {}", choices.iter().map(toml_value).collect::<Vec<_>>().join(", "));
    }
    let bounds = |what: &str| match (s.get("minimum"), s.get("maximum")) {
        (Some(min), Some(max)) => format!("{what} {min} to {max}"),
        (Some(min), None) => format!("{what} from {min}"),
        _ => what.to_string(),
    };
    match s.get("type").and_then(Value::as_str) {
        Some("integer") => bounds("integer"),
        Some("number") => bounds("number"),
        Some("array") => format!("array of {}s", kind(root, &s["items"])),
        Some("object") => match s.get("additionalProperties") {
            Some(Value::Object(item))
                if item.get("$ref").and_then(Value::as_str).is_some_and(|r| r.ends_with("Table")) =>
            {
                "tables".into()
            }
            Some(Value::Object(item)) if item.contains_key("$ref") => {
                format!("table of {} values", kind(root, &Value::Object(item.clone())))
            }
            Some(Value::Object(item)) => format!("table of {}s", kind(root, &Value::Object(item.clone()))),
            _ => "table".into(),
        },
        Some(other) => other.to_string(),
        None => "any".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repository() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// The reference file is the one the description writes. Set
    /// WHARF_WRITE_REFERENCE=1 to rewrite it instead of failing.
    #[test]
    fn the_key_reference_is_written_from_the_description() {
        let path = repository().join(PATH);
        let expected = markdown();
        if std::env::var_os("WHARF_WRITE_REFERENCE").is_some() {
            std::fs::write(&path, &expected).unwrap();
        }
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            actual == expected,
            "{PATH} differs from the description; replace it with this (or run with WHARF_WRITE_REFERENCE=1):\n\n{expected}"
        );
        for table in Table::ALL {
            for key in table.keys() {
                assert!(expected.contains(&format!("| `{key}` |")), "{table:?}.{key} is not in the reference");
            }
        }
    }

    /// The README's example files (its "wharf.toml reference" and "Jobs"
    /// sections) write or name every key the description knows.
    #[test]
    fn the_readme_examples_show_every_key() {
        let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
        let section = |title: &str| {
            let start = readme.find(&format!("\n## {title}\n")).unwrap_or_else(|| panic!("README has no {title}"));
            let rest = &readme[start + 4..];
            rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
        };
        let examples = format!("{}{}", section("wharf.toml reference"), section("Jobs"));
        let schema = json_schema();
        let mut missing = Vec::new();
        for table in Table::ALL {
            for key in table.keys() {
                let shown = [format!("{key} ="), format!("[{key}."), format!("[{key}]")];
                if !shown.iter().any(|s| examples.contains(s.as_str())) {
                    let p = &schema.pointer(table.pointer()).unwrap()[*key];
                    let value = p.get("default").or_else(|| p.pointer("/examples/0")).map_or("...".into(), toml_value);
                    missing.push(format!("{} {key} = {value}", table.heading()));
                }
            }
        }
        assert!(missing.is_empty(), "the README's wharf.toml examples lack these keys:\n{}", missing.join("\n"));
    }

    /// The README's `deploy = { ... }` line says it shows the defaults: it
    /// must give the declared ones.
    #[test]
    fn the_readme_deploy_line_shows_the_defaults() {
        let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
        let line = readme.lines().find(|l| l.starts_with("deploy = {")).expect("README shows a deploy line");
        let text = format!("app = \"a\"\n[service.w]\ncommand = \"x\"\nport = 1\n{line}\n");
        let spec = crate::parse(&text, "README.md").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.services["w"].deploy, crate::DeployPolicy::default(), "{line}");
    }
}
