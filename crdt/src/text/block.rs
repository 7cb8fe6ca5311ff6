//! The shape of a document: a sequence of blocks, each a run of marked text.
//!
//! This is the model both sides meet in: Markdown parses into it and renders from
//! it, and it maps one to one onto Automerge rich text (a text object holding
//! block markers and marks). The Automerge layout follows the convention of
//! Automerge's rich-text editors: each block starts with a marker, a map
//! `{ type, parents, attrs }`, and the text up to the next marker belongs to it.
//!
//! | block                     | `type`                | `attrs`                          |
//! |---------------------------|-----------------------|----------------------------------|
//! | paragraph                 | `paragraph`           |                                  |
//! | heading                   | `heading`             | `level` (1–6)                    |
//! | list item                 | `unordered-list-item` / `ordered-list-item` | `start`, `loose`, `checked` when set |
//! | code block                | `code-block`          | `language` when set              |
//! | thematic break            | `horizontal-rule`     |                                  |
//! | table, HTML (kept as written) | `table`, `html`   |                                  |
//!
//! `parents` lists the enclosing containers, outermost first:
//! `unordered-list-item`, `ordered-list-item` or `blockquote`. Inline marks are
//! `strong`, `em`, `strike`, `code`, `link` (the destination), `mention` (a user
//! id) and `raw` (Markdown kept as written, such as an image). A soft line break
//! is `\n` in the text, a hard one U+2028.

use std::collections::HashMap;

use automerge::{ScalarValue, hydrate};

/// A hard line break inside a block's text.
pub const HARD_BREAK: char = '\u{2028}';
/// Deepest nesting of containers kept: deeper ones are flattened into the
/// innermost kept (a peer's marker could otherwise name thousands, and every
/// rendered line repeats their prefixes).
pub const MAX_DEPTH: usize = 16;
/// Largest number of an ordered list (CommonMark allows nine digits).
const MAX_START: u64 = 999_999_999;

/// One block of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub kind: BlockKind,
    /// Enclosing containers, outermost first.
    pub parents: Vec<Container>,
    pub runs: Vec<Run>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockKind {
    Paragraph,
    Heading(u8),
    ListItem(ListItem),
    Code {
        language: String,
    },
    Rule,
    /// A table, as its Markdown source.
    Table,
    /// An HTML block, as written.
    Html,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListItem {
    pub ordered: bool,
    /// The number of the first item of an ordered list, when not 1.
    pub start: Option<u64>,
    /// Items of a loose list are separated by blank lines (and shown as paragraphs).
    pub loose: bool,
    /// A task list item: done or not.
    pub checked: Option<bool>,
}

/// A block that contains other blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Container {
    BulletItem,
    OrderedItem,
    Quote,
}

/// Text with the same marks throughout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub text: String,
    pub marks: Marks,
}

/// The inline marks of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Marks {
    pub strong: bool,
    pub em: bool,
    pub strike: bool,
    pub code: bool,
    /// Markdown kept as written (an image, inline HTML).
    pub raw: bool,
    pub link: Option<String>,
    /// The user id this run mentions.
    pub mention: Option<String>,
}

impl Run {
    pub fn plain(text: impl Into<String>) -> Self {
        Run {
            text: text.into(),
            marks: Marks::default(),
        }
    }
}

impl Block {
    pub fn new(kind: BlockKind, parents: Vec<Container>) -> Self {
        Block {
            kind,
            parents,
            runs: Vec::new(),
        }
    }

    /// The block's text without marks.
    pub fn text(&self) -> String {
        self.runs.iter().map(|r| r.text.as_str()).collect()
    }

    /// Appends text, merging with the last run when the marks are the same.
    pub fn push(&mut self, text: &str, marks: &Marks) {
        if text.is_empty() {
            return;
        }
        match self.runs.last_mut() {
            Some(last) if last.marks == *marks => last.text.push_str(text),
            _ => self.runs.push(Run {
                text: text.to_string(),
                marks: marks.clone(),
            }),
        }
    }

    /// This block's container as seen by the blocks nested in it, if it is one.
    pub fn as_container(&self) -> Option<Container> {
        match &self.kind {
            BlockKind::ListItem(item) if item.ordered => Some(Container::OrderedItem),
            BlockKind::ListItem(_) => Some(Container::BulletItem),
            _ => None,
        }
    }

