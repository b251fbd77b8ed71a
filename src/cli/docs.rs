//! What the generated documentation says beyond the clap definitions: the
//! examples of each applet and the files ffkit keeps on disk.
//!
//! The generators (`cargo xtask gen`: man pages, completions, README tables)
//! iterate [`super::APPLETS`] and take each applet's clap definition from
//! there; this module only adds the parts clap has no place for. A test in
//! the xtask crate fails when an applet has no examples here, so a new
//! applet cannot ship an empty EXAMPLES section.

use crate::cache::index::{COUNT_FILE, INDEX_FILE, SPARE_FILE};
use crate::cache::journal::JOURNAL_FILE;
use crate::memo::RUN_DIR;
use crate::metrics::DEFAULT_LOG_NAME;

/// The man page of an applet, without `.1`: [`super::Applet::man_page`].
pub fn man_page(a: &super::Applet) -> String {
    a.man_page()
}

/// One example: a command line and what it does.
#[derive(Clone, Copy, Debug)]
pub struct Example {
    pub command: &'static str,
    pub says: &'static str,
}

const fn ex(command: &'static str, says: &'static str) -> Example {
    Example { command, says }
}

/// Examples for the root page (`ffkit.1`).
pub const ROOT_EXAMPLES: &[Example] = &[
    ex(
        "ffkit cache-write greeting hello && ffkit cache-size",
        "Write an entry to the default cache dir and print the cache size.",
    ),
    ex("ffkit --list", "Print the applet names, one per line."),
    ex(
        "ffkit install-links --prefix ~/.local",
        "Create the applet symlinks next to the binary and install the man pages and completions under ~/.local/share.",
    ),
];

/// The examples of one applet, by name (its row's `examples`); empty for a
/// name that is no applet.
pub fn examples(applet: &str) -> &'static [Example] {
    super::find(applet).map_or(&[], |a| a.examples)
}

// Each applet's examples, referenced by its row in `super::APPLETS`
// (`Applet::examples`).

/// `cache-size`.
pub const CACHE_SIZE: &[Example] = &[
    ex(
        "cache-size",
        "Print the cache size in bytes, from the index in O(1).",
    ),
    ex("cache-size --human", "Print the size like 1.2 MiB."),
    ex(
        "cache-size --verify --fix",
        "Walk the cache dir, compare with the index and repair any drift.",
    ),
    ex(
        "CACHE_SIZE_TRACKING=disabled cache-size --json",
        "Walk instead of reading the index and print bytes, entries and source as JSON.",
    ),
];

/// `cache-write`.
pub const CACHE_WRITE: &[Example] = &[
    ex(
        "cache-write provider:github '{\"rate\":5000}' --ttl 300",
        "Write an entry that expires in five minutes.",
    ),
    ex(
        "tar c src | cache-write src.tar",
        "Write a binary value from standard input.",
    ),
];

/// `cache-run`.
pub const CACHE_RUN: &[Example] = &[
    ex(
        "cache-run --ttl 300 -- gh api rate_limit",
        "Run the command once, then replay its output and exit status for five minutes.",
    ),
    ex(
        "cache-run --ttl 3600 --stale 60 --key-cwd -- git ls-remote origin",
        "Per directory; a hit older than a minute is replayed at once and refreshed in the background.",
    ),
    ex(
        "jq -c . config.json | cache-run --key-stdin -- ./render",
        "Make stdin part of the key and feed it to the command.",
    ),
    ex(
        "cache-run --ttl 0 --key-file-content package-lock.json --output node_modules -- npm ci",
        "Store node_modules with the entry; a hit restores it (copy-on-write where possible) instead of running npm.",
    ),
    ex(
        "cache-run --invalidate -- gh api rate_limit",
        "Drop the entry, so the next call runs the command again.",
    ),
    ex(
        "cache-run --print-key --json -- gh api rate_limit",
        "Show the entry's key, age, hits and status without running anything.",
    ),
    ex(
        "cache-run --backend redis://cache.ci:6379 --ttl 600 -- ./fetch-deps.sh",
        "Share the answer across a fleet: runners missing at once run it once, on any host.",
    ),
];

/// `cache-read`.
pub const CACHE_READ: &[Example] = &[
    ex(
        "cache-read provider:github",
        "Print the value, or exit 4 when missing or expired.",
    ),
    ex(
        "if v=$(cache-read -q session-42); then echo \"$v\"; fi",
        "Use the exit status as the answer, with no message on stderr.",
    ),
];

