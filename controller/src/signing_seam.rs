//! Placeholder for the signing helper's `signing::ControllerKey` until its branch is
//! merged: the controller's ed25519 signing key, made on first start and kept in
//! `<data-dir>/signing.key` (PKCS#8, mode 0600, the file and format signing uses). Enrolment only needs its public
//! key, which it sends to every node it enrols. Replace the uses of this module with
//! `crate::signing::ControllerKey` at merge time and delete it.

use std::path::Path;

use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::identity::IdentityError;

pub const KEY_FILE: &str = "signing.key";

pub struct ControllerKey {
    pair: Ed25519KeyPair,
}

impl ControllerKey {
    pub fn load_or_create(data_dir: &Path) -> Result<ControllerKey, IdentityError> {
        let path = data_dir.join(KEY_FILE);
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        let pkcs8 = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = ring::rand::SystemRandom::new();
                let doc = Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| io(std::io::Error::other("cannot generate an ed25519 key")))?;
                crate::auth_token::write_private(&path, doc.as_ref())
                    .map_err(|e| io(std::io::Error::other(e.to_string())))?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(io(e)),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| {
            io(std::io::Error::other(format!(
                "not an ed25519 PKCS#8 key ({e}); move it away to have a new one made (enrolled nodes must then be enrolled again)"
            )))
        })?;
        Ok(ControllerKey { pair })
    }

    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }
}
