//! `--help` of the root and of every applet, in both invocation forms,
//! against committed golden files; and clap's own consistency checks.
//!
//! Regenerate the golden files after changing a clap definition with
//! `FFKIT_BLESS=1 cargo test --workspace help`, and review the diff.

use std::fs;
use std::path::PathBuf;

use ffkit::cli::{APPLETS, applet_command, root_command};

use crate::util::World;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn blessing() -> bool {
    std::env::var_os("FFKIT_BLESS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Compares (or, when blessing, writes) one golden file; returns a
/// description of the mismatch.
fn compare(name: &str, actual: &str) -> Option<String> {
    let path = golden_dir().join(name);
    if blessing() {
        fs::create_dir_all(golden_dir()).unwrap();
        fs::write(&path, actual).unwrap();
        return None;
    }
    match fs::read_to_string(&path) {
        Ok(expected) if expected == actual => None,
        Ok(expected) => Some(format!(
            "{name} differs:\n--- expected\n{expected}\n--- actual\n{actual}"
        )),
        Err(e) => Some(format!("{name}: cannot read the golden file ({e})")),
    }
}

fn help_of(mut cmd: std::process::Command) -> String {
    let out = cmd.arg("--help").output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "help wrote to stderr");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_output_matches_golden_files_in_both_forms() {
    let w = World::new();
    let mut expected_files = vec!["ffkit.help".to_string()];
    let mut failures = Vec::new();
    let mut root = std::process::Command::new(crate::util::bin());
    w.isolate(&mut root);
    failures.extend(compare("ffkit.help", &help_of(root)));
    for a in APPLETS {
        let sub = format!("{}.sub.help", a.name);
        let link = format!("{}.link.help", a.name);
        failures.extend(compare(&sub, &help_of(w.cmd(a.name))));
        failures.extend(compare(&link, &help_of(w.link(a.name))));
        expected_files.extend([sub, link]);
    }
    if !blessing() {
        for e in fs::read_dir(golden_dir()).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".help") && !expected_files.contains(&name) {
                failures.push(format!("{name}: golden file of no applet; delete it"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\n{} help golden file(s) differ; if the change is intended, regenerate them with \
         `FFKIT_BLESS=1 cargo test --workspace help` and review the diff",
        failures.join("\n\n"),
        failures.len()
    );
}

#[test]
fn symlink_help_names_the_applet_and_subcommand_help_names_ffkit() {
    let w = World::new();
    // A persona copying another tool's usage text (flock) is exempt.
    for a in APPLETS
        .iter()
        .filter(|a| (a.command)().get_overridden_usage().is_none())
    {
        let link = help_of(w.link(a.name));
        assert!(link.contains(&format!("Usage: {} ", a.name)), "{link}");
        let sub = help_of(w.cmd(a.name));
        assert!(sub.contains(&format!("Usage: ffkit {} ", a.name)), "{sub}");
    }
}

#[test]
fn clap_definitions_pass_debug_assert() {
    root_command().debug_assert();
    for a in APPLETS {
        applet_command(a, a.name).debug_assert();
        applet_command(a, &format!("ffkit {}", a.name)).debug_assert();
    }
}

// ------------------------------------------------------------ completions

/// bash: sources bash-completion and every committed completion file, then
/// completes each line of stdin (words separated by spaces; the last word is
/// the one completed) with the function `complete -p` names for its first
/// word, printing the candidates and a `<END>` line per case.
const BASH_HARNESS: &str = r#"
source /usr/share/bash-completion/bash_completion || exit 3
for f in "$1"/*; do source "$f"; done
while read -r -a words; do
    COMP_WORDS=("${words[@]}")
    COMP_CWORD=$(( ${#words[@]} - 1 ))
    COMP_LINE="${words[*]}"
    COMP_POINT=${#COMP_LINE}
    COMPREPLY=()
    spec=$(complete -p "${words[0]}" 2>/dev/null)
    f=${spec##*-F }; f=${f%% *}
    [[ -n $spec ]] && "$f" "${words[0]}" "${words[COMP_CWORD]}" "${words[COMP_CWORD-1]}"
    printf '%s\n' "${COMPREPLY[@]}" '<END>'
done
"#;

/// zsh: a real interactive zsh in a pseudo-terminal (zsh/zpty) with the
/// committed completion files on fpath and compinit run; each case is typed
/// followed by TAB (a widget that completes, then prints `<COMPLETED>`), and
/// a compadd wrapper prints every candidate the completion functions add;
/// then `<END>`.
const ZSH_HARNESS: &str = r#"
zmodload zsh/zpty || exit 3
zpty z zsh -f -i
zpty -w z "fpath=($1 \$fpath)"
zpty -w z 'autoload -Uz compinit; compinit -u -D'
zpty -w z 'PROMPT= ; RPROMPT= ; unsetopt zle_bracketed_paste 2>/dev/null'
zpty -w z 'zstyle ":completion:*" list-grouped false; zstyle ":completion:*" insert-tab false'
zpty -w z 'compadd () { if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return $?; fi; typeset -a __hits __dscr; if (( $@[(I)-d] )); then __dscr=( "${(@P)${@[$(( $@[(i)-d] + 1 ))]}}" ); fi; builtin compadd -A __hits -D __dscr "$@"; (( $#__hits )) || return 1; print -r -- "<HIT>"${^__hits}; }'
zpty -w z 'zstyle ":completion:*" completer _complete'
zpty -w z '_h_tab() { zle complete-word; print -r -- "<COMPLETED>"; }; zle -N _h_tab; bindkey "^I" _h_tab'
zpty -w z 'print -r -- "<READY>"'
zpty -r z line '*<READY>*'
n=0
while IFS= read -r case; do
    n=$(( n + 1 ))
    zpty -n -w z "$case"$'\t'
    # Nothing more is typed until the completion has run: typeahead would
    # make zle cut it short.
    out=
    while zpty -r z chunk; do
        out+=$chunk
        [[ $out == *'<COMPLETED>'* ]] && break
    done
    print -r -- "$out" | grep -ao '<HIT>[^[:space:]]*' | sed 's/<HIT>//'
    zpty -w z $'\C-u'
    zpty -w z "print -r -- '<DONE'$n'>'"
    out=
    while zpty -r z chunk; do
        out+=$chunk
        [[ $out == *$'\n<DONE'$n'>'* ]] && break
    done
    print -r -- '<END>'
done
zpty -d z
"#;

/// fish: sources every committed completion file, then asks `complete -C`
/// for each line.
const FISH_HARNESS: &str = r#"
for f in $argv[1]/*.fish; source $f; end
while read -l case
    complete -C "$case" | string replace -r '\t.*' ''
    echo '<END>'
end
"#;

/// What completing each line must offer: the long options of the applet
/// (or its subcommand) that line names.
fn completion_cases() -> Vec<(String, Vec<String>)> {
    fn longs(cmd: &clap::Command) -> Vec<String> {
        cmd.get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect()
    }
    let mut cases = Vec::new();
    for a in APPLETS {
        let mut cmd = applet_command(a, a.name);
        cmd.build();
        // Through its link (if it has one) and as `ffkit APPLET`.
        let mut forms = vec![format!("ffkit {}", a.name)];
        if a.link != ffkit::cli::LinkPolicy::Never {
            forms.push(a.name.to_string());
        }
        for form in forms {
            // `ffkit APPLET` has no --version of its own (ffkit's covers it).
            let mut top = longs(&cmd);
            if form.starts_with("ffkit ") {
                top.retain(|l| l != "--version");
            }
            cases.push((format!("{form} --"), top));
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                let expect = longs(sub);
                if !expect.is_empty() {
                    cases.push((format!("{form} {} --", sub.get_name()), expect));
                }
            }
        }
    }
    cases
}

/// Runs `shell` with `harness` (its first argument: the completion dir of
/// that shell) over every case, and returns what each case offered.
fn complete_all(shell: &[&str], harness: &str, dir: &str, cases: &[String]) -> Vec<Vec<String>> {
    let w = World::new();
    let script = w.path().join("harness");
    fs::write(&script, harness).unwrap();
    let completions = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("completions")
        .join(dir);
    let mut c = std::process::Command::new(shell[0]);
    c.args(&shell[1..])
        .arg(&script)
        .arg(&completions)
        .env("HOME", w.path())
        .env("TERM", "dumb")
        .current_dir(w.path());
    let input: String = cases.iter().map(|l| format!("{l}\n")).collect();
    let out = crate::util::run_with_stdin(&mut c, input.as_bytes());
    assert!(
        out.status.success(),
        "{} harness failed: {}",
        shell[0],
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut blocks: Vec<Vec<String>> = vec![Vec::new()];
    for line in text.lines() {
        if line == "<END>" {
            blocks.push(Vec::new());
        } else if let Some(b) = blocks.last_mut() {
            b.push(line.trim().to_string());
        }
    }
    blocks.pop();
    assert_eq!(blocks.len(), cases.len(), "{}: {text}", shell[0]);
    blocks
}

#[test]
fn completions_complete_every_applet_through_its_link_and_ffkit_in_bash_zsh_and_fish() {
    let cases = completion_cases();
    let lines: Vec<String> = cases.iter().map(|c| c.0.clone()).collect();
    let shells: [(&[&str], &str, &str); 3] = [
        (&["bash", "--norc", "--noprofile"], BASH_HARNESS, "bash"),
        (&["zsh", "-f"], ZSH_HARNESS, "zsh"),
        (&["fish", "--no-config"], FISH_HARNESS, "fish"),
    ];
    let mut missing = Vec::new();
    for (shell, harness, dir) in shells {
        if !crate::util::need(shell[0], &format!("{dir} completion test")) {
            continue;
        }
        if dir == "bash"
            && !std::path::Path::new("/usr/share/bash-completion/bash_completion").exists()
        {
            crate::util::skip(
                "bash-completion not installed: the bash completion test did not run",
            );
            continue;
        }
        let got = complete_all(shell, harness, dir, &lines);
        for ((line, expect), offered) in cases.iter().zip(got) {
            let lacking: Vec<&String> = expect.iter().filter(|e| !offered.contains(e)).collect();
            if !lacking.is_empty() {
                missing.push(format!(
                    "{dir}: '{line}<TAB>' lacks {lacking:?} (offered {offered:?})"
                ));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
