//! usign/signify Ed25519 keys and signatures: parse, verify against a keyring, and sign (tests).
//!
//! The formats are the two-line text files of OpenWrt's `usign` and OpenBSD's `signify`
//! (reference §2.2). The `untrusted comment:` line is never trusted or interpreted. This module
//! performs no I/O besides reading a key file handed to [`Keyring::add_file`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256, Sha512};

use crate::error::{Error, ErrorCode, Result};

const PKALG: &[u8; 2] = b"Ed";
const KDFALG_NONE: &[u8; 2] = b"BK";
const PUBLIC_KEY_LEN: usize = 42;
const SIGNATURE_LEN: usize = 74;
const SECRET_KEY_LEN: usize = 104;
const COMMENT_PREFIX: &str = "untrusted comment:";
/// Largest key file we read: a real one is about 100 bytes.
const MAX_KEY_FILE_SIZE: u64 = 64 * 1024;

/// The 8-byte key number of a usign key, shown as 16 lowercase hex digits in byte order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// Parses 16 hex digits (either case).
    pub fn parse(text: &str) -> Result<KeyId> {
        let mut bytes = [0u8; 8];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| {
            Error::new(
                ErrorCode::SignatureError,
                format!("invalid usign key id `{text}`: expected 16 hex digits"),
            )
        })?;
        Ok(KeyId(bytes))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A usign public key: key id plus the Ed25519 verifying key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub key_id: KeyId,
    pub key: VerifyingKey,
}

impl PublicKey {
    /// Parses the two-line public key file text.
    pub fn parse(text: &str) -> Result<PublicKey> {
        let blob = decode_two_line(text, "public key")?;
        PublicKey::from_blob(&blob)
    }

    /// Parses the base64 blob alone (the second line of a key file).
    pub fn from_base64(data: &str) -> Result<PublicKey> {
        let blob = decode_base64(data, "public key")?;
        PublicKey::from_blob(&blob)
    }

    fn from_blob(blob: &[u8]) -> Result<PublicKey> {
        check_layout(blob, PUBLIC_KEY_LEN, "public key")?;
        let key_id = key_id_at(blob, 2);
        let key = VerifyingKey::from_bytes(&array_at::<32>(blob, 10)).map_err(|_| {
            signature_error(format!(
                "public key `{key_id}` is not a valid Ed25519 point"
            ))
        })?;
        Ok(PublicKey { key_id, key })
    }

    /// The key's fingerprint: lowercase hex SHA-256 of the 32-byte Ed25519 public key. The
    /// 8-byte key id is only a name anyone can give their key; the fingerprint is the key.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.key.as_bytes()))
    }

    /// The two-line file text, as `usign -G` writes it.
    pub fn to_file_text(&self) -> String {
        let mut blob = Vec::with_capacity(PUBLIC_KEY_LEN);
        blob.extend_from_slice(PKALG);
        blob.extend_from_slice(&self.key_id.0);
        blob.extend_from_slice(self.key.as_bytes());
        format!(
            "{COMMENT_PREFIX} public key {}\n{}\n",
            self.key_id,
            BASE64.encode(blob)
        )
    }
}

/// A detached usign signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub key_id: KeyId,
    pub signature: ed25519_dalek::Signature,
}

impl Signature {
    /// Parses the two-line `.sig` file text.
    pub fn parse(text: &str) -> Result<Signature> {
        let blob = decode_two_line(text, "signature")?;
        check_layout(&blob, SIGNATURE_LEN, "signature")?;
        Ok(Signature {
            key_id: key_id_at(&blob, 2),
            signature: ed25519_dalek::Signature::from_bytes(&array_at::<64>(&blob, 10)),
        })
    }

    /// The two-line file text, as `usign -S` writes it.
    pub fn to_file_text(&self) -> String {
        let mut blob = Vec::with_capacity(SIGNATURE_LEN);
        blob.extend_from_slice(PKALG);
        blob.extend_from_slice(&self.key_id.0);
        blob.extend_from_slice(&self.signature.to_bytes());
        format!(
            "{COMMENT_PREFIX} signed by key {}\n{}\n",
            self.key_id,
            BASE64.encode(blob)
        )
    }
}

/// An unencrypted usign secret key. Used by tests and the stand-in mirror only.
#[derive(Clone)]
pub struct SecretKey {
    pub key_id: KeyId,
    signing: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.key_id)
    }
}

