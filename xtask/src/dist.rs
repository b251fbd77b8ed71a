//! `cargo xtask dist [--features F] [--libc musl|glibc]`: the shipped
//! build, the one every installer, package and benchmark uses
//! (DEVELOPERS.md, "The shipped build"). It makes two files in
//! `TARGET/dist/`:
//!
//! - `ffkit`, linked **static-pie** against **musl** where the musl target
//!   can be built (its std is installed and so is the C compiler for it,
//!   `x86_64-linux-musl-gcc` from musl-tools), else against **glibc**, with
//!   one line on stderr saying why. A process start is most of what a call
//!   costs, and glibc's own start-up detects the CPU's caches with dozens of
//!   `cpuid` instructions, each a trap to the hypervisor in a VM (~7 µs
//!   here): 0.5 ms of every start. musl's start-up does none of that.
//!   - musl: `cargo rustc --profile dist -p ffkit --bin ffkit --target
//!     ARCH-unknown-linux-musl` (static-pie is that target's default); the
//!     result is copied to `TARGET/dist/ffkit`. The binary then allocates
//!     with dlmalloc (Cargo.toml), as musl's malloc maps and unmaps memory
//!     for small allocations.
//!   - glibc: `cargo rustc --profile dist -p ffkit --bin ffkit -- -C
//!     target-feature=+crt-static`: the flag reaches the binary's crate
//!     alone. It cannot go in RUSTFLAGS or `.cargo/config.toml`, where it
//!     would also reach the builtin (a cdylib, which a static target cannot
//!     produce) and, without `--target`, the proc-macros; the libc that std
//!     links is chosen at the final link, so the precompiled std follows.
//! - `libffkit_builtin.so`, the bash builtin, an ordinary cdylib for the
//!   host (bash loads it, so it uses bash's libc), built with the binary's
//!   features so both parse the same settings the same way (`cargo build
//!   --release` unifies them so too).
//!
//! The `dist` profile inherits `release` (Cargo.toml) and has a directory of
//! its own, so a dist build and `cargo build --release` never relink each
//! other's binary. After the build the binary's ELF header is checked:
//! a position-independent executable without an interpreter, or an error.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const USAGE: &str = "usage: cargo xtask dist [--features F] [--libc musl|glibc]";

/// The C library the binary links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Libc {
    Musl,
    Glibc,
}

/// What `cargo xtask dist` was asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Opts {
    pub features: Option<String>,
    /// `None`: musl where it can be built, else glibc.
    pub libc: Option<Libc>,
}

/// `[--features F] [--libc musl|glibc]`, each at most once, in any order.
pub fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().filter(|v| !v.is_empty());
        match (flag.as_str(), value) {
            ("--features", Some(f)) if o.features.is_none() => o.features = Some(f.clone()),
            ("--libc", Some(l)) if o.libc.is_none() => {
                o.libc = Some(match l.as_str() {
                    "musl" => Libc::Musl,
                    "glibc" => Libc::Glibc,
                    _ => return Err(USAGE.to_string()),
                })
            }
            _ => return Err(USAGE.to_string()),
        }
    }
    Ok(o)
}

/// The musl target of a `*-unknown-linux-gnu` host (`rustc -vV`'s `host:`),
/// or `None` for any other host.
pub fn musl_target(host: &str) -> Option<String> {
    let arch = host.strip_suffix("-unknown-linux-gnu")?;
    Some(format!("{arch}-unknown-linux-musl"))
}

/// The Rust tool cargo names in `var` (`RUSTC`, `CARGO`), else `default`
/// from PATH.
fn tool(var: &str, default: &str) -> OsString {
    std::env::var_os(var).unwrap_or_else(|| default.into())
}

/// Whether `target` can be built here: its std is installed and the C
/// compiler that cc-rs asks for (`ARCH-linux-musl-gcc`, for the TLS
/// crypto) is an executable on `PATH`, or one is named as cc-rs reads it
/// (`CC_<target>` with `-` or `_`, `TARGET_CC`). `Err` says what is
/// missing.
fn musl_ready(target: &str) -> Result<(), String> {
    let libdir = Command::new(tool("RUSTC", "rustc"))
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let has_std = libdir
        .and_then(|d| fs::read_dir(d).ok())
        .is_some_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
        });
    if !has_std {
        return Err(format!(
            "the {target} target is not installed (rustup target add {target})"
        ));
    }
    let named = [
        format!("CC_{target}"),
        format!("CC_{}", target.replace('-', "_")),
        "TARGET_CC".to_string(),
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|c| !c.is_empty()));
    let arch = target.split('-').next().unwrap_or(target);
    let cc = format!("{arch}-linux-musl-gcc");
    let executable = |p: PathBuf| {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| executable(d.join(&cc))));
    if !named && !on_path {
        return Err(format!("no {cc} on PATH (Debian: apt install musl-tools)"));
    }
    Ok(())
}

