//! The contract tests every storage driver runs.

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
    d.delete("l/m").await.unwrap();
    assert!(d.stat("l/m").await.unwrap_err().is_not_found());

    // writer: create, append at offset, truncate past offset
    let mut w = d.writer("w/data", 0).await.unwrap();
    w.write(Bytes::from_static(b"abc")).await.unwrap();
    w.write(Bytes::from_static(b"def")).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 6);
    let mut w = d.writer("w/data", 6).await.unwrap();
    w.write(Bytes::from_static(b"ghi")).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 9);
    assert_eq!(&d.get("w/data", 100).await.unwrap()[..], b"abcdefghi");
    let mut w = d.writer("w/data", 3).await.unwrap();
    w.write(Bytes::from_static(b"XY")).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 5);
    assert_eq!(&d.get("w/data", 100).await.unwrap()[..], b"abcXY");
    assert!(d.writer("w/data", 99).await.is_err(), "offset past the end");

    // rename replaces atomically
    d.put("x/target", Bytes::from_static(b"old")).await.unwrap();
    d.rename("w/data", "x/target").await.unwrap();
    assert_eq!(&d.get("x/target", 100).await.unwrap()[..], b"abcXY");
    assert!(d.stat("w/data").await.unwrap_err().is_not_found());
    d.rename("w/data", "x/other").await.unwrap_err();
}
