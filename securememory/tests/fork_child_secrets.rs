//! A fork child can make and use secrets of its own in every configuration
//! (its memory file is its own: the parent's descriptor is closed in the
//! child), while the parent's secret stays `Error::Forked` there.

mod support_proc;

use securememory::{Error, ProtectedFactory, SecretFactory};
use support_proc::ALL;

const TEST: &str = "fork_child_makes_secrets_of_its_own";

#[test]
fn fork_child_makes_secrets_of_its_own() {
    if let Some(role) = support_proc::role() {
        let cfg = support_proc::config(&role);
        let factory = ProtectedFactory::new(cfg.options()).expect("factory");
        let parents = factory
            .new(&mut b"parent's secret".to_vec())
            .expect("create");
        let status = support_proc::fork_and_wait(|| {
            if !matches!(parents.with_bytes(|_| ()), Err(Error::Forked)) {
                return 2;
            }
            let own = match factory.new(&mut b"child's own secret".to_vec()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("child could not create a secret: {e}");
                    return 3;
                }
            };
            match own.with_bytes(|b| b == b"child's own secret") {
                Ok(true) => {}
                other => {
                    eprintln!("child's secret read back wrong: {other:?}");
                    return 4;
                }
            }
            if own.close().is_err() {
                return 5;
            }
            0
        });
        assert!(
            status.success(),
            "{}: child failed: {}",
            cfg.name,
            support_proc::describe(status)
        );
        assert!(parents.with_bytes(|b| b == b"parent's secret").unwrap());
        support_proc::done();
        return;
    }
    let configs = support_proc::available(&ALL);
    for cfg in &configs {
        let run = support_proc::reexec(TEST, cfg.name, &[]);
        run.assert_done(cfg.name);
    }
    assert!(
        configs.len() >= 5,
        "too few configurations ran: {configs:?}"
    );
}
