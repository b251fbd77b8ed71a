//! The Redis backend on a real Redis Cluster: three masters on loopback
//! ports that the test starts itself (`redis-server --cluster-enabled yes`
//! ×3, `redis-cli --cluster create`), reached by `redis+cluster://` with the
//! first node as the only seed, so that every call has to route by slot.
//! Locks exclude (processes × locked increments against a counter file, in
//! command mode and as named pairs, on a lock whose slot is *not* on the
//! seed), the cache's exact total equals a recount over every node after
//! concurrent writers and evictors, cache-run's N concurrent misses run
//! the command once, a paused master
//! fails each call within about one timeout, and a holder whose lock's slot
//! moves to another master follows it by the `MOVED` reply. The servers are
//! our own children, killed at the end. Without redis-server or redis-cli
//! the tests print a SKIP line, and fail on CI.

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::cache_run::{runs, spawn_piped};
use crate::util::*;

/// A three-master cluster this test owns.
struct Cluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

/// A free loopback port whose cluster bus port (+10000) is free too.
fn free_pair() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

/// Every node requires this password, so every call's handshake (AUTH on
/// each node it reaches) is tested too, and no message may show it.
const PASS: &str = "s3cret-pw";

/// A probe's connection: its reads time out (5 s), so a node that never
/// answers fails the probe, which is then tried again.
fn connect(port: u16) -> redis::RedisResult<redis::Connection> {
    let c = redis::Client::open(format!("redis://:{PASS}@127.0.0.1:{port}"))?;
    let con = c.get_connection_with_timeout(Duration::from_secs(2))?;
    con.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(con)
}

/// The test's own connection to node `port` for a question whose answer
/// the test needs (`unwrap`): its reads have no timeout, as
/// `Server::connect`'s: on a socket with a receive timeout a stop and
/// continue of this process (SIGSTOP/SIGCONT, a ptrace attach, a cgroup
/// freeze) fails the read with EINTR (signal(7)), and the test with it.
fn oracle(port: u16) -> redis::Connection {
    let con = connect(port).unwrap();
    con.set_read_timeout(None).unwrap();
    con
}

impl Cluster {
    fn start() -> Option<Cluster> {
        if !crate::redis::available() || !need("redis-cli", "the Redis Cluster tests") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cluster {
            nodes: Vec::new(),
            ports: Vec::new(),
            _dir: tempfile::tempdir().unwrap(),
        };
        for _ in 0..3 {
            let p = free_pair();
            let child = Command::new("redis-server")
                .args(["--port", &p.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--requirepass", PASS, "--masterauth", PASS])
                .arg("--cluster-config-file")
                .arg(dir.path().join(format!("nodes-{p}.conf")))
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            c.nodes.push(child);
            c.ports.push(p);
        }
        c._dir = dir;
        for &p in &c.ports {
            until("a cluster node to answer", || {
                connect(p).is_ok_and(|mut k| redis::cmd("PING").query::<String>(&mut k).is_ok())
            });
        }
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(c.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .env("REDISCLI_AUTH", PASS)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "cluster create: {}", stderr_of(&out));
        for &p in &c.ports {
            until("cluster_state:ok on every node", || {
                connect(p).is_ok_and(|mut k| {
                    redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query::<String>(&mut k)
                        .is_ok_and(|i| i.lines().any(|l| l.trim() == "cluster_state:ok"))
                })
            });
        }
        Some(c)
    }

    /// The first node only: every other node is found through its slot map.
    fn url(&self) -> String {
        format!("redis+cluster://:{PASS}@127.0.0.1:{}", self.ports[0])
    }

    /// The port of the master holding `key`'s slot.
    fn owner(&self, key: &str) -> u16 {
        let mut k = oracle(self.ports[0]);
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut k)
            .unwrap();
        let map: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut k).unwrap();
        for r in map {
            let redis::Value::Array(r) = r else { continue };
            let (
                Some(redis::Value::Int(a)),
                Some(redis::Value::Int(b)),
                Some(redis::Value::Array(m)),
            ) = (r.first(), r.get(1), r.get(2))
            else {
                continue;
            };
            if (*a..=*b).contains(&i64::from(slot))
                && let Some(redis::Value::Int(p)) = m.get(1)
            {
                return u16::try_from(*p).unwrap();
            }
        }
        panic!("no master for slot {slot}");
    }

