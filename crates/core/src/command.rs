//! Commands: what a caller asked the target to do, in protocol-neutral form.

/// Which protocol path carried the command; engines fill it so policy and recordings can tell
/// a simple query from a prepared statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandSource {
    /// PostgreSQL simple query (`Q`): the text may hold several statements.
    SimpleQuery,
    /// PostgreSQL extended protocol `Parse`: a statement being prepared.
    Prepare,
    /// A COPY sub-protocol or function call that carries no new statement text.
    Other,
}

/// One command as seen by the decision point.
///
/// Borrowed from the engine's frame buffer so that building it allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    /// How the command arrived.
    pub source: CommandSource,
    /// The statement text exactly as the caller sent it.
    pub text: &'a str,
    /// The prepared-statement name, when the protocol names one (empty = unnamed).
    pub statement: Option<&'a str>,
}

impl Command<'_> {
    /// The first keyword of the text, uppercased: a cheap verb for logs until real analysis
    /// (which lives in the policy) classifies the statement.
    pub fn leading_keyword(&self) -> String {
        let trimmed = skip_comments(self.text);
        trimmed
            .split(|c: char| !c.is_ascii_alphabetic())
            .next()
            .unwrap_or("")
            .to_ascii_uppercase()
    }
}

fn skip_comments(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r);
        } else {
            return s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_keyword_skips_comments_and_case() {
        let cmd = Command {
            source: CommandSource::SimpleQuery,
            text: "  -- hi\n/* x */ sElect 1",
            statement: None,
        };
        assert_eq!(cmd.leading_keyword(), "SELECT");
    }
}
