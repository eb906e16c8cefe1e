//! [`SecretReader`]: `std::io::Read` over a secret.

use std::io;

use super::Secret;

/// Reads a secret's bytes in order; every `read` call is one access.
///
/// Behaves like the reader of Asherah Go: reads continue from where the last
/// one ended, and at the end of the secret `read` returns `Ok(0)` (Rust's
/// EOF). On a closed secret `read` fails with an `io::Error` whose inner
/// error is [`Error::Closed`](crate::Error::Closed).
///
/// Each `read` puts the bytes straight into the buffer it is given: a kernel
/// copy on the copy path, and on the window path or from a keyed pool a
/// copy through one general-purpose register that leaves nothing in vector registers (see the core-dump
/// guarantee in the README). That buffer is the caller's: wipe it (for
/// instance with `zeroize`) when done.
///
/// ```
/// use std::io::Read;
/// use securememory::{ProtectedFactory, SecretFactory};
/// let secret = ProtectedFactory::default().new(&mut *b"token".to_vec())?;
/// let mut out = Vec::new();
/// secret.reader().read_to_end(&mut out)?;
/// assert_eq!(out, b"token");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SecretReader<'a> {
    secret: &'a Secret,
    pos: usize,
}

impl<'a> SecretReader<'a> {
    pub(crate) fn new(secret: &'a Secret) -> Self {
        SecretReader { secret, pos: 0 }
    }
}

impl io::Read for SecretReader<'_> {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.secret.read_at(self.pos, buf)?;
        self.pos += n;
        Ok(n)
    }
}

impl std::fmt::Debug for SecretReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretReader")
            .field("secret", self.secret)
            .field("pos", &self.pos)
            .finish()
    }
}
