//! A fork child can make and use secrets of its own in every configuration
//! (its memory file is its own: the parent's descriptor is closed in the
//! child), while the parent's secret stays `Error::Forked` there.
#![cfg(target_os = "linux")]

mod common;
mod support_proc;

use common::child::{self, Child};
use common::configs;
use securememory::{Error, ProtectedFactory, SecretFactory};
use support_proc::fork_and_wait;

const TEST: &str = "fork_child_makes_secrets_of_its_own";

#[test]
fn fork_child_makes_secrets_of_its_own() {
    if let Some(cfg) = configs::child_config() {
        let factory = ProtectedFactory::new(cfg.options()).expect("factory");
        let parents = factory
            .new(&mut b"parent's secret".to_vec())
            .expect("create");
        let status = fork_and_wait(|| {
            if !matches!(parents.with_bytes(|_| ()), Err(Error::Forked)) {
                return 2;
            }
            // The same length as the parent's: a pooled secret of the same
            // size class, where the parent's chunk still has free slots
            // that are not mapped in the child.
            let own = match factory.new(&mut b"child's secret!".to_vec()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("child could not create a secret: {e}");
                    return 3;
                }
            };
            match own.with_bytes(|b| b == b"child's secret!") {
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
            child::describe(status)
        );
        assert!(parents.with_bytes(|b| b == b"parent's secret").unwrap());
        child::done();
        return;
    }
    let configs = configs::default_path_configs();
    for cfg in &configs {
        let run = Child::new(TEST, cfg.name).run();
        run.assert_done(cfg.name);
    }
    assert!(
        configs.len() >= 5,
        "too few configurations ran: {configs:?}"
    );
}