/// `cache-batch`.
pub const CACHE_BATCH: &[Example] = &[
    ex(
        "printf 'a:1\\nb:2\\n' | cache-batch",
        "Write two entries (TTL 300 s) with one lock acquisition and one index update.",
    ),
    ex(
        "cache-batch --file entries.jsonl --format jsonl",
        "Write entries whose values need any bytes.",
    ),
    ex(
        "cache-batch --read a b",
        "Print 'key:value' for every present, unexpired key.",
    ),
];

/// `cache-evict`.
pub const CACHE_EVICT: &[Example] = &[
    ex(
        "cache-evict --max-bytes 100M",
        "Evict expired, then least recently used entries until the cache is at most 100 MiB.",
    ),
    ex(
        "cache-evict --older-than 7d --dry-run --json",
        "Report what would be removed, removing nothing.",
    ),
    ex(
        "cache-evict --all",
        "Empty the cache (the old clear_developer_cache).",
    ),
];

/// `lock-acquire`.
pub const LOCK_ACQUIRE: &[Example] = &[
    ex(
        "lock-acquire deploy.lock -- make deploy",
        "Run make holding the lock; exit with make's status.",
    ),
    ex(
        "lock-acquire -n deploy.lock -c 'make deploy' || echo busy",
        "Fail at once (exit 5) when someone else holds the lock.",
    ),
    ex(
        "lock-acquire --session build && ... && lock-release --session build",
        "Hold a named session lock across separate calls, as acquire_session_lock did.",
    ),
    ex(
        "exec 9>>/tmp/my.lock; lock-acquire --fd 9 -w 2.5",
        "Lock the shell's own descriptor, waiting at most 2.5 s (exit 6 on timeout).",
    ),
];

/// `lock-release`.
pub const LOCK_RELEASE: &[Example] = &[
    ex(
        "lock-release build",
        "Release the named lock build taken by lock-acquire build.",
    ),
    ex(
        "lock-release --fd 9",
        "Drop the lock held on the shell's descriptor 9.",
    ),
    ex(
        "lock-release --force stuck",
        "Release a lock that belongs to another owner (emergency).",
    ),
];

/// `lock-status`.
pub const LOCK_STATUS: &[Example] = &[
    ex(
        "lock-status build",
        "Print whether the named lock is held, and by whom.",
    ),
    ex(
        "lock-status --json /var/lock/deploy.lock",
        "Report a lock file's holder (pid, host, command, age) as JSON.",
    ),
];

/// `flock`.
pub const FLOCK: &[Example] = &[
    ex(
        "flock /tmp/my.lock make",
        "util-linux flock(1) usage: run make holding the lock (after ffkit install-links --persona flock).",
    ),
    ex(
        "flock -n -E 5 /tmp/my.lock -c 'echo got it'",
        "Fail at once with exit 5 when the lock is busy.",
    ),
];

/// The flock persona's EXIT STATUS: util-linux flock(1)'s codes (sysexits),
/// not ffkit's table.
pub const FLOCK_EXIT_STATUS: &[(u8, &str, &str)] = {
    use super::lock_args::sysexits::*;
    &[
        (
            0,
            "EX_OK",
            "the lock was taken (descriptor mode) or released (-u); in command mode the command's own status, 128+N when a signal N killed it",
        ),
        (
            1,
            "conflict",
            "the lock was busy (-n, -w 0) or still held when the -w timeout ran out; -E N replaces 1",
        ),
        (EX_USAGE, "EX_USAGE", "bad arguments or options"),
        (
            EX_DATAERR,
            "EX_DATAERR",
            "the lock could not be taken: the descriptor is not open, or the system refused the lock",
        ),
        (
            EX_NOINPUT,
            "EX_NOINPUT",
            "the lock file could not be opened (a missing directory, an empty name, a symbolic link, no permission)",
        ),
        (
            EX_UNAVAILABLE,
            "EX_UNAVAILABLE",
            "the command could not be run (not found, not executable)",
        ),
        (
            EX_OSERR,
            "EX_OSERR",
            "the -w timeout cannot be armed (negative, infinite, not a number) or the system ran out of memory or descriptors",
        ),
        (
            EX_CANTCREAT,
            "EX_CANTCREAT",
            "the lock file could not be created (read-only or full file system)",
        ),
    ]
};

/// `init`.
pub const INIT: &[Example] = &[
    ex(
        "eval \"$(ffkit init bash)\"",
        "Define the old library's shell functions (get_cache_size, acquire_critical_lock, ...) on top of ffkit.",
    ),
    ex(
        "ffkit init zsh >> ~/.zshrc",
        "Keep the functions for every zsh session.",
    ),
];

