//! The binary that cli/tests runs is the tool as it ships: built without
//! the library's `test-hooks` feature. (securememory's dev-dependency on
//! itself once turned the hooks on for every test build, so `cargo test
//! --workspace` ran a CLI linked with them.) The hooks' observation point
//! in the library's release path is linked into any binary built with
//! them, and its symbols name the `test_hooks` module; `.ci/run` also
//! checks cargo's own record of the features it built the library with.

#[test]
fn binary_is_built_without_test_hooks() {
    let path = env!("CARGO_BIN_EXE_securememory");
    let bin = std::fs::read(path).expect("read the built binary");
    let needle = b"test_hooks";
    assert!(
        !bin.windows(needle.len()).any(|w| w == needle),
        "{path} was built with securememory's test-hooks feature: the tool tested is not the tool shipped"
    );
}
