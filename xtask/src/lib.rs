//! ffkit's generators: man pages (`man/`), shell completions
//! (`completions/`) and the marked tables of `README.md`, all from the
//! applet table and clap definitions in the ffkit library.
//!
//! Everything is produced in memory by [`generate`]; `gen` writes what
//! differs and deletes generated files that no longer belong, `--check`
//! only compares. These crates (clap_mangen, clap_complete) live here so the
//! ffkit binary never links them. [`dist`] is the shipped build (the
//! static-pie binary and the builtin); [`install`] is README's install from
//! a clone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::Command;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};
use ffkit::cli::docs::{self, Example};
use ffkit::cli::install_links::{LinkPolicy, link_policy};
use ffkit::cli::{APPLETS, Applet, applet_command, root_command};
use ffkit::config::ENV_VARS;
use ffkit::error::ExitKind;

pub mod dist;
pub mod install;

/// The directories whose every file is generated (stray files are stale).
pub const GENERATED_DIRS: &[&str] = &["man", "completions"];

/// The README sections rewritten between `<!-- BEGIN GENERATED:name -->`
/// and `<!-- END GENERATED:name -->`.
pub const README: &str = "README.md";

/// Every generated file, relative to the workspace root, with its content.
pub fn generate(root: &Path) -> io::Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let date = release_date(root)?;
    out.insert(PathBuf::from("man/ffkit.1"), root_page(&date)?);
    for a in APPLETS {
        out.insert(
            PathBuf::from(format!("man/{}.1", docs::man_page(a))),
            applet_page(a, &date)?,
        );
    }
    // Completions for every name a symlink can have; `ffkit`'s cover the
    // ffkit-only applets (`ffkit init`) as subcommands.
    let mut commands: Vec<(String, Command)> = vec![("ffkit".into(), root_command())];
    commands.extend(
        APPLETS
            .iter()
            .filter(|a| link_policy(a) != LinkPolicy::Never)
            .map(|a| (a.name.to_string(), applet_command(a, a.name))),
    );
    for (name, cmd) in commands {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), &name, &mut buf);
            if shell == Shell::Bash {
                buf = bash_arms_fixed(&name, &buf);
            }
            out.insert(completion_path(shell, &name), buf);
        }
    }
    let readme = fs::read_to_string(root.join(README))?;
    out.insert(PathBuf::from(README), fill_readme(&readme)?.into_bytes());
    let wrappers = fs::read_to_string(root.join(WRAPPERS))?;
    out.insert(
        PathBuf::from(WRAPPERS),
        fill_wrappers(&wrappers)?.into_bytes(),
    );
    Ok(out)
}

/// The shell wrappers, whose list of forwarded variables is generated.
pub const WRAPPERS: &str = "shell/ffkit.bash";

/// Rewrites the wrappers' two `env-forward` blocks from [`ENV_VARS`], so
/// `_ffkit_run` hands the binary exactly the variables it reads (set ones
/// with the shell's value, unset ones not at all), and a knob added to the
/// table reaches the shell functions too:
/// - `env-forward`, in `_ffkit_exec` (bash's way, in a subshell): one
///   `export` of every name;
/// - `env-forward-zsh`, in `_ffkit_zrun` (zsh's way: a simple command, as
///   zsh's subshell resets the signals the caller ignores): one `builtin
///   local -hx` whose word for a name is there only when it is set
///   (`${NAME+"NAME=$NAME"}`), and last `FFKIT_FN_LOG_DIR` set to the
///   function's `_ffkit_l` (the caller's cache dir, whose default metrics
///   log the call uses). One statement: a loop over
///   the names cost zsh ~10% of a call.
pub fn fill_wrappers(text: &str) -> io::Result<String> {
    let mut body = String::new();
    let mut line = String::from("        export");
    for v in ENV_VARS {
        if line.len() + 1 + v.name.len() > 76 {
            let _ = writeln!(body, "{line} \\");
            line = format!("            {}", v.name);
        } else {
            line.push(' ');
            line.push_str(v.name);
        }
    }
    let _ = writeln!(body, "{line}");
    let text = fill_block(text, "env-forward", "        ", &body)?;
    // `-h`: a local HOME (zsh's one special name here) that is not special,
    // so a script's `readonly HOME` does not make the assignment fail, and
    // with it every function.
    let mut zsh = String::from("    builtin local -hx");
    for v in ENV_VARS {
        let n = v.name;
        let _ = write!(zsh, " \\\n        ${{{n}+\"{n}=${n}\"}}");
    }
    // Last, so it wins, and always there: `local -x` with no word at all
    // (nothing set) would list the exported locals on stdout.
    let _ = writeln!(zsh, " \\\n        \"FFKIT_FN_LOG_DIR=$_ffkit_l\"");
    let text = fill_block(&text, "env-forward-zsh", "    ", &zsh)?;
    let text = fill_block(&text, "env-odd", "    ", &env_odd_bash())?;
    fill_block(&text, "env-odd-zsh", "    ", &env_odd_zsh())
}

