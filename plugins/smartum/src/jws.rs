//! ES512 compact JWS verification (ECDSA P-521 / SHA-512) against Smartum's keys by `kid`.
//!
//! Keys are read (PEM, JWK) with RustCrypto's `p521`; signatures are verified with
//! `aws-lc-rs`, whose P-521 arithmetic is about four times faster than `p521`'s on the
//! same machine (`cargo bench -p posbridge --bench payment_latency` prints both): the
//! verification is on every scan's path to the POS.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P521_SHA512_FIXED};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p521::ecdsa::VerifyingKey;
use p521::elliptic_curve::sec1::ToEncodedPoint;
use p521::pkcs8::DecodePublicKey;

/// One `kid`'s key, ready to verify with.
fn verifier(key: &VerifyingKey) -> Option<Arc<ParsedPublicKey>> {
    let point = key.as_affine().to_encoded_point(false);
    ParsedPublicKey::new(&ECDSA_P521_SHA512_FIXED, point.as_bytes()).ok().map(Arc::new)
}

/// Why a JWS was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwsError {
    /// Not three base64url parts with a JSON header and payload.
    Malformed(String),
    /// `alg` is not ES512 (`none`, HS256… are never accepted).
    WrongAlgorithm(String),
    /// The `kid` is not one of the configured keys.
    UnknownKey(String),
    /// The signature does not verify.
    BadSignature,
}

/// Smartum's public keys by `kid`; several at once during key rotation.
#[derive(Clone)]
pub struct KeySet {
    keys: HashMap<String, Arc<ParsedPublicKey>>,
}

impl KeySet {
    /// The configured `kid`s, sorted (for a message naming them).
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }

    /// Adds the keys of a JWKS document (`{"keys": [{"kty": "EC", "crv": "P-521", "kid",
    /// "x", "y"}, …]}`), replacing keys of the same `kid`. Answers how many were added,
    /// or every key that could not be used, with why.
    pub fn add_jwks(&mut self, document: &str) -> Result<usize, Vec<String>> {
        let parsed: serde_json::Value =
            serde_json::from_str(document).map_err(|error| vec![format!("not a JWKS document (JSON): {error}")])?;
        let Some(entries) = parsed.get("keys").and_then(|keys| keys.as_array()) else {
            return Err(vec!["not a JWKS document: no \"keys\" array".to_string()]);
        };
        let mut bad = Vec::new();
        let mut added = 0;
        for (index, entry) in entries.iter().enumerate() {
            let Some(kid) = entry.get("kid").and_then(|kid| kid.as_str()) else {
                bad.push(format!("key {index} has no kid"));
                continue;
            };
            // The key parser takes the key's own members only (not kid, alg, use…).
            let key_only = serde_json::json!({"kty": entry.get("kty"), "crv": entry.get("crv"), "x": entry.get("x"), "y": entry.get("y")});
            let parsed = p521::PublicKey::from_jwk_str(&key_only.to_string()).ok();
            match parsed.and_then(|key| VerifyingKey::from_affine(*key.as_affine()).ok()).as_ref().and_then(verifier) {
                Some(key) => {
                    self.keys.insert(kid.to_string(), key);
                    added += 1;
                }
                None => bad.push(format!("key {kid:?} is not a P-521 (ES512) public key")),
            }
        }
        if bad.is_empty() {
            Ok(added)
        } else {
            Err(bad)
        }
    }

    /// Parses PEM public keys (SubjectPublicKeyInfo, P-521). Answers the `kid`s whose
    /// PEM is not a P-521 public key.
    pub fn from_pems(pems: &[(String, String)]) -> Result<KeySet, Vec<String>> {
        let mut keys = HashMap::new();
        let mut bad = Vec::new();
        for (kid, pem) in pems {
            let parsed = p521::PublicKey::from_public_key_pem(pem.trim()).ok();
            match parsed.and_then(|key| VerifyingKey::from_affine(*key.as_affine()).ok()).as_ref().and_then(verifier) {
                Some(key) => {
                    keys.insert(kid.clone(), key);
                }
                None => bad.push(kid.clone()),
            }
        }
        if bad.is_empty() {
            Ok(KeySet { keys })
        } else {
            Err(bad)
        }
    }

    /// A compact JWS's header and payload, decoded without verifying anything (for
    /// `posbridge inspect`: what the code says, beside whether it is to be believed).
    pub fn peek(compact: &str) -> Option<(serde_json::Value, serde_json::Value)> {
        let mut parts = compact.trim().split('.');
        let header = decode_json(parts.next()?, "header").ok()?;
        let payload = decode_json(parts.next()?, "payload").ok()?;
        Some((header, payload))
    }

    /// Verifies a compact JWS and answers its payload (JSON).
    pub fn verify(&self, compact: &str) -> Result<serde_json::Value, JwsError> {
        self.open(compact, SignatureCheck::Verify)
    }

    /// Opens a compact JWS as [`verify`](Self::verify) does, its signature checked only
    /// when `check` says so.
    pub fn open(&self, compact: &str, check: SignatureCheck) -> Result<serde_json::Value, JwsError> {
        let mut parts = compact.trim().split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed("a JWS has three dot-separated parts".into()));
        };
        let header: serde_json::Value = decode_json(header_b64, "header")?;
        let alg = header.get("alg").and_then(|alg| alg.as_str()).unwrap_or("");
        if alg != "ES512" {
            return Err(JwsError::WrongAlgorithm(alg.to_string()));
        }
        let kid = header.get("kid").and_then(|kid| kid.as_str()).unwrap_or("");
        let key = self.keys.get(kid).ok_or_else(|| JwsError::UnknownKey(kid.to_string()))?;
        let signature_bytes =
            URL_SAFE_NO_PAD.decode(signature_b64).map_err(|_| JwsError::Malformed("signature is not base64url".into()))?;
        let signing_input = &compact.trim()[..header_b64.len() + 1 + payload_b64.len()];
        if check == SignatureCheck::Verify {
            key.verify_sig(signing_input.as_bytes(), &signature_bytes).map_err(|_| JwsError::BadSignature)?;
        }
        decode_json(payload_b64, "payload")
    }
}

