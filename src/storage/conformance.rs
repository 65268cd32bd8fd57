//! The contract tests every storage driver runs: one function per contract of [`Driver`], named for the
//! contract it checks. The filesystem, in-memory and timed drivers run each as a unit test of its own
//! (`contract_tests!`); the S3 driver runs them all against Garage in the integration tests
//! ([`run_all`], which names every contract that broke). Each contract works under its own prefix, so
//! they may share one store.
#![allow(clippy::unwrap_used)]

use std::panic::AssertUnwindSafe;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{FutureExt, TryStreamExt};

use super::{Driver, ErrorKind};

/// Calls `$m!` with every contract's name: the one list of them.
macro_rules! with_contracts {
    ($($m:ident)::+ [$($args:tt)*]) => {
        $($m)::+! {
            [$($args)*]
            put_is_atomic_and_overwrites,
            put_all_writes_every_object,
            put_in_order_writes_both_groups,
            get_over_limit_is_too_large,
            missing_object_is_not_found,
            prefix_is_not_an_object,
            stat_gives_size_and_modification_time,
            read_gives_exactly_the_range,
            read_range_past_end_fails,
            open_gives_size_and_whole_object,
            list_returns_direct_children_sorted,
            list_of_missing_prefix_is_empty,
            list_many_is_list_of_each_in_order,
            list_keys_is_flat_sorted_and_paged,
            delete_of_missing_is_ok,
            delete_removes_the_tree_and_nothing_beside_it,
            delete_removes_unsealed_writes,
            delete_object_removes_one_object,
            writer_commit_is_durable_at_offset,
            writer_commit_then_puts_the_objects,
            writer_restarts_at_either_of_the_last_two_commits,
            writer_discards_what_was_not_committed,
            writer_past_the_commits_is_bad_offset,
            seal_moves_exactly_size_bytes,
            seal_past_the_commits_is_bad_offset,
            seal_of_empty_write_is_empty_object,
            purge_incomplete_spares_recent_writes,
            redirect_url_is_none_or_a_url,
            is_shared_is_fixed,
            unsealed_commits_read_back,
        }
    };
}
#[cfg(test)]
pub(crate) use with_contracts;

/// One `#[tokio::test]` per contract, in a module `contracts`, for the driver `$fixture` makes: an
/// expression giving `(guard, driver)`, where `guard` lives as long as the test (a temp directory).
#[cfg(test)]
macro_rules! contract_tests {
    ($fixture:expr) => {
        mod contracts {
            #[allow(unused_imports)]
            use super::*;
            crate::storage::conformance::with_contracts!(
                crate::storage::conformance::contract_test_fns[$fixture]
            );
        }
    };
}
#[cfg(test)]
pub(crate) use contract_tests;

#[cfg(test)]
macro_rules! contract_test_fns {
    ([$fixture:expr] $($name:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_guard, driver) = $fixture;
                crate::storage::conformance::$name(&driver).await;
            }
        )*
    };
}
#[cfg(test)]
pub(crate) use contract_test_fns;

/// Runs every contract on `d`, each to its end, and panics naming those that failed (each failure's
/// own message is printed as it happens).
pub async fn run_all(d: &dyn Driver) {
    let mut failed: Vec<&str> = Vec::new();
    macro_rules! run_each {
        ([] $($name:ident,)*) => {
            $(
                if AssertUnwindSafe($name(d)).catch_unwind().await.is_err() {
                    failed.push(stringify!($name));
                }
            )*
        };
    }
    with_contracts!(run_each[]);
    assert!(failed.is_empty(), "storage contracts broken: {failed:?}");
}

