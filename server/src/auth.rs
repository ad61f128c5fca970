//! Authentication: which [`Role`] a `HELLO` is granted.
//!
//! Tokens are stored as SHA-256 digests only. A presented token is hashed and compared
//! with every configured digest in constant time (no early exit, every digest visited),
//! so the time taken says nothing about how much of a digest matched or which one did.
//!
//! Policy:
//! - tokens configured: the token must match one; it grants that token's role;
//! - no tokens configured: loopback clients get `admin`; remote clients are refused
//!   unless `auth.allow_remote_without_token`, which grants them `admin` as well.

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use tallydb_protocol::Role;

use crate::config::{AuthConfig, TokenConfig};

/// SHA-256 of a token.
pub fn hash_token(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Lower-case hex of bytes (for `tallyd hash-token`).
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Compares two digests in time independent of their contents.
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    // Keep the optimizer from turning the loop into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// Why a `HELLO` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Tokens are configured and none was presented.
    #[error("this server requires a token")]
    TokenRequired,
    /// The token matches no configured token.
    #[error("the token was refused")]
    BadToken,
    /// No tokens are configured and the client is not on loopback.
    #[error("remote clients are refused: this server has no tokens configured and auth.allow_remote_without_token is false")]
    RemoteRefused,
}

/// What a successful `HELLO` was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The role.
    pub role: Role,
    /// The matching token's name, for logs (`None` without tokens).
    pub token_name: Option<String>,
}

/// Decides roles from the configured tokens.
#[derive(Debug, Clone)]
pub struct Authenticator {
    tokens: Vec<TokenConfig>,
    allow_remote_without_token: bool,
}

impl Authenticator {
    /// An authenticator for this configuration.
    pub fn new(config: &AuthConfig) -> Self {
        Self {
            tokens: config.tokens.clone(),
            allow_remote_without_token: config.allow_remote_without_token,
        }
    }

    /// The role granted to a client at `peer` presenting `token` (possibly empty).
    pub fn authenticate(&self, peer: IpAddr, token: &[u8]) -> Result<Grant, AuthError> {
        if self.tokens.is_empty() {
            let loopback = peer.is_loopback()
                || matches!(peer, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()));
            return if loopback || self.allow_remote_without_token {
                Ok(Grant {
                    role: Role::Admin,
                    token_name: None,
                })
            } else {
                Err(AuthError::RemoteRefused)
            };
        }
        if token.is_empty() {
            return Err(AuthError::TokenRequired);
        }
        let digest = hash_token(token);
        let mut found: Option<&TokenConfig> = None;
        for t in &self.tokens {
            // Visit every token whatever matched before; remember the first match.
            let eq = constant_time_eq(&digest, &t.sha256);
            if eq && found.is_none() {
                found = Some(t);
            }
        }
        found
            .map(|t| Grant {
                role: t.role,
                token_name: Some(t.name.clone()),
            })
            .ok_or(AuthError::BadToken)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn auth(tokens: &[(&str, Role, &[u8])], remote: bool) -> Authenticator {
        Authenticator::new(&AuthConfig {
            tokens: tokens
                .iter()
                .map(|(name, role, t)| TokenConfig {
                    name: name.to_string(),
                    role: *role,
                    sha256: hash_token(t),
                })
                .collect(),
            allow_remote_without_token: remote,
        })
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const REMOTE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));

    #[test]
    fn hex_of_sha256_matches_a_known_vector() {
        assert_eq!(
            to_hex(&hash_token(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn compare_is_exact() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] ^= 1;
        assert!(!constant_time_eq(&a, &b));
        b = a;
        b[0] ^= 0x80;
        assert!(!constant_time_eq(&a, &b));
    }

    #[test]
    fn without_tokens_loopback_is_admin_and_remote_is_refused() {
        let a = auth(&[], false);
        assert_eq!(a.authenticate(LOCAL, b"").unwrap().role, Role::Admin);
        assert_eq!(
            a.authenticate("::1".parse().unwrap(), b"").unwrap().role,
            Role::Admin
        );
        assert_eq!(a.authenticate(REMOTE, b""), Err(AuthError::RemoteRefused));
        let a = auth(&[], true);
        assert_eq!(a.authenticate(REMOTE, b"").unwrap().role, Role::Admin);
    }

    #[test]
    fn tokens_grant_their_role_and_nothing_else() {
        let a = auth(
            &[
                ("r", Role::Read, b"read-me"),
                ("w", Role::Write, b"write-me"),
            ],
            false,
        );
        assert_eq!(a.authenticate(REMOTE, b"read-me").unwrap().role, Role::Read);
        let g = a.authenticate(LOCAL, b"write-me").unwrap();
        assert_eq!((g.role, g.token_name.as_deref()), (Role::Write, Some("w")));
        assert_eq!(a.authenticate(LOCAL, b""), Err(AuthError::TokenRequired));
        assert_eq!(a.authenticate(LOCAL, b"write-m"), Err(AuthError::BadToken));
    }
}
