//! Keeping credentials out of logs, `status` output and error messages.
//!
//! Store and artifact URLs may carry a password (`postgres://user:secret@host/db`);
//! anything that shows text to a user or writes it to a log passes it through
//! [`redact_url`] first. The function works on free text, not on one URL: an error
//! message from a driver can quote the URL anywhere, more than once, or as libpq
//! keywords (`host=db password=secret`).

/// What replaces a secret.
pub const MASK: &str = "***";

/// Query parameters and `key=value` keywords whose value is a secret (compared
/// without regard to case).
const SECRET_KEYS: &[&str] = &[
    "password",
    "sslpassword",
    "passwd",
    "pwd",
    "secret",
    "token",
    "x-amz-signature",
    "x-amz-security-token",
];

/// Replaces every password in `text` with `***`: the password of each
/// `scheme://user:password@host` URL (raw or percent-encoded), and the value of every
/// `password=` (and similar) query parameter or libpq keyword. Everything else,
/// user names included, is kept, so the result still says which server was meant.
///
/// ```
/// use sweeper::redact::redact_url;
/// assert_eq!(
///     redact_url("cannot reach postgres://sweeper:hunter2@db:5432/sweeps"),
///     "cannot reach postgres://sweeper:***@db:5432/sweeps"
/// );
/// ```
pub fn redact_url(text: &str) -> String {
    redact_secret_keys(&redact_userinfo(text))
}

/// Masks the password between `user:` and `@` of every URL authority.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = rest.find("://") {
        let authority_start = found + 3;
        out.push_str(&rest[..authority_start]);
        let after = &rest[authority_start..];
        // The authority ends where the path, query or fragment starts, or where the
        // URL itself ends inside a sentence (space, double quote, bracket). Not at a
        // single quote: URL encoders leave `'` in passwords as it is.
        let authority_len = after
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '<' | '>' | '`') || c.is_whitespace()
            })
            .unwrap_or(after.len());
        let authority = &after[..authority_len];
        // A raw '@' inside a password is not valid, but drivers accept it; the last
        // '@' is the one that separates the user information from the host.
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) if colon + 1 < userinfo.len() => {
                        out.push_str(&userinfo[..=colon]);
                        out.push_str(MASK);
                    }
                    _ => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[authority_len..];
    }
    out.push_str(rest);
    out
}

/// Masks the value of every `key=value` whose key is a secret, whether it is a URL
/// query parameter (`?password=…&`) or a libpq keyword (`password=… host=…`).
fn redact_secret_keys(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    // Everything before `copied` is already in `out`.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'=' {
            i += 1;
            continue;
        }
        let key_start = text[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .map_or(0, |p| p + 1);
        let key = &text[key_start..i];
        if !SECRET_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            i += 1;
            continue;
        }
        let value_start = i + 1;
        let value_end = secret_value_end(text, value_start);
        if value_end > value_start && &text[value_start..value_end] != MASK {
            out.push_str(&text[copied..value_start]);
            out.push_str(MASK);
            copied = value_end;
        }
        i = value_end.max(i + 1);
    }
    out.push_str(&text[copied..]);
    out
}

/// Where the value that starts at `start` ends: at the closing quote of a quoted
/// libpq value, else at the next separator.
fn secret_value_end(text: &str, start: usize) -> usize {
    let value = &text[start..];
    if let Some(quote) = value.chars().next().filter(|c| *c == '\'' || *c == '"') {
        // libpq escapes a quote inside a quoted value with a backslash.
        let mut escaped = false;
        for (offset, c) in value.char_indices().skip(1) {
            match c {
                '\\' if !escaped => escaped = true,
                c if c == quote && !escaped => return start + offset + c.len_utf8(),
                _ => escaped = false,
            }
        }
        return text.len();
    }
    let len = value
        .find(|c: char| {
            matches!(c, '&' | ';' | '#' | '"' | '\'' | ',' | ')' | '>') || c.is_whitespace()
        })
        .unwrap_or(value.len());
    start + len
}

/// A writer for log lines that masks passwords: it gathers what one log event
/// writes and, when dropped (the tracing formatter takes one writer per event),
/// writes it to standard error through [`redact_url`]. The command line's log goes
/// through it, so no message, whatever quotes a URL, prints a password.
#[derive(Debug, Default)]
pub struct RedactedStderr {
    buffer: Vec<u8>,
}

/// A [`RedactedStderr`]; usable as a tracing `MakeWriter`.
pub fn redacted_stderr() -> RedactedStderr {
    RedactedStderr::default()
}

