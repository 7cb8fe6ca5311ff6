use super::*;

fn entry(space: SpaceId, id: &str, author: u8, at_ms: i64, text: &str) -> Entry {
    Entry {
        space,
        kind: HitKind::Message,
        id: Some(id.into()),
        author: Some(DeviceId([author; 32])),
        user: Some(UserId([author + 100; 32])),
        at_ms,
        text: text.into(),
    }
}

fn ids(hits: &[Hit]) -> Vec<&str> {
    let mut ids: Vec<&str> = hits.iter().filter_map(|h| h.id.as_deref()).collect();
    ids.sort();
    ids
}

fn query(text: &str) -> SearchQuery {
    SearchQuery {
        text: text.into(),
        ..Default::default()
    }
}

fn index() -> (SearchIndex, SpaceId, SpaceId, HashSet<SpaceId>) {
    let index = SearchIndex::in_memory().unwrap();
    let (ops, hr) = (SpaceId([1; 16]), SpaceId([2; 16]));
    index
        .put(&entry(ops, "m1", 1, 1_000, "Deployment of the billing service is done"))
        .unwrap();
    index.put(&entry(ops, "m2", 2, 2_000, "我们明天讨论季度报告")).unwrap();
    index
        .put(&entry(ops, "m3", 1, 3_000, "报表已经发到邮箱 deploy again tomorrow"))
        .unwrap();
    index
        .put(&entry(hr, "h1", 3, 4_000, "季度报告 salary review, confidential"))
        .unwrap();
    index.commit(false).unwrap();
    let readable = HashSet::from([ops, hr]);
    (index, ops, hr, readable)
}

#[test]
fn finds_chinese_and_english_words_and_their_prefixes() {
    let (index, _, _, readable) = index();
    assert_eq!(ids(&index.search(&query("报告"), &readable).unwrap()), ["h1", "m2"]);
    assert_eq!(ids(&index.search(&query("季度"), &readable).unwrap()), ["h1", "m2"]);
    // Part of a word: 报 begins 报告 and 报表; deploy begins deployment.
    assert_eq!(ids(&index.search(&query("报"), &readable).unwrap()), ["h1", "m2", "m3"]);
    assert_eq!(ids(&index.search(&query("deploy"), &readable).unwrap()), ["m1", "m3"]);
    assert_eq!(ids(&index.search(&query("BILLING"), &readable).unwrap()), ["m1"]);
    // Every word must match.
    assert_eq!(
        ids(&index.search(&query("季度报告 salary"), &readable).unwrap()),
        ["h1"]
    );
    assert!(index.search(&query("payroll"), &readable).unwrap().is_empty());
    let hit = &index.search(&query("salary"), &readable).unwrap()[0];
    assert!(hit.snippet.contains("salary"), "{}", hit.snippet);
}

#[test]
fn only_readable_spaces_and_the_filters_asked_for() {
    let (index, ops, hr, readable) = index();
    let only_ops = HashSet::from([ops]);
    assert_eq!(
        ids(&index.search(&query("报告"), &only_ops).unwrap()),
        ["m2"],
        "hr is not readable"
    );
    let in_hr = SearchQuery {
        space: Some(hr),
        ..query("报告")
    };
    assert_eq!(ids(&index.search(&in_hr, &readable).unwrap()), ["h1"]);
    assert!(
        index.search(&in_hr, &only_ops).unwrap().is_empty(),
        "a space asked for by name is still only searched when readable"
    );
    let by_author = SearchQuery {
        from: Some(DeviceId([1; 32]).to_string()[..10].to_string()),
        ..query("deploy")
    };
    assert_eq!(ids(&index.search(&by_author, &readable).unwrap()), ["m1", "m3"]);
    let by_user = SearchQuery {
        from: Some(UserId([102; 32]).to_string()),
        ..query("报")
    };
    assert_eq!(ids(&index.search(&by_user, &readable).unwrap()), ["m2"]);
    let window = SearchQuery {
        after_ms: Some(2_000),
        before_ms: Some(4_000),
        ..query("报")
    };
    assert_eq!(ids(&index.search(&window, &readable).unwrap()), ["m2", "m3"]);
}

#[test]
fn removed_entries_are_gone_and_purged() {
    let (index, ops, _, readable) = index();
    index.remove(ops, Some("m2"));
    index.commit(true).unwrap();
    assert_eq!(ids(&index.search(&query("报告"), &readable).unwrap()), ["h1"]);
    let searcher = index.reader.searcher();
    assert!(
        searcher.segment_readers().iter().all(|s| s.num_deleted_docs() == 0),
        "the deleted entry was merged away"
    );
    index.remove_space(ops);
    index.commit(true).unwrap();
    assert_eq!(index.len(), 1);
}

