//! Placeholder for the signing helper's `identity::NodeKey` until its branch is merged:
//! the node's ed25519 key pair, made on first start and kept in `<data-dir>/node.key`
//! (PKCS#8, mode 0600). Enrolment only needs its public key. Replace the uses of this
//! module with `crate::identity::NodeKey` at merge time and delete it.

use std::path::Path;

use ring::signature::{Ed25519KeyPair, KeyPair};

pub const KEY_FILE: &str = "node.key";

pub struct NodeKey {
    pair: Ed25519KeyPair,
}

impl NodeKey {
    pub fn load_or_create(dir: &Path) -> std::io::Result<NodeKey> {
        let path = dir.join(KEY_FILE);
        let pkcs8 = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::create_dir_all(dir)?;
                let rng = ring::rand::SystemRandom::new();
                let doc = Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| std::io::Error::other("cannot generate an ed25519 key"))?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                f.write_all(doc.as_ref())?;
                f.sync_all()?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(e),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| {
            std::io::Error::other(format!(
                "{}: not an ed25519 PKCS#8 key ({e}); delete it and enrol again",
                path.display()
            ))
        })?;
        Ok(NodeKey { pair })
    }

    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }
}
