//! cache-size, cache-write, cache-read, cache-batch, cache-evict.

use crate::util::*;
use predicates::prelude::*;

#[test]
fn write_then_size_matches_oracle() {
    let w = World::new();
    w.write("a", "hello");
    assert_eq!(w.size(), oracle(&w.cache()).0);
    assert_eq!(
        w.index().as_deref(),
        Some(format!("{}\n", oracle(&w.cache()).0).as_str())
    );
    w.cmd("cache-read")
        .arg("a")
        .assert()
        .success()
        .stdout("hello");
    w.link("cache-read")
        .arg("a")
        .assert()
        .success()
        .stdout("hello");
    w.cmd("cache-read")
        .arg("b")
        .assert()
        .code(4)
        .stderr(predicate::str::contains("no such entry"));
}