/// The host's target triple, from `rustc -vV`.
fn host_target() -> Result<String, String> {
    let rustc = tool("RUSTC", "rustc");
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .map_err(|e| format!("cannot run {rustc:?}: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .ok_or_else(|| "rustc -vV names no host".to_string())
}

/// The target the binary is built for: `Some(musl triple)`, or `None` for
/// the host's glibc. Asked for musl, a missing piece is an error; asked
/// for nothing, it is one line on stderr and glibc.
fn pick_target(libc: Option<Libc>) -> Result<Option<String>, String> {
    if libc == Some(Libc::Glibc) {
        return Ok(None);
    }
    let host = host_target()?;
    let ready = musl_target(&host)
        .ok_or_else(|| format!("no musl target for the host {host}"))
        .and_then(|t| musl_ready(&t).map(|()| t));
    match (ready, libc) {
        (Ok(t), _) => Ok(Some(t)),
        (Err(why), Some(Libc::Musl)) => Err(why),
        (Err(why), _) => {
            eprintln!(
                "xtask dist: {why}: linking glibc instead, whose start-up costs \
                 about 0.5 ms more in a VM (DEVELOPERS.md, \"The shipped build\")"
            );
            Ok(None)
        }
    }
}

/// `TARGET/dist`: `CARGO_TARGET_DIR` (relative to the workspace) or
/// `target`, as cargo places it.
pub fn out_dir(root: &Path, target_dir: Option<OsString>) -> PathBuf {
    target_dir
        .filter(|d| !d.is_empty())
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"))
        .join("dist")
}

/// The target dir cargo builds into, as cargo itself resolves it
/// (`cargo metadata`): `CARGO_TARGET_DIR`, `CARGO_BUILD_TARGET_DIR` or a
/// config file's `build.target-dir`, relative or absolute. Read from the
/// environment alone, the two last were missed: the build went there and
/// `TARGET/dist` was reported with whatever an earlier build had left in
/// it (a musl binary after `--libc glibc`).
fn cargo_target_dir(mut metadata: Command) -> Result<String, String> {
    let out = metadata
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo metadata failed ({})", out.status));
    }
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.get("target_directory")?.as_str().map(str::to_string))
        .ok_or_else(|| "cargo metadata: no target_directory".to_string())
}

/// `cargo metadata` of the workspace at `root`, for [`cargo_target_dir`].
fn metadata_command(root: &Path) -> Command {
    let mut c = Command::new(tool("CARGO", "cargo"));
    c.args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root);
    c
}

/// The binary's features as the builtin's: `tls` is `ffkit/tls`, and the
/// binary's default `redis` is named, since the builtin depends on ffkit
/// without default features (a workspace build unifies `redis` on too).
fn builtin_features(features: Option<&str>) -> String {
    let mut v = vec!["ffkit/redis".to_string()];
    for f in features
        .unwrap_or("")
        .split([',', ' '])
        .filter(|f| !f.is_empty())
    {
        let f = if f.contains('/') {
            f.to_string()
        } else {
            format!("ffkit/{f}")
        };
        if !v.contains(&f) {
            v.push(f);
        }
    }
    v.join(",")
}

/// The two builds: the static-pie binary (for the musl `target`, or the
/// host's glibc), then the builtin.
pub fn commands(root: &Path, features: Option<&str>, target: Option<&str>) -> [Command; 2] {
    let cargo = tool("CARGO", "cargo");
    let mut bin = Command::new(&cargo);
    bin.args(["rustc", "--profile", "dist", "-p", "ffkit"])
        .args(["--bin", "ffkit"])
        .current_dir(root);
    if let Some(f) = features {
        bin.args(["--features", f]);
    }
    match target {
        Some(t) => bin.args(["--target", t]),
        None => bin.args(["--", "-C", "target-feature=+crt-static"]),
    };
    let mut lib = Command::new(&cargo);
    lib.args(["build", "--profile", "dist", "-p", "ffkit-builtin"])
        .args(["--features", &builtin_features(features)])
        .current_dir(root);
    [bin, lib]
}

