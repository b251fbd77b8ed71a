//! `init`: prints the shell wrappers (`shell/ffkit.bash`, embedded at build
//! time so the file and the binary can never disagree) for
//! `eval "$(ffkit init bash)"`, the way zoxide and starship integrate.
//!
//! A hidden helper, `init --developer-for-email EMAIL FILE`, is what the
//! wrappers ask to find the FlowForge developer id for `git config
//! user.email` in `.flowforge/team/config.json`, so that they need no jq.

use super::ExitCode;
use std::path::PathBuf;

use clap::{Arg, ArgMatches, Command};

use super::Ctx;
use crate::error::{ExitKind, Result};

/// The one source of truth for the shell functions.
pub const WRAPPERS: &str = include_str!("../../shell/ffkit.bash");

/// The wrappers' last line, which loads the bash builtin. `init bash`
/// prints it with this binary's path and build id filled in, so that
/// `eval "$(target/release/ffkit init bash)"` finds the builtin that build
/// made next to it and checks it is the same build.
pub const LOAD_LINE: &str = "{ _ffkit_builtin_load '' ''; } 3>&2 2>/dev/null\n";

/// The wrappers as `init SHELL` prints them.
pub fn wrappers_for(exe: Option<&std::path::Path>) -> String {
    match exe.and_then(|e| e.to_str()) {
        Some(e) => WRAPPERS.replacen(
            LOAD_LINE,
            &format!(
                "{{ _ffkit_builtin_load {} {}; }} 3>&2 2>/dev/null\n",
                shell_quote(e),
                shell_quote(&super::build_id())
            ),
            1,
        ),
        None => WRAPPERS.to_string(),
    }
}

/// `s` in single quotes for sh.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

pub fn command() -> Command {
    Command::new("init")
        .about("Print the FlowForge shell functions for eval \"$(ffkit init bash)\"")
        .long_about(
            "Print the shell functions of the old FlowForge library (get_cache_size, \
             write_cache_with_metadata, acquire_critical_lock, record_performance_metric, …) \
             implemented on top of ffkit. Add `eval \"$(ffkit init bash)\"` to a script or \
             ~/.bashrc (`ffkit init zsh` for zsh). The text is the same as shell/ffkit.bash, \
             which can be sourced directly instead. Works in bash 4.1+ and zsh.",
        )
        .arg(
            Arg::new("shell")
                .value_name("SHELL")
                .value_parser(["bash", "zsh"])
                .required_unless_present_any(["developer_for_email", "build_id"])
                .help("The shell to print the functions for"),
        )
        .arg(
            Arg::new("build_id")
                .long("build-id")
                .action(clap::ArgAction::SetTrue)
                .conflicts_with("shell")
                .hide(true)
                .help("Print the build id the shell loader compares with the bash builtin's"),
        )
        .arg(
            Arg::new("developer_for_email")
                .long("developer-for-email")
                .num_args(2)
                .value_names(["EMAIL", "FILE"])
                .value_parser(clap::value_parser!(PathBuf))
                .conflicts_with("shell")
                .hide(true)
                .help("Print the developer id whose email is EMAIL in the team config FILE"),
        )
}

struct Args {
    lookup: Option<(String, PathBuf)>,
    build_id: bool,
}

pub fn run(m: &ArgMatches, ctx: &mut Ctx) -> Result<ExitCode> {
    let a = Args {
        lookup: m
            .get_many::<PathBuf>("developer_for_email")
            .map(|v| v.cloned().collect::<Vec<_>>())
            .and_then(|v| match v.as_slice() {
                [email, file] => Some((email.to_string_lossy().into_owned(), file.clone())),
                _ => None,
            }),
        build_id: m.get_flag("build_id"),
    };
    ctx.metric = None;
    if a.build_id {
        ctx.write_out(format!("{}\n", super::build_id()).as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some((email, file)) = a.lookup else {
        // Only bash loads the builtin; zsh gets the file as it is.
        let exe = match m.get_one::<String>("shell").map(String::as_str) {
            Some("bash") => std::env::current_exe().ok(),
            _ => None,
        };
        ctx.write_out(wrappers_for(exe.as_deref()).as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    };
    match developer_for_email(&email, &file)? {
        Some(id) => {
            ctx.write_out(format!("{id}\n").as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        // "Nobody has this email" is an answer, not an error: no message.
        None => Ok(ExitCode::from(ExitKind::NotFound.code())),
    }
}

pub use crate::lock::team::developer_for_email;
