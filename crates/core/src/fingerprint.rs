//! Error fingerprints: dead letters that failed "the same way" share one, so that a person sees
//! "4,210 jobs failed with the same error" instead of 4,210 rows. Two messages that differ only in
//! numbers, ids, hex strings or quoted values (`order 123 not found` / `order 456 not found`) are the
//! same error; the job's kind is part of it.

use sha2::{Digest, Sha256};

/// At most this much of a normalized message counts (a stack trace's tail adds nothing).
const MAX_NORMALIZED: usize = 500;

/// A quoted value ends on its line within this many bytes, or is no quoted value.
const MAX_QUOTED: usize = 200;

/// `message` with its variable parts replaced: runs of digits by `#`, words of 8 or more characters
/// holding both letters and digits (ids, hashes, UUID parts) by `*`, single- or double-quoted values by
/// `'…'`; whitespace runs by one space; at most [`MAX_NORMALIZED`] bytes. A quote opens a value only
/// where a word cannot go on (`couldn't ... won't` is no quoted value).
pub fn normalize(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_NORMALIZED));
    let mut rest = message.trim();
    let mut after_word = false;
    while let Some(c) = rest.chars().next() {
        if out.len() >= MAX_NORMALIZED {
            break;
        }
        if (c == '"' || c == '\'')
            && !after_word
            && let Some(end) = rest[1..]
                .find([c, '\n'])
                .filter(|&end| end <= MAX_QUOTED && rest[1 + end..].starts_with(c))
        {
            out.push_str("'…'");
            rest = &rest[end + 2..];
            after_word = false;
            continue;
        }
        after_word = c.is_alphanumeric();
        if c.is_whitespace() {
            out.push(' ');
            rest = rest.trim_start();
            continue;
        }
        if c.is_alphanumeric() {
            let end = rest
                .find(|ch: char| !(ch.is_alphanumeric() || ch == '-' || ch == '_'))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            let digits = word.chars().any(|ch| ch.is_ascii_digit());
            let letters = word.chars().any(|ch| ch.is_alphabetic());
            if digits && letters && word.len() >= 8 {
                out.push('*');
            } else if digits {
                let mut last_digit = false;
                for ch in word.chars() {
                    if ch.is_ascii_digit() {
                        if !last_digit {
                            out.push('#');
                        }
                        last_digit = true;
                    } else {
                        out.push(ch);
                        last_digit = false;
                    }
                }
            } else {
                out.push_str(word);
            }
            rest = &rest[end..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    if out.len() > MAX_NORMALIZED {
        let mut cut = MAX_NORMALIZED;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// The fingerprint of an error `message` of a job of `kind`: 16 hex digits.
pub fn of(kind: &str, message: &str) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(normalize(message).as_bytes());
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The fingerprint of a job of `kind` whose error records are stored as the JSON array `errors`: of
/// its latest error's message (of an empty one without errors, as [`crate::Job::error_fingerprint`]).
/// For a store fingerprinting the dead jobs it held before it stored fingerprints.
pub fn of_stored(kind: &str, errors: Option<&str>) -> String {
    #[derive(serde::Deserialize)]
    struct Message {
        #[serde(default)]
        message: String,
    }
    let latest = errors
        .and_then(|e| serde_json::from_str::<Vec<Message>>(e).ok())
        .and_then(|mut all| all.pop())
        .map(|m| m.message)
        .unwrap_or_default();
    of(kind, &latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_error_array_gives_its_latest_errors_fingerprint() {
        let errors = r#"[{"attempt":1,"kind":"error","message":"smtp 421","at":1},
                         {"attempt":2,"kind":"error","message":"card 42 declined","at":2}]"#;
        assert_eq!(
            of_stored("charge", Some(errors)),
            of("charge", "card 7 declined")
        );
        assert_eq!(of_stored("charge", None), of("charge", ""));
        assert_eq!(of_stored("charge", Some("[]")), of("charge", ""));
    }

    #[test]
    fn variable_parts_do_not_change_the_fingerprint() {
        assert_eq!(normalize("order 123 not found"), "order # not found");
        assert_eq!(
            of("charge", "order 123 not found"),
            of("charge", "order 98765 not found")
        );
        assert_eq!(
            of("charge", "card 4242 declined for user 'ada@example.com'"),
            of("charge", "card 1881 declined for user \"bob@example.org\"")
        );
        assert_eq!(
            normalize("job 01JAAAAAAAAAAAAAAAAAAAAAAA timed out after 30s"),
            "job * timed out after #s"
        );
        assert_eq!(
            of(
                "m",
                "lock 9f86d081884c7d65 held by 550e8400-e29b-41d4-a716-446655440000"
            ),
            of(
                "m",
                "lock 2c26b46b68ffc68f held by 6ba7b810-9dad-11d1-80b4-00c04fd430c8"
            )
        );
        assert_eq!(
            normalize("  smtp   550:\tmailbox  unavailable "),
            "smtp #: mailbox unavailable"
        );
    }

    #[test]
    fn apostrophes_in_words_are_no_quotes() {
        assert_ne!(
            of("m", "couldn't connect to db; won't retry"),
            of("m", "couldn't parse config; won't retry")
        );
        assert_eq!(normalize("don't 'x' it's"), "don't '…' it's");
        assert_ne!(
            of("m", "line 'one\nother' tail"),
            of("m", "line 'two\nthing' tail"),
            "a quote does not run across lines"
        );
    }

    #[test]
    fn different_errors_and_kinds_differ() {
        assert_ne!(
            of("charge", "card declined"),
            of("charge", "insufficient funds")
        );
        assert_ne!(of("charge", "card declined"), of("refund", "card declined"));
        assert_eq!(of("k", "x").len(), 16);
    }

    #[test]
    fn odd_input_is_handled() {
        assert_eq!(normalize(""), "");
        assert_eq!(normalize("unterminated 'quote 12"), "unterminated 'quote #");
        assert_eq!(normalize("ünïcödé 42 ✓"), "ünïcödé # ✓");
        assert!(normalize(&"x ".repeat(10_000)).len() <= MAX_NORMALIZED);
        assert!(normalize(&"é".repeat(10_000)).len() <= MAX_NORMALIZED);
        assert_eq!(normalize("'"), "'");
        assert_eq!(normalize("\"\""), "'…'");
    }
}
