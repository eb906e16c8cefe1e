//! The benchmark operations: what one op is for each row name (Asherah Go's
//! benchmark set). Every op runs `iters` times on the calling thread; the
//! parallel form calls the same function on every thread at once.
//! `securememory bench` and the criterion bench (cli/benches/secrets.rs)
//! both run these.

use std::hint::black_box;
use std::io::Read;

use securememory::{Error, ProtectedFactory, Secret, SecretFactory};

/// The 32 bytes every benchmark secret holds.
pub const KEY: [u8; 32] = *b"0123456789abcdef0123456789ABCDEF";

/// The bytes of one `reader_read_4b` call.
const SMALL_READ: usize = 4;

/// Why an operation failed: the library refused, or a reader's `Read` did.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Secret(#[from] Error),
    #[error(transparent)]
    Read(#[from] std::io::Error),
}

/// One benchmark row name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    WithBytes,
    WithBytesFunc,
    ReaderReadAll,
    ReaderReadFull,
    /// Go's `Reader_Read`: a buffer the secret's length, read until EOF.
    ReaderRead,
    /// The same in 4-byte reads: eight accesses per op.
    ReaderRead4,
    NewClose,
    CreateRandomClose,
    /// A real client: one 1 KiB message sealed with ChaCha20-Poly1305,
    /// keyed inside `with_bytes` (see `client.rs`).
    Chacha1k,
}

impl Op {
    /// Every row, in table order.
    pub const ALL: [Op; 9] = [
        Op::WithBytes,
        Op::WithBytesFunc,
        Op::ReaderReadAll,
        Op::ReaderReadFull,
        Op::ReaderRead,
        Op::ReaderRead4,
        Op::NewClose,
        Op::CreateRandomClose,
        Op::Chacha1k,
    ];

    /// The row's name (the same in the table, the JSON and `cargo bench`).
    pub fn name(self) -> &'static str {
        match self {
            Op::WithBytes => "with_bytes",
            Op::WithBytesFunc => "with_bytes_func",
            Op::ReaderReadAll => "reader_read_all",
            Op::ReaderReadFull => "reader_read_full",
            Op::ReaderRead => "reader_read",
            Op::ReaderRead4 => "reader_read_4b",
            Op::NewClose => "new_close",
            Op::CreateRandomClose => "create_random_close",
            Op::Chacha1k => "chacha20poly1305_1k",
        }
    }

    /// Whether one op creates (and closes) a secret of its own.
    pub fn creates(self) -> bool {
        matches!(self, Op::NewClose | Op::CreateRandomClose)
    }

    /// Make one 32-byte secret the way this row does (for the at-rest check).
    pub fn create_one(self, factory: &ProtectedFactory) -> Result<Secret, Error> {
        match self {
            Op::CreateRandomClose => factory.create_random(KEY.len()),
            _ => factory.new(&mut KEY.clone()),
        }
    }

    /// Run `iters` ops on the calling thread. Access rows use the shared
    /// `secret`; creation rows make and close 32-byte secrets of their own
    /// with `factory`.
    pub fn run(
        self,
        factory: &ProtectedFactory,
        secret: &Secret,
        iters: u64,
    ) -> Result<(), OpError> {
        match self {
            Op::WithBytes => {
                for _ in 0..iters {
                    secret.with_bytes(|b| black_box(read32(b)))?;
                }
            }
            Op::WithBytesFunc => {
                for _ in 0..iters {
                    secret.with_bytes_func(|b| Ok::<_, Error>(black_box(read32(b))))?;
                }
            }
            Op::ReaderReadAll => {
                // Reused and reserved up front: no allocation per op.
                let mut out = Vec::with_capacity(2 * KEY.len());
                for _ in 0..iters {
                    out.clear();
                    secret.reader().read_to_end(&mut out)?;
                    black_box(&out);
                }
            }
            Op::ReaderReadFull => {
                let mut out = [0u8; 32];
                for _ in 0..iters {
                    secret.reader().read_exact(&mut out)?;
                    black_box(&out);
                }
            }
            Op::ReaderRead => {
                let mut out = [0u8; 32];
                for _ in 0..iters {
                    let mut r = secret.reader();
                    while r.read(&mut out)? > 0 {
                        black_box(&out);
                    }
                }
            }
            Op::ReaderRead4 => {
                let mut out = [0u8; SMALL_READ];
                for _ in 0..iters {
                    let mut r = secret.reader();
                    while r.read(&mut out)? > 0 {
                        black_box(&out);
                    }
                }
            }
            Op::NewClose => {
                for _ in 0..iters {
                    let mut bytes = KEY;
                    factory.new(black_box(&mut bytes))?.close()?;
                }
            }
            Op::CreateRandomClose => {
                for _ in 0..iters {
                    factory.create_random(KEY.len())?.close()?;
                }
            }
            Op::Chacha1k => super::client::from_secret(secret, iters)?,
        }
        Ok(())
    }
}

/// Read 32 bytes of the secret (as the floor does), so that every row
/// touches the bytes it was given.
#[inline(always)]
fn read32(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let n = b.len().min(32);
    out[..n].copy_from_slice(&b[..n]);
    out
}