async fn read_all(d: &dyn Driver, path: &str, offset: u64, len: u64) -> Vec<u8> {
    let chunks: Vec<Bytes> = d
        .read(path, offset, len)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

async fn get(d: &dyn Driver, path: &str) -> Vec<u8> {
    d.get(path, 1 << 20).await.unwrap().to_vec()
}

fn kind<T>(r: super::Result<T>) -> Option<ErrorKind> {
    r.err().map(|e| e.kind)
}

/// Writes `data` through a new writer at `offset` and commits it.
async fn write_at(d: &dyn Driver, path: &str, offset: u64, data: &'static [u8]) -> u64 {
    let mut w = d.writer(path, offset).await.unwrap();
    w.write(Bytes::from_static(data)).await.unwrap();
    w.commit().await.unwrap()
}

/// `put` replaces an object, and a reader racing the replacement sees the old object or the new one,
/// whole, never a mix or a part.
pub async fn put_is_atomic_and_overwrites(d: &dyn Driver) {
    d.put("atomic/a/b/c", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(get(d, "atomic/a/b/c").await, b"hello");
    d.put("atomic/a/b/c", Bytes::from_static(b"bye"))
        .await
        .unwrap();
    assert_eq!(get(d, "atomic/a/b/c").await, b"bye");

    const LEN: usize = 256 << 10;
    d.put("atomic/race", Bytes::from(vec![0u8; LEN]))
        .await
        .unwrap();
    let writes = async {
        for i in 1..=8u8 {
            d.put("atomic/race", Bytes::from(vec![i; LEN]))
                .await
                .unwrap();
        }
    };
    let reads = async {
        for _ in 0..32 {
            let seen = d.get("atomic/race", LEN as u64).await.unwrap();
            assert_eq!(seen.len(), LEN, "a reader saw a partial object");
            assert!(
                seen.iter().all(|&b| b == seen[0]),
                "a reader saw two writes mixed"
            );
            tokio::task::yield_now().await;
        }
    };
    futures_util::join!(writes, reads);
    assert_eq!(get(d, "atomic/race").await, vec![8u8; LEN]);
}

/// `put_all` writes every object of the batch (new prefixes, replacements); an empty batch is `Ok`.
pub async fn put_all_writes_every_object(d: &dyn Driver) {
    d.put("batch/old", Bytes::from_static(b"old"))
        .await
        .unwrap();
    d.put_all(vec![
        ("batch/old".into(), Bytes::from_static(b"new")),
        ("batch/x/y/z".into(), Bytes::from_static(b"deep")),
        ("batch/empty".into(), Bytes::new()),
    ])
    .await
    .unwrap();
    assert_eq!(get(d, "batch/old").await, b"new");
    assert_eq!(get(d, "batch/x/y/z").await, b"deep");
    assert_eq!(get(d, "batch/empty").await, b"");
    d.put_all(Vec::new()).await.unwrap();
}

/// `put_in_order` writes every object of both groups, the second group's over the first's where they
/// share a path; either group may be empty.
pub async fn put_in_order_writes_both_groups(d: &dyn Driver) {
    d.put_in_order(
        vec![
            ("ordered/a/link".into(), Bytes::from_static(b"a")),
            ("ordered/same".into(), Bytes::from_static(b"first")),
        ],
        vec![
            ("ordered/b/c/link".into(), Bytes::from_static(b"b")),
            ("ordered/same".into(), Bytes::from_static(b"then")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(get(d, "ordered/a/link").await, b"a");
    assert_eq!(get(d, "ordered/b/c/link").await, b"b");
    assert_eq!(get(d, "ordered/same").await, b"then");
    d.put_in_order(Vec::new(), vec![("ordered/only".into(), Bytes::new())])
        .await
        .unwrap();
    assert_eq!(get(d, "ordered/only").await, b"");
    d.put_in_order(Vec::new(), Vec::new()).await.unwrap();
}

/// `get` returns an object of exactly `limit` bytes and refuses a larger one with `TooLarge`, for small
/// limits and large ones alike.
pub async fn get_over_limit_is_too_large(d: &dyn Driver) {
    d.put("limit/small", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(&d.get("limit/small", 5).await.unwrap()[..], b"hello");
    assert_eq!(
        kind(d.get("limit/small", 4).await),
        Some(ErrorKind::TooLarge)
    );
    let big = Bytes::from(vec![7u8; 10_000]);
    d.put("limit/big", big.clone()).await.unwrap();
    assert_eq!(d.get("limit/big", 10_000).await.unwrap(), big);
    for limit in [9_999, 4096, 100] {
        let r = d.get("limit/big", limit).await;
        assert_eq!(kind(r), Some(ErrorKind::TooLarge), "limit {limit}");
    }
}

/// `get`, `stat`, `read` and `open` of a missing object are `NotFound`, from the call.
pub async fn missing_object_is_not_found(d: &dyn Driver) {
    let p = "missing/nothing/here";
    assert_eq!(kind(d.get(p, 100).await), Some(ErrorKind::NotFound));
    assert_eq!(kind(d.stat(p).await), Some(ErrorKind::NotFound));
    assert_eq!(kind(d.read(p, 0, 1).await), Some(ErrorKind::NotFound));
    assert_eq!(kind(d.read(p, 0, 0).await), Some(ErrorKind::NotFound));
    assert_eq!(kind(d.open(p).await), Some(ErrorKind::NotFound));
}

/// A prefix with objects under it is not an object.
pub async fn prefix_is_not_an_object(d: &dyn Driver) {
    d.put("prefix/a/b", Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(kind(d.stat("prefix/a").await), Some(ErrorKind::NotFound));
}

/// `stat` gives the object's size and a modification time close to when it was written.
pub async fn stat_gives_size_and_modification_time(d: &dyn Driver) {
    d.put("stat/five", Bytes::from_static(b"12345"))
        .await
        .unwrap();
    d.put("stat/empty", Bytes::new()).await.unwrap();
    let meta = d.stat("stat/five").await.unwrap();
    assert_eq!(meta.size, 5);
    // Generous: an object store's clock is not ours.
    let skew = Duration::from_secs(300);
    let now = SystemTime::now();
    assert!(meta.modified > now - skew && meta.modified < now + skew);
    assert_eq!(d.stat("stat/empty").await.unwrap().size, 0);
}

/// `read` streams exactly the range asked for, anywhere within the object; `len` 0 is empty.
pub async fn read_gives_exactly_the_range(d: &dyn Driver) {
    d.put("read/r", Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    assert_eq!(read_all(d, "read/r", 0, 10).await, b"0123456789");
    assert_eq!(read_all(d, "read/r", 3, 4).await, b"3456");
    assert_eq!(read_all(d, "read/r", 9, 1).await, b"9");
    assert_eq!(read_all(d, "read/r", 4, 0).await, b"");
    assert_eq!(read_all(d, "read/r", 10, 0).await, b"");
}

/// A range that does not lie within the object fails, from the call or from the stream: never fewer
/// bytes than asked for.
pub async fn read_range_past_end_fails(d: &dyn Driver) {
    d.put("pastend/r", Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    for (offset, len) in [(8, 5), (10, 1), (20, 5)] {
        let result = match d.read("pastend/r", offset, len).await {
            Ok(stream) => stream.try_collect::<Vec<Bytes>>().await.map(|c| c.concat()),
            Err(e) => Err(std::io::Error::other(e)),
        };
        assert!(
            result.is_err(),
            "read of {len} bytes at {offset} of 10 gave {:?}",
            result.ok()
        );
    }
}

/// `open` gives the object's size and a stream of exactly its bytes (also for an empty object).
pub async fn open_gives_size_and_whole_object(d: &dyn Driver) {
    d.put("open/r", Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    d.put("open/empty", Bytes::new()).await.unwrap();
    for (path, want) in [("open/r", &b"0123456789"[..]), ("open/empty", b"")] {
        let (size, stream) = d.open(path).await.unwrap();
        let whole: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert_eq!((size, whole.concat()), (want.len() as u64, want.to_vec()));
    }
}

/// `list` gives the direct children of a prefix, objects and prefixes alike, each once, sorted
/// byte-wise.
pub async fn list_returns_direct_children_sorted(d: &dyn Driver) {
    for p in [
        "list/z", "list/a/x", "list/a/y", "list/m", "list/B", "list/a-b",
    ] {
        d.put(p, Bytes::new()).await.unwrap();
    }
    assert_eq!(d.list("list").await.unwrap(), ["B", "a", "a-b", "m", "z"]);
    assert_eq!(d.list("list/a").await.unwrap(), ["x", "y"]);
    // An object store may hold `a` beside `a/x`; it is still listed once.
    if d.put("list/a", Bytes::new()).await.is_ok() {
        assert_eq!(d.list("list").await.unwrap(), ["B", "a", "a-b", "m", "z"]);
    }
}

/// `list` of a prefix with nothing under it is an empty list, not `NotFound`.
pub async fn list_of_missing_prefix_is_empty(d: &dyn Driver) {
    assert_eq!(d.list("nowhere").await.unwrap(), Vec::<String>::new());
    assert_eq!(
        d.list("nowhere/at/all").await.unwrap(),
        Vec::<String>::new()
    );
}

/// `list_many` is `list` of each prefix, in the order given; no prefixes, no listings.
pub async fn list_many_is_list_of_each_in_order(d: &dyn Driver) {
    for p in ["many/a/1", "many/a/2", "many/b/3", "many/c"] {
        d.put(p, Bytes::new()).await.unwrap();
    }
    let prefixes = ["many/b", "many/missing", "many", "many/a"];
    let got = d
        .list_many(prefixes.iter().map(|p| p.to_string()).collect())
        .await
        .unwrap();
    let mut want = Vec::new();
    for p in prefixes {
        want.push(d.list(p).await.unwrap());
    }
    assert_eq!(got, want);
    assert_eq!(want[0], ["3"]);
    assert!(d.list_many(Vec::new()).await.unwrap().is_empty());
}

/// `list_keys` gives every object key under a prefix, at any depth, relative to it, sorted byte-wise,
/// strictly after `after`, at most `max`.
pub async fn list_keys_is_flat_sorted_and_paged(d: &dyn Driver) {
    for k in ["keys/a/b", "keys/a-b", "keys/c/d/e", "keys/z"] {
        d.put(k, Bytes::new()).await.unwrap();
    }
    // An object store also holds `a` beside `a/b`; a filesystem cannot.
    let both = d.put("keys/a", Bytes::new()).await.is_ok() && d.stat("keys/a").await.is_ok();
    let want: Vec<&str> = match both {
        true => vec!["a", "a-b", "a/b", "c/d/e", "z"],
        false => vec!["a-b", "a/b", "c/d/e", "z"],
    };
    assert_eq!(d.list_keys("keys", None, 100).await.unwrap(), want);
    let n = want.len();
    assert_eq!(
        d.list_keys("keys", Some("a-b"), 2).await.unwrap(),
        want[n - 3..n - 1]
    );
    assert_eq!(d.list_keys("keys", None, 1).await.unwrap(), want[..1]);
    assert_eq!(
        d.list_keys("keys", Some("z"), 10).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        d.list_keys("nothing", None, 10).await.unwrap(),
        Vec::<String>::new()
    );
}

/// `delete` and `delete_object` of what does not exist are `Ok`.
pub async fn delete_of_missing_is_ok(d: &dyn Driver) {
    d.delete("gone/at/all").await.unwrap();
    d.delete_object("gone/at/all").await.unwrap();
    d.put("gone/once", Bytes::new()).await.unwrap();
    d.delete("gone/once").await.unwrap();
    d.delete("gone/once").await.unwrap();
}

/// `delete` removes the object at a path and everything under it, and leaves the paths that merely
/// start with its name.
pub async fn delete_removes_the_tree_and_nothing_beside_it(d: &dyn Driver) {
    for p in [
        "tree/v1/link",
        "tree/v1/deep/er",
        "tree/v1.parts/link",
        "tree/v10",
        "tree/obj",
    ] {
        d.put(p, Bytes::new()).await.unwrap();
    }
    d.delete("tree/v1").await.unwrap();
    assert_eq!(d.list("tree").await.unwrap(), ["obj", "v1.parts", "v10"]);
    assert_eq!(
        kind(d.stat("tree/v1/link").await),
        Some(ErrorKind::NotFound)
    );
    d.delete("tree/obj").await.unwrap();
    assert_eq!(kind(d.stat("tree/obj").await), Some(ErrorKind::NotFound));
    assert_eq!(d.list("tree").await.unwrap(), ["v1.parts", "v10"]);
}

/// A writer's bytes that were never sealed go with a `delete` of a prefix above them: no later writer
/// can continue them.
pub async fn delete_removes_unsealed_writes(d: &dyn Driver) {
    assert_eq!(write_at(d, "unsealed/1/data", 0, b"partial").await, 7);
    d.put("unsealed/1/startedat", Bytes::from_static(b"now"))
        .await
        .unwrap();
    d.delete("unsealed/1").await.unwrap();
    assert_eq!(d.list("unsealed").await.unwrap(), Vec::<String>::new());
    let gone = d.writer("unsealed/1/data", 7).await;
    assert_eq!(kind(gone), Some(ErrorKind::BadOffset));
}

/// `delete_object` removes the one object at a path, and nothing beside it.
pub async fn delete_object_removes_one_object(d: &dyn Driver) {
    d.put("one/m", Bytes::new()).await.unwrap();
    d.put("one/m2", Bytes::new()).await.unwrap();
    d.delete_object("one/m").await.unwrap();
    assert_eq!(kind(d.stat("one/m").await), Some(ErrorKind::NotFound));
    assert_eq!(d.list("one").await.unwrap(), ["m2"]);
    d.delete_object("one/m").await.unwrap();
}

/// `commit` returns the total size, and a writer started at that offset continues after exactly the
/// committed bytes (what `seal` then publishes).
pub async fn writer_commit_is_durable_at_offset(d: &dyn Driver) {
    let mut w = d.writer("commit/data", 0).await.unwrap();
    w.write(Bytes::from_static(b"abc")).await.unwrap();
    w.write(Bytes::from_static(b"def")).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 6);
    assert_eq!(write_at(d, "commit/data", 6, b"ghi").await, 9);
    let w = d.writer("commit/data", 9).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 9, "a commit of nothing");
    d.seal("commit/data", 9, "commit/blob").await.unwrap();
    assert_eq!(get(d, "commit/blob").await, b"abcdefghi");
}

/// `commit_then` commits like `commit` (the size it returns, the bytes a seal publishes) and puts every
/// object it was given; with none, it is a `commit`.
pub async fn writer_commit_then_puts_the_objects(d: &dyn Driver) {
    let mut w = d.writer("then/data", 0).await.unwrap();
    w.write(Bytes::from_static(b"abcdef")).await.unwrap();
    let state = vec![("then/state/6".to_string(), Bytes::from_static(b"six"))];
    assert_eq!(w.commit_then(state).await.unwrap(), 6);
    assert_eq!(get(d, "then/state/6").await, b"six");
    let mut w = d.writer("then/data", 6).await.unwrap();
    w.write(Bytes::from_static(b"gh")).await.unwrap();
    assert_eq!(w.commit_then(Vec::new()).await.unwrap(), 8);
    d.seal("then/data", 8, "then/blob").await.unwrap();
    assert_eq!(get(d, "then/blob").await, b"abcdefgh");
}

/// A writer may start again at the earlier of the last two commits (a chunk retried after its
/// acknowledgement was lost), replacing what followed it.
pub async fn writer_restarts_at_either_of_the_last_two_commits(d: &dyn Driver) {
    assert_eq!(write_at(d, "restart/data", 0, b"abc").await, 3);
    assert_eq!(write_at(d, "restart/data", 3, b"def").await, 6);
    assert_eq!(write_at(d, "restart/data", 3, b"XY").await, 5);
    assert_eq!(write_at(d, "restart/data", 5, b"!").await, 6);
    d.seal("restart/data", 6, "restart/blob").await.unwrap();
    assert_eq!(get(d, "restart/blob").await, b"abcXY!");
}

/// Bytes written but never committed (the writer dropped) are discarded by the next writer at the
/// last commit.
pub async fn writer_discards_what_was_not_committed(d: &dyn Driver) {
    assert_eq!(write_at(d, "dropped/data", 0, b"abc").await, 3);
    let mut w = d.writer("dropped/data", 3).await.unwrap();
    // Enough that some is still queued when the writer is dropped (a request whose client went away).
    for _ in 0..16 {
        w.write(Bytes::from(vec![b'x'; 64 << 10])).await.unwrap();
    }
    drop(w);
    assert_eq!(write_at(d, "dropped/data", 3, b"d").await, 4);
    d.seal("dropped/data", 4, "dropped/blob").await.unwrap();
    assert_eq!(get(d, "dropped/blob").await, b"abcd");
}

/// A writer cannot start past what was committed, nor at an offset on a path never written.
pub async fn writer_past_the_commits_is_bad_offset(d: &dyn Driver) {
    assert_eq!(write_at(d, "past/data", 0, b"abc").await, 3);
    let past = d.writer("past/data", 99).await;
    assert_eq!(kind(past), Some(ErrorKind::BadOffset));
    let never = d.writer("past/never", 3).await;
    assert_eq!(kind(never), Some(ErrorKind::BadOffset));
}

/// `seal` publishes exactly the first `size` bytes (cutting off a later write never acknowledged),
/// replaces what was at the target, and leaves nothing at the source.
pub async fn seal_moves_exactly_size_bytes(d: &dyn Driver) {
    assert_eq!(write_at(d, "seal/data", 0, b"abcdef").await, 6);
    assert_eq!(write_at(d, "seal/data", 6, b"unacked").await, 13);
    d.put("seal/x/target", Bytes::from_static(b"old"))
        .await
        .unwrap();
    d.seal("seal/data", 6, "seal/x/target").await.unwrap();
    assert_eq!(get(d, "seal/x/target").await, b"abcdef");
    assert_eq!(d.stat("seal/x/target").await.unwrap().size, 6);
    assert_eq!(kind(d.stat("seal/data").await), Some(ErrorKind::NotFound));
    // Nothing committed is left to seal again.
    let again = d.seal("seal/data", 6, "seal/other").await;
    assert_eq!(kind(again), Some(ErrorKind::BadOffset));
    // Into a prefix that does not exist yet.
    assert_eq!(write_at(d, "seal/data2", 0, b"new").await, 3);
    d.seal("seal/data2", 3, "seal/new/deep/blob").await.unwrap();
    assert_eq!(get(d, "seal/new/deep/blob").await, b"new");
}

/// `seal` refuses a size past what was committed, and leaves the write as it was.
pub async fn seal_past_the_commits_is_bad_offset(d: &dyn Driver) {
    assert_eq!(write_at(d, "sealpast/data", 0, b"abc").await, 3);
    let wrong = d.seal("sealpast/data", 99, "sealpast/blob").await;
    assert_eq!(kind(wrong), Some(ErrorKind::BadOffset));
    let never = d.seal("sealpast/never", 3, "sealpast/blob").await;
    assert_eq!(kind(never), Some(ErrorKind::BadOffset));
    d.seal("sealpast/data", 3, "sealpast/blob").await.unwrap();
    assert_eq!(get(d, "sealpast/blob").await, b"abc");
}

/// An empty write sealed is an empty object.
pub async fn seal_of_empty_write_is_empty_object(d: &dyn Driver) {
    let w = d.writer("sealempty/data", 0).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 0);
    d.seal("sealempty/data", 0, "sealempty/blob").await.unwrap();
    assert_eq!(d.stat("sealempty/blob").await.unwrap().size, 0);
    assert_eq!(get(d, "sealempty/blob").await, b"");
}

/// `purge_incomplete` with a cut-off in the past leaves a write started now alone: it can still be
/// continued and sealed.
pub async fn purge_incomplete_spares_recent_writes(d: &dyn Driver) {
    assert_eq!(write_at(d, "purge/data", 0, b"abc").await, 3);
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    d.purge_incomplete(hour_ago).await.unwrap();
    assert_eq!(d.purge_incomplete(SystemTime::UNIX_EPOCH).await.unwrap(), 0);
    assert_eq!(write_at(d, "purge/data", 3, b"def").await, 6);
    d.seal("purge/data", 6, "purge/blob").await.unwrap();
    assert_eq!(get(d, "purge/blob").await, b"abcdef");
}

/// `redirect_url` is `None` or an http(s) URL, for an object that exists.
pub async fn redirect_url_is_none_or_a_url(d: &dyn Driver) {
    d.put("redirect/blob", Bytes::from_static(b"x"))
        .await
        .unwrap();
    if let Some(url) = d.redirect_url("redirect/blob").await.unwrap() {
        assert!(
            url.starts_with("http://") || url.starts_with("https://"),
            "{url}"
        );
    }
}

/// `is_shared` does not change over the driver's life (callers read it once or on every request).
pub async fn is_shared_is_fixed(d: &dyn Driver) {
    let before = d.is_shared();
    d.put("shared/x", Bytes::new()).await.unwrap();
    assert_eq!(d.is_shared(), before);
}

pub async fn unsealed_commits_read_back(d: &dyn Driver) {
    let says = d.reads_unsealed();
    let mut w = d.writer("unsealed/data", 0).await.unwrap();
    w.write(Bytes::from_static(b"hello ")).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 6);
    let mut w = d.writer("unsealed/data", 6).await.unwrap();
    w.write(Bytes::from_static(b"world")).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 11);
    // A later writer that never commits does not change the committed range.
    let mut w = d.writer("unsealed/data", 11).await.unwrap();
    w.write(Bytes::from_static(b"!")).await.unwrap();
    drop(w);
    if says {
        assert_eq!(read_all(d, "unsealed/data", 3, 8).await, b"lo world");
    }
    assert_eq!(d.reads_unsealed(), says);
}

/// Writes and reads back `len` bytes through a writer in chunks of `chunk` bytes, committing after every
/// `per_commit` chunks, then seals it into place and checks every byte. For drivers whose writers work
/// in parts (S3): choose `len` to cover several parts and a tail.
pub async fn large_write(d: &dyn Driver, len: usize, chunk: usize, per_commit: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i * 31 % 253) as u8).collect();
    let mut offset = 0u64;
    let mut chunks = data.chunks(chunk).peekable();
    while chunks.peek().is_some() {
        let mut w = d.writer("big/data", offset).await.unwrap();
        for c in chunks.by_ref().take(per_commit) {
            w.write(Bytes::copy_from_slice(c)).await.unwrap();
        }
        offset = w.commit().await.unwrap();
    }
    assert_eq!(offset, len as u64);
    d.seal("big/data", len as u64, "big/blob").await.unwrap();
    assert_eq!(d.stat("big/blob").await.unwrap().size, len as u64);
    assert!(
        read_all(d, "big/blob", 0, len as u64).await == data,
        "bytes differ"
    );
    let mid = len as u64 / 2;
    assert!(read_all(d, "big/blob", mid, 10).await == data[mid as usize..mid as usize + 10]);
    d.delete("big").await.unwrap();
}
