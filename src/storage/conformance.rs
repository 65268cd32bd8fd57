//! The contract tests every storage driver runs (the unit tests, and the S3 driver against a real server
//! in the integration tests).
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use futures_util::TryStreamExt;

use super::{Driver, ErrorKind};

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

pub async fn run(d: &dyn Driver) {
    // put / get / stat
    d.put("a/b/c", Bytes::from_static(b"hello")).await.unwrap();
    assert_eq!(&d.get("a/b/c", 100).await.unwrap()[..], b"hello");
    assert_eq!(d.stat("a/b/c").await.unwrap().size, 5);
    assert_eq!(
        d.get("a/b/c", 4).await.unwrap_err().kind,
        ErrorKind::TooLarge
    );
    d.put("a/b/c", Bytes::from_static(b"bye")).await.unwrap();
    assert_eq!(&d.get("a/b/c", 100).await.unwrap()[..], b"bye");

    // missing things
    assert!(d.get("a/missing", 100).await.unwrap_err().is_not_found());
    assert!(d.stat("a/missing").await.unwrap_err().is_not_found());
    assert!(
        d.stat("a/b").await.unwrap_err().is_not_found(),
        "a prefix is not an object"
    );
    assert_eq!(d.list("nowhere").await.unwrap(), Vec::<String>::new());
    d.delete("nowhere/at/all").await.unwrap();

    // ranged reads
    d.put("r", Bytes::from_static(b"0123456789")).await.unwrap();
    assert_eq!(read_all(d, "r", 0, 10).await, b"0123456789");
    assert_eq!(read_all(d, "r", 3, 4).await, b"3456");
    assert_eq!(read_all(d, "r", 9, 1).await, b"9");
    let (size, stream) = d.open("r").await.unwrap();
    let whole: Vec<Bytes> = stream.try_collect().await.unwrap();
    assert_eq!((size, whole.concat()), (10, b"0123456789".to_vec()));
    assert!(d
        .open("nothing/here")
        .await
        .err()
        .is_some_and(|e| e.is_not_found()));

    // list: direct children, sorted, objects and prefixes alike
    d.put("l/z", Bytes::new()).await.unwrap();
    d.put("l/a/x", Bytes::new()).await.unwrap();
    d.put("l/a/y", Bytes::new()).await.unwrap();
    d.put("l/m", Bytes::new()).await.unwrap();
    assert_eq!(d.list("l").await.unwrap(), ["a", "m", "z"]);
    assert_eq!(d.list("l/a").await.unwrap(), ["x", "y"]);

    // delete a tree
    d.delete("l/a").await.unwrap();
    assert_eq!(d.list("l").await.unwrap(), ["m", "z"]);
    d.delete_object("l/m").await.unwrap();
    assert!(d.stat("l/m").await.unwrap_err().is_not_found());
    d.delete_object("l/m").await.unwrap();

    // writer: create, append at offset, reopen at an earlier commit
    let mut w = d.writer("w/data", 0).await.unwrap();
    w.write(Bytes::from_static(b"abc")).await.unwrap();
    w.write(Bytes::from_static(b"def")).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 6);
    let mut w = d.writer("w/data", 6).await.unwrap();
    w.write(Bytes::from_static(b"ghi")).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 9);
    let mut w = d.writer("w/data", 6).await.unwrap();
    w.write(Bytes::from_static(b"XY")).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 8);
    let mut w = d.writer("w/data", 8).await.unwrap();
    w.write(Bytes::from_static(b"Z")).await.unwrap();
    drop(w); // never committed: the next writer starts from the last commit
    let mut w = d.writer("w/data", 8).await.unwrap();
    w.write(Bytes::from_static(b"!")).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 9);
    let past = d.writer("w/data", 99).await.err().map(|e| e.kind);
    assert_eq!(past, Some(ErrorKind::BadOffset), "offset past the end");

    // seal: exactly the bytes of the commit named, moved into place (replacing what was there)
    d.put("x/target", Bytes::from_static(b"old")).await.unwrap();
    let wrong = d.seal("w/data", 99, "x/target").await.err().map(|e| e.kind);
    assert_eq!(wrong, Some(ErrorKind::BadOffset), "no commit ended at 99");
    d.seal("w/data", 9, "x/target").await.unwrap();
    assert_eq!(&d.get("x/target", 100).await.unwrap()[..], b"abcdefXY!");
    assert!(d.stat("w/data").await.unwrap_err().is_not_found());

    // seal of what was sealed away already: nothing committed is left
    let gone = d.seal("w/data", 9, "x/other").await.err().map(|e| e.kind);
    assert_eq!(gone, Some(ErrorKind::BadOffset));

    // deleting a path leaves paths that merely start with its name
    d.put("t/v1/link", Bytes::new()).await.unwrap();
    d.put("t/v1.parts/link", Bytes::new()).await.unwrap();
    d.put("t/v10", Bytes::new()).await.unwrap();
    d.delete("t/v1").await.unwrap();
    assert_eq!(d.list("t").await.unwrap(), ["v1.parts", "v10"]);

    // a writer's object that is never sealed goes with a delete of its directory
    let mut w = d.writer("u/1/data", 0).await.unwrap();
    w.write(Bytes::from_static(b"partial")).await.unwrap();
    w.commit().await.unwrap();
    d.put("u/1/startedat", Bytes::from_static(b"now"))
        .await
        .unwrap();
    d.delete("u/1").await.unwrap();
    assert_eq!(d.list("u").await.unwrap(), Vec::<String>::new());
    let gone = d.writer("u/1/data", 7).await.err().map(|e| e.kind);
    assert_eq!(gone, Some(ErrorKind::BadOffset));

    // an empty write sealed is an empty object
    let w = d.writer("e/data", 0).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 0);
    d.seal("e/data", 0, "e/blob").await.unwrap();
    assert_eq!(d.stat("e/blob").await.unwrap().size, 0);

    // keys under a prefix, flat and paged
    for k in ["k/a/b", "k/a-b", "k/c/d/e", "k/z"] {
        d.put(k, Bytes::new()).await.unwrap();
    }
    // An object store also holds `k/a` beside `k/a/b`; a filesystem cannot.
    let both = d.put("k/a", Bytes::new()).await.is_ok() && d.stat("k/a").await.is_ok();
    let all = d.list_keys("k", None, 100).await.unwrap();
    let want: Vec<&str> = if both {
        vec!["a", "a-b", "a/b", "c/d/e", "z"]
    } else {
        vec!["a-b", "a/b", "c/d/e", "z"] // a filesystem cannot have `a` both a file and a directory
    };
    assert_eq!(all, want);
    assert_eq!(
        d.list_keys("k", Some("a-b"), 2).await.unwrap(),
        want[want.len() - 3..want.len() - 1]
    );
    assert_eq!(
        d.list_keys("nothing", None, 10).await.unwrap(),
        Vec::<String>::new()
    );
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
