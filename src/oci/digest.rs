//! Content digests (`sha256:<64 hex>`), the only algorithm distribution stores.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A validated `sha256:` digest. The hex part is always 64 lowercase hex characters, so it is safe to use
/// in storage paths.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest `{0}` is not of the form algorithm:hex")]
    Malformed(String),
    #[error("digest algorithm `{0}` is not supported (only sha256)")]
    UnsupportedAlgorithm(String),
    #[error("digest `{0}` does not have 64 lowercase hex characters")]
    BadHex(String),
}

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(data).as_slice())
    }

    /// Wraps a finished SHA-256 output.
    pub fn from_sha256(out: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(out),
        }
    }

    /// The 64 hex characters.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let Some((algo, hex)) = s.split_once(':') else {
            return Err(DigestError::Malformed(s.to_owned()));
        };
        // The OCI grammar: algorithm-component ([a-z0-9]+) joined by [+._-], encoded [a-zA-Z0-9=_-]+.
        let algo_ok = !algo.is_empty()
            && algo.split(['+', '.', '_', '-']).all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        let enc_ok = !hex.is_empty()
            && hex
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-');
        if !algo_ok || !enc_ok {
            return Err(DigestError::Malformed(s.to_owned()));
        }
        if algo != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm(algo.to_owned()));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::BadHex(s.to_owned()));
        }
        Ok(Digest {
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, &str>) {
        let got = input
            .parse::<Digest>()
            .map(|d| d.to_string())
            .map_err(|e| e.to_string());
        match expected {
            Ok(want) => assert_eq!(got.as_deref(), Ok(want), "{input}"),
            Err(fragment) => {
                let err = got.expect_err(input);
                assert!(err.contains(fragment), "{input}: {err}");
            }
        }
    }

    #[test]
    fn parse() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        check(&format!("sha256:{hex}"), Ok(&format!("sha256:{hex}")));
        check(
            &format!("sha256:{}", hex.to_uppercase()),
            Err("64 lowercase hex"),
        );
        check("sha256:abc", Err("64 lowercase hex"));
        check(&format!("sha512:{hex}{hex}"), Err("not supported"));
        check("sha256", Err("algorithm:hex"));
        check(":abc", Err("algorithm:hex"));
        check("sha256:../../etc", Err("algorithm:hex"));
        check("", Err("algorithm:hex"));
        assert_eq!(Digest::of(b"").hex(), hex);
    }
}
