//! `$NAME` and `${NAME}` in a command's arguments, replaced from the task's
//! environment when it starts (so `"127.0.0.1:$PORT"` works as it does in a
//! shell); `$$` is a literal `$`. A `$` not followed by a name, `{` or `$`
//! (`$1`, `$?`, a lone `$`) is kept as written.

#![forbid(unsafe_code)]

use std::ops::Range;

/// One piece of an argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part<'a> {
    /// Kept as it is (`$$` gives the text "$").
    Text(&'a str),
    /// A variable and where it is written (`$NAME` or `${NAME}`).
    Var(&'a str, Range<usize>),
    /// `${` without a valid name and `}`: kept as written, an error in `wharf check`.
    Malformed(&'a str, Range<usize>),
}

fn name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The pieces of `arg`, in order.
pub fn parts(arg: &str) -> Vec<Part<'_>> {
    let b = arg.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut text_start) = (0, 0);
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        if text_start < i {
            out.push(Part::Text(&arg[text_start..i]));
        }
        match b.get(i + 1) {
            Some(b'$') => {
                out.push(Part::Text("$"));
                i += 2;
            }
            Some(b'{') => {
                let close = arg[i + 2..].find('}').map(|j| i + 2 + j);
                let name = close.map(|c| &arg[i + 2..c]);
                match (close, name) {
                    (Some(c), Some(n)) if n.bytes().next().is_some_and(name_start) && n.bytes().all(name_byte) => {
                        out.push(Part::Var(n, i..c + 1));
                        i = c + 1;
                    }
                    _ => {
                        let end = close.map_or(b.len(), |c| c + 1);
                        out.push(Part::Malformed(&arg[i..end], i..end));
                        i = end;
                    }
                }
            }
            Some(&c) if name_start(c) => {
                let mut j = i + 1;
                while j < b.len() && name_byte(b[j]) {
                    j += 1;
                }
                out.push(Part::Var(&arg[i + 1..j], i..j));
                i = j;
            }
            _ => {
                out.push(Part::Text("$"));
                i += 1;
            }
        }
        text_start = i;
    }
    if text_start < b.len() {
        out.push(Part::Text(&arg[text_start..]));
    }
    out
}

/// `arg` with its variables replaced by `lookup`. A variable it doesn't know
/// is kept as written: `wharf check` refuses the names a task can never
/// have, so what is left is a command that never went through it (`wharf
/// run api -- sh -c 'echo $i'`), where the program (a shell) is the one to
/// read it.
pub fn expand_arg(arg: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    if !arg.contains('$') {
        return arg.to_string();
    }
    let mut out = String::with_capacity(arg.len());
    for part in parts(arg) {
        match part {
            Part::Text(t) | Part::Malformed(t, _) => out.push_str(t),
            Part::Var(name, range) => match lookup(name) {
                Some(value) => out.push_str(&value),
                None => out.push_str(&arg[range]),
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(arg: &str) -> String {
        expand_arg(arg, |n| match n {
            "PORT" => Some("8080".into()),
            "HOME" => Some("/home/w".into()),
            _ => None,
        })
    }

    #[test]
    fn expands_names_and_braces_and_keeps_escapes() {
        assert_eq!(expand("127.0.0.1:$PORT"), "127.0.0.1:8080");
        assert_eq!(expand("${HOME}/bin:${PORT}x"), "/home/w/bin:8080x");
        assert_eq!(expand("$PORTx"), "$PORTx", "the longest name is taken, as in a shell");
        assert_eq!(expand("a$$PORT"), "a$PORT");
        assert_eq!(expand("$$$$"), "$$");
        assert_eq!(expand("cost: 5$"), "cost: 5$");
        assert_eq!(expand("$1 $? $-"), "$1 $? $-");
        assert_eq!(expand("${NOPE} $i"), "${NOPE} $i", "unknown names are kept for the program");
        assert_eq!(expand("${1x} ${"), "${1x} ${");
        assert_eq!(expand("é$PORTé"), "é8080é");
    }

    #[test]
    fn parts_have_positions() {
        let p = parts("x ${PORT} $A_1-");
        assert_eq!(p[1], Part::Var("PORT", 2..9));
        assert_eq!(p[3], Part::Var("A_1", 10..14));
        assert_eq!(parts("${a-b}")[0], Part::Malformed("${a-b}", 0..6));
    }
}
