//! Signed webhooks, per the Standard Webhooks specification
//! (<https://www.standardwebhooks.com>): every call carries `webhook-id` (the
//! event id, the same on every retry), `webhook-timestamp` (Unix seconds when
//! this attempt was signed) and `webhook-signature`, one
//! `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">` per secret,
//! space-separated. Two secrets are configured while one is being rotated, so
//! a receiver that knows either accepts the call.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
const PREFIX: &str = "whsec_";
/// The shortest key we sign with: 128 bits.
const MIN_KEY_BYTES: usize = 16;

/// The sink's signing keys (`WEBHOOK_SECRETS`), the current one first.
/// `Debug` shows how many there are, never their bytes.
#[derive(Clone)]
pub struct WebhookSecrets(Vec<SecretSlice<u8>>);

impl fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookSecrets({} redacted)", self.0.len())
    }
}

impl WebhookSecrets {
    /// A comma-separated list of `whsec_<base64 key>` secrets (at most two:
    /// the current one and, while rotating, the other); each key at least
    /// 128 bits.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (n, part) in raw
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let n = n + 1;
            let encoded = part
                .strip_prefix(PREFIX)
                .ok_or_else(|| format!("secret {n} does not start with {PREFIX}"))?;
            let key = STANDARD
                .decode(encoded)
                .map_err(|_| format!("secret {n} is not {PREFIX} followed by base64"))?;
            if key.len() < MIN_KEY_BYTES {
                return Err(format!(
                    "secret {n} is {} bytes; a key has at least {MIN_KEY_BYTES}",
                    key.len()
                ));
            }
            keys.push(SecretSlice::from(key));
        }
        match keys.len() {
            0 => Err("no secret; give one whsec_ secret (two while rotating)".into()),
            1 | 2 => Ok(Self(keys)),
            n => Err(format!(
                "{n} secrets; give one, or two while rotating (the new one first)"
            )),
        }
    }

    /// A fresh random secret in the `whsec_` form (for operators and tests).
    pub fn generate() -> String {
        let key: [u8; 32] = rand::random();
        format!("{PREFIX}{}", STANDARD.encode(key))
    }

    /// The `webhook-signature` header's value for this attempt.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        self.0
            .iter()
            .map(|key| {
                let mut mac = Hmac::<Sha256>::new_from_slice(key.expose_secret())
                    .expect("HMAC takes a key of any length");
                mac.update(id.as_bytes());
                mac.update(b".");
                mac.update(timestamp.to_string().as_bytes());
                mac.update(b".");
                mac.update(body);
                format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the specification's reference libraries.
    #[test]
    fn signs_the_reference_example() {
        let secrets = WebhookSecrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secrets.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn two_secrets_give_two_signatures_the_current_first() {
        let (a, b) = (WebhookSecrets::generate(), WebhookSecrets::generate());
        let both = WebhookSecrets::parse(&format!("{a}, {b}")).unwrap();
        let one = |s: &str| {
            WebhookSecrets::parse(s)
                .unwrap()
                .sign("e:created", 7, b"{}")
        };
        assert_eq!(
            both.sign("e:created", 7, b"{}"),
            format!("{} {}", one(&a), one(&b))
        );
    }

    #[test]
    fn bad_secrets_are_named_and_never_shown() {
        for (raw, says) in [
            ("", "no secret"),
            (
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "does not start with whsec_",
            ),
            ("whsec_not base64!", "base64"),
            ("whsec_c2hvcnQ=", "at least 16"),
        ] {
            let err = WebhookSecrets::parse(raw).unwrap_err();
            assert!(err.contains(says), "{raw:?}: {err}");
            assert!(raw.is_empty() || !err.contains(raw), "{err}");
        }
        let three = [0; 3].map(|_| WebhookSecrets::generate()).join(",");
        assert!(
            WebhookSecrets::parse(&three)
                .unwrap_err()
                .contains("3 secrets")
        );
        let secret = WebhookSecrets::generate();
        let debug = format!("{:?}", WebhookSecrets::parse(&secret).unwrap());
        assert_eq!(debug, "WebhookSecrets(1 redacted)");
    }
}
