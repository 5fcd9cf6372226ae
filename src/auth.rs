//! The server password and its challenge-response: the password never travels.
//!
//! After a good `Hello`, a server with a password sends `Challenge { nonce }` (32 random
//! bytes from the operating system). The client picks its own 32 random bytes and
//! answers `Auth { nonce, proof }`, where `proof` is HMAC-SHA256 keyed with the password
//! over a fixed label and both random numbers. The server computes the same and
//! compares in constant time (`hmac`'s `verify_slice`). A recorded exchange cannot be
//! replayed (the server's number is new on every connection), and the client's number
//! keeps a fake server from choosing everything the client signs. What it does not stop
//! is guessing offline from a recorded exchange, so the password should be long and
//! random (docs/architecture.md, "Security and limits").

use anyhow::{bail, Context, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Read;
use std::path::Path;

/// Size of the random numbers and of the proof.
pub use crate::protocol::AUTH_BYTES;

/// Environment variable holding the password itself (for `serve`, `play`, `list` and
/// `restore`), when no `--password-file` is given.
pub const PASSWORD_ENV: &str = "MSXSYNC_PASSWORD";

/// Longest password accepted, in bytes: a password file is not read past it.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Passwords shorter than this are accepted with a warning: a recorded exchange lets an
/// eavesdropper try guesses offline as fast as they can compute HMACs.
pub const WEAK_PASSWORD_BYTES: usize = 12;

/// Mixed into every proof, so a proof made for msxsync means nothing anywhere else.
const LABEL: &[u8] = b"msxsync password proof v3\0";

/// A password. Its `Debug` output does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Vec<u8>);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Password {
    /// A password from text; one trailing line break (`\n` or `\r\n`) is not part of it,
    /// since files and terminals add one. Empty and over-long passwords are refused.
    pub fn new(text: &str) -> Result<Password> {
        let text = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(text);
        if text.is_empty() {
            bail!("the password is empty");
        }
        if text.len() > MAX_PASSWORD_BYTES {
            bail!(
                "the password is {} bytes long, the limit is {MAX_PASSWORD_BYTES}",
                text.len()
            );
        }
        Ok(Password(text.as_bytes().to_vec()))
    }

    /// Reads the password from `path` (its whole content, minus one trailing line
    /// break). The file is not read past the size limit.
    pub fn from_file(path: &Path) -> Result<Password> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open the password file {}", path.display()))?;
        let mut bytes = Vec::new();
        file.take(MAX_PASSWORD_BYTES as u64 + 3)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read the password file {}", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("the password file {} is not UTF-8", path.display()))?;
        Password::new(&text).with_context(|| format!("password file {}", path.display()))
    }

    /// The password in [`PASSWORD_ENV`], if that variable is set and not empty.
    pub fn from_env() -> Result<Option<Password>> {
        match std::env::var(PASSWORD_ENV) {
            Ok(text) if !text.is_empty() => Password::new(&text)
                .map(Some)
                .with_context(|| format!("environment variable {PASSWORD_ENV}")),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                bail!("environment variable {PASSWORD_ENV} is not UTF-8")
            }
        }
    }

    /// Whether the password is short enough to be guessed from a recorded exchange.
    pub fn is_weak(&self) -> bool {
        self.0.len() < WEAK_PASSWORD_BYTES
    }

    fn mac(
        &self,
        server_nonce: &[u8; AUTH_BYTES],
        client_nonce: &[u8; AUTH_BYTES],
    ) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("hmac takes keys of any length");
        mac.update(LABEL);
        mac.update(server_nonce);
        mac.update(client_nonce);
        mac
    }

    /// The client's proof for a challenge: HMAC-SHA256(password, label, both numbers).
    pub fn proof(
        &self,
        server_nonce: &[u8; AUTH_BYTES],
        client_nonce: &[u8; AUTH_BYTES],
    ) -> [u8; AUTH_BYTES] {
        self.mac(server_nonce, client_nonce)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `proof` was made with this password, compared in constant time.
    pub fn verify(
        &self,
        server_nonce: &[u8; AUTH_BYTES],
        client_nonce: &[u8; AUTH_BYTES],
        proof: &[u8; AUTH_BYTES],
    ) -> bool {
        self.mac(server_nonce, client_nonce)
            .verify_slice(proof)
            .is_ok()
    }
}

/// 32 random bytes from the operating system, for one exchange.
pub fn nonce() -> Result<[u8; AUTH_BYTES]> {
    let mut n = [0u8; AUTH_BYTES];
    getrandom::fill(&mut n)
        .map_err(|e| anyhow::anyhow!("cannot get random numbers from the system: {e}"))?;
    Ok(n)
}

/// The error `client::connect` gives when the server asks for a password and none was
/// given: the command line can then ask for one on the terminal and try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordNeeded {
    /// The server, as given.
    pub server: String,
}

impl std::fmt::Display for PasswordNeeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "server {} asks for a password; give --password-file FILE or set {PASSWORD_ENV}",
            self.server
        )
    }
}

impl std::error::Error for PasswordNeeded {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_checks_only_with_the_same_password_and_numbers() {
        let pw = Password::new("correct horse battery staple\n").unwrap();
        let (s, c) = ([1u8; AUTH_BYTES], [2u8; AUTH_BYTES]);
        let proof = pw.proof(&s, &c);
        assert!(pw.verify(&s, &c, &proof));
        let other = Password::new("correct horse battery stapler").unwrap();
        assert!(!other.verify(&s, &c, &proof));
        assert!(
            !pw.verify(&[9; AUTH_BYTES], &c, &proof),
            "another challenge"
        );
        assert!(
            !pw.verify(&s, &[9; AUTH_BYTES], &proof),
            "another client number"
        );
        assert_ne!(
            pw.proof(&s, &c),
            pw.proof(&c, &s),
            "the numbers are not symmetric"
        );
        // HMAC-SHA256 itself, against RFC 4231 test case 2.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            crate::hex::encode(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn passwords_are_read_with_limits() {
        assert_eq!(Password::new("a\r\n").unwrap(), Password::new("a").unwrap());
        assert_eq!(Password::new("a\n\n").unwrap().0, b"a\n");
        assert!(Password::new("\n").is_err());
        assert!(Password::new(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert!(Password::new("short").unwrap().is_weak());
        assert!(!Password::new("a long enough one").unwrap().is_weak());
        assert_eq!(
            format!("{:?}", Password::new("secret").unwrap()),
            "Password(..)"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "from a file\n").unwrap();
        assert_eq!(
            Password::from_file(&f).unwrap(),
            Password::new("from a file").unwrap()
        );
        std::fs::write(&f, vec![b'x'; 5000]).unwrap();
        let err = format!("{:#}", Password::from_file(&f).unwrap_err());
        assert!(
            err.contains("password file") && err.contains("limit is 1024"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            Password::from_file(&dir.path().join("none")).unwrap_err()
        );
        assert!(err.starts_with("cannot open the password file"), "{err}");
        assert_ne!(nonce().unwrap(), nonce().unwrap());
    }
}
