//! Markdown import → export round trips, over a corpus of real documents:
//! headings, nested lists, code blocks, tables, links, HTML and CJK text.
//!
//! "Equivalent" means the exported Markdown renders to the same HTML as the
//! original (up to whitespace between tags), parses back to the same blocks,
//! and is a fixed point: exporting it again gives the same bytes. The
//! document goes through Automerge both ways (written, read back, saved and
//! loaded), as a real import and export do.

use std::path::PathBuf;

use automerge::{Automerge, ReadDoc};
use outpost_crdt::{
    DocId,
    text::{TextDoc, markdown},
    writer::actor_id,
};

fn corpus() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("tests/markdown"))
        .expect("corpus directory")
        .map(|e| e.expect("entry").path())
        .collect();
    // The project's own documents are real, long and varied.
    files.push(dir.join("../README.md"));
    files.push(dir.join("../ARCHITECTURE.md"));
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), text)
        })
        .collect()
}

/// HTML with whitespace runs collapsed and none between tags.
fn normalized_html(md: &str) -> String {
    let html = markdown::to_html(md);
    let collapsed = html.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.replace("> <", "><")
}

fn no_mentions(_: &str) -> Option<String> {
    None
}

#[test]
fn import_then_export_gives_equivalent_markdown() {
    for (name, original) in corpus() {
        let blocks = markdown::parse(&original, &no_mentions);
        assert!(!blocks.is_empty(), "{name}: nothing parsed");
        let doc_id = DocId([1; 16]);
        let mut doc = TextDoc::new(doc_id);
        doc.write(actor_id(&[1; 32], &doc_id, 1), &blocks, 1)
            .expect("write")
            .expect("a non-empty document is a change");
        assert_eq!(doc.blocks(), blocks, "{name}: Automerge gives back other blocks");
        let exported = doc.markdown();
        let first_difference = normalized_html(&original)
            .chars()
            .zip(normalized_html(&exported).chars())
            .position(|(a, b)| a != b);
        assert_eq!(
            normalized_html(&original),
            normalized_html(&exported),
            "{name}: exported Markdown renders differently (first difference at char {first_difference:?}):\n{exported}"
        );
        assert_eq!(
            markdown::parse(&exported, &no_mentions),
            blocks,
            "{name}: export does not parse back"
        );
        assert_eq!(
            markdown::render(&blocks),
            exported,
            "{name}: export is not a fixed point"
        );

        // The saved document loads in plain Automerge and holds the same text.
        let loaded = Automerge::load(&doc.save()).expect("the saved document loads");
        let (_, text) = loaded.get(automerge::ROOT, "text").unwrap().expect("text object");
        assert_eq!(loaded.text(&text).unwrap(), doc.raw_text(), "{name}");
    }
}

#[test]
fn a_second_import_of_the_export_changes_nothing() {
    for (name, original) in corpus() {
        let blocks = markdown::parse(&original, &no_mentions);
        let doc_id = DocId([2; 16]);
        let actor = actor_id(&[2; 32], &doc_id, 1);
        let mut doc = TextDoc::new(doc_id);
        doc.write(actor.clone(), &blocks, 1).unwrap();
        let again = markdown::parse(&doc.markdown(), &no_mentions);
        assert!(
            doc.write(actor, &again, 2).unwrap().is_none(),
            "{name}: re-import made a change"
        );
    }
}

/// Constructs that are easy to get wrong: each must export to Markdown that
/// renders like the original and parses back to the same blocks.
#[test]
fn tricky_constructs_round_trip() {
    let cases = [
        "# Issue \\#\n",
        "# C# and F#\n",
        "\\![a](b)\n",
        "[a](<b c>) and [d](<x)>) and [e](<>)\n",
        "a\\|b\n:-\\|-\n",
        "- a\n\n2. x\n",
        "1. a\n5) b\n",
        "~~~py`x\ncode\n~~~\n",
        "`` ` `` and ` `` `\n",
        "wow!\n\n[link](http://x)\n",
        "say hi![x](y)\n",
        "> - quoted item\n>   - nested\n>\n> after\n",
        "1. one\n   ```\n   code in item\n   ```\n2. two\n",
        "- [ ] todo\n- [x] done\n",
        "***bold italic*** and **bold *nested* bold**\n",
        "line one  \nline two\\\nline three\n",
        "&amp; &copy; AT&T\n",
        "1\\. not a list\n\n\\- nor this\n\n\\# nor a heading\n",
        "# Heading with `code` and [link](http://x)\n",
        "<https://autolink.example> and <me@example.com>\n",
        "Text with trailing spaces   \nnext\n",
    ];
    for original in cases {
        let blocks = markdown::parse(original, &no_mentions);
        let exported = markdown::render(&blocks);
        assert_eq!(
            normalized_html(original),
            normalized_html(&exported),
            "{original:?} exported as {exported:?}"
        );
        assert_eq!(
            markdown::parse(&exported, &no_mentions),
            blocks,
            "{original:?} exported as {exported:?}"
        );
    }
}

/// Deep nesting from a hostile document is flattened, not rendered with
/// ever-longer prefixes.
#[test]
fn deep_nesting_is_bounded() {
    let deep = format!("{} text\n", ">".repeat(5_000));
    let blocks = markdown::parse(&deep, &no_mentions);
    assert!(
        blocks
            .iter()
            .all(|b| b.parents.len() <= outpost_crdt::text::block::MAX_DEPTH)
    );
    let rendered = markdown::render(&blocks);
    assert!(rendered.len() < 1_000, "{}", rendered.len());
}