    /// The fields of this block's Automerge marker: type, parents, attributes.
    pub(crate) fn marker_fields(&self) -> (&'static str, Vec<&'static str>, Vec<(&'static str, ScalarValue)>) {
        let (kind, attrs): (&str, Vec<(&str, ScalarValue)>) = match &self.kind {
            BlockKind::Paragraph => ("paragraph", vec![]),
            BlockKind::Heading(level) => ("heading", vec![("level", ScalarValue::Int(i64::from(*level)))]),
            BlockKind::ListItem(item) => {
                let mut attrs = Vec::new();
                if let Some(start) = item.start {
                    attrs.push(("start", ScalarValue::Uint(start)));
                }
                if item.loose {
                    attrs.push(("loose", ScalarValue::Boolean(true)));
                }
                if let Some(checked) = item.checked {
                    attrs.push(("checked", ScalarValue::Boolean(checked)));
                }
                let kind = if item.ordered {
                    "ordered-list-item"
                } else {
                    "unordered-list-item"
                };
                (kind, attrs)
            }
            BlockKind::Code { language } if language.is_empty() => ("code-block", vec![]),
            BlockKind::Code { language } => (
                "code-block",
                vec![("language", ScalarValue::Str(language.as_str().into()))],
            ),
            BlockKind::Rule => ("horizontal-rule", vec![]),
            BlockKind::Table => ("table", vec![]),
            BlockKind::Html => ("html", vec![]),
        };
        (kind, self.parents.iter().map(|p| p.name()).collect(), attrs)
    }

    /// The Automerge block marker of this block, as a value.
    pub fn marker(&self) -> hydrate::Map {
        let (kind, parents, attrs) = self.marker_fields();
        let parents: Vec<hydrate::Value> = parents.into_iter().map(hydrate::Value::from).collect();
        let attrs: HashMap<&str, hydrate::Value> = attrs.into_iter().map(|(k, v)| (k, v.into())).collect();
        let map: HashMap<&str, hydrate::Value> = [
            ("type", kind.into()),
            ("parents", parents.into()),
            ("attrs", hydrate::Map::from(attrs).into()),
        ]
        .into_iter()
        .collect();
        map.into()
    }

    /// A block from its Automerge marker. Anything unknown (another
    /// application's block type) reads as a paragraph, never as an error.
    pub fn from_marker(map: &hydrate::Map) -> Self {
        let text = |v: Option<&hydrate::Value>| match v {
            Some(hydrate::Value::Scalar(ScalarValue::Str(s))) => Some(s.to_string()),
            _ => None,
        };
        let attrs = match map.get("attrs") {
            Some(hydrate::Value::Map(m)) => Some(m),
            _ => None,
        };
        let attr = |name: &str| attrs.and_then(|a| a.get(name));
        let number = |name: &str| match attr(name) {
            Some(hydrate::Value::Scalar(ScalarValue::Uint(n))) => Some(*n),
            Some(hydrate::Value::Scalar(ScalarValue::Int(n))) => u64::try_from(*n).ok(),
            _ => None,
        };
        let flag = |name: &str| match attr(name) {
            Some(hydrate::Value::Scalar(ScalarValue::Boolean(b))) => Some(*b),
            _ => None,
        };
        let kind = match text(map.get("type")).as_deref() {
            Some("heading") => BlockKind::Heading(number("level").unwrap_or(1).clamp(1, 6) as u8),
            Some(t @ ("ordered-list-item" | "unordered-list-item")) => BlockKind::ListItem(ListItem {
                ordered: t == "ordered-list-item",
                start: number("start").map(|n| n.min(MAX_START)),
                loose: flag("loose").unwrap_or(false),
                checked: flag("checked"),
            }),
            Some("code-block") => BlockKind::Code {
                language: text(attr("language")).unwrap_or_default(),
            },
            Some("horizontal-rule") => BlockKind::Rule,
            Some("table") => BlockKind::Table,
            Some("html") => BlockKind::Html,
            _ => BlockKind::Paragraph,
        };
        let parents = match map.get("parents") {
            Some(hydrate::Value::List(list)) => list
                .iter()
                .filter_map(|item| match &item.value {
                    hydrate::Value::Scalar(ScalarValue::Str(s)) => Container::from_name(s),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Block::new(kind, parents.into_iter().take(MAX_DEPTH).collect())
    }
}

impl Container {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Container::BulletItem => "unordered-list-item",
            Container::OrderedItem => "ordered-list-item",
            Container::Quote => "blockquote",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "unordered-list-item" => Some(Container::BulletItem),
            "ordered-list-item" => Some(Container::OrderedItem),
            "blockquote" => Some(Container::Quote),
            _ => None,
        }
    }

    pub fn is_item(self) -> bool {
        matches!(self, Container::BulletItem | Container::OrderedItem)
    }
}

impl Marks {
    /// The marks as Automerge stores them: (name, value) pairs.
    pub fn values(&self) -> Vec<(&'static str, ScalarValue)> {
        let mut out = Vec::new();
        for (on, name) in [
            (self.strong, "strong"),
            (self.em, "em"),
            (self.strike, "strike"),
            (self.code, "code"),
            (self.raw, "raw"),
        ] {
            if on {
                out.push((name, ScalarValue::Boolean(true)));
            }
        }
        if let Some(href) = &self.link {
            out.push(("link", ScalarValue::Str(href.as_str().into())));
        }
        if let Some(user) = &self.mention {
            out.push(("mention", ScalarValue::Str(user.as_str().into())));
        }
        out
    }

    /// The marks Automerge reports for a span; unknown ones are ignored.
    pub fn from_mark_set(set: Option<&automerge::marks::MarkSet>) -> Self {
        let mut marks = Marks::default();
        for (name, value) in set.into_iter().flat_map(|s| s.iter()) {
            let on = !matches!(value, ScalarValue::Null | ScalarValue::Boolean(false));
            let text = match value {
                ScalarValue::Str(s) => Some(s.to_string()),
                _ => None,
            };
            match name {
                "strong" => marks.strong = on,
                "em" => marks.em = on,
                "strike" => marks.strike = on,
                "code" => marks.code = on,
                "raw" => marks.raw = on,
                "link" => marks.link = text,
                "mention" => marks.mention = text,
                _ => {}
            }
        }
        marks
    }
}
