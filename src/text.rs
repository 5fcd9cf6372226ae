//! Text from other people: from the network (player names, game titles, error reasons,
//! the server's version) and from files (regions files, openMSX's log). Two rules, one
//! place:
//!
//! - [`printable`] is the one filter between such text and a terminal or log: control
//!   characters (escape sequences can retitle, recolour or clear a terminal) and the
//!   invisible bidirectional controls (which can make text read backwards) are shown
//!   escaped. The command line passes every line it prints through it (`cli/`).
//! - [`check_name`] is what a name or title must be to be accepted at all: not empty,
//!   not too long, none of those characters. The server refuses player names that fail
//!   it, the catalogue refuses game names and titles.

/// Whether `c` must not reach a terminal as it is: a control character (C0, DEL, C1)
/// or an invisible bidirectional control (U+061C, U+200E-U+200F, U+202A-U+202E,
/// U+2066-U+2069), which reorders the text around it.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` made safe for a terminal: every character [`is_hidden`] rejects is shown as
/// its Rust escape (`\u{1b}`, `\n`, `\t`). Idempotent: the result has none left.
pub fn printable(text: &str) -> String {
    if !text.chars().any(is_hidden) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Checks a name or title that others will see: `what` names it in the message
/// ("player name", "title:"). Not blank, at most `max` bytes, no control or
/// bidirectional characters. The message is lowercase and quotes the text only through
/// [`printable`].
pub fn check_name(what: &str, text: &str, max: usize) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err(format!("{what} is empty"));
    }
    if text.len() > max {
        return Err(format!(
            "{what} is {} bytes long, the limit is {max}",
            text.len()
        ));
    }
    if text.chars().any(is_hidden) {
        return Err(format!(
            "{what} '{}' contains control characters",
            printable(text)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_text_has_no_control_characters() {
        assert_eq!(printable("ann\u{1b}[2J\n"), "ann\\u{1b}[2J\\n");
        assert_eq!(printable("Émile 🎮"), "Émile 🎮");
        assert_eq!(printable("\u{9b}31m"), "\\u{9b}31m", "C1 CSI");
        assert_eq!(printable("a\u{202e}gpj.exe"), "a\\u{202e}gpj.exe");
        assert_eq!(printable("\u{7f}\u{0}"), "\\u{7f}\\u{0}");
        let once = printable("\u{1b}]0;title\u{7}");
        assert_eq!(printable(&once), once, "idempotent");
        assert!(!once.chars().any(is_hidden));
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name("player name", "Ann B.", 64), Ok(()));
        assert_eq!(check_name("player name", "Émile 🎮", 64), Ok(()));
        assert_eq!(
            check_name("player name", " \t", 64).unwrap_err(),
            "player name is empty"
        );
        assert_eq!(
            check_name("player name", &"x".repeat(65), 64).unwrap_err(),
            "player name is 65 bytes long, the limit is 64"
        );
        let e = check_name("player name", "ann\u{1b}[2J", 64).unwrap_err();
        assert_eq!(e, "player name 'ann\\u{1b}[2J' contains control characters");
        assert!(!e.contains('\u{1b}'));
        assert!(check_name("title:", "a\u{2066}b", 64).is_err());
    }
}
