//! Applying a new version of a document as the smallest edit: a character-level
//! diff of the text and block markers, then a diff of the marks.
//!
//! Automerge's own `update_spans` compares marks run by run and rewrites a mark
//! that spans runs with other marks (bold around inline code) on every save:
//! harmless alone, but a concurrent "un-bold" elsewhere would be undone. Here
//! marks are compared as whole ranges, so saving unchanged text writes nothing.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use automerge::{
    AutomergeError, ObjId, ReadDoc, ScalarValue, Span,
    marks::{ExpandMark, Mark},
    transaction::{Transactable, Transaction},
};
use similar::{Algorithm, DiffOp, capture_diff_slices_deadline};

use super::block::{Block, BlockKind, Container};

/// One position of the text: a character or a block marker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Token {
    Char(char),
    Marker(BlockKind, Vec<Container>),
}

/// A mark over a range of positions: (name, value, start, end).
type Range = (String, ScalarValue, usize, usize);

/// How long the character diff may search for the smallest edit; past it, it
/// settles for a larger one (still correct, merging less finely).
const DIFF_DEADLINE: Duration = Duration::from_millis(500);

/// Edits the text object `text` from what it holds to `new`.
pub(super) fn update(tx: &mut Transaction<'_>, text: &ObjId, new: &[Block]) -> Result<(), AutomergeError> {
    let old = tokens_of_spans(tx.spans(text)?);
    let wanted = tokens_of_blocks(new);
    let mut idx = 0;
    let deadline = Instant::now() + DIFF_DEADLINE;
    for op in capture_diff_slices_deadline(Algorithm::Myers, &old, &wanted, Some(deadline)) {
        match op {
            DiffOp::Equal { len, .. } => idx += len,
            DiffOp::Delete { old_index, old_len, .. } => delete(tx, text, idx, &old[old_index..old_index + old_len])?,
            DiffOp::Insert { new_index, new_len, .. } => {
                idx = insert(tx, text, idx, &wanted[new_index..new_index + new_len])?;
            }
            // A block that changed kind or attributes keeps its marker (and so
            // what others write in it meanwhile); only the fields change.
            DiffOp::Replace {
                old_index,
                old_len: 1,
                new_index,
                new_len: 1,
            } if matches!(
                (&old[old_index], &wanted[new_index]),
                (Token::Marker(..), Token::Marker(..))
            ) =>
            {
                let Token::Marker(kind, parents) = &wanted[new_index] else {
                    unreachable!("matched above")
                };
                match tx.get(text, idx)? {
                    Some((automerge::Value::Object(automerge::ObjType::Map), marker)) => {
                        fill_marker(tx, &marker, &Block::new(kind.clone(), parents.clone()))?;
                    }
                    _ => {
                        delete(tx, text, idx, &old[old_index..old_index + 1])?;
                        insert(tx, text, idx, &wanted[new_index..new_index + 1])?;
                    }
                }
                idx += 1;
            }
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                delete(tx, text, idx, &old[old_index..old_index + old_len])?;
                idx = insert(tx, text, idx, &wanted[new_index..new_index + new_len])?;
            }
        }
    }
    update_marks(tx, text, new)
}

fn tokens_of_spans(spans: impl Iterator<Item = Span>) -> Vec<Token> {
    let mut out = Vec::new();
    for span in spans {
        match span {
            Span::Block(map) => {
                let block = Block::from_marker(&map);
                out.push(Token::Marker(block.kind, block.parents));
            }
            Span::Text { text, .. } => out.extend(text.chars().map(Token::Char)),
        }
    }
    out
}

fn tokens_of_blocks(blocks: &[Block]) -> Vec<Token> {
    let mut out = Vec::new();
    for block in blocks {
        out.push(Token::Marker(block.kind.clone(), block.parents.clone()));
        for run in &block.runs {
            out.extend(run.text.chars().map(Token::Char));
        }
    }
    out
}

/// Deletes `tokens` at `idx`: characters in runs, markers one by one.
fn delete(tx: &mut Transaction<'_>, text: &ObjId, idx: usize, tokens: &[Token]) -> Result<(), AutomergeError> {
    let mut chars = 0isize;
    for token in tokens {
        match token {
            Token::Char(_) => chars += 1,
            Token::Marker(..) => {
                if chars > 0 {
                    tx.splice_text(text, idx, chars, "")?;
                    chars = 0;
                }
                tx.join_block(text, idx)?;
            }
        }
    }
    if chars > 0 {
        tx.splice_text(text, idx, chars, "")?;
    }
    Ok(())
}

