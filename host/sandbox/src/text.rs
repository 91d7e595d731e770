//! Bounding (and, for logs, escaping) the text a plugin hands to the host.
//!
//! Everything a plugin says leaves the sandbox through one private function, [`bound`]: the
//! public [`bounded_text`] for call results (messages and error texts) and [`loggable_text`]
//! for log records. Both cut at a char boundary and say how much they cut.

/// Longest plugin-supplied text a call result carries, in bytes: the `done` and `in-progress`
/// messages, a hook error's text, a `validate-config` rejection and the guest's part of a
/// trap message. Longer texts are cut by [`bounded_text`], which says so in the text.
///
/// These texts end up in Scaler status fields, Kubernetes events and logs, where a few lines
/// are what a person reads.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `text` cut to at most `max` bytes: unchanged when it fits; otherwise the longest prefix
/// ending at a char boundary, followed by a note with the number of bytes cut, e.g.
/// `"drained 3 workers: aaa… [cut: 10485000 bytes more]"`, the note included in the `max`
/// bytes (the result is longer than `max` only when `max` is too short for the note itself,
/// about 30 bytes; then it is the note alone).
///
/// Control characters are kept: use [`loggable_text`] for text that goes into a log record.
pub fn bounded_text(text: &str, max: usize) -> String {
    bound(text, max, false)
}

/// `text` made safe for one log record: control characters escaped, then bounded to `max`
/// bytes like [`bounded_text`] (the note counts the bytes of `text` not shown).
///
/// Escaped are newline (`\n`), carriage return (`\r`), tab (`\t`), every other C0 and C1
/// control character and DEL, including ESC (as `\u{1b}`), the Unicode line and paragraph
/// separators (`\u{2028}`, `\u{2029}`) and the bidirectional-text controls (`\u{202e}`, ...):
/// so one plugin log call, error or stderr text can neither start a second log record
/// nor repaint a terminal. Backslashes are not escaped: a literal `\n` in the text and an
/// escaped newline look alike, but neither starts a new line.
pub fn loggable_text(text: &str, max: usize) -> String {
    bound(text, max, true)
}

/// The one implementation of [`bounded_text`] and [`loggable_text`]. Looks at no more of
/// `text` than fits in `max` bytes of output, so a 10 MiB text costs no more than a 1 KiB one.
fn bound(text: &str, max: usize, escape: bool) -> String {
    if !escape && text.len() <= max {
        return text.to_owned();
    }
    // Keep room for the longest note this text can need (the count of cut bytes is at most
    // text.len()), so that prefix + note never exceed max.
    let room = max.saturating_sub(cut_note(text.len()).len());
    let mut out = String::with_capacity(max.min(text.len()).saturating_add(16));
    // Where to cut should the whole text not fit: (byte index in text, length of out).
    let mut cut_at: Option<(usize, usize)> = None;
    for (index, c) in text.char_indices() {
        let before = out.len();
        push_char(&mut out, c, escape);
        if cut_at.is_none() && out.len() > room {
            cut_at = Some((index, before));
        }
        if out.len() > max {
            // `cut_at` is set: room <= max < out.len().
            let (index, len) = cut_at.unwrap_or((index, before));
            out.truncate(len);
            out.push_str(&cut_note(text.len() - index));
            return out;
        }
    }
    out
}

/// The note appended to a cut text.
fn cut_note(cut_bytes: usize) -> String {
    format!("… [cut: {cut_bytes} bytes more]")
}

/// Append `c`, escaped if `escape` and it could break a log line or a terminal.
fn push_char(out: &mut String, c: char, escape: bool) {
    use std::fmt::Write as _;
    if !escape || !needs_escape(c) {
        out.push(c);
        return;
    }
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        // Writing to a String cannot fail.
        _ => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
}

