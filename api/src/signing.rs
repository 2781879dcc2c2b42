//! Signatures on the internal wire messages: ed25519 (through ring) over a domain tag,
//! the protocol version, the message kind, the node the message is for (desired state)
//! or from (status), and the payload. The node name is not in the envelope: the
//! receiver supplies it from the topic (controller) or its own name (agent), so a
//! message signed for one node cannot be replayed onto another node's topic, and one
//! signed for another kind or protocol version does not verify either.
//!
//! Pure: keys come in as bytes and nothing here reads files. The signature is checked
//! before the payload is decoded, so a forger never reaches the postcard decoder.

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use thiserror::Error;

use crate::wire::{self, Envelope, Message, MessageKind, WireError, PROTOCOL_VERSION};

pub const PUBLIC_KEY_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;
/// Separates Punnet's signed bytes from anything else the same key might ever sign.
const DOMAIN: &[u8] = b"punnet wire signature\0";

/// An ed25519 public key, as raw bytes.
pub type PublicKey = [u8; PUBLIC_KEY_LEN];

#[derive(Debug, Error, PartialEq)]
pub enum KeyError {
    #[error("not an ed25519 private key in PKCS#8 form ({0})")]
    Pkcs8(String),
    #[error("cannot generate a key: the system's random source failed")]
    Random,
    #[error("{text:?} is not an ed25519 public key: expected 64 hex digits")]
    PublicKeyHex { text: String },
}

/// A private key that signs messages (the controller's or one node's).
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private half.
        write!(f, "SigningKey({})", public_key_hex(&self.public_key()))
    }
}

