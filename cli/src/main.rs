//! The `securememory` command-line tool.
fn main() {
    println!("securememory: no command yet");
}
