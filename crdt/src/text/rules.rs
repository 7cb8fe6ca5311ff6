//! The text rules, version 1: what a writer's change may do to a document.
//!
//! The root is frozen after the genesis. Every other object lives inside the
//! text: the text object itself (characters, block markers, marks) and the
//! block markers' maps and lists, which writers edit freely. A change is
//! checked op by op against the types of the objects it touches, so nothing
//! Automerge would refuse (or panic on) reaches it, and every element of the
//! text stays one character or one marker.

use std::collections::HashMap;

use automerge::{
    Change, ObjType, ScalarValue,
    legacy::{ElementId, Key, ObjectId, OpType},
};

use super::{MAX_MARK_NAME_BYTES, MAX_MENTION_BYTES, Mention, OpRef, Violation};

/// Longest map key inside a block marker.
const MAX_KEY_BYTES: usize = 64;
/// Longest string value inside a block marker.
const MAX_FIELD_BYTES: usize = 4 << 10;

/// Checks `change`'s ops. `text` is the text object's id; `object_type` gives
/// the type of an object the change did not create (`None`: unknown to this
/// document so far). Returns the mentions the change makes.
pub(super) fn check(
    change: &Change,
    text: &OpRef,
    object_type: &dyn Fn(&OpRef) -> Option<ObjType>,
) -> Result<Vec<Mention>, Violation> {
    if change.deps().is_empty() {
        return Err(Violation::NoDeps);
    }
    let start = change.start_op().get();
    let actor = change.actor_id();
    let mut created: HashMap<OpRef, ObjType> = HashMap::new();
    let mut mentions = Vec::new();
    for (i, op) in change.decode().operations.into_iter().enumerate() {
        let id: OpRef = (start + i as u64, actor.clone());
        let obj: OpRef = match op.obj {
            ObjectId::Root => return Err(Violation::Root),
            ObjectId::Id(id) => (id.0, id.1),
        };
        let kind = if obj == *text {
            ObjType::Text
        } else {
            match created.get(&obj).copied().or_else(|| object_type(&obj)) {
                Some(kind) => kind,
                None => return Err(Violation::UnknownObject),
            }
        };
        match (kind, &op.key, &op.action) {
            // The text: one character per element, block markers, marks.
            (ObjType::Text, Key::Seq(_), OpType::Put(ScalarValue::Str(c))) if c.chars().count() == 1 => {}
            (ObjType::Text, Key::Seq(_), OpType::Make(ObjType::Map)) if op.insert => {}
            (ObjType::Text, Key::Seq(_), OpType::Delete | OpType::MarkEnd(_)) => {}
            (ObjType::Text, Key::Seq(at), OpType::MarkBegin(mark)) => {
                if mark.name.is_empty() || mark.name.len() > MAX_MARK_NAME_BYTES {
                    return Err(Violation::MarkName);
                }
                if mark.name == "mention" {
                    match &mark.value {
                        ScalarValue::Str(user) if !user.is_empty() && user.len() <= MAX_MENTION_BYTES => {
                            mentions.push(Mention {
                                user: user.to_string(),
                                actor: actor.clone(),
                                counter: id.0,
                                anchor: match at {
                                    ElementId::Id(e) => Some((e.0, e.1.clone())),
                                    ElementId::Head => None,
                                },
                            });
                        }
                        ScalarValue::Null => {}
                        _ => return Err(Violation::Mention),
                    }
                }
            }
            (ObjType::Text, ..) => return Err(Violation::TextOp),
            // Inside block markers: plain maps and lists of small scalars.
            (ObjType::Map, Key::Map(name), action) if name.len() <= MAX_KEY_BYTES && !op.insert => {
                marker_value(action)?
            }
            (ObjType::List, Key::Seq(_), action) => marker_value(action)?,
            _ => return Err(Violation::MarkerOp),
        }
        if let OpType::Make(kind) = op.action {
            created.insert(id, kind);
        }
    }
    Ok(mentions)
}

/// What a block marker's map or list may hold.
fn marker_value(action: &OpType) -> Result<(), Violation> {
    match action {
        OpType::Make(ObjType::Map | ObjType::List) | OpType::Delete => Ok(()),
        OpType::Put(ScalarValue::Str(s)) if s.len() <= MAX_FIELD_BYTES => Ok(()),
        OpType::Put(
            ScalarValue::Int(_)
            | ScalarValue::Uint(_)
            | ScalarValue::F64(_)
            | ScalarValue::Boolean(_)
            | ScalarValue::Null
            | ScalarValue::Timestamp(_),
        ) => Ok(()),
        _ => Err(Violation::MarkerOp),
    }
}
