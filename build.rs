//! Embeds the committed, generated man pages and completions (`man/`,
//! `completions/`) into the binary, so `ffkit install-links --prefix P`
//! can place them without the source tree. The list is built from the
//! directories, so pages of applets added later are embedded automatically.

use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let mut files = Vec::new();
    for dir in ["man", "completions"] {
        println!("cargo:rerun-if-changed={dir}");
        collect(&root, Path::new(dir), &mut files);
    }
    files.sort();
    let mut out = String::from(
        "/// The generated docs: (path relative to the repository, content).\n\
         pub static EMBEDDED: &[(&str, &[u8])] = &[\n",
    );
    for rel in files {
        let abs = root.join(&rel);
        out.push_str(&format!(
            "    ({:?}, include_bytes!({:?})),\n",
            rel.to_string_lossy(),
            abs.to_string_lossy()
        ));
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("embedded_docs.rs");
    if let Err(e) = fs::write(&dest, out) {
        println!("cargo:warning=cannot write {}: {e}", dest.display());
        std::process::exit(1);
    }
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(root.join(rel)) else {
        return;
    };
    for e in rd.flatten() {
        let child = rel.join(e.file_name());
        match e.file_type() {
            Ok(t) if t.is_dir() => collect(root, &child, out),
            Ok(t) if t.is_file() => out.push(child),
            _ => {}
        }
    }
}
