//! Bearer tokens of the APIs' mutating routes, the alternative to a client certificate: the
//! token an `Authorization` header presents (scheme matched without regard to case) and its
//! comparison with the expected one in constant time (of SHA-256 digests, so neither the
//! content nor the length leaks through timing).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The token of an `Authorization: Bearer TOKEN` header value; None for another scheme or a
/// malformed value.
pub fn presented(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|token| !token.is_empty())
}

/// Whether `presented` is `expected`; an empty expected token matches nothing.
pub fn matches(presented: &[u8], expected: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let a = Sha256::digest(presented);
    let b = Sha256::digest(expected);
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_tokens() {
        assert!(matches(b"secret", b"secret"));
        assert!(!matches(b"secret2", b"secret"));
        assert!(!matches(b"secre", b"secret"));
        assert!(!matches(b"", b""));
    }

    #[test]
    fn reads_the_bearer_scheme_only() {
        assert_eq!(presented("Bearer abc"), Some("abc"));
        assert_eq!(presented("bearer  abc "), Some("abc"));
        assert_eq!(presented("Basic abc"), None);
        assert_eq!(presented("Bearer"), None);
        assert_eq!(presented("Bearer "), None);
    }
}