/// Each name of [`ENV_VARS`] through `f`.
fn each_env_var(f: &dyn Fn(&str) -> String) -> Vec<String> {
    ENV_VARS.iter().map(|v| f(v.name)).collect()
}

/// The `for _ffkit_n in NAME…; do` line (packed) of the `env-odd` blocks.
fn env_var_loop() -> String {
    packed(
        "            for _ffkit_n in ",
        "                ",
        " \\",
        &each_env_var(&|n| format!("{n} ")),
        "; do",
    )
}

/// The `env-odd` block of `_ffkit_exec` (bash 4.4+): the variables of
/// [`ENV_VARS`] that its `export` would not hand the binary as `$NAME`
/// reads them (docs/shell.md, "Variables"): an indexed or associative
/// array (bash exports no array) and a nameref (`export` exports its
/// target), each given as `NAME=${NAME}` (element 0, key "0", the
/// target's value) in `_ffkit_o` when that is set. One `[[ ]]` over every
/// name first, so that a call without such a variable pays no loop.
/// Written into the function, not called as one: a call would be one
/// level deeper than the functions' deepest (`FUNCNEST`, docs/shell.md).
/// `set +u`: `${NAME@a}` of an unset NAME is an error under `set -u`, and
/// this process execs the binary next.
fn env_odd_bash() -> String {
    let mut b = String::from(
        "    if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] >= 404)); then\n        set +u\n",
    );
    b.push_str(&packed(
        "        _ffkit_n=",
        "        _ffkit_n+=",
        "",
        &each_env_var(&|n| format!("${{{n}@a}}")),
        "",
    ));
    b.push_str(&packed(
        "        if [[ $_ffkit_n == *[aA]* ",
        "            ",
        " \\",
        &each_env_var(&|n| format!("|| -R {n} ")),
        " ]]; then",
    ));
    b.push_str(&env_var_loop());
    b.push_str(concat!(
        "                [[ -R $_ffkit_n || ${!_ffkit_n@a} == *[aA]* ]] || continue\n",
        "                [[ -z ${!_ffkit_n+set} ]] || _ffkit_o+=(\"$_ffkit_n=${!_ffkit_n}\")\n",
        "            done\n",
        "        fi\n",
        "    fi\n",
    ));
    b
}

/// The `env-odd-zsh` block of `_ffkit_zrun`: an association among the
/// variables of [`ENV_VARS`] (whose zsh `$NAME` is any one of its values)
/// is given as its key "0" in `_ffkit_o`, or in `_ffkit_u` when it has
/// none, before the function's copies hide it. Read with zsh's
/// `${(t)NAME}` (the type; a fifth of what `${parameters[NAME]}` costs),
/// no bash syntax: hence the one shellcheck disable, on this block.
fn env_odd_zsh() -> String {
    let mut b = String::from(
        "    # shellcheck disable=SC2296 # -- zsh's ${(t)NAME}: this is zsh's function\n    {\n",
    );
    b.push_str(&packed(
        "        _ffkit_n=",
        "        _ffkit_n+=",
        "",
        &each_env_var(&|n| format!("${{(t){n}}}")),
        "",
    ));
    b.push_str("        if [[ $_ffkit_n == *association* ]]; then\n");
    b.push_str(&env_var_loop());
    b.push_str(concat!(
        "                [[ ${(Pt)_ffkit_n} == association* ]] || continue\n",
        "                if eval \"[[ -n \\${${_ffkit_n}[0]+set} ]]\"; then\n",
        "                    eval \"_ffkit_o+=(\\\"\\$_ffkit_n=\\${${_ffkit_n}[0]}\\\")\"\n",
        "                else\n",
        "                    _ffkit_u+=(\"$_ffkit_n\")\n",
        "                fi\n",
        "            done\n",
        "        fi\n",
        "    }\n",
    ));
    b
}