impl SigningKey {
    /// A new random key in PKCS#8 v2 form, the bytes to keep in a key file.
    pub fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|_| KeyError::Random)
    }

    pub fn from_pkcs8(bytes: &[u8]) -> Result<SigningKey, KeyError> {
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes)
            .map(|pair| SigningKey { pair })
            .map_err(|e| KeyError::Pkcs8(e.to_string()))
    }

    /// A key from a 32-byte seed: for simulators and tests, which need many keys
    /// cheaply and reproducibly. A real node's key comes from `generate_pkcs8`.
    pub fn from_seed(seed: &[u8; 32]) -> SigningKey {
        SigningKey {
            pair: Ed25519KeyPair::from_seed_unchecked(seed)
                .expect("any 32 bytes are an ed25519 seed"),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        let mut out = [0; PUBLIC_KEY_LEN];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// Lower-case hex, the form of `controller.pub` and of the REST API.
pub fn public_key_hex(key: &PublicKey) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads 64 hex digits (surrounding whitespace allowed, as in a file with a newline).
pub fn parse_public_key_hex(text: &str) -> Result<PublicKey, KeyError> {
    let t = text.trim();
    let bad = || KeyError::PublicKeyHex {
        text: t.chars().take(80).collect(),
    };
    if t.len() != 2 * PUBLIC_KEY_LEN || !t.is_ascii() {
        return Err(bad());
    }
    let mut out = [0; PUBLIC_KEY_LEN];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// The bytes a signature covers. Lengths are explicit so no two different (node,
/// payload) pairs give the same bytes.
pub fn signed_bytes(version: u16, kind: MessageKind, node: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + 12 + node.len() + payload.len());
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(&version.to_be_bytes());
    out.push(kind_tag(kind));
    out.extend_from_slice(&(node.len() as u32).to_be_bytes());
    out.extend_from_slice(node.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// A fixed number per kind: the signature must not depend on how serde numbers them.
fn kind_tag(kind: MessageKind) -> u8 {
    match kind {
        MessageKind::DesiredState => 1,
        MessageKind::NodeStatus => 2,
        MessageKind::LogRequest => 3,
        MessageKind::LogChunk => 4,
    }
}

/// Encodes `msg` for (or from) `node` in an envelope signed with `key`.
pub fn encode_signed<M: Message>(msg: &M, node: &str, key: &SigningKey) -> Vec<u8> {
    let payload = postcard::to_stdvec(msg).expect("postcard encoding into a Vec cannot fail");
    let signature = key.sign(&signed_bytes(PROTOCOL_VERSION, M::KIND, node, &payload));
    wire::encode_envelope(&Envelope {
        version: PROTOCOL_VERSION,
        kind: M::KIND,
        payload,
        signature,
    })
}

/// Checks an opened envelope's signature for `node` against `key`.
pub fn verify(env: &Envelope, node: &str, key: &PublicKey) -> Result<(), WireError> {
    if env.signature.is_empty() {
        return Err(WireError::Unsigned {
            kind: env.kind,
            node: node.to_string(),
        });
    }
    let bytes = signed_bytes(env.version, env.kind, node, &env.payload);
    UnparsedPublicKey::new(&ED25519, key)
        .verify(&bytes, &env.signature)
        .map_err(|_| WireError::BadSignature {
            kind: env.kind,
            node: node.to_string(),
        })
}

/// `wire::open`, then `verify`, then `wire::payload`: the one way a receiver reads a
/// signed message.
pub fn decode_verified<M: Message>(
    bytes: &[u8],
    node: &str,
    key: &PublicKey,
) -> Result<M, WireError> {
    let env = wire::open(bytes)?;
    if env.kind != M::KIND {
        return Err(WireError::WrongKind {
            expected: M::KIND,
            got: env.kind,
        });
    }
    verify(&env, node, key)?;
    wire::payload(&env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode, encode_envelope, open, DesiredState, NodeStatusReport};

    fn key(n: u8) -> SigningKey {
        SigningKey::from_seed(&[n; 32])
    }

    fn desired(node: &str, generation: u64) -> DesiredState {
        DesiredState {
            node: node.into(),
            generation,
            ..Default::default()
        }
    }

    #[test]
    fn signed_message_verifies_and_decodes() {
        let k = key(1);
        let bytes = encode_signed(&desired("pi-1", 5), "pi-1", &k);
        let got: DesiredState = decode_verified(&bytes, "pi-1", &k.public_key()).unwrap();
        assert_eq!(got, desired("pi-1", 5));
        assert_eq!(open(&bytes).unwrap().signature.len(), SIGNATURE_LEN);
    }

    #[test]
    fn tampered_payload_is_rejected() {
        let k = key(1);
        let mut env = open(&encode_signed(&desired("pi-1", 5), "pi-1", &k)).unwrap();
        env.payload = postcard::to_stdvec(&desired("pi-1", 6)).unwrap();
        let err = decode_verified::<DesiredState>(&encode_envelope(&env), "pi-1", &k.public_key())
            .unwrap_err();
        assert!(matches!(err, WireError::BadSignature { .. }), "{err}");
        assert!(err.to_string().contains("pi-1"), "{err}");
    }

    #[test]
    fn another_key_is_rejected() {
        let bytes = encode_signed(&desired("pi-1", 5), "pi-1", &key(2));
        let err =
            decode_verified::<DesiredState>(&bytes, "pi-1", &key(1).public_key()).unwrap_err();
        assert!(matches!(err, WireError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn a_message_for_another_node_does_not_verify_on_this_nodes_topic() {
        let k = key(1);
        // Signed for pi-2 (payload names pi-2), replayed onto pi-1's topic.
        let bytes = encode_signed(&desired("pi-2", 5), "pi-2", &k);
        let err = decode_verified::<DesiredState>(&bytes, "pi-1", &k.public_key()).unwrap_err();
        assert!(matches!(err, WireError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn wrong_version_or_kind_is_rejected() {
        let k = key(1);
        let mut env = open(&encode_signed(&desired("pi-1", 5), "pi-1", &k)).unwrap();
        // A signature made under another protocol version does not verify under this one.
        let payload = env.payload.clone();
        env.signature = k.sign(&signed_bytes(
            PROTOCOL_VERSION - 1,
            MessageKind::DesiredState,
            "pi-1",
            &payload,
        ));
        let err = verify(&env, "pi-1", &k.public_key()).unwrap_err();
        assert!(matches!(err, WireError::BadSignature { .. }), "{err}");
        // An envelope of another version is refused before any signature check.
        env.version = PROTOCOL_VERSION - 1;
        let err = decode_verified::<DesiredState>(&encode_envelope(&env), "pi-1", &k.public_key())
            .unwrap_err();
        assert!(matches!(err, WireError::OlderVersion { .. }), "{err}");
        // The same payload bytes signed as another kind do not verify as this one.
        let mut env = open(&encode_signed(&desired("pi-1", 5), "pi-1", &k)).unwrap();
        env.kind = MessageKind::NodeStatus;
        let err = verify(&env, "pi-1", &k.public_key()).unwrap_err();
        assert!(matches!(err, WireError::BadSignature { .. }), "{err}");
        let err =
            decode_verified::<NodeStatusReport>(&encode_envelope(&env), "pi-1", &k.public_key())
                .unwrap_err();
        assert!(matches!(err, WireError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn unsigned_and_garbage_are_errors() {
        let k = key(1);
        let err =
            decode_verified::<DesiredState>(&encode(&desired("pi-1", 5)), "pi-1", &k.public_key())
                .unwrap_err();
        assert!(matches!(err, WireError::Unsigned { .. }), "{err}");
        assert!(err.to_string().contains("not signed"), "{err}");
        let mut env = open(&encode_signed(&desired("pi-1", 5), "pi-1", &k)).unwrap();
        env.signature = vec![1, 2, 3];
        assert!(verify(&env, "pi-1", &k.public_key()).is_err());
        assert!(decode_verified::<DesiredState>(b"garbage", "pi-1", &k.public_key()).is_err());
    }

    #[test]
    fn keys_round_trip_through_pkcs8_and_hex() {
        let pkcs8 = SigningKey::generate_pkcs8().unwrap();
        let k = SigningKey::from_pkcs8(&pkcs8).unwrap();
        let again = SigningKey::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(k.public_key(), again.public_key());
        let hex = public_key_hex(&k.public_key());
        assert_eq!(hex.len(), 64);
        assert_eq!(
            parse_public_key_hex(&format!("{hex}\n")).unwrap(),
            k.public_key()
        );
        assert!(parse_public_key_hex("abc").is_err());
        assert!(parse_public_key_hex(&"zz".repeat(32)).is_err());
        assert!(SigningKey::from_pkcs8(b"not a key").is_err());
        assert!(!format!("{k:?}").contains(&format!("{:?}", &pkcs8[16..24])));
    }
}