impl SecretKey {
    /// A deterministic key from a 32-byte seed; the key id is derived from the seed too.
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        let digest = Sha512::new()
            .chain_update(b"imagegen usign keynum")
            .chain_update(seed)
            .finalize();
        let mut keynum = [0u8; 8];
        keynum.copy_from_slice(&digest[..8]);
        SecretKey {
            key_id: KeyId(keynum),
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// Parses the two-line secret key file (104-byte layout, unencrypted only).
    pub fn parse(text: &str) -> Result<SecretKey> {
        let blob = decode_two_line(text, "secret key")?;
        check_layout(&blob, SECRET_KEY_LEN, "secret key")?;
        if &blob[2..4] != KDFALG_NONE {
            return Err(signature_error("secret key: unsupported kdf algorithm"));
        }
        if blob[4..8] != [0, 0, 0, 0] {
            return Err(signature_error(
                "secret key is password-protected (kdfrounds > 0); not supported",
            ));
        }
        let seckey = &blob[40..104];
        let checksum = Sha512::digest(seckey);
        if checksum[..8] != blob[24..32] {
            return Err(signature_error("secret key checksum does not match"));
        }
        let signing = SigningKey::from_bytes(&array_at::<32>(&blob, 40));
        if signing.verifying_key().as_bytes()[..] != blob[72..104] {
            return Err(signature_error(
                "secret key: public half does not match the seed",
            ));
        }
        Ok(SecretKey {
            key_id: key_id_at(&blob, 32),
            signing,
        })
    }

    /// The two-line file text in the unencrypted layout `usign -G` writes.
    pub fn to_file_text(&self) -> String {
        let mut seckey = Vec::with_capacity(64);
        seckey.extend_from_slice(self.signing.as_bytes());
        seckey.extend_from_slice(self.signing.verifying_key().as_bytes());
        let mut blob = Vec::with_capacity(SECRET_KEY_LEN);
        blob.extend_from_slice(PKALG);
        blob.extend_from_slice(KDFALG_NONE);
        blob.extend_from_slice(&[0u8; 4]);
        blob.extend_from_slice(&[0u8; 16]);
        blob.extend_from_slice(&Sha512::digest(&seckey)[..8]);
        blob.extend_from_slice(&self.key_id.0);
        blob.extend_from_slice(&seckey);
        format!(
            "{COMMENT_PREFIX} private key {}\n{}\n",
            self.key_id,
            BASE64.encode(blob)
        )
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key_id: self.key_id,
            key: self.signing.verifying_key(),
        }
    }

    /// Signs `message` (the exact bytes, no prehashing) and returns the `.sig` file text.
    pub fn sign(&self, message: &[u8]) -> String {
        Signature {
            key_id: self.key_id,
            signature: self.signing.sign(message),
        }
        .to_file_text()
    }
}

/// The public keys trusted to sign `sha256sums`, selected by the signature's key id.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: BTreeMap<KeyId, PublicKey>,
}

impl Keyring {
    /// A keyring with no keys: every signature is refused.
    pub fn empty() -> Keyring {
        Keyring::default()
    }

    /// The official OpenWrt usign keys (see [`super::keys::OFFICIAL_KEYS`]).
    pub fn official() -> Keyring {
        let mut keyring = Keyring::empty();
        for official in super::keys::OFFICIAL_KEYS {
            // The table is compiled in and checked by a unit test; a bad entry is a bug.
            if let Ok(key) = PublicKey::from_base64(official.public_key) {
                keyring.add(key);
            }
        }
        keyring
    }

    pub fn add(&mut self, key: PublicKey) -> KeyId {
        let key_id = key.key_id;
        self.keys.insert(key_id, key);
        key_id
    }

    /// Adds the public key in a two-line usign key file the user trusts. A key whose id is
    /// already in the keyring with other key material is refused: a key id is a name anyone
    /// can give their key, and one that shadowed an official key would make signatures (and
    /// `imagegen.lock`) look official. The same key twice is harmless and accepted.
    pub fn add_file(&mut self, path: &Path) -> Result<KeyId> {
        let bytes = crate::source::read_bytes(
            path,
            &path.display().to_string(),
            MAX_KEY_FILE_SIZE,
            crate::source::Containment::Anywhere,
        )
        .map_err(|problem| signature_error(format!("trusted key {}", problem.message)))?;
        let text = String::from_utf8_lossy(&bytes);
        let key = PublicKey::parse(&text).map_err(|error| Error {
            message: format!("trusted key `{}`: {}", path.display(), error.message),
            ..error
        })?;
        self.add_trusted(key).map_err(|error| Error {
            message: format!("trusted key `{}`: {}", path.display(), error.message),
            ..error
        })
    }