/// `parts` packed into lines of at most 76 columns (a part is never
/// split): the first line starts with `first`, each further one with
/// `rest`, and every line but the last ends with `cont` (` \` for a
/// continued command, empty for lines that are statements of their own).
/// `tail` ends the last line. Each line ends in a newline; trailing
/// blanks are trimmed.
fn packed(first: &str, rest: &str, cont: &str, parts: &[String], tail: &str) -> String {
    let mut out = String::new();
    let mut line = first.to_string();
    let mut empty = true;
    for p in parts {
        if !empty && line.len() + p.len() + cont.len() > 76 {
            let _ = writeln!(out, "{}{cont}", line.trim_end());
            line = rest.to_string();
        }
        line.push_str(p);
        empty = false;
    }
    let _ = writeln!(out, "{}{tail}", line.trim_end());
    out
}

/// Replaces what stands between `# BEGIN GENERATED:NAME` and its END line
/// (indented by `indent`) in the wrappers with the generated-by line and
/// `body`.
fn fill_block(text: &str, name: &str, indent: &str, body: &str) -> io::Result<String> {
    let begin = format!("# BEGIN GENERATED:{name}\n");
    let end = format!("{indent}# END GENERATED:{name}\n");
    let (Some(b), Some(e)) = (text.find(&begin), text.find(&end)) else {
        return Err(io::Error::other(format!(
            "{WRAPPERS} lacks the markers `# BEGIN GENERATED:{name}` ... `# END GENERATED:{name}`"
        )));
    };
    if e < b {
        return Err(io::Error::other(format!(
            "{WRAPPERS}: the {name} END marker precedes its BEGIN"
        )));
    }
    let mut s = text.to_string();
    s.replace_range(
        b + begin.len()..e,
        &format!("{indent}# From config::ENV_VARS by `cargo xtask gen`; do not edit.\n{body}"),
    );
    Ok(s)
}

/// clap_complete's bash script for a name with a `-` (`perf-metrics`)
/// names its subcommands two ways: the loop over the words builds
/// `perf__metrics__subcmd__serve` (the `-` of the name as `__`) while the
/// case arms that complete options read `perf__subcmd__metrics__subcmd__serve`
/// (every `-` as `__subcmd__`), so nothing after a subcommand completed.
/// The arms are renamed to what the loop builds.
pub fn bash_arms_fixed(name: &str, script: &[u8]) -> Vec<u8> {
    const SEP: &str = "__subcmd__";
    if !name.contains('-') {
        return script.to_vec();
    }
    let text = String::from_utf8_lossy(script);
    let wrong = format!("{}{SEP}", name.replace('-', SEP));
    let right = format!("{}{SEP}", name.replace('-', "__"));
    text.replace(&wrong, &right).into_bytes()
}

/// Where a completion script lives in the repository; the layout mirrors
/// the install locations under a prefix's `share/`.
pub fn completion_path(shell: Shell, name: &str) -> PathBuf {
    match shell {
        Shell::Bash => PathBuf::from(format!("completions/bash/{name}")),
        Shell::Zsh => PathBuf::from(format!("completions/zsh/_{name}")),
        _ => PathBuf::from(format!("completions/fish/{name}.fish")),
    }
}

/// What differs between the generated set and the tree at `root`: files to
/// write (missing or different) and generated-dir files to delete.
pub struct Stale {
    pub write: Vec<PathBuf>,
    pub delete: Vec<PathBuf>,
}

impl Stale {
    pub fn is_empty(&self) -> bool {
        self.write.is_empty() && self.delete.is_empty()
    }

    /// One line per stale file, for `--check` and the test.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for p in &self.write {
            let _ = writeln!(s, "  stale or missing: {}", p.display());
        }
        for p in &self.delete {
            let _ = writeln!(s, "  no longer generated: {}", p.display());
        }
        s
    }
}

pub fn compare(root: &Path, files: &BTreeMap<PathBuf, Vec<u8>>) -> io::Result<Stale> {
    let mut write = Vec::new();
    for (rel, content) in files {
        match fs::read(root.join(rel)) {
            Ok(old) if &old == content => {}
            Ok(_) => write.push(rel.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => write.push(rel.clone()),
            Err(e) => return Err(e),
        }
    }
    let mut delete = Vec::new();
    for dir in GENERATED_DIRS {
        for rel in list_files(root, Path::new(dir))? {
            if !files.contains_key(&rel) {
                delete.push(rel);
            }
        }
    }
    Ok(Stale { write, delete })
}

/// Checks the committed files; an error names every stale one.
pub fn check(root: &Path) -> Result<(), String> {
    let files = generate(root).map_err(|e| format!("cannot generate: {e}"))?;
    let stale = compare(root, &files).map_err(|e| format!("cannot compare: {e}"))?;
    if stale.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "generated files are stale; run `cargo xtask gen` and commit the result:\n{}",
            stale.describe()
        ))
    }
}