impl std::io::Write for RedactedStderr {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let text = redact_url(&String::from_utf8_lossy(&self.buffer));
        self.buffer.clear();
        let mut stderr = std::io::stderr().lock();
        stderr.write_all(text.as_bytes())?;
        stderr.flush()
    }
}

impl Drop for RedactedStderr {
    fn drop(&mut self) {
        // Nowhere to report a failed write to standard error.
        let _ = std::io::Write::flush(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_the_password_and_keeps_user_host_and_path() {
        assert_eq!(
            redact_url("postgres://sweeper:s3cret@db.example.org:5432/sweeps?sslmode=require"),
            "postgres://sweeper:***@db.example.org:5432/sweeps?sslmode=require"
        );
    }

    #[test]
    fn leaves_urls_without_a_password_alone() {
        for text in [
            "postgres://sweeper@db/sweeps",
            "sqlite://sweeper.db",
            "s3://bucket/prefix",
            "http://[::1]:9000/bucket",
            "no url here: a=b, user:pass without scheme",
        ] {
            assert_eq!(redact_url(text), text);
        }
    }

    #[test]
    fn masks_every_url_in_an_error_message() {
        let msg =
            "connect to postgres://a:one@h1/db failed; fallback postgresql://b:two@h2:6543/db \
                   also failed (\"mysql://c:three@h3\")";
        let red = redact_url(msg);
        for secret in ["one", "two", "three"] {
            assert!(
                !red.contains(&format!(":{secret}@")),
                "{secret} leaked: {red}"
            );
        }
        assert_eq!(
            red,
            "connect to postgres://a:***@h1/db failed; fallback postgresql://b:***@h2:6543/db \
             also failed (\"mysql://c:***@h3\")"
        );
    }

    #[test]
    fn masks_percent_encoded_passwords_and_raw_at_signs() {
        assert_eq!(
            redact_url("postgres://u:p%40ss%2Fw%3Ard@host/db"),
            "postgres://u:***@host/db"
        );
        // Invalid by the RFC, accepted by drivers: the last '@' ends the password.
        assert_eq!(
            redact_url("postgres://u:p@ss@host/db"),
            "postgres://u:***@host/db"
        );
        // A colon inside the password stays inside the mask.
        assert_eq!(redact_url("redis://u:a:b:c@host"), "redis://u:***@host");
    }

    #[test]
    fn masks_password_query_parameters() {
        assert_eq!(
            redact_url("postgres://db/sweeps?user=me&password=hunter2&sslmode=disable"),
            "postgres://db/sweeps?user=me&password=***&sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://db/sweeps?PASSWORD=x%20y"),
            "postgres://db/sweeps?PASSWORD=***"
        );
        assert_eq!(
            redact_url("https://s3/b/k?X-Amz-Signature=abc123&X-Amz-Date=1"),
            "https://s3/b/k?X-Amz-Signature=***&X-Amz-Date=1"
        );
    }

    #[test]
    fn masks_libpq_keyword_passwords_quoted_or_not() {
        assert_eq!(
            redact_url("host=db user=me password=hunter2 dbname=sweeps"),
            "host=db user=me password=*** dbname=sweeps"
        );
        assert_eq!(
            redact_url(r"host=db password='two words \' quote' port=5432"),
            "host=db password=*** port=5432"
        );
    }

    #[test]
    fn single_quotes_inside_passwords_do_not_end_the_url() {
        assert_eq!(
            redact_url("'postgres://u:a'b@h/d'"),
            "'postgres://u:***@h/d'"
        );
        assert_eq!(redact_url("'postgres://u:pw@h'"), "'postgres://u:***@h'");
    }

    #[test]
    fn keys_that_merely_end_like_a_secret_are_kept() {
        assert_eq!(redact_url("mypassword_hint=x"), "mypassword_hint=x");
        assert_eq!(redact_url("passwordless=true"), "passwordless=true");
    }

    #[test]
    fn redaction_is_idempotent_and_keeps_unicode() {
        let once = redact_url("é postgres://ü:pässwörd@höst/d password=ß ✓");
        assert_eq!(once, "é postgres://ü:***@höst/d password=*** ✓");
        assert_eq!(redact_url(&once), once);
    }

    #[test]
    fn empty_passwords_and_trailing_schemes_do_not_panic() {
        assert_eq!(redact_url("postgres://u:@h/d"), "postgres://u:@h/d");
        assert_eq!(redact_url("ends with ://"), "ends with ://");
        assert_eq!(redact_url("password="), "password=");
        assert_eq!(redact_url("=password=x"), "=password=***");
    }
}