/// C0 and C1 controls and DEL (`char::is_control`), the line and paragraph separators, and
/// the bidirectional-text formatting characters.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::{MAX_MESSAGE_BYTES, bounded_text, loggable_text};

    #[test]
    fn bounded_text_table() {
        // (text, max, expected)
        let cases: &[(&str, usize, &str)] = &[
            ("", 10, ""),
            ("short", 10, "short"),
            ("exactly 10", 10, "exactly 10"),
            // Control characters stay in results.
            ("two\nlines", 64, "two\nlines"),
            // 40 bytes, max 39: the note takes 24 bytes ("… [cut: NN bytes more]" with a
            // two-digit count), so 15 bytes of text stay and 25 are cut.
            (
                "0123456789abcdefghijklmnopqrstuvwxyzABCD",
                39,
                "0123456789abcde… [cut: 25 bytes more]",
            ),
            // '€' is 3 bytes: the cut never splits one (14 bytes of room hold 4 of them).
            ("€€€€€€€€€€€€€€€€€€€€", 38, "€€€€… [cut: 48 bytes more]"),
            // A max shorter than the note: the note alone.
            ("far too long for this", 5, "… [cut: 21 bytes more]"),
        ];
        for (text, max, expected) in cases {
            let got = bounded_text(text, *max);
            assert_eq!(&got, expected, "bounded_text({text:?}, {max})");
        }
    }

    #[test]
    fn bounded_text_never_exceeds_max_and_counts_what_it_cut() {
        let text = "ab€d\u{1F600}e".repeat(400); // 1-, 3- and 4-byte chars
        for max in 30..text.len() + 2 {
            let got = bounded_text(&text, max);
            assert!(got.len() <= max, "max {max}: {} bytes", got.len());
            if text.len() <= max {
                assert_eq!(got, text);
                continue;
            }
            let (kept, note) = got.split_once("… [cut: ").expect("a note");
            let cut: usize = note
                .strip_suffix(" bytes more]")
                .and_then(|n| n.parse().ok())
                .expect("a count");
            assert!(text.starts_with(kept), "max {max}");
            assert_eq!(kept.len() + cut, text.len(), "max {max}");
        }
    }

    #[test]
    fn a_huge_text_is_cut_to_the_message_limit() {
        let huge = "x".repeat(10 * 1024 * 1024);
        let got = bounded_text(&huge, MAX_MESSAGE_BYTES);
        assert!(got.len() <= MAX_MESSAGE_BYTES, "{}", got.len());
        let cut = huge.len() - got.find('…').expect("a note");
        assert!(
            got.ends_with(&format!("… [cut: {cut} bytes more]")),
            "{got}"
        );
    }

    #[test]
    fn loggable_text_table() {
        let cases: &[(&str, usize, &str)] = &[
            ("plain line", 64, "plain line"),
            (
                "ok\n2026-01-01T00:00:00Z  INFO scaler=other forged",
                128,
                "ok\\n2026-01-01T00:00:00Z  INFO scaler=other forged",
            ),
            ("a\rb\tc", 64, "a\\rb\\tc"),
            ("\u{1b}[2J\u{7}", 64, "\\u{1b}[2J\\u{7}"),
            ("nul\0del\u{7f}", 64, "nul\\u{0}del\\u{7f}"),
            // C1 controls (NEL), line/paragraph separators, a bidi override.
            (
                "\u{85}|\u{2028}|\u{2029}|\u{202e}",
                64,
                "\\u{85}|\\u{2028}|\\u{2029}|\\u{202e}",
            ),
            // Other non-ASCII text is kept as it is.
            ("grüße, 世界 \u{1F600}", 64, "grüße, 世界 \u{1F600}"),
            // Backslashes are not escaped.
            ("C:\\path", 64, "C:\\path"),
            // The limit applies to the escaped text, an escape is never split, and the
            // note counts the bytes of the original text not shown. "abc" and 20 newlines
            // escape to 43 bytes; with max 40 the note takes 24, the 16 bytes of room hold
            // "abc" and six "\n", and 14 of the 23 input bytes are cut.
            (
                "abc\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n",
                40,
                "abc\\n\\n\\n\\n\\n\\n… [cut: 14 bytes more]",
            ),
        ];
        for (text, max, expected) in cases {
            let got = loggable_text(text, *max);
            assert_eq!(&got, expected, "loggable_text({text:?}, {max})");
            assert!(!got.contains(['\n', '\r']), "{got:?}");
        }
    }

    #[test]
    fn loggable_text_never_exceeds_max() {
        let text = "line\n\u{1b}[31m€\u{85}".repeat(300);
        for max in 30..600 {
            let got = loggable_text(&text, max);
            assert!(got.len() <= max, "max {max}: {} bytes", got.len());
            assert!(!got.chars().any(char::is_control), "{got:?}");
        }
    }
}