/// Writes what differs and deletes what no longer belongs; returns what changed.
pub fn write(root: &Path) -> io::Result<Stale> {
    let files = generate(root)?;
    let stale = compare(root, &files)?;
    for rel in &stale.write {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, &files[rel])?;
    }
    for rel in &stale.delete {
        fs::remove_file(root.join(rel))?;
    }
    Ok(stale)
}

/// The workspace root (the xtask crate's parent).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

fn list_files(root: &Path, rel: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(root.join(rel)) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        let child = rel.join(e.file_name());
        if e.file_type()?.is_dir() {
            out.extend(list_files(root, &child)?);
        } else {
            out.push(child);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- man pages

/// ffkit's version, as its binary reports it (`ffkit --version`), not this
/// generator crate's.
pub fn ffkit_version() -> String {
    root_command()
        .get_version()
        .map(|v| v.to_string())
        .unwrap_or_default()
}

/// The release date for the pages' `.TH` date slot:
/// `[package.metadata.release] date = "YYYY-MM-DD"` in the ffkit package's
/// Cargo.toml, bumped with the version (a date, unlike a build time, keeps
/// the generated files reproducible).
pub fn release_date(root: &Path) -> io::Result<String> {
    let manifest = fs::read_to_string(root.join("Cargo.toml"))?;
    let mut in_release = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_release = line == "[package.metadata.release]";
            continue;
        }
        if let Some(v) = line.strip_prefix("date").map(str::trim_start)
            && in_release
            && let Some(v) = v.strip_prefix('=')
        {
            let d = v.trim().trim_matches('"');
            if !is_date(d) {
                return Err(io::Error::other(format!(
                    "Cargo.toml: [package.metadata.release] date = {v}: expected \"YYYY-MM-DD\""
                )));
            }
            return Ok(d.to_string());
        }
    }
    Err(io::Error::other(
        "Cargo.toml lacks [package.metadata.release] date = \"YYYY-MM-DD\" (the man pages' date)",
    ))
}

fn is_date(d: &str) -> bool {
    let parts: Vec<&str> = d.split('-').collect();
    let num = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    match parts.as_slice() {
        [y, m, day] => {
            num(y, 4).is_some()
                && num(m, 2).is_some_and(|m| (1..=12).contains(&m))
                && num(day, 2).is_some_and(|d| (1..=31).contains(&d))
        }
        _ => false,
    }
}

fn man(cmd: Command, page: &str, date: &str) -> Man {
    Man::new(cmd)
        .title(page.to_uppercase())
        .section("1")
        .date(date)
        .source(format!("ffkit {}", ffkit_version()))
        .manual("ffkit manual")
}

/// SYNOPSIS with every option's value names (`[--dir DIR]`), which
/// clap_mangen's own synopsis leaves out. Written as roff directly so that
/// an option and its value are joined by an unbreakable space (`\ `).
fn synopsis(cmd: &Command, name: &str) -> Vec<u8> {
    let esc = |t: &str| t.replace('\\', "\\e").replace('-', "\\-");
    let mut cmd = cmd.clone();
    cmd.build();
    let values = |a: &clap::Arg| -> Vec<String> {
        if !a.get_num_args().is_some_and(|r| r.takes_values()) {
            return vec![];
        }
        let many = a.get_num_args().is_some_and(|r| r.max_values() > 1);
        let names: Vec<String> = a
            .get_value_names()
            .map(|v| v.iter().map(|s| s.to_string()).collect())
            .unwrap_or_else(|| vec![a.get_id().as_str().to_uppercase()]);
        match names.as_slice() {
            [one] if many => vec![format!("{one}...")],
            _ => names,
        }
    };
    let mut line = format!(".SH SYNOPSIS\n\\fB{}\\fR", esc(name));
    let bracket = |required: bool| if required { ("", "") } else { ("[", "]") };
    // Options first, then positionals, as usage lines read.
    let mut args: Vec<&clap::Arg> = cmd.get_arguments().filter(|a| !a.is_hide_set()).collect();
    args.sort_by_key(|a| a.is_positional());
    for a in args {
        let (open, close) = bracket(a.is_required_set());
        let vals: Vec<String> = values(a)
            .iter()
            .map(|v| format!("\\fI{}\\fR", esc(v)))
            .collect();
        if a.is_positional() {
            let _ = write!(line, " {open}{}{close}", vals.join("\\ "));
            continue;
        }
        let flag = match (a.get_short(), a.get_long()) {
            (Some(s), Some(l)) => format!("-{s}|--{l}"),
            (Some(s), None) => format!("-{s}"),
            (None, Some(l)) => format!("--{l}"),
            (None, None) => continue,
        };
        let _ = write!(line, " {open}\\fB{}\\fR", esc(&flag));
        for v in vals {
            let _ = write!(line, "\\ {v}");
        }
        line.push_str(close);
    }
    if cmd.has_subcommands() {
        let fallback = if name == "ffkit" { "APPLET" } else { "COMMAND" };
        let sub = cmd.get_subcommand_value_name().unwrap_or(fallback);
        let (open, close) = bracket(cmd.is_subcommand_required_set());
        let _ = write!(line, " {open}\\fI{}\\fR{close}", esc(sub));
    }
    line.push('\n');
    line.into_bytes()
}

