//! Bounded echo: the one way a value that came from a request goes into an error message or a log
//! line.
//!
//! A request field is attacker-controlled: echoed whole, a 1 MB field makes a 1 MB error message
//! (which no longer fits in a gRPC trailer: the client gets `RESOURCE_EXHAUSTED` instead of the
//! error) or a 1 MB log line. [`echo`] quotes the value like `{:?}` (control characters escaped),
//! keeps at most [`ECHO_MAX_CHARS`] characters of it, and marks the cut with the number of
//! characters left out: `"AAAAAAAA…"(+999936 chars)`.

use std::fmt;

/// The most characters of a request value an error message or log line shows.
pub const ECHO_MAX_CHARS: usize = 64;

/// A request value, quoted and capped for an error message or a log line.
#[derive(Clone, Copy)]
pub struct Echo<'a>(&'a str);

/// Quotes and caps `value` (see the module documentation): `format!("bad id {}", echo(id))`.
pub fn echo(value: &str) -> Echo<'_> {
    Echo(value)
}

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(ECHO_MAX_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => {
                let rest = self.0[cut..].chars().count();
                let head = &self.0[..cut];
                let quoted = format!("{head:?}");
                // `"head"` → `"head…"(+N chars)`
                write!(f, "{}…\"(+{rest} chars)", &quoted[..quoted.len() - 1])
            }
        }
    }
}

impl fmt::Debug for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(echo("CNY").to_string(), "\"CNY\"");
        assert_eq!(echo("a\nb").to_string(), "\"a\\nb\"");
    }

    #[test]
    fn long_values_are_cut_and_the_cut_is_marked() {
        let big = "X".repeat(1_000_000);
        let shown = echo(&big).to_string();
        assert!(shown.len() < 100, "{shown}");
        assert_eq!(
            shown,
            format!(
                "\"{}…\"(+{} chars)",
                "X".repeat(ECHO_MAX_CHARS),
                1_000_000 - ECHO_MAX_CHARS
            )
        );
        // Multi-byte characters are never split.
        let wide = "退".repeat(100);
        assert!(echo(&wide).to_string().contains("(+36 chars)"));
    }
}
