//! A small YAML writer for manifests: block maps and sequences, every string
//! double-quoted and escaped, integers and booleans bare. Keys come from this crate's
//! code and are written bare.

use std::fmt::Write as _;

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Yaml {
    /// A string, always written double-quoted.
    Str(String),
    /// An integer, written bare.
    Int(i64),
    /// A boolean, written bare.
    Bool(bool),
    /// A map whose keys keep their order.
    Map(Vec<(&'static str, Yaml)>),
    /// A sequence.
    Seq(Vec<Yaml>),
}

/// A string value.
pub(crate) fn s(v: impl Into<String>) -> Yaml {
    Yaml::Str(v.into())
}

/// A map value.
pub(crate) fn map(entries: impl IntoIterator<Item = (&'static str, Yaml)>) -> Yaml {
    Yaml::Map(entries.into_iter().collect())
}

/// A sequence value.
pub(crate) fn seq(items: impl IntoIterator<Item = Yaml>) -> Yaml {
    Yaml::Seq(items.into_iter().collect())
}

/// `v` as a YAML double-quoted scalar. Everything that is not printable text is
/// escaped (YAML parsers refuse raw control characters even inside quotes), so the
/// value stays on one line and reads back unchanged.
pub(crate) fn quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0'..='\u{1f}' | '\u{7f}'..='\u{9f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes `node`, a map or a sequence, as a block at `indent` spaces.
fn block(node: &Yaml, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match node {
        Yaml::Map(entries) => {
            for (key, value) in entries {
                debug_assert!(key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b)));
                out.push_str(&pad);
                out.push_str(key);
                out.push(':');
                match value {
                    Yaml::Map(m) if !m.is_empty() => {
                        out.push('\n');
                        block(value, indent + 2, out);
                    }
                    Yaml::Seq(s) if !s.is_empty() => {
                        out.push('\n');
                        block(value, indent + 2, out);
                    }
                    _ => {
                        out.push(' ');
                        out.push_str(&inline(value));
                        out.push('\n');
                    }
                }
            }
        }
        Yaml::Seq(items) => {
            for item in items {
                match item {
                    Yaml::Map(m) if !m.is_empty() => {
                        item_block(item, indent, out);
                    }
                    Yaml::Seq(s) if !s.is_empty() => {
                        item_block(item, indent, out);
                    }
                    _ => {
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&inline(item));
                        out.push('\n');
                    }
                }
            }
        }
        scalar => {
            out.push_str(&pad);
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
}

/// Writes a non-empty map or sequence as an item of a sequence at `indent`: its first
/// line after `- `, the others aligned under it.
fn item_block(item: &Yaml, indent: usize, out: &mut String) {
    let mut inner = String::new();
    block(item, indent + 2, &mut inner);
    out.push_str(&" ".repeat(indent));
    out.push_str("- ");
    out.push_str(&inner[indent + 2..]);
}

/// A scalar, or an empty map or sequence, on one line.
fn inline(node: &Yaml) -> String {
    match node {
        Yaml::Str(v) => quote(v),
        Yaml::Int(i) => i.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Map(_) => "{}".into(),
        Yaml::Seq(_) => "[]".into(),
    }
}

/// `doc` (a map) as one YAML document, without a `---` line.
pub(crate) fn document(doc: &Yaml) -> String {
    let mut out = String::new();
    block(doc, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_double_quoted_and_escaped() {
        assert_eq!(quote("rask"), "\"rask\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("yes"), "\"yes\"");
        assert_eq!(quote("8786"), "\"8786\"");
        assert_eq!(quote("a \"b\" c"), r#""a \"b\" c""#);
        assert_eq!(quote(r"C:\dir"), r#""C:\\dir""#);
        assert_eq!(quote("l1\nl2\tx\r"), r#""l1\nl2\tx\r""#);
        assert_eq!(
            quote("bell\u{7}del\u{7f}nel\u{85}"),
            r#""bell\x07del\x7fnel\x85""#
        );
        assert_eq!(quote("ls\u{2028}bom\u{feff}"), r#""ls\u2028bom\ufeff""#);
        assert_eq!(
            quote("# not: a comment - [x] {y} &z *w !t |"),
            "\"# not: a comment - [x] {y} &z *w !t |\""
        );
        assert_eq!(quote("naïve €"), "\"naïve €\"");
    }

    #[test]
    fn empty_maps_and_sequences_in_a_sequence_are_written_inline() {
        let doc = map([("items", seq([map([]), seq([]), s("x")]))]);
        assert_eq!(document(&doc), "items:\n  - {}\n  - []\n  - \"x\"\n");
    }

    #[test]
    fn blocks_nest_maps_and_sequences() {
        let doc = map([
            ("kind", s("Deployment")),
            ("replicas", Yaml::Int(3)),
            ("readOnly", Yaml::Bool(true)),
            ("empty", map([])),
            ("none", seq([])),
            (
                "spec",
                map([(
                    "containers",
                    seq([
                        map([
                            ("name", s("worker")),
                            ("args", seq([s("worker"), s("--x")])),
                            ("ports", seq([map([("containerPort", Yaml::Int(8789))])])),
                        ]),
                        s("scalar item"),
                        seq([s("nested")]),
                    ]),
                )]),
            ),
        ]);
        assert_eq!(
            document(&doc),
            r#"kind: "Deployment"
replicas: 3
readOnly: true
empty: {}
none: []
spec:
  containers:
    - name: "worker"
      args:
        - "worker"
        - "--x"
      ports:
        - containerPort: 8789
    - "scalar item"
    - - "nested"
"#
        );
    }
}