/// Tidies clap_mangen's roff so that `mandoc -T lint` is clean: a `.br`
/// before or after a blank line is redundant; characters outside ASCII
/// become `\[uXXXX]` escapes (portable roff); text lines longer than 80
/// bytes are wrapped (roff fills text, so the output is the same) at a
/// space, or, in a long word, with `\c` (which joins the next line without
/// a space); never inside an escape, and never so that a line starts with
/// `.` or `'` (a control line).
pub fn tidy_roff(page: &str) -> String {
    let page = page.replace(".br\n\n.br\n", ".sp\n");
    let mut out = String::with_capacity(page.len() + page.len() / 40);
    for line in page.lines() {
        let line = line.trim_end_matches(' ');
        let mut ascii = String::with_capacity(line.len());
        for c in line.chars() {
            if c.is_ascii() {
                ascii.push(c);
            } else {
                let _ = write!(ascii, "\\[u{:04X}]", u32::from(c));
            }
        }
        if ascii.len() <= 80 || ascii.starts_with('.') || ascii.starts_with('\'') {
            out.push_str(&ascii);
            out.push('\n');
            continue;
        }
        wrap_text_line(&ascii, &mut out);
    }
    out
}

/// Splits one roff text line into atoms: an escape sequence or one byte.
fn roff_atoms(line: &str) -> Vec<&str> {
    let b = line.as_bytes();
    let mut atoms = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let len = if b[i] != b'\\' || i + 1 >= b.len() {
            1
        } else {
            // `\[name]`, `\f[..]`/`\*[..]`, `\(xx`, `\fB`/`\*x`, `\-`.
            let tail = &b[i + 1..];
            let bracket = |from: usize| {
                tail[from..]
                    .iter()
                    .position(|&c| c == b']')
                    .map_or(tail.len(), |p| from + p + 1)
            };
            1 + match tail {
                [b'[', ..] => bracket(1),
                [b'f' | b'*', b'[', ..] => bracket(2),
                [b'f' | b'*', b'(', _, _, ..] => 4,
                [b'(', _, _, ..] => 3,
                [b'f' | b'*', _, ..] => 2,
                _ => 1,
            }
            .min(tail.len())
        };
        atoms.push(&line[i..i + len]);
        i += len;
    }
    atoms
}

/// Whether text ends a sentence: roff puts two spaces after a sentence
/// that ends a line, so a line is never broken there.
fn ends_sentence(text: &str) -> bool {
    text.trim_end_matches([')', '"', '\'', ']', '*'])
        .ends_with(['.', '?', '!', ':'])
}

fn wrap_text_line(line: &str, out: &mut String) {
    // 78, so that a `\c` still fits in 80.
    const LIMIT: usize = 78;
    let starts_control = |s: &str| s.starts_with(['.', '\'', ' ']);
    let mut cur = String::new();
    // Byte offsets in `cur` of plain-space atoms (not `\ ` escapes).
    let mut spaces: Vec<usize> = Vec::new();
    for a in roff_atoms(line) {
        if cur.len() + a.len() > LIMIT {
            let at = spaces.iter().rev().copied().find(|&p| {
                p > 0
                    && p + 1 < cur.len()
                    && !starts_control(&cur[p + 1..])
                    && !ends_sentence(&cur[..p])
            });
            if let Some(p) = at {
                out.push_str(&cur[..p]);
                out.push('\n');
                cur = cur[p + 1..].to_string();
                spaces = spaces
                    .iter()
                    .filter(|&&q| q > p)
                    .map(|&q| q - p - 1)
                    .collect();
            } else if !cur.is_empty() && !starts_control(a) {
                out.push_str(&cur);
                out.push_str("\\c\n");
                cur.clear();
                spaces.clear();
            }
        }
        if a == " " {
            spaces.push(cur.len());
        }
        cur.push_str(a);
    }
    out.push_str(&cur);
    out.push('\n');
}