    /// `cmd` on node `port`.
    fn on<T: redis::FromRedisValue>(&self, port: u16, cmd: &mut redis::Cmd) -> T {
        cmd.query(&mut oracle(port)).unwrap()
    }

    /// Every key matching `pattern` on every node, with its node.
    fn scan(&self, pattern: &str) -> Vec<(u16, String)> {
        let mut out = Vec::new();
        for &p in &self.ports {
            let mut k = oracle(p);
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut k)
                    .unwrap();
                out.extend(keys.into_iter().map(|key| (p, key)));
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        out
    }

    fn env(&self, c: &mut Command) {
        c.env("FFKIT_BACKEND", self.url())
            .env("FFKIT_BACKEND_TIMEOUT", "2")
            .env("FFKIT_LOCK_LEASE", "6")
            .env("FFKIT_LOCK_DIR", "/nonexistent-local-lock-dir")
            .env("CACHE_PERF_MONITORING", "disabled");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.nodes {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn bash(w: &World, c: &Cluster, script: &str) -> Command {
    let mut b = Command::new("bash");
    w.isolate(&mut b);
    c.env(&mut b);
    b.env("FF", bin()).arg("-c").arg(script);
    b
}

/// A command-mode holder of lock `name` whose command runs until the file
/// `go` appears in the world; returned once the command is up.
fn hold_until_go(w: &World, c: &Cluster, name: &str) -> Child {
    let mut hold = w.cmd("lock-acquire");
    c.env(&mut hold);
    hold.args([
        name,
        "--",
        "sh",
        "-c",
        "echo up > up; while [ ! -e go ]; do sleep 0.02; done",
    ]);
    let holder = spawn_piped(hold);
    assert!(
        eventually(|| w.path().join("up").exists()),
        "the holder never ran"
    );
    holder
}

fn wait_all(kids: Vec<Child>) {
    for k in kids {
        let out = k.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
    }
}

#[test]
fn redis_cluster_locks_exclude_and_fences_grow_on_a_slot_off_the_seed() {
    let Some(c) = Cluster::start() else { return };
    let w = World::new();
    // A lock whose keys live on another master than the seed.
    let name = (0..)
        .map(|i| format!("cnt{i}"))
        .find(|n| c.owner(&format!("ffkit:lock:{{{n}}}")) != c.ports[0])
        .unwrap();
    let key = format!("ffkit:lock:{{{name}}}");
    std::fs::write(w.path().join("c"), "0\n").unwrap();
    // Each round: once in command mode (logging its fence), once as a
    // named pair (a holder process keeps it until lock-release).
    let (procs, each) = (4, 10);
    let body = format!(
        "for i in $(seq {each}); do $FF lock-acquire -q {name} -c 'read n < c; echo $((n+1)) > c; \
         echo $FFKIT_LOCK_FENCE >> fences'; $FF lock-acquire -q {name} && {{ read n < c; \
         echo $((n+1)) > c; $FF lock-release {name}; }}; done"
    );
    let kids = (0..procs)
        .map(|_| {
            let mut b = bash(&w, &c, &body);
            b.env("LOCK_TIMEOUT", "60")
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            b.spawn().unwrap()
        })
        .collect();
    wait_all(kids);
    let n = std::fs::read_to_string(w.path().join("c")).unwrap();
    assert_eq!(
        n.trim(),
        (2 * procs * each).to_string(),
        "lost updates: no exclusion"
    );
    let fences: Vec<u64> = std::fs::read_to_string(w.path().join("fences"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(fences.len(), procs * each);
    assert!(fences.windows(2).all(|p| p[0] < p[1]), "fences must grow");
    // The lock's keys are all on its slot's master, and it was released.
    let owner = c.owner(&key);
    let fence: Option<u64> = c.on(owner, redis::cmd("GET").arg(format!("{key}:fence")));
    assert!(
        fence >= fences.last().copied(),
        "the counter is the last fence"
    );
    let held: Option<String> = c.on(owner, redis::cmd("GET").arg(&key));
    assert_eq!(held, None);
    // lock-status finds a holder through the seed too.
    let holder = hold_until_go(&w, &c, &name);
    let mut st = w.cmd("lock-status");
    c.env(&mut st);
    let out = st.args(["--json", name.as_str()]).output().unwrap();
    std::fs::write(w.path().join("go"), "").unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["state"], "held", "{j}");
    assert!(j["fence"].as_u64() > fences.last().copied(), "{j}");
    assert!(holder.wait_with_output().unwrap().status.success());
}

/// A worker: cache-batch, cache-write, cache-evict in a loop (all on the
/// default namespace's slot).
fn cache_worker(seed: u64) -> String {
    let mut r = fastrand::Rng::with_seed(seed);
    let mut sh = String::from("set -e\n");
    for _ in 0..25 {
        match r.u8(0..4) {
            0 | 1 => {
                sh.push_str(&format!("$FF cache-batch --ttl {} <<'EOF'\n", r.u64(0..3)));
                for _ in 0..r.usize(3..15) {
                    let len = r.usize(0..150);
                    let v: String = std::iter::repeat_with(|| r.alphanumeric())
                        .take(len)
                        .collect();
                    sh.push_str(&format!("k{}:{v}\n", r.u8(0..40)));
                }
                sh.push_str("EOF\n");
            }
            2 => {
                let len = r.usize(0..300);
                let v: String = std::iter::repeat_with(|| r.alphanumeric())
                    .take(len)
                    .collect();
                sh.push_str(&format!(
                    "$FF cache-write k{} '{v}' </dev/null\n",
                    r.u8(0..40)
                ));
            }
            _ => sh.push_str(&format!("$FF cache-evict --max-bytes {}\n", r.u64(0..3000))),
        }
    }
    sh
}

#[test]
fn redis_cluster_cache_total_is_exact_after_concurrent_writers_and_evictors() {
    let Some(c) = Cluster::start() else { return };
    let w = World::new();
    let seed = fastrand::u64(..);
    let kids = (0..4)
        .map(|i| {
            let mut b = bash(&w, &c, &cache_worker(seed + i));
            b.stdout(Stdio::null()).stderr(Stdio::piped());
            b.spawn().unwrap()
        })
        .collect();
    wait_all(kids);
    // One entry that neither expires nor was evicted: on a loaded machine
    // the workers' 1-2 s TTLs can all lapse and their last evictions take
    // the rest (seen beside stress-ng: "nothing left to check"), and the
    // total must still be checked against values that exist.
    let o = bash(&w, &c, "$FF cache-write --ttl 0 kept kept-value </dev/null")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ns = "ffkit:cache:{default}:";
    let values = c.scan(&format!("{ns}v:*"));
    let owner = c.owner(&format!("{ns}total"));
    assert!(!values.is_empty(), "seed {seed}: nothing left to check");
    assert!(
        values.iter().all(|(p, _)| *p == owner),
        "seed {seed}: a namespace's keys all live on its slot's master"
    );
    let bytes: u64 = values
        .iter()
        .map(|(p, k)| c.on::<u64>(*p, redis::cmd("STRLEN").arg(k)))
        .sum();
    let total: u64 = c.on(owner, redis::cmd("GET").arg(format!("{ns}total")));
    let count: u64 = c.on(owner, redis::cmd("GET").arg(format!("{ns}count")));
    assert_eq!(total, bytes, "seed {seed}: total != sum of STRLEN");
    assert_eq!(
        count,
        values.len() as u64,
        "seed {seed}: count != value keys"
    );
    // ffkit's own verify (SCAN on the namespace's node) agrees, and
    // cache-size reads the same total through the seed.
    let mut v = w.cmd("cache-size");
    c.env(&mut v);
    v.arg("--verify").assert().success();
    let mut s = w.cmd("cache-size");
    c.env(&mut s);
    let out = s.args(["--json"]).output().unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["bytes"].as_u64(), Some(total), "{j}");
    // Keys with braces of their own stay on the namespace's slot (its tag
    // comes first), and cache-batch --read reads every key from that
    // master, in order, a few requests for them all.
    let mut b = w.cmd("cache-batch");
    c.env(&mut b);
    b.args(["--ttl", "0"])
        .write_stdin("{x}:1\na}{b:2\n{}:3\n")
        .assert()
        .success();
    let now = c.scan(&format!("{ns}v:*"));
    assert!(now.iter().all(|(p, _)| *p == owner), "seed {seed}: {now:?}");
    let mut names: Vec<String> = now.iter().map(|(_, k)| k[ns.len() + 2..].into()).collect();
    names.sort();
    let mut r = w.cmd("cache-batch");
    c.env(&mut r);
    let out = r
        .arg("--read")
        .write_stdin(names.join("\n"))
        .output()
        .unwrap();
    assert!(out.status.success(), "seed {seed}: {}", stderr_of(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let printed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(':').map(|p| p.0))
        .collect();
    assert!(
        printed.is_sorted(),
        "seed {seed}: out of order: {printed:?}"
    );
    for want in ["{x}:1", "a}{b:2", "{}:3"] {
        assert!(
            text.lines().any(|l| l == want),
            "seed {seed}: {want}: {text}"
        );
    }
    // An eviction to zero brings the total to zero exactly. The Redis
    // total counts values only (docs/redis.md), so an entry whose value is
    // empty already fits in zero bytes and may stay (unless it expired
    // meanwhile: expired entries go first), as a random seed can leave
    // one: only empty values are left.
    let empty: Vec<String> = values
        .iter()
        .filter(|(p, k)| c.on::<u64>(*p, redis::cmd("STRLEN").arg(k)) == 0)
        .map(|(_, k)| k.clone())
        .collect();
    let mut e = w.cmd("cache-evict");
    c.env(&mut e);
    e.args(["--max-bytes", "0"]).assert().success();
    let total: u64 = c.on(owner, redis::cmd("GET").arg(format!("{ns}total")));
    let left: Vec<String> = c
        .scan(&format!("{ns}v:*"))
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    assert_eq!(total, 0, "seed {seed}");
    assert!(
        left.iter().all(|k| empty.contains(k)),
        "seed {seed}: a non-empty value survived: {left:?} (empty ones: {empty:?})"
    );
}

#[test]
fn redis_cluster_cache_run_concurrent_misses_run_the_command_once() {
    let Some(c) = Cluster::start() else { return };
    let w = World::new();
    let script = "echo run >> runs; i=0; while [ ! -e go ] && [ $i -lt 3000 ]; do sleep 0.02; \
                  i=$((i+1)); done; echo out; exit 3";
    let n = 5;
    let kids: Vec<Child> = (0..n)
        .map(|_| {
            let mut r = w.cmd("cache-run");
            c.env(&mut r);
            r.args(["--ttl", "600", "--", "sh", "-c", script]);
            spawn_piped(r)
        })
        .collect();
    assert!(eventually(|| runs(&w) == 1), "the command never started");
    // Every waiter is blocked on the run lock's wake-up list on the
    // namespace's master before the leader finishes.
    let owner = c.owner("ffkit:cache:{default}:total");
    let blocked = eventually(|| {
        let info: String = c.on(owner, redis::cmd("INFO").arg("clients"));
        info.lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            == Some(n - 1)
    });
    std::fs::write(w.path().join("go"), "").unwrap();
    let outs: Vec<Output> = kids
        .into_iter()
        .map(|k| k.wait_with_output().unwrap())
        .collect();
    for o in &outs {
        assert_eq!(o.status.code(), Some(3), "{}", stderr_of(o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    }
    assert!(blocked, "the waiters never blocked on the server");
    assert_eq!(runs(&w), 1, "exactly one execution");
}

#[test]
fn redis_cluster_a_paused_master_fails_each_call_within_about_one_timeout() {
    let Some(c) = Cluster::start() else { return };
    let w = World::new();
    // A namespace whose master is not the seed: the seed keeps answering
    // (the slot map), the namespace's master does not.
    let dev = (0..)
        .map(|i| format!("d{i}"))
        .find(|d| c.owner(&format!("ffkit:cache:{{dev-{d}}}:total")) != c.ports[0])
        .unwrap();
    let owner = c.owner(&format!("ffkit:cache:{{dev-{dev}}}:total"));
    let lines: String = (0..300).map(|i| format!("k{i}:value{i}\n")).collect();
    let batch = |w: &World| {
        let mut b = w.cmd("cache-batch");
        c.env(&mut b);
        b.env("FLOWFORGE_DEVELOPER", &dev)
            .env("FFKIT_BACKEND_TIMEOUT", "0.3");
        b.write_stdin(lines.clone())
    };
    batch(&w).assert().success();
    let _: String = c.on(
        owner,
        redis::cmd("CLIENT").arg("PAUSE").arg(30_000).arg("ALL"),
    );
    let mut calls = vec![("cache-batch", batch(&w))];
    for args in [
        &["cache-size"][..],
        &["cache-size", "--verify"],
        &["cache-evict", "--dry-run", "--all"],
    ] {
        let mut a = w.cmd(args[0]);
        c.env(&mut a);
        a.args(&args[1..])
            .env("FLOWFORGE_DEVELOPER", &dev)
            .env("FFKIT_BACKEND_TIMEOUT", "0.3");
        calls.push((args[0], assert_cmd::Command::from_std(a)));
    }
    for (what, mut cmd) in calls {
        let t0 = Instant::now();
        let out = cmd.output().unwrap();
        let took = t0.elapsed();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains("timed out after 0.3s"), "{what}: {err}");
        assert!(
            err.contains("backend redis+cluster://:***@127.0.0.1") && !err.contains(PASS),
            "{what}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
        // Two connects, the slot map and one request: about one timeout
        // of waiting (a 300-reply pipeline waited 300 before).
        assert!(took < Duration::from_secs(3), "{what} took {took:?}");
    }
}

/// `total_connections_received` of node `port` (this query's own included).
fn connections(c: &Cluster, port: u16) -> u64 {
    let info: String = c.on(port, redis::cmd("INFO").arg("stats"));
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[test]
fn redis_cluster_a_holder_follows_its_lock_to_a_new_master_by_the_moved_reply() {
    let Some(c) = Cluster::start() else { return };
    let w = World::new();
    let seed = c.ports[0];
    let name = (0..)
        .map(|i| format!("mv{i}"))
        .find(|n| c.owner(&format!("ffkit:lock:{{{n}}}")) != seed)
        .unwrap();
    let key = format!("ffkit:lock:{{{name}}}");
    let from = c.owner(&key);
    let to = *c.ports.iter().find(|&&p| p != seed && p != from).unwrap();
    // A command-mode holder: it renews every 2 s (lease 6 s) on the
    // connection it took the lock with, to `from`.
    let holder = hold_until_go(&w, &c, &name);
    // Right after a renewal (the next is 2 s away, so none can meet the
    // slot half moved), move the lock's slot, keys and all, to `to` (what a
    // resharding or a failover does), telling only the two masters: the
    // seed is not asked.
    let pttl = |p: u16| -> i64 { c.on(p, redis::cmd("PTTL").arg(&key)) };
    let before = pttl(from);
    assert!(
        eventually(|| pttl(from) > before),
        "no renewal on the first master"
    );
    let slot: u16 = c.on(from, redis::cmd("CLUSTER").arg("KEYSLOT").arg(&key));
    let id = |p: u16| -> String { c.on(p, redis::cmd("CLUSTER").arg("MYID")) };
    let (from_id, to_id) = (id(from), id(to));
    let _: () = c.on(
        to,
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("IMPORTING")
            .arg(&from_id),
    );
    let _: () = c.on(
        from,
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("MIGRATING")
            .arg(&to_id),
    );
    let keys: Vec<String> = c.on(
        from,
        redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100),
    );
    assert!(keys.contains(&key), "{keys:?}");
    let _: String = c.on(
        from,
        redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(to)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("AUTH")
            .arg(PASS)
            .arg("KEYS")
            .arg(&keys),
    );
    for p in [to, from] {
        let _: () = c.on(
            p,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&to_id),
        );
    }
    let seen = connections(&c, seed);
    let first = pttl(to);
    assert!(first > 0, "the lock moved with its lease: {first}");
    // The next renewal reaches `from`, is answered MOVED, and is sent to
    // `to`: the lease there is extended.
    assert!(
        eventually(|| pttl(to) > first),
        "the lease was never renewed on the new master"
    );
    // Through the redirect, not through a new connection and a fresh slot
    // map from the seed (what a failed renewal's retry would do).
    assert_eq!(connections(&c, seed), seen + 1, "the seed was asked again");
    std::fs::write(w.path().join("go"), "").unwrap();
    let out = holder.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let held: Option<String> = c.on(to, redis::cmd("GET").arg(&key));
    assert_eq!(held, None, "released on the new master");
}
