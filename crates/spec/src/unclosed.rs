//! Where an unclosed array really is. toml reports a missing `]` where the
//! next key starts, a line (or more) after the array; the user needs the
//! line that lacks the `]`.

/// For a syntax error at `at`: when an array opened before it is still
/// open and the error is on a later line than the array's last item,
/// returns (where the `]` is missing, where the array opened).
pub(crate) fn unclosed_array(text: &str, at: usize) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let at = at.min(b.len());
    // Open `[` (value arrays) and `{` (inline tables), innermost last.
    let mut open: Vec<(u8, usize)> = Vec::new();
    // End of the last significant token, and the byte before the last one.
    let mut last_end = 0;
    let mut prev: u8 = b'\n';
    let mut i = 0;
    let mut at = at;
    while i < at {
        let c = b[i];
        match c {
            b'#' => {
                while i < at && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b' ' | b'\t' | b'\r' => {}
            b'\n' if open.is_empty() => prev = b'\n',
            b'\n' => {}
            b'"' | b'\'' => {
                let triple = b[i..].starts_with(if c == b'"' { b"\"\"\"" } else { b"'''" });
                let quote: &[u8] = if triple { &b[i..i + 3] } else { &b[i..i + 1] };
                i += quote.len();
                while i < at && !b[i..].starts_with(quote) && (triple || b[i] != b'\n') {
                    i += if c == b'"' && b[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + quote.len()).min(at);
                last_end = i;
                prev = c;
                continue;
            }
            b'[' if !open.is_empty() && header_line(text, i) => {
                // `[table]` inside an open array: the array was never closed.
                at = i;
                break;
            }
            b'[' if !open.is_empty() || prev == b'=' => open.push((b'[', i)),
            b'[' => {
                // A table header: skip it whole.
                while i < at && b[i] != b'\n' {
                    i += 1;
                }
                prev = b'\n';
                continue;
            }
            b'{' => open.push((b'{', i)),
            b']' | b'}' => {
                open.pop();
            }
            _ => {}
        }
        if !c.is_ascii_whitespace() {
            last_end = i + 1;
            prev = c;
        }
        i += 1;
    }
    let (kind, start) = *open.last()?;
    let line = |o: usize| text[..o].matches('\n').count();
    (kind == b'[' && line(last_end) < line(at)).then_some((last_end, start))
}

/// Whether the `[` at `i` starts a line that looks like a table header
/// (`[service.web]`, `[[x]]`) rather than a nested array (`[1, 2],`).
fn header_line(text: &str, i: usize) -> bool {
    let line_start = text[..i].rfind('\n').map_or(0, |n| n + 1);
    if !text[line_start..i].trim().is_empty() {
        return false;
    }
    let line = text[i..].lines().next().unwrap_or("");
    let line = line.split('#').next().unwrap_or("").trim();
    let inner = line.trim_start_matches('[').trim_end_matches(']');
    line.ends_with(']')
        && inner.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && inner.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_line_without_its_bracket() {
        let text = "app = \"a\"\n[service.web]\ncommand = [\"x\", \"y\"\nport = 8080\n";
        let at = text.find("port").unwrap();
        let (missing, opened) = unclosed_array(text, at).unwrap();
        assert_eq!(missing, text.find("\"y\"").unwrap() + 3);
        assert_eq!(opened, text.find('[').map(|_| text.find("= [").unwrap() + 2).unwrap());
        // Closed arrays, strings with brackets, comments: nothing to say.
        let text = "a = [\"]\", # [\n 1]\nb = 2 = 3\n";
        assert_eq!(unclosed_array(text, text.find("= 3").unwrap()), None);
        // The error on the array's own line is already in the right place.
        let text = "a = [\"x\" \"y\"]\n";
        assert_eq!(unclosed_array(text, text.find("\"y").unwrap()), None);
    }
}