    /// Adds a key, refusing one whose key id names a different key already in the keyring.
    pub fn add_trusted(&mut self, key: PublicKey) -> Result<KeyId> {
        if let Some(existing) = self.keys.get(&key.key_id)
            && existing.key != key.key
        {
            let official = super::keys::OFFICIAL_KEYS
                .iter()
                .any(|official| official.key_id == key.key_id.to_string());
            let whose = if official {
                "an official OpenWrt key"
            } else {
                "another trusted key"
            };
            return Err(signature_error(format!(
                "key id `{}` already names {whose} with a different public key",
                key.key_id
            ))
            .with_help(
                "a key id must name one key; make a new key pair for your mirror (`usign -G`)",
            ));
        }
        Ok(self.add(key))
    }

    /// The key with this id.
    pub fn get(&self, key_id: &KeyId) -> Option<&PublicKey> {
        self.keys.get(key_id)
    }

    pub fn contains(&self, key_id: &KeyId) -> bool {
        self.keys.contains_key(key_id)
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.keys()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies `signature_text` over the exact bytes of `message` with the key named by the
    /// signature's key id and returns that id.
    pub fn verify(&self, message: &[u8], signature_text: &str) -> Result<KeyId> {
        self.verify_key(message, signature_text)
            .map(|key| key.key_id)
    }

    /// [`Keyring::verify`], returning the whole key that vouched (for its fingerprint).
    pub fn verify_key(&self, message: &[u8], signature_text: &str) -> Result<&PublicKey> {
        let signature = Signature::parse(signature_text)?;
        let Some(public) = self.keys.get(&signature.key_id) else {
            return Err(signature_error(format!(
                "signature made with unknown key `{}`",
                signature.key_id
            ))
            .with_help(
                "if you trust this key, add its usign public key file to `trusted_keys` in \
                 imagegen.toml or to `OWRT_IMG_TRUSTED_KEYS`",
            ));
        };
        public
            .key
            .verify_strict(message, &signature.signature)
            .map_err(|_| {
                signature_error(format!(
                    "bad signature: the data does not match its signature by key `{}`",
                    signature.key_id
                ))
                .with_help("the mirror may be corrupt or tampered with; try another mirror")
            })?;
        Ok(public)
    }
}

fn signature_error(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::SignatureError, message)
}

/// Checks the comment line and decodes the base64 line of a usign/signify file.
fn decode_two_line(text: &str, what: &str) -> Result<Vec<u8>> {
    let mut lines = text.lines();
    let comment = lines.next().unwrap_or_default();
    if !comment.starts_with(COMMENT_PREFIX) {
        return Err(signature_error(format!(
            "malformed {what}: the first line must start with `{COMMENT_PREFIX}`"
        )));
    }
    let Some(data) = lines.next() else {
        return Err(signature_error(format!(
            "malformed {what}: missing the base64 line"
        )));
    };
    if lines.any(|line| !line.trim().is_empty()) {
        return Err(signature_error(format!(
            "malformed {what}: unexpected text after the base64 line"
        )));
    }
    decode_base64(data, what)
}

fn decode_base64(data: &str, what: &str) -> Result<Vec<u8>> {
    BASE64
        .decode(data.trim())
        .map_err(|error| signature_error(format!("malformed {what}: invalid base64 ({error})")))
}

fn check_layout(blob: &[u8], expected_len: usize, what: &str) -> Result<()> {
    if blob.len() != expected_len {
        return Err(signature_error(format!(
            "malformed {what}: {} bytes, expected {expected_len}",
            blob.len()
        )));
    }
    if &blob[..2] != PKALG {
        return Err(signature_error(format!(
            "malformed {what}: algorithm `{}` is not `Ed`",
            String::from_utf8_lossy(&blob[..2])
        )));
    }
    Ok(())
}

/// Callers have checked the blob length, so the slice always has N bytes.
fn array_at<const N: usize>(blob: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&blob[offset..offset + N]);
    out
}