fn root_page(date: &str) -> io::Result<Vec<u8>> {
    // The root's after-help is the exit-status table, which the page
    // renders as its own section.
    let cmd = root_command().after_help(None::<&str>);
    let m = man(cmd.clone(), "ffkit", date);
    let mut buf = Vec::new();
    m.render_title(&mut buf)?;
    m.render_name_section(&mut buf)?;
    buf.extend_from_slice(&synopsis(&cmd, "ffkit"));
    m.render_description_section(&mut buf)?;
    m.render_options_section(&mut buf)?;
    // The applets are listed below, each with its own page; clap_mangen's
    // subcommand list would name pages (ffkit-cache-size(1)) that do not exist.
    let mut r = Roff::new();
    r.control("SH", ["APPLETS"]);
    r.text([roman(
        "Each applet runs as `ffkit APPLET ARGS...` or through a symlink named after it \
         (see ffkit install-links):",
    )]);
    for a in APPLETS {
        r.control("TP", []);
        r.text([bold(a.name)]);
        r.text([roman(about(a)), roman(policy_note(a))]);
    }
    common_sections(&mut r, docs::ROOT_EXAMPLES);
    r.control("SH", ["SEE ALSO"]);
    let refs: Vec<String> = APPLETS
        .iter()
        .map(|a| format!("{}(1)", docs::man_page(a)))
        .collect();
    r.text([roman(refs.join(", "))]);
    buf.extend_from_slice(r.to_roff().as_bytes());
    Ok(tidy_roff(&String::from_utf8_lossy(&buf)).into_bytes())
}

fn applet_page(a: &Applet, date: &str) -> io::Result<Vec<u8>> {
    let cmd = applet_command(a, &invoked(a));
    let m = man(cmd.clone(), &docs::man_page(a), date);
    let mut buf = Vec::new();
    m.render_title(&mut buf)?;
    m.render_name_section(&mut buf)?;
    buf.extend_from_slice(&synopsis(&cmd, &invoked(a)));
    m.render_description_section(&mut buf)?;
    let mut r = Roff::new();
    r.control("PP", []);
    match link_policy(a) {
        LinkPolicy::Default => r.text([
            roman("Also runs as "),
            bold(format!("ffkit {}", a.name)),
            roman("; the symlink form names itself "),
            bold(a.name),
            roman(" in messages."),
        ]),
        LinkPolicy::Persona => r.text([
            roman("A persona: it runs through a symlink named "),
            bold(a.name),
            roman(", which ffkit install-links creates only with "),
            bold(format!("--persona {}", a.name)),
            roman(
                ", so the system's tool of that name is never shadowed by default. Also runs as ",
            ),
            bold(format!("ffkit {}", a.name)),
            roman("."),
        ]),
        LinkPolicy::Never => r.text([
            roman("Runs as "),
            bold(format!("ffkit {}", a.name)),
            roman("; no symlink is created for it."),
        ]),
    };
    buf.extend_from_slice(r.to_roff().as_bytes());
    m.render_options_section(&mut buf)?;
    let cmd = applet_command(a, &invoked(a));
    if cmd.has_subcommands() {
        // Described here, not as separate pages.
        let mut r = Roff::new();
        r.control("SH", ["SUBCOMMANDS"]);
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            r.control("TP", []);
            r.text([bold(format!("{} {}", invoked(a), sub.get_name()))]);
            let about = sub
                .get_long_about()
                .or(sub.get_about())
                .map(|s| s.to_string());
            r.text([roman(about.unwrap_or_default())]);
        }
        buf.extend_from_slice(r.to_roff().as_bytes());
    }
    if (a.command)().get_after_help().is_some() {
        m.render_extra_section(&mut buf)?;
    }
    let mut r = Roff::new();
    if link_policy(a) == LinkPolicy::Persona {
        // A persona answers with the exit codes of the tool it stands in for.
        r.control("SH", ["EXIT STATUS"]);
        for (code, name, meaning) in docs::FLOCK_EXIT_STATUS {
            r.control("TP", []);
            r.text([bold(code.to_string()), roman(format!(" ({name})"))]);
            r.text([roman(*meaning)]);
        }
        rest_of_common_sections(&mut r, docs::examples(a.name));
    } else {
        common_sections(&mut r, docs::examples(a.name));
    }
    r.control("SH", ["SEE ALSO"]);
    r.text([roman("ffkit(1)")]);
    buf.extend_from_slice(r.to_roff().as_bytes());
    Ok(tidy_roff(&String::from_utf8_lossy(&buf)).into_bytes())
}

fn common_sections(r: &mut Roff, examples: &[Example]) {
    r.control("SH", ["EXIT STATUS"]);
    for k in ExitKind::ALL {
        r.control("TP", []);
        r.text([
            bold(k.code().to_string()),
            roman(format!(" ({})", k.name())),
        ]);
        r.text([roman(k.meaning())]);
    }
    rest_of_common_sections(r, examples);
}