/// `perf-metrics`.
pub const PERF_METRICS: &[Example] = &[
    ex(
        "perf-metrics",
        "Per-operation count, total, avg, min, max, p50, p95, p99 as a table.",
    ),
    ex(
        "perf-metrics --json --since 1h",
        "The last hour as JSON, like get_performance_metrics.",
    ),
    ex(
        "perf-metrics check 'get_cache_size:p95<10ms'",
        "Fail when a health rule does not hold.",
    ),
    ex("perf-metrics cleanup", "Trim the log atomically."),
    ex(
        "perf-metrics serve",
        "Serve JSON, Prometheus text and a live page on http://127.0.0.1:9464/.",
    ),
    ex(
        "perf-metrics report --html metrics.html",
        "Write the page as one static file, e.g. a CI artifact.",
    ),
    ex(
        "perf-metrics --prometheus --textfile /var/lib/node_exporter/ffkit.prom",
        "Feed node_exporter's textfile collector (atomic write).",
    ),
];

/// `install-links`.
pub const INSTALL_LINKS: &[Example] = &[
    ex(
        "ffkit install-links",
        "Create the applet symlinks next to the ffkit binary.",
    ),
    ex(
        "ffkit install-links --dir ~/bin --prefix ~/.local",
        "Link the applets into ~/bin and install man pages and completions under ~/.local/share.",
    ),
    ex(
        "ffkit install-links --remove --prefix ~/.local",
        "Remove the links and files install-links placed.",
    ),
];

/// One file ffkit keeps on disk, for the FILES sections and the README.
#[derive(Clone, Debug)]
pub struct FileDoc {
    pub path: String,
    pub meaning: &'static str,
}

/// The files on disk (README "Files on disk"), named from the constants the
/// code uses.
pub fn files() -> Vec<FileDoc> {
    let f = |path: String, meaning| FileDoc { path, meaning };
    vec![
        f(
            "<cache-dir>".into(),
            "--dir, else $FFKIT_CACHE_DIR, else <repo>/.flowforge/dev-$FLOWFORGE_DEVELOPER/cache, else ${XDG_CACHE_HOME:-$HOME/.cache}/ffkit",
        ),
        f(
            "<cache-dir>/KEY".into(),
            "an entry's value, byte for byte; its access time is the LRU recency",
        ),
        f(
            "<cache-dir>/KEY.meta".into(),
            "the entry's JSON sidecar: key, created-at, expires-at or null, ttl, value bytes",
        ),
        f(
            format!("<cache-dir>/{INDEX_FILE}"),
            "the total bytes of values and sidecars as one decimal number and a newline; replaced by rename, safe to cat",
        ),
        f(
            format!("<cache-dir>/{SPARE_FILE}"),
            "the index before the last change, rewritten by the next one and exchanged with .size-index, only while nobody has it open (never read; ffkit's own)",
        ),
        f(
            format!("<cache-dir>/{JOURNAL_FILE}"),
            "empty: a removal on a full disk marks itself with it (the next call walks); an older ffkit's journal",
        ),
        f(
            format!("<cache-dir>/{COUNT_FILE}"),
            "an older ffkit's entry count: read while .lock has no count record, then folded into it and removed",
        ),
        f(
            "<cache-dir>/.lock".into(),
            "the kernel lock that serializes index updates; starts with the number of entries, a fixed-width record rewritten in place under the lock (entries= and 20 digits); while a change is in flight (or after a writer was killed in one) the change's journal follows it, from which the next call repairs the index",
        ),
        f(
            format!("<cache-dir>/{RUN_DIR}/<hash>.lock, <hash>.hits, <hash>.failed"),
            "cache-run's per-key single-flight lock, hit counter and the last failure handed to waiters (--discard-failures) (dot-dir: never counted)",
        ),
        f(
            "<cache-dir>/.store/XX/<blake3>".into(),
            "cache-run --output's content-addressed blobs and manifests, read-only (counted once each; swept when no entry uses them)",
        ),
        f(
            format!("<cache-dir>/{DEFAULT_LOG_NAME}"),
            "the default metrics log (CSV timestamp,operation,duration_ms) unless CACHE_PERF_METRICS is set",
        ),
        f(
            "<repo>/.flowforge/dev-<id>/locks/, sessions/locks/".into(),
            "critical and session lock files of the FlowForge namespace",
        ),
    ]
}
