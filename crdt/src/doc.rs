//! The document types a space can hold, behind one interface: the node syncs,
//! validates, applies and snapshots every kind of document the same way.

use automerge::{Automerge, Change, ChangeHash, ObjType};

use crate::{
    Author, DocId, Error, Violation,
    calendar::{self, CalendarDoc},
    chat::{self, ChatDoc},
    text::{self, OpRef, TextDoc},
};

/// The objects the ops of `changes` create: what a replay of them (a load, a
/// snapshot) holds before they are all applied.
pub fn created_objects<'a>(changes: impl IntoIterator<Item = &'a Change>) -> std::collections::HashMap<OpRef, ObjType> {
    let mut out = std::collections::HashMap::new();
    for change in changes {
        let start = change.start_op().get();
        for (i, op) in change.decode().operations.iter().enumerate() {
            if let automerge::legacy::OpType::Make(kind) = op.action {
                out.insert((start + i as u64, change.actor_id().clone()), kind);
            }
        }
    }
    out
}

/// Which typed model a document follows (fixed by its space's kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Model {
    Chat,
    Text,
    Calendar,
}

/// A document of any model.
// Each variant is mostly its Automerge document; one lives per shard, in a
// map, so boxing the largest would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Doc {
    Chat(ChatDoc),
    Text(TextDoc),
    Calendar(CalendarDoc),
}

/// A change that passed its document's rules.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    Chat(chat::Checked),
    Text(text::Checked),
    Calendar(calendar::Checked),
}

/// What applying changes made visible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A chat message appeared.
    Message(chat::Message),
    /// A document mentioned a user.
    Mention(text::Mention),
    /// Chat messages were edited, reacted to or retracted, or the room's
    /// settings changed (once per batch), with the documents holding the
    /// messages named (as the markers' refs say), and the refs of the
    /// messages edited, copied or retracted ([`chat::Checked::rebodied`]).
    ChatUpdated {
        targets: std::collections::BTreeSet<DocId>,
        rebodied: std::collections::BTreeSet<String>,
    },
}

impl Checked {
    pub fn change(&self) -> &Change {
        match self {
            Checked::Chat(c) => c.change(),
            Checked::Text(c) => c.change(),
            Checked::Calendar(c) => c.change(),
        }
    }

    /// What these changes make visible once applied (messages in display order).
    pub(crate) fn effects_of<'a>(checked: impl IntoIterator<Item = &'a Checked>) -> Vec<Effect> {
        let mut messages = Vec::new();
        let mut mentions = Vec::new();
        let mut updated = false;
        let mut targets = std::collections::BTreeSet::new();
        let mut rebodied = std::collections::BTreeSet::new();
        for c in checked {
            match c {
                Checked::Chat(c) => {
                    messages.extend(c.created().iter().cloned());
                    updated |= c.updates();
                    targets.extend(c.targets().iter().copied());
                    rebodied.extend(c.rebodied().iter().cloned());
                }
                Checked::Text(c) => mentions.extend(c.mentions().iter().cloned()),
                Checked::Calendar(_) => {}
            }
        }
        chat::sort_for_display(&mut messages);
        messages
            .into_iter()
            .map(Effect::Message)
            .chain(mentions.into_iter().map(Effect::Mention))
            .chain(updated.then_some(Effect::ChatUpdated { targets, rebodied }))
            .collect()
    }
}

impl Doc {
    /// A document of `model` at its genesis.
    pub fn new(model: Model, doc_id: DocId) -> Self {
        match model {
            Model::Chat => Doc::Chat(ChatDoc::new(doc_id)),
            Model::Text => Doc::Text(TextDoc::new(doc_id)),
            Model::Calendar => Doc::Calendar(CalendarDoc::new(doc_id)),
        }
    }

    pub fn model(&self) -> Model {
        match self {
            Doc::Chat(_) => Model::Chat,
            Doc::Text(_) => Model::Text,
            Doc::Calendar(_) => Model::Calendar,
        }
    }

    /// The hash of the genesis: the one dependency of a writer's first change
    /// when nothing else is there.
    pub fn genesis_hash(&self) -> ChangeHash {
        match self {
            Doc::Chat(d) => d.genesis_hash(),
            Doc::Text(d) => d.genesis_hash(),
            Doc::Calendar(d) => d.genesis_hash(),
        }
    }