/// The sections after EXIT STATUS: ENVIRONMENT, FILES, EXAMPLES.
fn rest_of_common_sections(r: &mut Roff, examples: &[Example]) {
    r.control("SH", ["ENVIRONMENT"]);
    r.text([roman(
        "Every variable is validated at start-up: an unknown value is a configuration \
         error (exit 12), never a silent fallback. An empty value counts as unset.",
    )]);
    for v in ENV_VARS {
        r.control("TP", []);
        r.text([bold(v.name)]);
        r.text([
            roman(format!("{}. ", v.meaning)),
            italic("Values:"),
            roman(format!(" {}; ", v.values)),
            italic("default:"),
            roman(format!(
                " {}.",
                if v.default.is_empty() {
                    "unset"
                } else {
                    v.default
                }
            )),
        ]);
    }
    r.control("SH", ["FILES"]);
    for f in docs::files() {
        r.control("TP", []);
        r.text([italic(f.path)]);
        r.text([roman(f.meaning)]);
    }
    r.control("SH", ["EXAMPLES"]);
    for e in examples {
        r.control("TP", []);
        r.text([bold(e.command)]);
        r.text([roman(e.says)]);
    }
}

/// How the applet's page names it: its symlink name, or `ffkit NAME` for an
/// applet never linked.
fn invoked(a: &Applet) -> String {
    match link_policy(a) {
        LinkPolicy::Never => format!("ffkit {}", a.name),
        _ => a.name.to_string(),
    }
}

/// A note on how an applet is reached, for the applet lists.
fn policy_note(a: &Applet) -> &'static str {
    match link_policy(a) {
        LinkPolicy::Default => "",
        LinkPolicy::Persona => " (persona: linked only with install-links --persona)",
        LinkPolicy::Never => " (run as ffkit APPLET; not linked)",
    }
}

fn about(a: &Applet) -> String {
    (a.command)()
        .get_about()
        .map(|s| s.to_string())
        .unwrap_or_default()
}

// ------------------------------------------------------------------ README

/// Rewrites every marked section of the README; a missing marker pair is
/// an error, so the README cannot silently lose a table.
pub fn fill_readme(readme: &str) -> io::Result<String> {
    let mut s = readme.to_string();
    for (name, body) in readme_sections() {
        let begin = format!("<!-- BEGIN GENERATED:{name} -->\n");
        let end = format!("<!-- END GENERATED:{name} -->");
        let (Some(b), Some(e)) = (s.find(&begin), s.find(&end)) else {
            return Err(io::Error::other(format!(
                "README.md lacks the markers `{}` ... `{end}`",
                begin.trim_end()
            )));
        };
        if e < b {
            return Err(io::Error::other(format!(
                "README.md: {end} precedes its BEGIN"
            )));
        }
        s.replace_range(b + begin.len()..e, &body);
    }
    Ok(s)
}

