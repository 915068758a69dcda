//! Accounts on a home node: password hashing (argon2id), bearer tokens stored as hashes, and
//! each user's signing key sealed at rest with the node's storage key (ChaCha20-Poly1305).

use std::path::Path;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHash};
use axum::http::StatusCode;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use guildhall_proto::id::{Keypair, UserId, sha256};

use crate::error::ApiError;

const NONCE_BYTES: usize = 12;

/// The node's key for secrets at rest, kept in its own file beside the database, created on
/// first start with owner-only permissions.
pub fn load_or_create_storage_key(path: &Path) -> std::io::Result<[u8; 32]> {
    if let Ok(bytes) = std::fs::read(path) {
        return bytes.try_into().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a 32-byte key", path.display()),
            )
        });
    }
    let key: [u8; 32] = rand::random();
    write_private(path, &key)?;
    Ok(key)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Seals a user's secret key; the user id is bound in as associated data so a sealed key
/// cannot be swapped onto another account.
pub fn seal_secret(storage_key: &[u8; 32], user: &UserId, secret: &[u8; 32]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(&Key::from(*storage_key));
    let nonce_bytes: [u8; NONCE_BYTES] = rand::random();
    let sealed = cipher
        .encrypt(
            &Nonce::from(nonce_bytes),
            Payload {
                msg: secret,
                aad: &user.0,
            },
        )
        .expect("sealing 32 bytes cannot fail");
    [&nonce_bytes[..], &sealed].concat()
}

pub fn open_secret(
    storage_key: &[u8; 32],
    user: &UserId,
    sealed: &[u8],
) -> Result<Keypair, ApiError> {
    let broken = || ApiError::internal("a stored key does not open with this node's storage key");
    if sealed.len() < NONCE_BYTES {
        return Err(broken());
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
    let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| broken())?;
    let cipher = ChaCha20Poly1305::new(&Key::from(*storage_key));
    let secret = cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: &user.0,
            },
        )
        .map_err(|_| broken())?;
    let secret: [u8; 32] = secret.try_into().map_err(|_| broken())?;
    Ok(Keypair::from_secret(secret))
}

pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| ApiError::internal(format!("salt encoding failed: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal(format!("password hashing failed: {e}")))
}

pub fn password_matches(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A fresh bearer token and the hash under which it is stored.
pub fn new_token() -> (String, [u8; 32]) {
    let raw: [u8; 32] = rand::random();
    let token = hex::encode(raw);
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> [u8; 32] {
    sha256(&[b"guildhall/token/v1\0", token.as_bytes()])
}

pub fn check_username(name: &str) -> Result<(), ApiError> {
    let ok_len = (2..=32).contains(&name.len());
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_username",
            "usernames are 2 to 32 characters: lowercase letters, digits, '_', '.' or '-'",
        ))
    }
}

pub fn check_password(password: &str) -> Result<(), ApiError> {
    let chars = password.chars().count();
    if (8..=256).contains(&chars) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_password",
            "passwords are 8 to 256 characters",
        ))
    }
}
