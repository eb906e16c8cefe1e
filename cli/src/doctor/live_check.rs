//! The live check: a default secret, a pooled one, a sealed one and (where `Backend::Auto`
//! picks another backend than the default) an Auto one are each created,
//! read back and closed.

use securememory::{Backend, Layout, Options, ProtectedFactory, SecretFactory};

use super::findings::LiveCheck;
use super::POOLED_LEN;

/// Every check, in report order; `auto` is the backend `Backend::Auto` picks.
pub(super) fn live_checks(auto: Backend) -> Vec<LiveCheck> {
    let mut checks = vec![
        live("default secret", Options::default()),
        live(
            "pooled 32-byte secret",
            Options::default().layout(Layout::Pooled),
        ),
        live(
            "sealed 32-byte secret",
            Options::default().layout(Layout::Sealed),
        ),
    ];
    if auto != Backend::default() {
        checks.push(live(
            "Auto-backend secret",
            Options::default().backend(Backend::Auto),
        ));
    }
    checks
}

/// Why a live check failed.
#[derive(Debug, thiserror::Error)]
enum LiveError {
    #[error(transparent)]
    Secret(#[from] securememory::Error),
    #[error("the secret read back different bytes")]
    Mismatch,
}

/// Create a 32-byte secret with `opts`, read it back, close it.
fn live(name: &'static str, opts: Options) -> LiveCheck {
    let mut check = LiveCheck {
        name,
        ok: false,
        backend: None,
        access_path: None,
        error: None,
    };
    let mut outcome = || -> Result<(), LiveError> {
        let factory = ProtectedFactory::new(opts)?;
        // A fixed pattern, not a secret.
        let mut bytes = [0x5a_u8; POOLED_LEN];
        let secret = factory.new(&mut bytes)?;
        check.backend = Some(secret.backend());
        check.access_path = Some(secret.access_path());
        let same = secret.with_bytes(|b| b.iter().all(|&x| x == 0x5a))?;
        secret.close()?;
        if same {
            Ok(())
        } else {
            Err(LiveError::Mismatch)
        }
    };
    match outcome() {
        Ok(()) => check.ok = true,
        Err(e) => check.error = Some(e.to_string()),
    }
    check
}
