//! Quoting for POSIX shells and for `#SBATCH` directives.

use std::borrow::Cow;

/// Whether `s` reaches a shell (or sbatch's directive parser) unchanged when written
/// bare: not empty, and only characters that no shell expands, splits on or treats as
/// syntax.
fn is_safe_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'@' | b'%' | b'+' | b'=' | b':' | b',' | b'.' | b'/' | b'-'
                )
        })
}

/// Quotes `s` as one word for a POSIX shell (bash, dash, zsh in sh mode): a plain token
/// (letters, digits and `_@%+=:,./-`) is returned unchanged, anything else is put in
/// single quotes, where the shell expands nothing, with each `'` written as `'\''`.
/// Newlines are kept literally inside the quotes, so the result is still one word.
///
/// ```
/// use rask_deploy::shell_quote;
/// assert_eq!(shell_quote("tcp://10.0.0.1:8786"), "tcp://10.0.0.1:8786");
/// assert_eq!(shell_quote("two words"), "'two words'");
/// assert_eq!(shell_quote("it's $HOME"), r"'it'\''s $HOME'");
/// assert_eq!(shell_quote(""), "''");
/// ```
pub fn shell_quote(s: &str) -> Cow<'_, str> {
    if is_safe_token(s) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str(r"'\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Cow::Owned(out)
}

/// Quotes `s` as one argument of an `#SBATCH` line. sbatch splits directives on
/// whitespace itself (the shell never sees them: they are comments): a backslash escapes
/// the next character, also inside quotes, and an unescaped `#` outside quotes ends the
/// line (in older releases also inside them); only double quotes group words in every
/// release. So a value that is not a plain token goes in double quotes, with `\`, `"`
/// and `#` escaped. The value must not hold a newline (checked by the caller).
pub(crate) fn sbatch_quote(s: &str) -> Cow<'_, str> {
    if is_safe_token(s) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '\\' | '"' | '#') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tokens_are_left_alone() {
        for s in [
            "rask",
            "/opt/rask/bin/rask",
            "tcp://10.0.0.1:8786",
            "--memory-limit=4GiB",
            "a,b",
            "user@host",
            "50%",
        ] {
            assert_eq!(shell_quote(s), s);
            assert!(matches!(shell_quote(s), Cow::Borrowed(_)));
        }
    }

    #[test]
    fn special_characters_are_single_quoted() {
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("two words"), "'two words'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
        assert_eq!(shell_quote("$(reboot)"), "'$(reboot)'");
        assert_eq!(shell_quote("`id`"), "'`id`'");
        assert_eq!(shell_quote("a\"b"), "'a\"b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("''"), r"''\'''\'''");
        assert_eq!(shell_quote("line1\nline2"), "'line1\nline2'");
        assert_eq!(shell_quote("a\\b"), "'a\\b'");
        assert_eq!(shell_quote("*"), "'*'");
        assert_eq!(shell_quote("~"), "'~'");
        assert_eq!(shell_quote("{a,b}"), "'{a,b}'");
        assert_eq!(shell_quote("a;b&c|d>e<f"), "'a;b&c|d>e<f'");
        assert_eq!(shell_quote("naïve"), "'naïve'");
    }

    /// The real test of quoting: a shell gives back exactly the original string.
    #[cfg(unix)]
    #[test]
    fn quoted_words_survive_a_real_shell() {
        let cases = [
            "",
            "plain",
            "two words",
            "it's",
            "''",
            "\"double\"",
            "$HOME and ${PATH} and $(id) and `id`",
            "line1\nline2\n",
            "tab\there",
            "back\\slash\\",
            "glob * ? [a]",
            "~user",
            "#not a comment",
            "semi;colon && pipe | amp &",
            "naïve ünïcode",
        ];
        for case in cases {
            let script = format!("printf '%s' {}", shell_quote(case));
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .env("HOME", "/should/not/expand")
                .output()
                .expect("sh runs");
            assert!(out.status.success(), "{script}");
            assert_eq!(String::from_utf8(out.stdout).unwrap(), case, "{script}");
        }
    }

    #[test]
    fn sbatch_words_are_double_quoted_with_escapes() {
        assert_eq!(sbatch_quote("rask-worker"), "rask-worker");
        assert_eq!(sbatch_quote("my job"), "\"my job\"");
        assert_eq!(sbatch_quote("it's"), "\"it's\"");
        assert_eq!(sbatch_quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(sbatch_quote("a\\b"), "\"a\\\\b\"");
        assert_eq!(sbatch_quote("no#comment"), "\"no\\#comment\"");
        assert_eq!(sbatch_quote(""), "\"\"");
    }
}
