//! The ffkit binary: everything happens in [`ffkit::cli::main`].

fn main() -> std::process::ExitCode {
    ffkit::cli::main(std::env::args_os())
}
