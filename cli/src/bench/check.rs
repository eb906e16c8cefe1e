//! After each row: the shared secret still holds its bytes and is not
//! readable at rest (from `/proc/self/smaps` and, for keyed pages, this
//! thread's protection-key rights); for the creation rows, a
//! freshly made secret is not either. Any failure stops the bench loudly.

use securememory::Secret;

use super::impls::Impl;
use super::ops::{Op, KEY};

/// Check the row `op` of `imp` left `secret` intact and protected.
pub fn row(op: Op, imp: &Impl, secret: &Secret) -> Result<(), String> {
    let intact = secret.with_bytes(|b| b == KEY).map_err(|e| {
        format!(
            "after row {} / {}: with_bytes failed: {e}",
            op.name(),
            imp.name
        )
    })?;
    if !intact {
        return Err(format!(
            "after row {} / {}: the secret's bytes changed",
            op.name(),
            imp.name
        ));
    }
    at_rest(op, imp.name, secret)?;
    if op.creates() {
        let fresh = op
            .create_one(&imp.factory)
            .map_err(|e| format!("after row {} / {}: {e}", op.name(), imp.name))?;
        at_rest(op, imp.name, &fresh)?;
        fresh.close().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn at_rest(op: Op, imp: &str, secret: &Secret) -> Result<(), String> {
    match secret.is_readable_now() {
        Ok(false) => Ok(()),
        Ok(true) => Err(format!(
            "GUARANTEE BROKEN: after row {} / {imp} the secret's pages are READABLE at rest \
             (a mapping over its bytes is readable by this thread with no access in flight)",
            op.name()
        )),
        Err(e) => Err(format!(
            "cannot check the at-rest protection after row {} / {imp}: reading /proc/self/smaps failed: {e}",
            op.name()
        )),
    }
}