fn key_id_at(blob: &[u8], offset: usize) -> KeyId {
    KeyId(array_at::<8>(blob, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_key() -> SecretKey {
        SecretKey::from_seed([7u8; 32])
    }

    #[test]
    fn sign_then_verify_round_trips_through_file_text() {
        let secret = SecretKey::parse(&test_key().to_file_text()).unwrap();
        let public = PublicKey::parse(&secret.public_key().to_file_text()).unwrap();
        let mut keyring = Keyring::empty();
        keyring.add(public);
        let signature = secret.sign(b"hello\n");
        assert_eq!(
            keyring.verify(b"hello\n", &signature).unwrap(),
            secret.key_id
        );
        let error = keyring.verify(b"hello", &signature).unwrap_err();
        assert_eq!(error.code, ErrorCode::SignatureError);
        assert!(
            error.message.starts_with("bad signature"),
            "{}",
            error.message
        );
    }

    #[test]
    fn unknown_key_is_refused_with_help() {
        let signature = test_key().sign(b"x");
        let error = Keyring::official().verify(b"x", &signature).unwrap_err();
        assert_eq!(error.code, ErrorCode::SignatureError);
        assert_eq!(
            error.message,
            format!("signature made with unknown key `{}`", test_key().key_id)
        );
        assert!(error.help.unwrap().contains("trusted_keys"));
    }

    #[test]
    fn file_lengths_match_usign() {
        let secret = test_key();
        let line = |text: String| text.lines().nth(1).unwrap().len();
        assert_eq!(line(secret.public_key().to_file_text()), 56);
        assert_eq!(line(secret.sign(b"m")), 100);
        assert_eq!(line(secret.to_file_text()), 140);
    }

    #[test]
    fn malformed_files_are_signature_errors() {
        let cases = [
            "",
            "comment\nRWQ=\n",
            "untrusted comment: x\n",
            "untrusted comment: x\n!!!\n",
            "untrusted comment: x\nRWQQ\n",
            "untrusted comment: x\nRWR5LZ2bOfGA3FGliZosEDhodiAKDOISmQs/mmjo4rhcbFtqkibJqMzo\nmore\n",
        ];
        for case in cases {
            let error = Signature::parse(case).unwrap_err();
            assert_eq!(error.code, ErrorCode::SignatureError, "{case:?}");
            assert!(
                error.message.starts_with("malformed signature"),
                "{}",
                error.message
            );
        }
        let wrong_alg = format!("untrusted comment: x\n{}\n", BASE64.encode([b'X'; 42]));
        let error = PublicKey::parse(&wrong_alg).unwrap_err();
        assert!(error.message.contains("is not `Ed`"), "{}", error.message);
    }

    #[test]
    fn a_trusted_key_cannot_take_an_official_key_id() {
        let official_id = KeyId::parse("b5043e70f9a75cde").unwrap();
        let impostor = PublicKey {
            key_id: official_id,
            key: test_key().public_key().key,
        };
        let mut keyring = Keyring::official();
        let error = keyring.add_trusted(impostor).unwrap_err();
        assert_eq!(error.code, ErrorCode::SignatureError);
        assert_eq!(
            error.message,
            "key id `b5043e70f9a75cde` already names an official OpenWrt key with a different public key"
        );
        // The official key stays in place, and a signature by the impostor is refused.
        let forged = SecretKey {
            key_id: official_id,
            signing: test_key().signing,
        }
        .sign(b"sums");
        let refused = keyring.verify(b"sums", &forged).unwrap_err();
        assert!(
            refused.message.starts_with("bad signature"),
            "{}",
            refused.message
        );
        // The official key itself, trusted again, is harmless.
        let official =
            PublicKey::from_base64(super::super::keys::OFFICIAL_KEYS[6].public_key).unwrap();
        assert_eq!(keyring.add_trusted(official).unwrap(), official_id);
        // Two different trusted keys under one id are refused too.
        let mut keyring = Keyring::empty();
        keyring.add_trusted(test_key().public_key()).unwrap();
        let twin = PublicKey {
            key_id: test_key().key_id,
            key: SecretKey::from_seed([9u8; 32]).public_key().key,
        };
        let error = keyring.add_trusted(twin).unwrap_err();
        assert!(
            error.message.contains("another trusted key"),
            "{}",
            error.message
        );
    }

    #[test]
    fn fingerprint_is_the_sha256_of_the_ed25519_key() {
        let key =
            PublicKey::from_base64("RWS1BD5w+adc3j2Hqg9+b66CvLR7NlHbsj7wjNVj0XGt/othDgIAOJS+")
                .unwrap();
        assert_eq!(
            key.fingerprint(),
            hex::encode(Sha256::digest(key.key.as_bytes()))
        );
        assert_eq!(key.fingerprint().len(), 64);
        assert_ne!(key.fingerprint(), test_key().public_key().fingerprint());
    }

    #[test]
    fn key_id_is_byte_order_hex() {
        let key =
            PublicKey::from_base64("RWR5LZ2bOfGA3FGliZosEDhodiAKDOISmQs/mmjo4rhcbFtqkibJqMzo")
                .unwrap();
        assert_eq!(key.key_id.to_string(), "792d9d9b39f180dc");
        assert_eq!(KeyId::parse("792D9D9B39F180DC").unwrap(), key.key_id);
    }
}
