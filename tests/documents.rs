//! Shared documents between daemon processes: co-editing across a partition,
//! history, diff and restore (also while another node edits), export to the
//! standard Automerge binary and back, `$EDITOR` edits, and a reader's refusal.

mod common;
mod inproc;

use std::{path::Path, process::Command, time::Duration};

use common::{Node, outpost_bin, pair, wait_until};
use serde_json::Value;

const START: &str = "# Weekly plan

We meet on Monday in the small room at ten.

- review the sync design
- 整理会议纪要
";

fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn show(node: &Node, doc: &str) -> String {
    node.json(&["doc", "show", doc, "--json"])["content"]
        .as_str()
        .expect("content")
        .to_string()
}

/// Writes `text` as the document's new Markdown; returns the new version id.
fn write(node: &Node, dir: &Path, doc: &str, text: &str) -> String {
    let file = write_file(dir, &format!("{}-edit.md", node.name), text);
    node.json(&["doc", "write", doc, "--file", &file, "--json"])["version"]
        .as_str()
        .expect("a change was written")
        .to_string()
}

/// A document "Plan" made on `a` from `text` (none when empty), with `member`.
fn new_doc(a: &Node, dir: &Path, member: Option<&Node>, text: &str) -> String {
    let mut args = vec!["doc".to_string(), "new".into(), "Plan".into(), "--json".into()];
    if let Some(m) = member {
        args.extend(["--member".into(), m.card()]);
    }
    if !text.is_empty() {
        args.extend(["--from".into(), write_file(dir, "start.md", text)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    a.json(&args)["space"].as_str().unwrap().to_string()
}

fn converge(a: &Node, b: &Node, doc: &str) -> String {
    wait_until(Duration::from_secs(30), "both nodes to show the same text", || {
        let (ta, tb) = (show(a, doc), show(b, doc));
        (ta == tb).then_some(ta)
    })
}

#[test]
fn partitioned_co_editing_keeps_every_edit() {
    let root = tempfile::tempdir().unwrap();
    let (mut a, mut b) = pair(root.path());
    let doc = new_doc(&a, root.path(), Some(&b), START);
    assert_eq!(show(&a, &doc), START);
    wait_until(Duration::from_secs(30), "b to receive the document", || {
        b.try_json(&["doc", "show", &doc, "--json"])
            .ok()
            .filter(|v| v["content"] == START)
    });

    // Partition: each daemon runs alone and edits the same paragraph, the
    // same list item and different places.
    a.stop();
    b.stop();
    a.start(&[]);
    b.start(&[]);
    write(
        &a,
        root.path(),
        &doc,
        "# Weekly plan

We meet on Tuesday in the small room at ten.

- review the sync design today
- 整理会议纪要
- book the projector
",
    );
    write(
        &b,
        root.path(),
        &doc,
        "# Weekly plan (draft)

We meet on Monday in the big room at ten.

- review the sync design with Bo
- 整理会议纪要并发送
",
    );

    // Heal.
    b.stop();
    b.start(&[a.addr()]);
    let merged = converge(&a, &b, &doc);
    for edit in [
        "(draft)",
        "Tuesday",
        "big room",
        "today",
        "with Bo",
        "并发送",
        "book the projector",
    ] {
        assert!(merged.contains(edit), "{edit:?} lost in:\n{merged}");
    }
    assert!(!merged.contains("Monday") && !merged.contains("small"), "{merged}");
    // Two writers, start + one edit each.
    let history = a.json(&["doc", "history", &doc, "--json"]);
    assert_eq!(history.as_array().unwrap().len(), 3, "{history}");
}

#[test]
fn history_diff_restore_and_export() {
    let root = tempfile::tempdir().unwrap();
    let (a, mut b) = pair(root.path());
    let doc = new_doc(&a, root.path(), Some(&b), START);
    let first = a.json(&["doc", "history", &doc, "--json"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let second_text = START.replace("Monday", "Friday");
    let second = write(&a, root.path(), &doc, &second_text);

    // History: who and what.
    let history = a.json(&["doc", "history", &doc, "--json"]);
    let versions = history.as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1]["id"], second.as_str());
    assert_eq!(versions[1]["author"], a.device_id().as_str());
    assert_eq!(versions[1]["excerpt"], "Fri");

    // Show at a version (by prefix), and diff.
    assert_eq!(
        a.json(&["doc", "show", &doc, "--at", &first[..10], "--json"])["content"],
        START
    );
    let diff = a.json(&["doc", "diff", &doc, &first[..10], &second[..10], "--json"])["diff"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        diff.contains("-We meet on Monday in the small room at ten.")
            && diff.contains("+We meet on Friday in the small room at ten."),
        "{diff}"
    );
    // Bad versions get clear errors.
    let err = a.fails(&["doc", "show", &doc, "--at", "zz"], 2);
    assert!(err.contains("not a version id"), "{err}");
    let err = a.fails(&["doc", "show", &doc, "--at", "0000000000"], 5);
    assert!(err.contains("doc history"), "{err}");

    // Restore while b edits: a restores the first version as b, at the same
    // time, adds a line. Both survive.
    wait_until(Duration::from_secs(30), "b to have the second version", || {
        (show(&b, &doc) == second_text).then_some(())
    });
    b.stop();
    b.start(&[]);
    let b_text = format!("{second_text}\nAdded by b while a restored.\n");
    write(&b, root.path(), &doc, &b_text);
    let restored = a.json(&["doc", "restore", &doc, &first[..12], "--json"]);
    assert!(restored["version"].is_string(), "{restored}");
    assert_eq!(show(&a, &doc), START);
    b.stop();
    b.start(&[a.addr()]);
    let merged = converge(&a, &b, &doc);
    assert_eq!(merged, format!("{START}\nAdded by b while a restored.\n"));
    assert_eq!(a.json(&["doc", "history", &doc, "--json"]).as_array().unwrap().len(), 4);

    // Blame: a wrote the start, b the added line.
    let blame = a.json(&["doc", "blame", &doc, "--json"]);
    let line_author = |text: &str| -> Value {
        blame
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["line"] == text)
            .map(|l| l["author"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(line_author("# Weekly plan"), a.device_id().as_str());
    assert_eq!(line_author("Added by b while a restored."), b.device_id().as_str());

    // Export: Markdown equals `show`; the Automerge binary loads back.
    let md_file = root.path().join("out.md");
    let am_file = root.path().join("out.automerge");
    let html_file = root.path().join("out.html");
    for (format, file) in [("md", &md_file), ("automerge", &am_file), ("html", &html_file)] {
        let out = a.cli(&["doc", "export", &doc, "--format", format, "-o", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(std::fs::read_to_string(&md_file).unwrap(), merged);
    assert!(
        std::fs::read_to_string(&html_file)
            .unwrap()
            .contains("<h1>Weekly plan</h1>")
    );
    let bytes = std::fs::read(&am_file).unwrap();
    let loaded = outpost_crdt::text::blocks_of_saved(&bytes).expect("a standard Automerge document");
    assert_eq!(outpost_crdt::text::markdown::render(&loaded), merged);
    let imported = a.json(&["doc", "import", am_file.to_str().unwrap(), "--json"])["space"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(show(&a, &imported), merged);
    let listed = a.json(&["doc", "list", "--json"]);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{listed}");
    assert!(
        names.contains(&"Weekly plan"),
        "import names the document after its first heading: {names:?}"
    );
}

#[test]
fn editor_edits_and_reader_refusal() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = pair(root.path());
    let doc = new_doc(&a, root.path(), None, START);

    // $EDITOR edits the Markdown in place; the save becomes a version.
    let out = Command::new(outpost_bin())
        .arg("--home")
        .arg(&a.home)
        .args(["doc", "edit", &doc, "--json"])
        .env("EDITOR", "sed -i s/Monday/Thursday/")
        .env_remove("VISUAL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(show(&a, &doc), START.replace("Monday", "Thursday"));

    // While the editor is open, another write changes another line (here, as
    // a script would, on the same node): saving keeps both.
    let other = write_file(
        root.path(),
        "other.md",
        &START
            .replace("Monday", "Thursday")
            .replace("sync design", "sync design twice"),
    );
    let script = write_file(
        root.path(),
        "editor.sh",
        &format!(
            "{} --home {} doc write {doc} --file {other} >/dev/null && sed -i s/Thursday/Friday/ \"$1\"\n",
            outpost_bin().display(),
            a.home.display()
        ),
    );
    let out = Command::new(outpost_bin())
        .arg("--home")
        .arg(&a.home)
        .args(["doc", "edit", &doc, "--json"])
        .env("EDITOR", format!("sh {script}"))
        .env_remove("VISUAL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let merged = show(&a, &doc);
    assert_eq!(
        merged,
        START
            .replace("Monday", "Friday")
            .replace("sync design", "sync design twice"),
        "the edit undid the write made while the editor was open"
    );

    // A reader sees the document and cannot change it.
    a.json(&["space", "invite", &doc, &b.card(), "--role", "reader", "--json"]);
    wait_until(Duration::from_secs(30), "the reader to see the document", || {
        b.try_json(&["doc", "show", &doc, "--json"]).ok()
    });
    let file = write_file(root.path(), "reader.md", "# Mine now\n");
    let err = b.fails(&["doc", "write", &doc, "--file", &file], 4);
    assert!(
        err.contains("not a writer") && err.contains("readers only view"),
        "{err}"
    );
    // Chat commands on a document (and doc commands on a chat) say what to use.
    let err = a.fails(&["chat", "send", &doc, "hello"], 2);
    assert!(err.contains("outpost doc"), "{err}");
}

/// Splices (as an editor reports keystrokes) through the real core: applied in
/// order as one version; out-of-range ones are refused and change nothing.
#[test]
fn splices_apply_as_one_version() {
    use outpost_node::core::{DocAnswer, DocEdit, DocFormat, DocQuery, NewSpace, Splice};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let node = inproc::Node::new();
        let space = node
            .core
            .create(NewSpace {
                name: "keys".into(),
                kind: outpost_node::control::SpaceKind::Doc,
                history: Default::default(),
                posting: Default::default(),
                department: None,
                members: Vec::new(),
                replicators: Vec::new(),
            })
            .await
            .unwrap();
        let splice = |pos, delete, insert: &str| Splice {
            pos,
            delete,
            insert: insert.into(),
        };
        let edits = vec![splice(0, 0, "helo world"), splice(3, 0, "l"), splice(6, 5, "there")];
        let written = node.core.write_doc(space, DocEdit::Splices { edits }).await.unwrap();
        assert!(written.version.is_some());
        let text = |answer: DocAnswer| match answer {
            DocAnswer::Show(view) => view.content,
            _ => panic!("asked to show"),
        };
        let show = DocQuery::Show {
            at: None,
            format: DocFormat::Text,
        };
        assert_eq!(
            text(node.core.read_doc(space, show.clone()).await.unwrap()),
            "hello there\n"
        );
        let err = node
            .core
            .write_doc(
                space,
                DocEdit::Splices {
                    edits: vec![splice(3, 0, "x"), splice(99, 0, "y")],
                },
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
        assert_eq!(text(node.core.read_doc(space, show).await.unwrap()), "hello there\n");
        let DocAnswer::History(versions) = node.core.read_doc(space, DocQuery::History).await.unwrap() else {
            panic!("asked for history");
        };
        assert_eq!(versions.len(), 1);
    });
}

/// A mention of a user reaches that user's inbox, also when the change
/// arrives after the user was offline, once, and with what it says.
#[test]
fn a_mention_reaches_the_inbox_once() {
    let root = tempfile::tempdir().unwrap();
    let (a, mut b) = pair(root.path());
    let doc = new_doc(&a, root.path(), Some(&b), "");
    wait_until(Duration::from_secs(30), "b to receive the document", || {
        b.try_json(&["doc", "show", &doc, "--json"]).ok()
    });
    // b is offline while a mentions it.
    b.stop();
    let b_user = common::user_of(&b);
    let text = format!("# Plan\n\nCould @{} review the budget?\n", &b_user[..12]);
    write(&a, root.path(), &doc, &text);
    let shown = show(&a, &doc);
    assert!(
        shown.contains(&format!("[@{}](outpost:user/{b_user})", &b_user[..12])),
        "{shown}"
    );
    // a mentioned someone else: nothing in its own inbox.
    assert_eq!(a.json(&["inbox", "--json"]), serde_json::json!([]));

    b.start(&[a.addr()]);
    let inbox = wait_until(Duration::from_secs(30), "the mention in b's inbox", || {
        let inbox = b.json(&["inbox", "--json"]);
        (!inbox.as_array().unwrap().is_empty()).then_some(inbox)
    });
    let entry = &inbox[0];
    assert_eq!(entry["kind"], "mention");
    assert_eq!(entry["space"], doc.as_str());
    assert_eq!(entry["space_name"], "Plan");
    assert_eq!(entry["by"], a.device_id().as_str());
    assert_eq!(entry["context"], format!("Could @{} review the budget?", &b_user[..12]));
    // Once: a restart and another sync do not notify again; an edit elsewhere
    // in the document does not either.
    write(&a, root.path(), &doc, &format!("{text}\nAnother line.\n"));
    b.stop();
    b.start(&[a.addr()]);
    wait_until(Duration::from_secs(30), "b to have the second edit", || {
        show(&b, &doc).contains("Another line").then_some(())
    });
    assert_eq!(b.json(&["inbox", "--json"]).as_array().unwrap().len(), 1);
}

/// In an org, `@name` resolves through the chart: a member's name or member
/// id mentions them (when their device is in the document).
#[test]
fn an_org_member_is_mentioned_by_name() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = pair(root.path());
    let members = [
        common::org::Member {
            id: "1001",
            node: &a,
            department: "总部",
        },
        common::org::Member {
            id: "1002",
            node: &b,
            department: "总部",
        },
    ];
    common::org::org_with_members(&a, &root.path().join("chart.csv"), &members);
    let doc = new_doc(&a, root.path(), Some(&b), "");
    write(&a, root.path(), &doc, "Ask @b, or @1002, but not @nobody.\n");
    let shown = show(&a, &doc);
    let b_user = common::user_of(&b);
    assert_eq!(
        shown,
        format!("Ask [@b](outpost:user/{b_user}), or [@1002](outpost:user/{b_user}), but not @nobody.\n")
    );
    let inbox = wait_until(Duration::from_secs(30), "the mentions in b's inbox", || {
        let inbox = b.json(&["inbox", "--json"]);
        (inbox.as_array().unwrap().len() == 2).then_some(inbox)
    });
    assert_eq!(inbox[0]["context"], "Ask @b, or @1002, but not @nobody.");
}
