//! README shows code that compiles and runs: every Rust snippet in it is found in code
//! that CI compiles. Its hand-written driver is the loop of `examples/driver.rs` (which CI
//! runs), character for character; its tokio program is the first example of
//! tether-tokio's crate docs, and its durable-peer code a doctest of tether-sqlite.

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

/// The crate docs of `src` as Rust code: `//!` prefixes removed, and the lines rustdoc
/// hides (`# ...`) dropped, as a reader of the rendered docs sees them.
fn doc_code(src: &str) -> String {
    src.lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .filter(|l| *l != "#" && !l.starts_with("# "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_rust_snippet_in_readme_is_compiled_code() {
    let readme = include_str!("../README.md");
    // Where compiled code lives: an example CI runs, and the crate docs (doctests).
    let compiled = [
        include_str!("../examples/driver.rs").to_string(),
        doc_code(include_str!("../crates/tether-tokio/src/lib.rs")),
        doc_code(include_str!("../crates/tether-sqlite/src/lib.rs")),
    ];
    let mut snippets = 0;
    let mut rest = readme;
    while let Some(start) = rest.find("```rust\n") {
        let body = &rest[start + "```rust\n".len()..];
        let end = body.find("\n```").expect("a closed code block");
        let code = body[..end].trim_end();
        assert!(
            compiled.iter().any(|c| c.contains(code)),
            "README's Rust snippet starting {:?} is neither in examples/driver.rs nor in a \
             crate's doc examples: copy it from the compiled code again",
            code.lines().next().unwrap_or("")
        );
        snippets += 1;
        rest = &body[end..];
    }
    assert_eq!(
        snippets, 3,
        "README's Rust snippets: the driver, tokio, durable peers"
    );
}

#[test]
fn the_adapters_readme_shows_its_doc_example() {
    let readme = include_str!("../crates/tether-tokio/README.md");
    let docs = doc_code(include_str!("../crates/tether-tokio/src/lib.rs"));
    let start = readme.find("```rust\n").expect("a Rust snippet") + "```rust\n".len();
    let end = start + readme[start..].find("\n```").expect("its end");
    assert!(
        docs.contains(readme[start..end].trim_end()),
        "tether-tokio's README snippet differs from its crate docs: copy it again"
    );
}