    pub fn has_change(&self, hash: &ChangeHash) -> bool {
        match self {
            Doc::Chat(d) => d.has_change(hash),
            Doc::Text(d) => d.has_change(hash),
            Doc::Calendar(d) => d.has_change(hash),
        }
    }

    /// Checks `change`, written by `author`, against this document type's rules.
    pub fn validate(&self, change: Change, author: &Author) -> Result<Checked, Violation> {
        self.validate_with(change, author, &|_| None)
    }

    /// [`Doc::validate`], with `pending` giving the objects created by changes
    /// that are applied before this one but not yet (see
    /// [`TextDoc::validate_with`]; chat rules need no document state).
    pub fn validate_with(
        &self,
        change: Change,
        author: &Author,
        pending: &dyn Fn(&OpRef) -> Option<ObjType>,
    ) -> Result<Checked, Violation> {
        match self {
            Doc::Chat(d) => d.validate(change, author).map(Checked::Chat).map_err(Violation::Chat),
            Doc::Text(d) => d
                .validate_with(change, pending)
                .map(Checked::Text)
                .map_err(Violation::Text),
            Doc::Calendar(d) => d
                .validate_with(change, author, pending)
                .map(Checked::Calendar)
                .map_err(Violation::Calendar),
        }
    }

    /// Whether a change was refused only because it touches an object not
    /// held yet: it waits instead of being rejected.
    pub fn is_premature(violation: &Violation) -> bool {
        matches!(
            violation,
            Violation::Text(text::Violation::UnknownObject) | Violation::Calendar(calendar::Violation::UnknownObject)
        )
    }

    /// Applies checked changes in one call (Automerge's apply costs time
    /// proportional to the document on every call, so callers batch).
    pub fn apply_checked(&mut self, checked: Vec<Checked>) -> Result<Vec<Effect>, Error> {
        let effects = Checked::effects_of(&checked);
        if let Doc::Chat(d) = self {
            // Through the chat model, which keeps its display order current.
            let chat = checked
                .into_iter()
                .map(|c| match c {
                    Checked::Chat(c) => Ok(c),
                    _ => Err(Error::WrongModel),
                })
                .collect::<Result<Vec<_>, _>>()?;
            d.apply_checked(chat)?;
            return Ok(effects);
        }
        let changes: Vec<Change> = checked
            .into_iter()
            .map(|c| match c {
                Checked::Chat(c) => c.change().clone(),
                Checked::Text(c) => c.change().clone(),
                Checked::Calendar(c) => c.change().clone(),
            })
            .collect();
        self.automerge_mut().apply_changes(changes)?;
        Ok(effects)
    }

    /// The whole document, compressed.
    pub fn save(&self) -> Vec<u8> {
        self.automerge().save()
    }

    pub fn automerge(&self) -> &Automerge {
        match self {
            Doc::Chat(d) => d.automerge(),
            Doc::Text(d) => d.automerge(),
            Doc::Calendar(d) => d.automerge(),
        }
    }

    pub(crate) fn automerge_mut(&mut self) -> &mut Automerge {
        match self {
            Doc::Chat(d) => d.automerge_mut(),
            Doc::Text(d) => d.automerge_mut(),
            Doc::Calendar(d) => d.automerge_mut(),
        }
    }

    /// Replaces the document with a merged one of the same model.
    pub(crate) fn replace(&mut self, doc: Automerge) {
        match self {
            Doc::Chat(d) => d.replace(doc),
            Doc::Text(d) => d.replace(doc),
            Doc::Calendar(d) => d.replace(doc),
        }
    }

    pub fn chat(&self) -> Option<&ChatDoc> {
        match self {
            Doc::Chat(d) => Some(d),
            _ => None,
        }
    }

    pub fn chat_mut(&mut self) -> Option<&mut ChatDoc> {
        match self {
            Doc::Chat(d) => Some(d),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<&TextDoc> {
        match self {
            Doc::Text(d) => Some(d),
            _ => None,
        }
    }

    pub fn text_mut(&mut self) -> Option<&mut TextDoc> {
        match self {
            Doc::Text(d) => Some(d),
            _ => None,
        }
    }

    pub fn calendar(&self) -> Option<&CalendarDoc> {
        match self {
            Doc::Calendar(d) => Some(d),
            _ => None,
        }
    }

    pub fn calendar_mut(&mut self) -> Option<&mut CalendarDoc> {
        match self {
            Doc::Calendar(d) => Some(d),
            _ => None,
        }
    }
}