/// Whether opening a JWS checks its signature (most of a scan's CPU time), or leaves it
/// to a later call (`read_code`, whose answer is written ahead while `inspect_code`
/// verifies: everything but the signature is checked either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCheck {
    Verify,
    Defer,
}

fn decode_json(part: &str, what: &str) -> Result<serde_json::Value, JwsError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| JwsError::Malformed(format!("{what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|_| JwsError::Malformed(format!("{what} is not JSON")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use p521::ecdsa::signature::Signer;
    use p521::ecdsa::{Signature, SigningKey};
    use p521::pkcs8::{EncodePublicKey, LineEnding};

    pub(crate) fn key_pair() -> (SigningKey, String) {
        let signing = SigningKey::random(&mut p521::elliptic_curve::rand_core::OsRng);
        let public = p521::PublicKey::from_affine(*VerifyingKey::from(&signing).as_affine()).unwrap();
        (signing, public.to_public_key_pem(LineEnding::LF).unwrap())
    }

    /// A compact ES512 JWS of `header` and `payload` (JSON texts) signed with `key`.
    pub(crate) fn sign(key: &SigningKey, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let signature: Signature = key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    #[test]
    fn verifies_and_rejects() {
        let (signing, pem) = key_pair();
        let (other, _) = key_pair();
        let keys = KeySet::from_pems(&[("k1".into(), pem)]).unwrap();
        let good = sign(&signing, r#"{"alg":"ES512","typ":"JWT","kid":"k1"}"#, r#"{"jti":"tx_R60D21hL60bj5N1v"}"#);
        assert_eq!(keys.verify(&good).unwrap()["jti"], "tx_R60D21hL60bj5N1v");

        let forged = sign(&other, r#"{"alg":"ES512","typ":"JWT","kid":"k1"}"#, r#"{"jti":"tx_R60D21hL60bj5N1v"}"#);
        assert_eq!(keys.verify(&forged), Err(JwsError::BadSignature));
        let unknown = sign(&signing, r#"{"alg":"ES512","kid":"k2"}"#, "{}");
        assert_eq!(keys.verify(&unknown), Err(JwsError::UnknownKey("k2".into())));
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#), URL_SAFE_NO_PAD.encode("{}"));
        assert_eq!(keys.verify(&none), Err(JwsError::WrongAlgorithm("none".into())));
        assert!(matches!(keys.verify("a.b"), Err(JwsError::Malformed(_))));
        // Payload altered after signing.
        let mut parts: Vec<&str> = good.split('.').collect();
        let altered = URL_SAFE_NO_PAD.encode(r#"{"jti":"tx_AAAAAAAAAAAAAAAA"}"#);
        parts[1] = &altered;
        assert_eq!(keys.verify(&parts.join(".")), Err(JwsError::BadSignature));
    }

    #[test]
    fn bad_pem_is_named_by_kid() {
        assert_eq!(
            KeySet::from_pems(&[("k9".into(), "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----".into())]).err(),
            Some(vec!["k9".to_string()])
        );
    }
}
