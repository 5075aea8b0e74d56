//! Who may ask what: bearer tokens with roles, kept in a file that holds only their SHA-256
//! hashes.
//!
//! The token file is text, one token per line, `#` comments and blank lines ignored:
//!
//! ```text
//! # role    sha256 of the token (hex)                                         name
//! viewer    3b7c…(64 hex digits)                                              grafana
//! ```
//!
//! Roles are ordered, each allowed what the one before it is:
//! - `viewer`: aggregate reports (`/v1/funnel`, `/v1/attribution`, …) and the chain head;
//! - `auditor`: adds lead timelines, explain and verify;
//! - `admin`: adds `/metrics` and operations.
//!
//! `/health` and the dashboard page itself (no data in it) are open, so that probes and
//! browsers reach them; the page asks for a token and sends it with every request.
//! Tokens are 256 random bits, so one SHA-256 per request is enough to keep the file useless
//! to a reader (no slow hash needed: nothing to guess).

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest, Sha256};

/// What a token may do; ordered from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Auditor,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Auditor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// [`Role::parse`] with an error for people (a command-line argument).
    pub fn parse_arg(text: &str) -> Result<Role, String> {
        Role::parse(text).ok_or_else(|| format!("`{text}` is not one of viewer, auditor, admin"))
    }

    /// The least role a route (as the router declares it) needs; `None` when it is open to
    /// anyone. A route not named here needs `admin`, so a new one is closed until placed.
    pub fn needed_for(route: &str) -> Option<Role> {
        match route {
            "/" | "/health" | "/openapi.json" => None,
            "/v1/{report}" | "/v1/audit/head" => Some(Role::Viewer),
            "/v1/leads/{lead_id}" | "/v1/attribution/explain/{lead_id}" | "/v1/audit/verify" => Some(Role::Auditor),
            _ => Some(Role::Admin),
        }
    }
}

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} line {line}: {reason}")]
    Line { path: String, line: usize, reason: String },
    #[error("{0} holds no token")]
    Empty(String),
    #[error("a token's name must be one non-empty line")]
    Name,
}

/// One token as the file names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub role: Role,
    pub name: String,
}

/// The tokens a service accepts, by the hash of each.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Holder>,
}

/// SHA-256 of a token, as the file holds it.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The file line for a token: `role hash name`.
pub fn token_line(token: &str, role: Role, name: &str) -> String {
    format!("{} {} {}", role.as_str(), hex(&token_hash(token)), name)
}

/// A new token for `role` held by `name`: 256 random bits, its line appended to the token file
/// at `path` (created with a comment if absent). The token itself is returned, never stored.
pub fn add_token(path: &Path, role: Role, name: &str) -> Result<String, AccessError> {
    let shown = path.display().to_string();
    let name = name.trim();
    if name.is_empty() || name.contains('\n') {
        return Err(AccessError::Name);
    }
    let mut random = [0u8; 32];
    let read = |source| AccessError::Read {
        path: "/dev/urandom".into(),
        source,
    };
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").map_err(read)?, &mut random).map_err(read)?;
    let token = format!("fl_{}", hex(&random));
    let mut text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "# funnel-ledger HTTP tokens: role, SHA-256 of the token, name. Add with `funnel token`.\n".to_owned()
        }
        Err(source) => return Err(AccessError::Read { path: shown, source }),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&token_line(&token, role, name));
    text.push('\n');
    Tokens::parse(&text).map_err(|(line, reason)| AccessError::Line {
        path: shown.clone(),
        line,
        reason,
    })?;
    std::fs::write(path, text).map_err(|source| AccessError::Read { path: shown, source })?;
    Ok(token)
}

impl Tokens {
    /// Reads a token file; a line that is not `role hash [name]` refuses the whole file.
    pub fn load(path: &Path) -> Result<Tokens, AccessError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::Read {
            path: shown.clone(),
            source,
        })?;
        let tokens = Tokens::parse(&text).map_err(|(line, reason)| AccessError::Line {
            path: shown.clone(),
            line,
            reason,
        })?;
        if tokens.by_hash.is_empty() {
            return Err(AccessError::Empty(shown));
        }
        Ok(tokens)
    }

    /// Parses a token file's text; an error names the line (from 1) and what is wrong.
    pub fn parse(text: &str) -> Result<Tokens, (usize, String)> {
        let mut by_hash = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(role), Some(hash)) = (words.next(), words.next()) else {
                return Err((i + 1, "expected `role sha256-hex [name]`".into()));
            };
            let role = Role::parse(role)
                .ok_or_else(|| (i + 1, format!("role `{role}` is not one of viewer, auditor, admin")))?;
            let hash = unhex(hash).ok_or_else(|| (i + 1, "the hash is not 64 hex digits".to_owned()))?;
            let name = words.collect::<Vec<_>>().join(" ");
            if by_hash.insert(hash, Holder { role, name }).is_some() {
                return Err((i + 1, "the same token is listed twice".into()));
            }
        }
        Ok(Tokens { by_hash })
    }

    /// Who holds `token`, if anyone.
    pub fn holder(&self, token: &str) -> Option<&Holder> {
        self.by_hash.get(&token_hash(token))
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_known_by_its_hash_only() {
        let text = format!(
            "# comment\n\n{}\n{}\n",
            token_line("secret-a", Role::Viewer, "grafana"),
            token_line("secret-b", Role::Admin, "ops team")
        );
        assert!(!text.contains("secret"), "the file holds no token");
        let tokens = Tokens::parse(&text).expect("parse");
        assert_eq!(
            tokens.holder("secret-b"),
            Some(&Holder {
                role: Role::Admin,
                name: "ops team".into()
            })
        );
        assert_eq!(tokens.holder("secret-a").map(|h| h.role), Some(Role::Viewer));
        assert_eq!(tokens.holder("secret-c"), None);
        assert_eq!(tokens.holder(""), None);
    }

    #[test]
    fn a_bad_line_names_itself() {
        let good = token_line("x", Role::Auditor, "a");
        assert_eq!(Tokens::parse(&format!("{good}\nroot abc")).err().map(|e| e.0), Some(2));
        assert_eq!(Tokens::parse("viewer 12zz").err().map(|e| e.0), Some(1));
        assert_eq!(Tokens::parse("viewer").err().map(|e| e.0), Some(1));
        assert_eq!(Tokens::parse(&format!("{good}\n{good}")).err().map(|e| e.0), Some(2));
    }

    #[test]
    fn roles_are_ordered_and_paths_need_them() {
        assert!(Role::Viewer < Role::Auditor && Role::Auditor < Role::Admin);
        assert_eq!(Role::needed_for("/health"), None);
        assert_eq!(Role::needed_for("/"), None);
        assert_eq!(Role::needed_for("/v1/{report}"), Some(Role::Viewer));
        assert_eq!(Role::needed_for("/v1/audit/head"), Some(Role::Viewer));
        assert_eq!(Role::needed_for("/v1/leads/{lead_id}"), Some(Role::Auditor));
        assert_eq!(
            Role::needed_for("/v1/attribution/explain/{lead_id}"),
            Some(Role::Auditor)
        );
        assert_eq!(Role::needed_for("/v1/audit/verify"), Some(Role::Auditor));
        assert_eq!(Role::needed_for("/metrics"), Some(Role::Admin));
        assert_eq!(Role::needed_for("/v1/some/new/route"), Some(Role::Admin));
    }
}