/// A Markdown table cell: `|` would end the cell and `<id>` would be read
/// as an HTML tag.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn readme_sections() -> Vec<(&'static str, String)> {
    let mut applets = String::from("| applet | what it does |\n|---|---|\n");
    for a in APPLETS {
        let _ = writeln!(
            applets,
            "| `{}` | {}{} |",
            a.name,
            cell(&about(a)),
            cell(policy_note(a))
        );
    }
    let mut env = String::from("| variable | values | default | meaning |\n|---|---|---|---|\n");
    for v in ENV_VARS {
        let _ = writeln!(
            env,
            "| `{}` | {} | {} | {} |",
            v.name,
            cell(v.values),
            if v.default.is_empty() {
                "unset".to_string()
            } else {
                format!("`{}`", v.default)
            },
            cell(v.meaning)
        );
    }
    let mut exit = String::from("| code | name | when |\n|---|---|---|\n");
    for k in ExitKind::ALL {
        let _ = writeln!(
            exit,
            "| {} | `{}` | {} |",
            k.code(),
            k.name(),
            cell(k.meaning())
        );
    }
    let mut files = String::from("| path | what it is |\n|---|---|\n");
    for f in docs::files() {
        let _ = writeln!(files, "| `{}` | {} |", f.path, cell(f.meaning));
    }
    vec![
        ("applets", applets),
        ("env", env),
        ("exit-codes", exit),
        ("files", files),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed man pages, completions and README tables are what the
    /// generators produce now; `cargo xtask gen` fixes a failure.
    #[test]
    fn committed_generated_files_are_fresh() {
        if let Err(msg) = check(&workspace_root()) {
            panic!("{msg}");
        }
    }

    #[test]
    fn every_applet_has_examples() {
        let missing: Vec<&str> = APPLETS
            .iter()
            .map(|a| a.name)
            .filter(|n| docs::examples(n).is_empty())
            .collect();
        assert!(
            missing.is_empty(),
            "add examples for {missing:?} to ffkit::cli::docs::examples (src/cli/docs.rs), then run `cargo xtask gen`"
        );
    }

    #[test]
    fn every_page_has_the_required_sections() {
        let files = generate(&workspace_root()).unwrap();
        for a in APPLETS
            .iter()
            .map(docs::man_page)
            .chain(["ffkit".to_string()])
        {
            let page =
                String::from_utf8(files[&PathBuf::from(format!("man/{a}.1"))].clone()).unwrap();
            for section in [
                "EXIT STATUS",
                "ENVIRONMENT",
                "FILES",
                "EXAMPLES",
                "SYNOPSIS",
            ] {
                assert!(
                    page.contains(&format!(".SH \"{section}\""))
                        || page.contains(&format!(".SH {section}")),
                    "{a}.1 lacks {section}"
                );
            }
            // ffkit's exit codes, but the persona's page has flock(1)'s.
            let codes = if a == "ffkit-flock" {
                page.contains("EX_USAGE") && !page.contains("FF_ERROR_CONFIG")
            } else {
                page.contains("FF_ERROR_CONFIG")
            };
            assert!(codes && page.contains("LOCK_TIMEOUT"), "{a}.1");
        }
    }

    /// `mandoc -T lint` at its strictest level (style) finds nothing in any
    /// committed page (the freshness test proves they are what `gen` makes).
    #[test]
    fn man_pages_are_mandoc_lint_clean() {
        let root = workspace_root();
        let mut pages: Vec<PathBuf> = list_files(&root, Path::new("man"))
            .unwrap()
            .into_iter()
            .map(|p| root.join(p))
            .collect();
        pages.sort();
        assert!(pages.len() > 5, "{pages:?}");
        let out = match std::process::Command::new("mandoc")
            .args(["-T", "lint", "-W", "style"])
            .args(&pages)
            .output()
        {
            Ok(out) => out,
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none_or(|v| v != "true"),
                    "mandoc is needed on CI: {e}"
                );
                eprintln!("SKIP: mandoc not installed ({e}); the man pages are not linted");
                return;
            }
        };
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.is_empty(),
            "mandoc -T lint:\n{said}"
        );
    }

    /// The title line carries ffkit's version (not the generator's) and a
    /// date in the date slot; the synopsis names option values.
    #[test]
    fn pages_have_the_real_version_a_date_and_value_names() {
        let files = generate(&workspace_root()).unwrap();
        let version = ffkit_version();
        assert!(!version.is_empty() && version != "0.0.0", "{version}");
        let date = release_date(&workspace_root()).unwrap();
        for (path, page) in files.iter().filter(|(p, _)| p.starts_with("man")) {
            let page = String::from_utf8_lossy(page);
            let th = page.lines().find(|l| l.starts_with(".TH ")).unwrap();
            assert!(
                th.ends_with(&format!(" {date} \"ffkit {version}\" \"ffkit manual\"")),
                "{}: {th}",
                path.display()
            );
        }
        let size = String::from_utf8_lossy(&files[&PathBuf::from("man/cache-size.1")]).into_owned();
        assert!(size.contains("[\\fB\\-\\-dir\\fR\\ \\fIDIR\\fR]"), "{size}");
        let write =
            String::from_utf8_lossy(&files[&PathBuf::from("man/cache-write.1")]).into_owned();
        assert!(
            write.contains("\\fB\\-\\-ttl\\fR\\ \\fISECONDS\\fR")
                && write.contains(" \\fIKEY\\fR "),
            "{write}"
        );
    }

    #[test]
    fn long_roff_lines_wrap_without_changing_meaning() {
        let long = format!("{} end. Next {}", "word ".repeat(20), "x".repeat(100));
        let t = tidy_roff(&format!(".TP\n{long}\n"));
        for l in t.lines() {
            assert!(l.len() <= 80, "{l}");
            assert!(!l.starts_with(['\'', ' ']), "{l}");
        }
        // No break after a sentence end; the long word is joined with \c.
        assert!(!t.contains("end.\n"), "{t}");
        assert!(t.contains("\\c\n"), "{t}");
        assert_eq!(tidy_roff("a \u{2014} b\n"), "a \\[u2014] b\n");
    }

    #[test]
    fn readme_markers_are_required() {
        assert!(fill_readme("no markers here").is_err());
    }
}
