use std::io::Read;

use super::*;

fn store() -> (tempfile::TempDir, Blobs) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(dir.path().join("blobs")).unwrap();
    (dir, blobs)
}

fn import(blobs: &Blobs, plain: &[u8]) -> Imported {
    let mut import = blobs.import().unwrap();
    // Odd pieces, so chunk boundaries fall inside writes.
    for piece in plain.chunks(7_777) {
        import.write(piece).unwrap();
    }
    import.finish().unwrap()
}

fn read_all(blobs: &Blobs, got: &Imported) -> Vec<u8> {
    let mut out = Vec::new();
    blobs
        .reader(&got.id, got.key.clone(), got.size)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn sample(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn import_names_the_ciphertext_and_reads_back() {
    let (_dir, blobs) = store();
    for len in [0, 1, PLAIN_CHUNK, PLAIN_CHUNK + 1, 300_000] {
        let plain = sample(len);
        let got = import(&blobs, &plain);
        let stored = fs::read(blobs.complete_path(&got.id, "data")).unwrap();
        assert_eq!(stored.len() as u64, cipher::cipher_size(len as u64));
        assert_eq!(
            *blake3::hash(&stored).as_bytes(),
            got.id.0,
            "the id is BLAKE3 of the ciphertext"
        );
        assert!(!stored.windows(64).any(|w| plain.windows(64).next() == Some(w)) || len < 64);
        assert_eq!(read_all(&blobs, &got), plain);
    }
}

#[test]
fn the_same_file_imported_twice_gets_two_ids() {
    let (_dir, blobs) = store();
    let plain = sample(10_000);
    assert_ne!(import(&blobs, &plain).id, import(&blobs, &plain).id);
}

/// A download in 1 MiB ranges, interrupted and taken up again from disk, a
/// forged answer refused on the way.
#[test]
fn partial_downloads_verify_resume_and_finish() {
    let (_a, sender) = store();
    let (_b, receiver) = store();
    let plain = sample(3_500_000);
    let got = import(&sender, &plain);
    let size = cipher::cipher_size(plain.len() as u64);
    let per = MAX_RANGE_BYTES / CHUNK_BYTES;

    let mut partial = receiver.partial(got.id, size).unwrap();
    let all = partial.chunks();
    assert_eq!(partial.missing().unwrap(), vec![0..all]);
    let first = 0..per;
    let mut forged = sender.encode(&got.id, first.clone()).unwrap().unwrap();
    forged[5000] ^= 1;
    assert!(
        partial.write(first.clone(), &forged).is_err(),
        "a forged range is refused"
    );
    let encoded = sender.encode(&got.id, first.clone()).unwrap().unwrap();
    partial.write(first, &encoded).unwrap();
    drop(partial); // the process dies here

    let mut partial = receiver.partial(got.id, size).unwrap();
    assert_eq!(
        partial.missing().unwrap(),
        vec![per..all],
        "the verified range survives"
    );
    let mut start = per;
    while start < all {
        let range = start..(start + per).min(all);
        let encoded = sender.encode(&got.id, range.clone()).unwrap().unwrap();
        partial.write(range.clone(), &encoded).unwrap();
        start = range.end;
    }
    assert!(partial.missing().unwrap().is_empty());
    partial.finish().unwrap();
    assert!(receiver.has(&got.id));
    assert_eq!(read_all(&receiver, &got), plain);
}

#[test]
fn serving_checks_bounds_and_presence() {
    let (_dir, blobs) = store();
    let got = import(&blobs, &sample(5000));
    let chunks = cipher::cipher_size(5000).div_ceil(CHUNK_BYTES);
    assert!(blobs.encode(&got.id, 0..chunks).unwrap().is_some());
    assert!(blobs.encode(&got.id, 0..chunks + 1).is_err());
    assert!(blobs.encode(&got.id, 3..3).is_err());
    assert!(blobs.encode(&BlobId([9; 32]), 0..1).unwrap().is_none());
    blobs.delete(&got.id).unwrap();
    assert!(!blobs.has(&got.id));
    assert!(blobs.encode(&got.id, 0..1).unwrap().is_none());
}

#[test]
fn a_wrong_key_or_altered_data_fails_to_read() {
    let (_dir, blobs) = store();
    let mut got = import(&blobs, &sample(100_000));
    let path = blobs.complete_path(&got.id, "data");
    let mut bytes = fs::read(&path).unwrap();
    bytes[70_000] ^= 1;
    fs::write(&path, bytes).unwrap();
    let mut out = Vec::new();
    let err = blobs
        .reader(&got.id, got.key.clone(), got.size)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    got.key = FileKey::random();
    assert!(
        blobs
            .reader(&got.id, got.key.clone(), got.size)
            .unwrap()
            .read_to_end(&mut Vec::new())
            .is_err()
    );
}

#[test]
fn an_import_dropped_unfinished_leaves_no_temporary_file() {
    let (_dir, blobs) = store();
    let tmp_files = || fs::read_dir(blobs.dir.join("tmp")).unwrap().count();
    let mut broken = blobs.import().unwrap();
    broken.write(&sample(300_000)).unwrap();
    assert_eq!(tmp_files(), 1);
    // The upload broke off: the importer is dropped without `finish`.
    drop(broken);
    assert_eq!(tmp_files(), 0);
    // A finished import keeps its blob.
    let got = import(&blobs, &sample(1000));
    assert_eq!(tmp_files(), 0);
    assert!(blobs.has(&got.id));
}

#[test]
fn cipher_sizes_never_overflow() {
    assert_eq!(
        cipher::checked_cipher_size(MAX_FILE_BYTES).map(|c| c > MAX_FILE_BYTES),
        Some(true)
    );
    assert_eq!(cipher::checked_cipher_size(u64::MAX), None);
    assert_eq!(cipher::cipher_size(u64::MAX), u64::MAX);
}
