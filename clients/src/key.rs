//! The key a client presents: `op_<key id>_<secret>`. The key id (12
//! lowercase base32 characters, 60 random bits) names the key in logs and
//! listings; the secret (32 base32 characters, 160 random bits) is shown once,
//! at creation, and only its SHA-256 is stored. A secret of 160 random bits
//! needs no slow hash: nobody can guess it, and a salt would only stop the
//! lookup by hash.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

const PREFIX: &str = "op_";
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
pub const KEY_ID_LEN: usize = 12;
const SECRET_LEN: usize = 32;

/// A key as presented: its id, and its secret (never in `Debug`).
pub struct PresentedKey {
    pub key_id: String,
    secret: SecretString,
}

impl fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PresentedKey({}, secret redacted)", self.key_id)
    }
}

impl PresentedKey {
    /// Reads `op_<key id>_<secret>`; `None` for anything else (the caller
    /// answers it like an unknown key, never saying what was wrong).
    pub fn parse(raw: &str) -> Option<Self> {
        let rest = raw.strip_prefix(PREFIX)?;
        let (key_id, secret) = rest.split_once('_')?;
        let base32 =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b));
        (base32(key_id, KEY_ID_LEN) && base32(secret, SECRET_LEN)).then(|| Self {
            key_id: key_id.to_owned(),
            secret: SecretString::from(secret.to_owned()),
        })
    }

    /// SHA-256 of the secret: what is stored and compared.
    pub fn secret_hash(&self) -> [u8; 32] {
        hash(self.secret.expose_secret())
    }
}

/// A new key: its id, and the whole key to hand to the client once.
pub struct NewKey {
    pub key_id: String,
    pub key: SecretString,
    pub secret_hash: [u8; 32],
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NewKey({}, secret redacted)", self.key_id)
    }
}

impl NewKey {
    pub fn generate() -> Self {
        let key_id = random_base32(KEY_ID_LEN);
        let secret = random_base32(SECRET_LEN);
        Self {
            key: SecretString::from(format!("{PREFIX}{key_id}_{secret}")),
            secret_hash: hash(&secret),
            key_id,
        }
    }
}

fn random_base32(len: usize) -> String {
    (0..len)
        .map(|_| char::from(ALPHABET[usize::from(rand::random::<u8>() & 31)]))
        .collect()
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two hashes in time independent of where they differ.
pub fn same_hash(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_reads_back_with_its_hash() {
        let new = NewKey::generate();
        let raw = new.key.expose_secret();
        assert!(
            raw.starts_with("op_") && raw.len() == 3 + 12 + 1 + 32,
            "{raw}"
        );
        let presented = PresentedKey::parse(raw).unwrap();
        assert_eq!(presented.key_id, new.key_id);
        assert!(same_hash(&presented.secret_hash(), &new.secret_hash));
        assert_ne!(NewKey::generate().key_id, new.key_id);
    }

    #[test]
    fn anything_else_is_not_a_key() {
        let new = NewKey::generate();
        let raw = new.key.expose_secret();
        for bad in [
            "",
            "op_",
            &raw[3..],
            &raw.to_uppercase(),
            &format!("{raw}x"),
            &raw.replace('_', "-"),
            "op_abcdefghijkl_0000000000000000000000000000000",
        ] {
            assert!(PresentedKey::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let new = NewKey::generate();
        let secret = new.key.expose_secret()[16..].to_owned();
        let presented = PresentedKey::parse(new.key.expose_secret()).unwrap();
        let shown = format!("{new:?} {presented:?}");
        assert!(!shown.contains(&secret), "{shown}");
        assert!(shown.contains(&new.key_id), "{shown}");
    }

    #[test]
    fn hashes_compare_whole() {
        assert!(same_hash(&[1, 2, 3], &[1, 2, 3]));
        assert!(!same_hash(&[1, 2, 3], &[1, 2, 4]));
        assert!(!same_hash(&[1, 2], &[1, 2, 3]));
    }
}
