//! Diagnostics: what went wrong, where (file:line:column) and how to fix it.
//!
//! Errors are collected, not thrown: validation keeps going after the first
//! problem so one run of `wharf check` shows everything that needs fixing.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

/// One problem in a `wharf.toml`.
///
/// `line` and `column` are 1-based; the column counts characters, not bytes.
/// Both are 0 when the problem concerns the file as a whole (for example a
/// missing file), and then only the file name is printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    /// `FILE:LINE:COL: error: MESSAGE`, then `  hint: HINT` on the next line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: error: {}", self.file, self.message)?;
        } else {
            write!(f, "{}:{}:{}: error: {}", self.file, self.line, self.column, self.message)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// The offending source line of a diagnostic, kept so `Display` can underline
/// the problem like rustc does.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snippet {
    text: String,
    /// Underline width in characters (at least 1).
    width: usize,
}

/// A `wharf.toml` that cannot be used, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct SpecError {
    diagnostics: Vec<Diagnostic>,
    /// Parallel to `diagnostics`; `None` when there is no source to show.
    snippets: Vec<Option<Snippet>>,
}

impl SpecError {
    /// An error from diagnostics made elsewhere (no source lines to show).
    pub fn new(diagnostics: Vec<Diagnostic>) -> Self {
        let snippets = vec![None; diagnostics.len()];
        SpecError { diagnostics, snippets }
    }

    /// All problems, in file order.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.diagnostics
    }

    /// A problem with the file as a whole (no position).
    pub(crate) fn whole_file(file: &str, message: String, hint: Option<String>) -> Self {
        SpecError::new(vec![Diagnostic { file: file.to_string(), line: 0, column: 0, message, hint }])
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for (i, (diag, snippet)) in self.diagnostics.iter().zip(&self.snippets).enumerate() {
            if i > 0 {
                out.push_str("\n\n");
            }
            out.push_str(&diag.to_string());
            if let Some(snippet) = snippet {
                render_snippet(&mut out, diag, snippet);
            }
        }
        out
    }
}

/// ```text
///    |
///  3 | comand = ["node", "server.js"]
///    | ^^^^^^
/// ```
fn render_snippet(out: &mut String, diag: &Diagnostic, snippet: &Snippet) {
    let number = diag.line.to_string();
    let pad = " ".repeat(number.len());
    // Tabs become single spaces so the caret lines up with the column.
    let text = snippet.text.replace('\t', " ");
    let indent = " ".repeat(diag.column.saturating_sub(1));
    let carets = "^".repeat(snippet.width.max(1));
    out.push_str(&format!("\n {pad} |\n {number} | {text}\n {pad} | {indent}{carets}"));
}

/// Byte offsets → line/column, and the collected problems of one file.
pub(crate) struct Report<'s> {
    text: &'s str,
    file: &'s str,
    /// Byte offset where each line starts.
    line_starts: Vec<usize>,
    problems: Vec<(Range<usize>, String, Option<String>)>,
}

impl<'s> Report<'s> {
    pub(crate) fn new(text: &'s str, file: &'s str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Report { text, file, line_starts, problems: Vec::new() }
    }

    /// The source text at `span` (empty if the span is out of range).
    pub(crate) fn slice(&self, span: Range<usize>) -> &'s str {
        self.text.get(span).unwrap_or("")
    }

    /// The file name shown in diagnostics.
    pub(crate) fn file(&self) -> &'s str {
        self.file
    }

    pub(crate) fn text(&self) -> &'s str {
        self.text
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let line = self.line_of(offset);
        let start = self.line_starts[line - 1];
        let end = floor_char_boundary(self.text, offset.max(start));
        (line, self.text[start..end].chars().count() + 1)
    }

    /// 1-based line of a byte offset.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    pub(crate) fn error(&mut self, span: Range<usize>, message: String, hint: Option<String>) {
        self.problems.push((span, message, hint));
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.problems.is_empty()
    }

    /// All problems so far, in file order, as one error.
    pub(crate) fn into_error(mut self) -> SpecError {
        self.problems.sort_by_key(|(span, _, _)| (span.start, span.end));
        self.problems.dedup();
        let mut diagnostics = Vec::with_capacity(self.problems.len());
        let mut snippets = Vec::with_capacity(self.problems.len());
        for (span, message, hint) in &self.problems {
            let (diag, snippet) = self.locate(span.clone(), message.clone(), hint.clone());
            diagnostics.push(diag);
            snippets.push(Some(snippet));
        }
        SpecError { diagnostics, snippets }
    }

    fn locate(&self, span: Range<usize>, message: String, hint: Option<String>) -> (Diagnostic, Snippet) {
        let start = floor_char_boundary(self.text, span.start);
        let line = self.line_of(start);
        let line_start = self.line_starts[line - 1];
        let line_end = self.text[line_start..].find('\n').map_or(self.text.len(), |i| line_start + i);
        let column = self.text[line_start..start].chars().count() + 1;
        let end = floor_char_boundary(self.text, span.end.clamp(start, line_end));
        let width = self.text[start..end].chars().count().max(1);
        let text = self.text[line_start..line_end].trim_end_matches('\r').to_string();
        let diag = Diagnostic { file: self.file.to_string(), line, column, message, hint };
        (diag, Snippet { text, width })
    }
}

fn floor_char_boundary(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_characters_and_lines_are_one_based() {
        let text = "a = 1\nbé = \"x\"\n";
        let mut report = Report::new(text, "f.toml");
        let offset = text.find("= \"x\"").unwrap();
        report.error(offset..offset + 1, "m".into(), None);
        let err = report.into_error();
        let d = &err.diagnostics()[0];
        assert_eq!((d.line, d.column), (2, 4));
    }

    #[test]
    fn display_has_header_hint_and_caret() {
        let text = "app = \"x\"\ncomand = 1\n";
        let mut report = Report::new(text, "wharf.toml");
        report.error(10..16, "unknown key `comand`".into(), Some("did you mean `command`?".into()));
        let shown = report.into_error().to_string();
        assert_eq!(
            shown,
            "wharf.toml:2:1: error: unknown key `comand`\n  hint: did you mean `command`?\n   |\n 2 | comand = 1\n   | ^^^^^^"
        );
    }

    #[test]
    fn whole_file_errors_have_no_position() {
        let err = SpecError::whole_file("x/wharf.toml", "no such file".into(), None);
        assert_eq!(err.to_string(), "x/wharf.toml: error: no such file");
    }
}