/// Inserts `tokens` at `idx`; returns the position after them.
fn insert(tx: &mut Transaction<'_>, text: &ObjId, mut idx: usize, tokens: &[Token]) -> Result<usize, AutomergeError> {
    let mut run = String::new();
    for token in tokens {
        match token {
            Token::Char(c) => run.push(*c),
            Token::Marker(kind, parents) => {
                if !run.is_empty() {
                    tx.splice_text(text, idx, 0, &run)?;
                    idx += run.chars().count();
                    run.clear();
                }
                let marker = tx.split_block(text, idx)?;
                fill_marker(tx, &marker, &Block::new(kind.clone(), parents.clone()))?;
                idx += 1;
            }
        }
    }
    if !run.is_empty() {
        tx.splice_text(text, idx, 0, &run)?;
        idx += run.chars().count();
    }
    Ok(idx)
}

/// Writes a new block marker's fields.
fn fill_marker(tx: &mut Transaction<'_>, marker: &ObjId, block: &Block) -> Result<(), AutomergeError> {
    let (kind, parents, attrs) = block.marker_fields();
    tx.put(marker, "type", kind)?;
    let list = tx.put_object(marker, "parents", automerge::ObjType::List)?;
    for (i, parent) in parents.into_iter().enumerate() {
        tx.insert(&list, i, parent)?;
    }
    let map = tx.put_object(marker, "attrs", automerge::ObjType::Map)?;
    for (name, value) in attrs {
        tx.put(&map, name, value)?;
    }
    Ok(())
}

/// Makes the marks equal to those of `blocks`, touching only the positions
/// whose marks differ: typing after bold text un-bolds the new character, not
/// the whole range (which would undo a concurrent change to the rest of it).
fn update_marks(tx: &mut Transaction<'_>, text: &ObjId, blocks: &[Block]) -> Result<(), AutomergeError> {
    let wanted = wanted_marks(blocks);
    let held: Vec<Range> = tx
        .marks(text)?
        .into_iter()
        .filter(|m| !m.value.is_null())
        .map(|m| (m.name.to_string(), m.value, m.start, m.end))
        .collect();
    let names: BTreeSet<&str> = wanted.iter().chain(&held).map(|r| r.0.as_str()).collect();
    let mut unmarks = Vec::new();
    let mut marks = Vec::new();
    for name in names {
        let of = |ranges: &[Range]| -> Vec<(ScalarValue, usize, usize)> {
            ranges
                .iter()
                .filter(|r| r.0 == name)
                .map(|r| (r.1.clone(), r.2, r.3))
                .collect()
        };
        let (want, have) = (of(&wanted), of(&held));
        for (value, start, end) in &have {
            for (s, e) in subtract((*start, *end), &want, value) {
                unmarks.push((name.to_string(), s, e));
            }
        }
        for (value, start, end) in &want {
            for (s, e) in subtract((*start, *end), &have, value) {
                marks.push(Mark::new(name.to_string(), value.clone(), s, e));
            }
        }
    }
    for (name, start, end) in unmarks {
        tx.unmark(text, &name, start, end, expand(&name))?;
    }
    for mark in marks {
        let expand = expand(&mark.name);
        tx.mark(text, mark, expand)?;
    }
    Ok(())
}

/// The parts of `range` not covered by the ranges of `others` with `value`.
fn subtract(range: (usize, usize), others: &[(ScalarValue, usize, usize)], value: &ScalarValue) -> Vec<(usize, usize)> {
    let mut covers: Vec<(usize, usize)> = others
        .iter()
        .filter(|(v, ..)| v == value)
        .map(|(_, s, e)| (*s, *e))
        .collect();
    covers.sort_unstable();
    let (mut at, end) = range;
    let mut out = Vec::new();
    for (s, e) in covers {
        if e <= at || s >= end {
            continue;
        }
        if s > at {
            out.push((at, s));
        }
        at = at.max(e);
    }
    if at < end {
        out.push((at, end));
    }
    out
}

/// How a mark grows when text is typed at its edges: emphasis grows at its end
/// (typing after bold text stays bold); links, mentions, code and raw do not.
pub(super) fn expand(name: &str) -> ExpandMark {
    match name {
        "link" | "mention" | "code" | "raw" => ExpandMark::None,
        _ => ExpandMark::After,
    }
}

/// The marks of `blocks` as ranges, adjacent runs with the same mark joined
/// (as Automerge reports them).
fn wanted_marks(blocks: &[Block]) -> Vec<Range> {
    let mut out: Vec<Range> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    let mut idx = 0;
    for block in blocks {
        idx += 1;
        for run in &block.runs {
            let len = run.text.chars().count();
            let marks = run.marks.values();
            let mut still_open = Vec::new();
            for (name, value) in marks {
                let joined = open
                    .iter()
                    .copied()
                    .find(|&i| out[i].0 == name && out[i].1 == value && out[i].3 == idx);
                match joined {
                    Some(i) => {
                        out[i].3 = idx + len;
                        still_open.push(i);
                    }
                    None => {
                        out.push((name.to_string(), value, idx, idx + len));
                        still_open.push(out.len() - 1);
                    }
                }
            }
            open = still_open;
            idx += len;
        }
        open.clear();
    }
    out
}