#[test]
fn bad_queries_are_refused() {
    let (index, _, _, readable) = index();
    assert!(matches!(index.search(&query("  ,. "), &readable), Err(Error::Query(_))));
    assert!(matches!(
        index.search(&query(&"x".repeat(600)), &readable),
        Err(Error::Query(_))
    ));
    let bad_from = SearchQuery {
        from: Some("bob".into()),
        ..query("deploy")
    };
    assert!(matches!(index.search(&bad_from, &readable), Err(Error::Query(_))));
    // Regex syntax in a query is only text.
    assert!(index.search(&query("a.*b (c"), &readable).is_ok());
}

#[test]
fn an_index_on_disk_is_sealed_and_reopened_or_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("search");
    let key = || IndexKey::new([5; 32]);
    let (index, fresh) = SearchIndex::open(&path, key()).unwrap();
    assert!(fresh);
    index
        .put(&entry(
            SpaceId([1; 16]),
            "secretmessageid1",
            1,
            1,
            "hello confidentialword 机密报告",
        ))
        .unwrap();
    index.commit(false).unwrap();
    drop(index);
    for file in std::fs::read_dir(&path).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        // Needles long enough that ciphertext cannot hold them by chance.
        for needle in ["confidential".as_bytes(), "机密报告".as_bytes(), b"secretmessageid1"] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "plaintext at rest");
        }
    }
    let (index, fresh) = SearchIndex::open(&path, key()).unwrap();
    assert!(!fresh);
    assert_eq!(index.len(), 1);
    let readable = HashSet::from([SpaceId([1; 16])]);
    assert_eq!(index.search(&query("机密"), &readable).unwrap().len(), 1);
    drop(index);

    let (index, fresh) = SearchIndex::open(&path, IndexKey::new([6; 32])).unwrap();
    assert!(fresh, "an index this key does not open is rebuilt");
    assert!(index.is_empty());
    drop(index);
    std::fs::write(path.join("VERSION"), "0").unwrap();
    let (index, fresh) = SearchIndex::open(&path, key()).unwrap();
    assert!(fresh, "an index of another version is rebuilt");
    assert!(index.is_empty());
}

#[test]
fn words_of_every_script_are_whole() {
    assert_eq!(
        words("Привет, мир! café crème 안녕하세요 deploy-2 部署窗口"),
        [
            "привет",
            "мир",
            "café",
            "crème",
            "안녕하세요",
            "deploy",
            "2",
            // jieba's words, then each character of the run.
            "部署",
            "窗口",
            "部",
            "署",
            "窗",
            "口"
        ]
    );
}

#[test]
fn any_part_of_a_chinese_text_matches_across_word_boundaries() {
    let (index, _, _, readable) = index();
    // 季度报告 is segmented 季度 / 报告: 度报 spans the boundary, 告 ends a word.
    assert_eq!(ids(&index.search(&query("度报"), &readable).unwrap()), ["h1", "m2"]);
    assert_eq!(ids(&index.search(&query("告"), &readable).unwrap()), ["h1", "m2"]);
    // 讨论季度 is in m2 only; 邮 (of 邮箱) in m3 only.
    assert_eq!(ids(&index.search(&query("论季"), &readable).unwrap()), ["m2"]);
    assert_eq!(ids(&index.search(&query("邮"), &readable).unwrap()), ["m3"]);
    // Every character must be there.
    assert!(index.search(&query("度薪"), &readable).unwrap().is_empty());
}

#[test]
fn words_in_other_scripts_match_as_words_and_prefixes() {
    let index = SearchIndex::in_memory().unwrap();
    let room = SpaceId([3; 16]);
    index
        .put(&entry(room, "ru", 1, 1, "Привет, команда: релиз в четверг"))
        .unwrap();
    // The same letters, scattered over other words.
    index.put(&entry(room, "scattered", 1, 2, "при вет тер")).unwrap();
    index.put(&entry(room, "fr", 1, 3, "Réunion déplacée à jeudi")).unwrap();
    index.put(&entry(room, "ko", 1, 4, "안녕하세요 배포 일정")).unwrap();
    index.commit(false).unwrap();
    let readable = HashSet::from([room]);
    let found = |q: &str| ids(&index.search(&query(q), &readable).unwrap()).join(",");
    assert_eq!(found("привет"), "ru");
    assert_eq!(found("релиз"), "ru");
    assert_eq!(found("четв"), "ru", "a prefix");
    assert_eq!(found("déplacée"), "fr");
    assert_eq!(found("RÉUNION"), "fr");
    assert_eq!(found("배포"), "ko");
    assert_eq!(found("안녕"), "ko", "a prefix");
}
