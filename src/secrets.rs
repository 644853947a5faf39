//! Secrets at rest: the key that encrypts ingest tokens, endpoint signing secrets and
//! provider verification secrets in the store, and the cipher that seals and opens them.
//!
//! The key is `HOOKRELAY_SECRET_KEY` (standard base64 of 32 bytes) or, when that is
//! unset, one generated once into `<data dir>/secret_key` (mode 0600).
//!
//! Cipher: XChaCha20-Poly1305 from RustCrypto's `chacha20poly1305`. Chosen over
//! AES-GCM because its 192-bit nonce can be drawn at random for every value with no
//! counter to keep and no practical risk of a repeat (random 96-bit GCM nonces are
//! good for only about 2^32 values per key), and because it is constant-time in plain
//! software on CPUs without AES instructions. Version 0.10 shares `crypto-common` 0.1
//! with the `hmac` and `sha2` already in the build; it has no advisory.
//!
//! A sealed value is `xc1:` + standard base64 of nonce (24 bytes) ‖ ciphertext ‖ tag.
//! Each is bound by associated data to the place it belongs (for example
//! `merchant/acme/ingest_token`), so a value copied into another record does not open.

use std::fmt;
use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore as _;

/// The file in the data directory that holds a generated key.
pub const KEY_FILE: &str = "secret_key";
/// The setting that gives the key.
pub const KEY_SETTING: &str = "HOOKRELAY_SECRET_KEY";

const PREFIX: &str = "xc1:";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// What the store keeps sealed to recognise its key at the next start.
const KEY_CHECK_CONTEXT: &str = "hookrelay/key_check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"hookrelay secret key check v1";

/// 32 bytes of key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Standard base64 (padding optional) of exactly 32 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|_| "expected standard base64 of 32 bytes (e.g. `openssl rand -base64 32`)".to_owned())?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("expected 32 bytes of key, got {}", b.len()))?;
        Ok(Self(bytes))
    }

    fn encode(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

/// A sealed value that does not open: another key, another place, or damage.
#[derive(Debug, thiserror::Error)]
#[error("a stored secret could not be decrypted (another HOOKRELAY_SECRET_KEY, or damaged data)")]
pub struct OpenError;

/// Seals and opens secrets with one key.
#[derive(Clone)]
pub struct SecretCipher {
    aead: XChaCha20Poly1305,
}

impl SecretCipher {
    pub fn new(key: &SecretKey) -> Self {
        Self {
            aead: XChaCha20Poly1305::new(&key.0.into()),
        }
    }

    /// Encrypts `plaintext` for `context` (where it is stored) under a fresh random nonce.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .aead
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals any value of this size");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// Decrypts what [`SecretCipher::seal`] made for the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .filter(|raw| raw.len() >= NONCE_LEN + TAG_LEN)
            .ok_or(OpenError)?;
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        self.aead
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| OpenError)
    }

    /// Like [`SecretCipher::open`], for values that were UTF-8 text.
    pub fn open_text(&self, context: &str, sealed: &str) -> Result<String, OpenError> {
        String::from_utf8(self.open(context, sealed)?).map_err(|_| OpenError)
    }

    /// A value the store keeps to recognise this key later.
    pub fn key_check(&self) -> String {
        self.seal(KEY_CHECK_CONTEXT, KEY_CHECK_PLAINTEXT)
    }

    /// Whether `stored` (a [`SecretCipher::key_check`]) was made with this key.
    pub fn matches_key_check(&self, stored: &str) -> bool {
        self.open(KEY_CHECK_CONTEXT, stored)
            .is_ok_and(|plain| plain == KEY_CHECK_PLAINTEXT)
    }
}

impl fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretCipher(***)")
    }
}

/// The key in force: the configured one, else `<data dir>/secret_key`, which is
/// generated (mode 0600) on first start. Its path is logged, the key never.
pub fn load_or_create_key(configured: Option<&SecretKey>, data_dir: &Path) -> anyhow::Result<SecretKey> {
    if let Some(key) = configured {
        return Ok(key.clone());
    }
    let path = data_dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let key = SecretKey::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}; restore the file or set {KEY_SETTING}", path.display()))?;
            tracing::info!(path = %path.display(), "secret key read from file");
            return Ok(key);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading the secret key from {}", path.display())),
    }
    let key = SecretKey::generate();
    write_key_file(data_dir, &path, &key)?;
    tracing::info!(
        path = %path.display(),
        "generated the key that encrypts secrets at rest ({KEY_SETTING} was unset); back this file up with the data"
    );
    Ok(key)
}

/// Creates the key file (never over an existing one), durably: data, then directory.
fn write_key_file(data_dir: &Path, path: &Path, key: &SecretKey) -> anyhow::Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(format!("{}\n", key.encode()).as_bytes())
        .and_then(|_| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("syncing {}", data_dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_context() {
        let cipher = SecretCipher::new(&SecretKey::generate());
        let sealed = cipher.seal("merchant/a/ingest_token", b"whk_secret");
        assert!(sealed.starts_with("xc1:"));
        assert!(!sealed.contains("whk_secret"));
        assert_eq!(cipher.open("merchant/a/ingest_token", &sealed).unwrap(), b"whk_secret");
        assert!(
            cipher.open("merchant/b/ingest_token", &sealed).is_err(),
            "moved to another record"
        );
        let other = SecretCipher::new(&SecretKey::generate());
        assert!(other.open("merchant/a/ingest_token", &sealed).is_err());
        assert_ne!(
            cipher.seal("c", b"x"),
            cipher.seal("c", b"x"),
            "a fresh nonce per value"
        );
        for broken in ["", "xc1:", "xc1:!!!", "plain", &sealed[..sealed.len() - 4]] {
            assert!(cipher.open("merchant/a/ingest_token", broken).is_err(), "{broken}");
        }
    }

    #[test]
    fn the_key_check_recognises_the_key() {
        let key = SecretKey::generate();
        let check = SecretCipher::new(&key).key_check();
        assert!(SecretCipher::new(&key).matches_key_check(&check));
        assert!(!SecretCipher::new(&SecretKey::generate()).matches_key_check(&check));
    }

    #[test]
    fn keys_are_base64_of_32_bytes_and_never_print() {
        let key = SecretKey::generate();
        assert_eq!(SecretKey::parse(&key.encode()).unwrap(), key);
        assert_eq!(SecretKey::parse(key.encode().trim_end_matches('=')).unwrap(), key);
        for bad in ["", "short", "AAAA", &"A".repeat(64)] {
            assert!(SecretKey::parse(bad).is_err(), "{bad}");
        }
        assert!(!format!("{key:?}").contains(&key.encode()));
    }

    #[test]
    fn a_generated_key_is_kept_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_key(None, dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(load_or_create_key(None, dir.path()).unwrap(), first);
        let configured = SecretKey::generate();
        assert_eq!(load_or_create_key(Some(&configured), dir.path()).unwrap(), configured);
        std::fs::write(&path, "garbage").unwrap();
        assert!(load_or_create_key(None, dir.path()).is_err());
    }
}
