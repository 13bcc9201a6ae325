//! README shows code that compiles and runs: its hand-written driver is the loop of
//! `examples/driver.rs` (which CI runs), character for character.

#[test]
fn readme_driver_is_the_example_loop() {
    let readme = include_str!("../README.md");
    let example = include_str!("../examples/driver.rs");
    let start = example.find("async fn client(").expect("the client loop");
    let end = example
        .find("// --- end of README's driver")
        .expect("the end marker");
    let code = example[start..end].trim_end();
    assert!(
        readme.contains(code),
        "README's driver differs from examples/driver.rs: copy the loop again"
    );
}
