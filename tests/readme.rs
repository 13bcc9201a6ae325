//! README shows code that compiles and runs: its hand-written driver is the loop of
//! `examples/driver.rs` (which CI runs), character for character, and its tokio program
//! is the first example of tether-tokio's crate docs (a doctest).

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

#[test]
fn readme_tokio_program_is_the_adapter_doctest() {
    let readme = include_str!("../README.md");
    let docs = include_str!("../crates/tether-tokio/src/lib.rs");
    let lines: Vec<&str> = docs
        .lines()
        .map(|l| {
            l.strip_prefix("//! ")
                .or(l.strip_prefix("//!"))
                .unwrap_or(l)
        })
        .collect();
    let start = lines
        .iter()
        .position(|l| *l == "```no_run")
        .expect("the first example")
        + 1;
    let len = lines[start..]
        .iter()
        .position(|l| *l == "```")
        .expect("its end");
    let code = lines[start..start + len].join("\n");
    assert!(
        readme.contains(&code),
        "README's tokio program differs from tether-tokio's first doc example: copy it again"
    );
}
