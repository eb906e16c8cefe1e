//! After each row: the shared secret still holds its bytes and is not
//! readable at rest (from `/proc/self/smaps` and, for keyed pages, this
//! thread's protection-key rights); for the creation rows, a
//! freshly made secret is not either. Any failure stops the bench loudly.
//! Shared with the criterion bench.

use securememory::Secret;

use super::impls::Impl;
use super::ops::{Op, KEY};

/// What the check after a row found wrong.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("after row {op} / {imp}: with_bytes failed: {source}")]
    Read {
        op: &'static str,
        imp: &'static str,
        source: securememory::Error,
    },
    #[error("after row {op} / {imp}: the secret's bytes changed")]
    Changed { op: &'static str, imp: &'static str },
    #[error(
        "GUARANTEE BROKEN: after row {op} / {imp} the secret's pages are READABLE at rest \
         (a mapping over its bytes is readable by this thread with no access in flight)"
    )]
    Readable { op: &'static str, imp: &'static str },
    #[error(
        "cannot check the at-rest protection after row {op} / {imp}: reading /proc/self/smaps failed: {source}"
    )]
    Smaps {
        op: &'static str,
        imp: &'static str,
        source: std::io::Error,
    },
    /// Making or closing the fresh secret of a creation row failed.
    #[error("after row {op} / {imp}: {source}")]
    Fresh {
        op: &'static str,
        imp: &'static str,
        source: securememory::Error,
    },
}

/// Check the row `op` of `imp` left `secret` intact and protected.
pub fn row(op: Op, imp: &Impl, secret: &Secret) -> Result<(), CheckError> {
    let (op_name, imp_name) = (op.name(), imp.name);
    let intact = secret
        .with_bytes(|b| b == KEY)
        .map_err(|source| CheckError::Read {
            op: op_name,
            imp: imp_name,
            source,
        })?;
    if !intact {
        return Err(CheckError::Changed {
            op: op_name,
            imp: imp_name,
        });
    }
    at_rest(op_name, imp_name, secret)?;
    if op.creates() {
        let fresh_err = |source| CheckError::Fresh {
            op: op_name,
            imp: imp_name,
            source,
        };
        let fresh = op.create_one(&imp.factory).map_err(fresh_err)?;
        at_rest(op_name, imp_name, &fresh)?;
        fresh.close().map_err(fresh_err)?;
    }
    Ok(())
}

fn at_rest(op: &'static str, imp: &'static str, secret: &Secret) -> Result<(), CheckError> {
    match secret.is_readable_now() {
        Ok(false) => Ok(()),
        Ok(true) => Err(CheckError::Readable { op, imp }),
        Err(source) => Err(CheckError::Smaps { op, imp, source }),
    }
}
