//! A value quoted back in an error message, cut short: payloads can be megabytes, and an error names what was wrong
//! without flooding a log line.

use std::fmt;

/// Longest value we quote back in an error message; payloads can be megabytes.
pub(crate) const QUOTE_LIMIT: usize = 64;

/// A value quoted back to the caller, cut short so that a huge payload never floods a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quoted(String);

impl Quoted {
    pub fn new(value: &str) -> Self {
        let mut cut: String = value.chars().take(QUOTE_LIMIT).collect();
        if cut.len() < value.len() {
            cut.push_str("...");
        }
        Self(cut)
    }

    /// The cut text itself, without quotes.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_cut_short() {
        let q = Quoted::new(&"x".repeat(500));
        assert!(q.to_string().len() < QUOTE_LIMIT + 10);
    }
}