/// How an ELF executable is linked, from its header and program headers.
#[derive(Debug, PartialEq, Eq)]
pub enum Linking {
    /// `ET_DYN` without `PT_INTERP`: loaded by the kernel alone, anywhere.
    StaticPie,
    /// Has a `PT_INTERP`: the dynamic loader runs first.
    Dynamic,
    /// `ET_EXEC` without an interpreter: static, at a fixed address.
    StaticFixed,
}

/// Reads the linking of a 64-bit little-endian ELF executable (x86_64,
/// aarch64, riscv64: the targets ffkit is built for).
pub fn linking(elf: &[u8]) -> Result<Linking, String> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8).map(|b| {
            let mut a = [0; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let short = || "truncated ELF header".to_string();
    let e_type = u16_at(16).ok_or_else(short)?;
    let phoff = usize::try_from(u64_at(32).ok_or_else(short)?).map_err(|_| short())?;
    let phentsize = usize::from(u16_at(54).ok_or_else(short)?);
    let phnum = usize::from(u16_at(56).ok_or_else(short)?);
    let mut interp = false;
    for i in 0..phnum {
        let p_type = phentsize
            .checked_mul(i)
            .and_then(|o| o.checked_add(phoff))
            .and_then(u32_at)
            .ok_or_else(|| "truncated program headers".to_string())?;
        // PT_INTERP
        interp |= p_type == 3;
    }
    match (e_type, interp) {
        (_, true) => Ok(Linking::Dynamic),
        // ET_DYN
        (3, false) => Ok(Linking::StaticPie),
        // ET_EXEC
        (2, false) => Ok(Linking::StaticFixed),
        (t, false) => Err(format!("not an executable (e_type {t})")),
    }
}

/// Builds both files and checks the binary; returns `TARGET/dist`.
pub fn run(root: &Path, opts: &Opts) -> Result<PathBuf, String> {
    let target = pick_target(opts.libc)?;
    for mut c in commands(root, opts.features.as_deref(), target.as_deref()) {
        let st = c
            .status()
            .map_err(|e| format!("cannot run {:?}: {e}", c.get_program()))?;
        if !st.success() {
            return Err(format!("{:?} failed ({st})", c.get_program()));
        }
    }
    let dir = out_dir(root, Some(cargo_target_dir(metadata_command(root))?.into()));
    let exe = dir.join("ffkit");
    if let Some(t) = &target {
        // cargo puts a --target build under TARGET/<triple>/dist; the
        // shipped binary is TARGET/dist/ffkit whichever libc it links,
        // replaced by a rename so a running copy is never rewritten.
        let built = dir.with_file_name(t).join("dist").join("ffkit");
        let tmp = dir.join(".ffkit.new");
        fs::copy(&built, &tmp)
            .and_then(|_| fs::rename(&tmp, &exe))
            .map_err(|e| format!("{} -> {}: {e}", built.display(), exe.display()))?;
    }
    let elf = fs::read(&exe).map_err(|e| format!("{}: {e}", exe.display()))?;
    match linking(&elf).map_err(|e| format!("{}: {e}", exe.display()))? {
        Linking::StaticPie => {}
        other => {
            return Err(format!(
                "{}: linked {other:?}, not static-pie (does this target's libc \
                 support +crt-static? glibc needs its static libc.a: libc6-dev)",
                exe.display()
            ));
        }
    }
    let so = dir.join("libffkit_builtin.so");
    if !so.is_file() {
        return Err(format!("{}: not built", so.display()));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn dist_takes_features_and_a_libc() {
        assert_eq!(parse(&[]), Ok(Opts::default()));
        assert_eq!(
            parse(&strings(&["--features", "tls"])),
            Ok(Opts {
                features: Some("tls".into()),
                libc: None
            })
        );
        assert_eq!(
            parse(&strings(&["--libc", "glibc", "--features", "tls"])),
            Ok(Opts {
                features: Some("tls".into()),
                libc: Some(Libc::Glibc)
            })
        );
        assert_eq!(
            parse(&strings(&["--libc", "musl"])).map(|o| o.libc),
            Ok(Some(Libc::Musl))
        );
        for bad in [
            &["--features"][..],
            &["--features", ""],
            &["--release"],
            &["--features", "tls", "x"],
            &["--libc", "uclibc"],
            &["--libc", "musl", "--libc", "glibc"],
            &["--features", "tls", "--features", "redis"],
        ] {
            assert!(parse(&strings(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_the_binary_is_linked_static_and_the_builtin_gets_its_features() {
        let [bin, lib] = commands(Path::new("/w"), Some("tls"), None);
        assert_eq!(
            args(&bin),
            [
                "rustc",
                "--profile",
                "dist",
                "-p",
                "ffkit",
                "--bin",
                "ffkit",
                "--features",
                "tls",
                "--",
                "-C",
                "target-feature=+crt-static"
            ]
        );
        assert_eq!(bin.get_current_dir(), Some(Path::new("/w")));
        assert_eq!(
            args(&lib),
            [
                "build",
                "--profile",
                "dist",
                "-p",
                "ffkit-builtin",
                "--features",
                "ffkit/redis,ffkit/tls"
            ]
        );
        let [bin, lib] = commands(Path::new("/w"), None, None);
        assert!(!args(&bin).contains(&"--features".to_string()));
        assert_eq!(args(&lib)[5..], ["--features", "ffkit/redis"]);
        // musl: the target instead of the flag (static-pie is its default);
        // the builtin stays a host build.
        let [bin, lib2] = commands(Path::new("/w"), None, Some("x86_64-unknown-linux-musl"));
        assert_eq!(args(&bin)[7..], ["--target", "x86_64-unknown-linux-musl"]);
        assert_eq!(args(&lib2), args(&lib));
        assert_eq!(
            musl_target("x86_64-unknown-linux-gnu").as_deref(),
            Some("x86_64-unknown-linux-musl")
        );
        assert_eq!(
            musl_target("aarch64-unknown-linux-gnu").as_deref(),
            Some("aarch64-unknown-linux-musl")
        );
        assert_eq!(musl_target("x86_64-apple-darwin"), None);
        assert_eq!(musl_target("x86_64-unknown-linux-musl"), None);
        assert_eq!(
            builtin_features(Some("tls, redis")),
            "ffkit/redis,ffkit/tls"
        );
    }

    /// The target dir comes from cargo, which reads more than
    /// `CARGO_TARGET_DIR`: with `CARGO_BUILD_TARGET_DIR` set, the build went
    /// there and `target/dist` (an earlier build's binary) was reported.
    #[test]
    fn the_target_dir_is_cargos_whichever_way_it_is_set() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new("."));
        let with = |k: &str, v: &str| {
            let mut c = metadata_command(root);
            c.env_remove("CARGO_TARGET_DIR")
                .env_remove("CARGO_BUILD_TARGET_DIR")
                .env(k, v);
            cargo_target_dir(c)
        };
        assert_eq!(
            with("CARGO_BUILD_TARGET_DIR", "/tmp/xtask-t1").as_deref(),
            Ok("/tmp/xtask-t1")
        );
        assert_eq!(
            with("CARGO_TARGET_DIR", "/tmp/xtask-t2").as_deref(),
            Ok("/tmp/xtask-t2")
        );
        let rel = with("CARGO_TARGET_DIR", "rel-t");
        assert_eq!(rel, Ok(root.join("rel-t").display().to_string()));
    }

    #[test]
    fn the_dist_dir_follows_cargo_target_dir() {
        let root = Path::new("/w");
        assert_eq!(out_dir(root, None), Path::new("/w/target/dist"));
        assert_eq!(out_dir(root, Some("".into())), Path::new("/w/target/dist"));
        assert_eq!(out_dir(root, Some("t".into())), Path::new("/w/t/dist"));
        assert_eq!(out_dir(root, Some("/abs".into())), Path::new("/abs/dist"));
    }

    /// A minimal ELF64 header with one program header of type `p_type`.
    fn elf(e_type: u16, p_type: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[16..18].copy_from_slice(&e_type.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        b[64..68].copy_from_slice(&p_type.to_le_bytes());
        b
    }

    #[test]
    fn the_elf_check_tells_static_pie_from_dynamic_and_fixed() {
        // PT_LOAD = 1, PT_INTERP = 3.
        assert_eq!(linking(&elf(3, 1)), Ok(Linking::StaticPie));
        assert_eq!(linking(&elf(3, 3)), Ok(Linking::Dynamic));
        assert_eq!(linking(&elf(2, 1)), Ok(Linking::StaticFixed));
        assert!(linking(&elf(1, 1)).is_err());
        assert!(linking(b"#!/bin/sh\n").is_err());
        assert!(linking(&elf(3, 1)[..66]).is_err());
        assert!(linking(&elf(3, 1)[..40]).is_err());
        // This test binary is an ordinary, dynamically linked one.
        let me = fs::read("/proc/self/exe").unwrap();
        assert_eq!(linking(&me), Ok(Linking::Dynamic));
    }
}
