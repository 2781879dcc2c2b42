//! Encryption at rest for the kinds whose values must never sit in the database in
//! clear (Secrets): ChaCha20-Poly1305 from `ring`, a random nonce per write, and the
//! object's tree and key bound as associated data so that a sealed value copied under
//! another key does not open. The 256-bit key lives in a file outside the database
//! (`<data-dir>/secrets.key`, mode 0600), so a copy of the database alone (a backup, a
//! lost SD card) does not give the Secrets away.
//!
//! A sealed value is `PREFIX || nonce (12 bytes) || ciphertext+tag`; anything without
//! the prefix is a plaintext value written before encryption existed (migrated on open).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use thiserror::Error;

/// Marks a sealed value (and names the scheme, as Kubernetes' `k8s:enc:…` prefixes do).
pub const PREFIX: &[u8] = b"punnet:enc:chacha20poly1305:v1:";

/// The plaintext sealed under the database's key-check entry: opening it proves the
/// key file is the one the Secrets were written with.
const CHECK_PLAINTEXT: &[u8] = b"punnet secrets key check";

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("encryption key file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("encryption key file {path} does not hold a key: expected 32 bytes in base64 on one line ({message})")]
    Malformed { path: String, message: String },
    #[error("encryption key file {path} is missing, but the database holds Secrets encrypted with a key: restore the key file from your backup (or point --encryption-key-file at it); nothing was changed")]
    Missing { path: String },
    #[error("encryption key file {path} is not the key the database's Secrets were encrypted with: use the right key file (--encryption-key-file); nothing was changed")]
    Wrong { path: String },
}

#[derive(Debug, Error)]
#[error("sealed value cannot be opened: it was altered, moved to another key, or written with another key")]
pub struct OpenError;

/// The key Secrets are sealed with, and where it came from (for error messages).
pub struct SecretKey {
    key: LessSafeKey,
    path: PathBuf,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.path.display())
    }
}

impl SecretKey {
    fn from_bytes(bytes: &[u8], path: &Path) -> Result<SecretKey, KeyError> {
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, bytes).map_err(|_| KeyError::Malformed {
                path: path.display().to_string(),
                message: format!("found {} bytes", bytes.len()),
            })?;
        Ok(SecretKey {
            key: LessSafeKey::new(unbound),
            path: path.to_path_buf(),
        })
    }

    /// Reads the key file; `Ok(None)` when it does not exist.
    pub fn load(path: &Path) -> Result<Option<SecretKey>, KeyError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(KeyError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| KeyError::Malformed {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        SecretKey::from_bytes(&bytes, path).map(Some)
    }

    /// Creates a new random key in `path` (mode 0600); fails if the file exists.
    pub fn create(path: &Path) -> Result<SecretKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes: [u8; 32] = rand::random();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let line = base64::engine::general_purpose::STANDARD.encode(bytes) + "\n";
        file.write_all(line.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        SecretKey::from_bytes(&bytes, path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seals `plaintext` for the entry `context` (tree and key).
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut out = Vec::with_capacity(PREFIX.len() + NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(&nonce_bytes);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(context),
                &mut body,
            )
            .expect("ChaCha20-Poly1305 seals any length a store value can have");
        out.extend_from_slice(&body);
        out
    }

    /// Opens a value `seal` made for the same `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let rest = sealed.strip_prefix(PREFIX).ok_or(OpenError)?;
        if rest.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError)?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context), &mut body)
            .map_err(|_| OpenError)?;
        Ok(plain.to_vec())
    }

    /// The value stored next to sealed Secrets that lets a later open tell a wrong key
    /// from a right one before it touches anything.
    pub fn check_value(&self) -> Vec<u8> {
        self.seal(b"key-check", CHECK_PLAINTEXT)
    }

    pub fn verify(&self, check: &[u8]) -> Result<(), KeyError> {
        match self.open(b"key-check", check) {
            Ok(p) if p == CHECK_PLAINTEXT => Ok(()),
            _ => Err(KeyError::Wrong {
                path: self.path.display().to_string(),
            }),
        }
    }
}

/// Whether a stored value is sealed (rather than plaintext from before encryption).
pub fn is_sealed(value: &[u8]) -> bool {
    value.starts_with(PREFIX)
}

/// The key for a database: the existing file, or a new one when the database has never
/// sealed anything (`has_check` false). A database that has sealed values and no key
/// file is an error, never a reason to make a new key.
pub fn load_or_create(path: &Path, has_check: bool) -> Result<SecretKey, KeyError> {
    match SecretKey::load(path)? {
        Some(key) => Ok(key),
        None if has_check => Err(KeyError::Missing {
            path: path.display().to_string(),
        }),
        None => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| KeyError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
            }
            SecretKey::create(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_bound_to_context() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create(&dir.path().join("k"), false).unwrap();
        let a = key.seal(b"secrets/default/a", b"hunter2");
        let b = key.seal(b"secrets/default/a", b"hunter2");
        assert_ne!(a, b, "a fresh nonce per write");
        assert!(is_sealed(&a));
        assert!(!a.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(key.open(b"secrets/default/a", &a).unwrap(), b"hunter2");
        assert!(key.open(b"secrets/default/b", &a).is_err(), "moved value");
        let mut tampered = a.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(key.open(b"secrets/default/a", &tampered).is_err());
    }

    #[test]
    fn key_file_is_private_and_reloads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let key = load_or_create(&path, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let check = key.check_value();
        let again = load_or_create(&path, true).unwrap();
        again.verify(&check).unwrap();

        let other = dir.path().join("other.key");
        let wrong = load_or_create(&other, false).unwrap();
        let err = wrong.verify(&check).unwrap_err().to_string();
        assert!(
            err.contains("other.key") && err.contains("not the key"),
            "{err}"
        );

        std::fs::remove_file(&other).unwrap();
        let err = load_or_create(&other, true).unwrap_err().to_string();
        assert!(err.contains("is missing"), "{err}");
        assert!(
            !other.exists(),
            "no new key made for a database that has one"
        );

        std::fs::write(&other, "short\n").unwrap();
        let err = SecretKey::load(&other).unwrap_err().to_string();
        assert!(err.contains("32 bytes"), "{err}");
    }
}
