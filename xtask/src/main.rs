//! `cargo xtask gen [--check]`: regenerate (or check) man/, completions/
//! and the README tables. See the library for what is generated.
//! `cargo xtask dist [--features F] [--libc musl|glibc]`: the shipped build in
//! target/dist (xtask::dist).
//! `cargo xtask install [--prefix P] [--features F]`: build and install (xtask::install).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = xtask::workspace_root();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["gen"] => match xtask::write(&root) {
            Ok(s) if s.is_empty() => {
                eprintln!("xtask gen: everything is up to date");
                ExitCode::SUCCESS
            }
            Ok(s) => {
                eprint!("xtask gen: updated\n{}", s.describe());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("xtask gen: {e}");
                ExitCode::FAILURE
            }
        },
        ["gen", "--check"] => match xtask::check(&root) {
            Ok(()) => ExitCode::SUCCESS,
            Err(msg) => {
                eprint!("xtask gen --check: {msg}");
                ExitCode::FAILURE
            }
        },
        ["dist", ..] => {
            match xtask::dist::parse(&args[1..]).and_then(|o| xtask::dist::run(&root, &o)) {
                Ok(dir) => {
                    eprintln!("xtask dist: {}", dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("xtask dist: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        ["install", ..] => match xtask::install::run(&root, &args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask install: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!(
                "usage: cargo xtask gen [--check] | cargo xtask dist [--features F] \
                 [--libc musl|glibc] | \
                 cargo xtask install [--prefix P] [--features F]"
            );
            ExitCode::from(2)
        }
    }
}
