//! Private events: their text (title, location, description, and the same of
//! single occurrences) is sealed under a key of the event's own, wrapped for
//! the devices of its organizer and attendees only. Every member of the
//! calendar still holds the event's time, rule and people, so it shows to them
//! as busy time; the text is not in their reach (design D6): visibility is
//! enforced by keys, not by a display filter.
//!
//! The key is an `EpochKey` scoped to the event (its "space" is derived from
//! the calendar and the event id) with the same X25519 wraps and commitment as
//! epoch keys. Fields are sealed SIV-style (`seal_deterministic`), bound to the
//! event and the field's key, so an unchanged field seals to the same bytes
//! and a re-import writes nothing.
//!
//! Limits: a device of a participant that joins later reads the event once a
//! device holding the key writes to it again (each write wraps the key for the
//! participants' member devices that lack it). Making an existing event
//! private is refused: its earlier text stays in the calendar's history.

use std::collections::{BTreeMap, BTreeSet};

use outpost_crdt::calendar::{Event, Overrides};

use super::*;
use crate::{
    crypto::{EpochKey, Wrap},
    identity::DeviceKeys,
};

/// The sealable text fields.
const TEXT_FIELDS: [&str; 3] = ["title", "location", "description"];

/// The scope a private event's key is bound to.
fn scope(space: &SpaceId, event: &str) -> SpaceId {
    let mut input = space.0.to_vec();
    input.extend_from_slice(event.as_bytes());
    SpaceId(crate::ids::derive16("outpost/event-key/v1", &input))
}

/// A new key for a private event, with its commitment under `seal/commit`.
pub(super) fn new_key(space: &SpaceId, event: &str) -> (EpochKey, BTreeMap<String, Vec<u8>>) {
    let key = EpochKey::generate(scope(space, event));
    let seal = BTreeMap::from([("commit".to_string(), key.commitment().to_vec())]);
    (key, seal)
}

/// The event's key, if this device holds a wrap of it.
pub(super) fn open_key(space: &SpaceId, event: &Event, keys: &DeviceKeys) -> Option<EpochKey> {
    let commit: [u8; 32] = event.seal.get("commit")?.as_slice().try_into().ok()?;
    let wrap: Wrap = postcard::from_bytes(event.seal.get(&wrap_name(&keys.device_id()))?).ok()?;
    EpochKey::unwrap(scope(space, &event.id), &commit, &wrap, keys).ok()
}

fn wrap_name(device: &DeviceId) -> String {
    format!("to/{device}")
}

/// Wraps of `key` for the devices in `to` that `event` has none for yet.
pub(super) fn wraps_for<'a>(
    key: &EpochKey,
    event: Option<&Event>,
    to: impl Iterator<Item = &'a DeviceCert>,
) -> BTreeMap<String, Vec<u8>> {
    to.filter(|cert| event.is_none_or(|e| !e.seal.contains_key(&wrap_name(&cert.device))))
        .map(|cert| {
            let wrap = key.wrap_for(cert);
            (
                wrap_name(&cert.device),
                postcard::to_stdvec(&wrap).expect("wraps serialize"),
            )
        })
        .collect()
}

/// The users whose devices hold a wrap of the event's key.
pub(super) fn holders(space: &Space, event: &Event) -> BTreeSet<String> {
    space
        .state
        .members
        .values()
        .filter(|m| event.seal.contains_key(&wrap_name(&m.cert.device)))
        .map(|m| m.cert.user.to_string())
        .collect()
}

/// The member devices of `space` whose users are in `users`.
pub(super) fn devices_of<'a>(space: &'a Space, users: &'a BTreeSet<String>) -> impl Iterator<Item = &'a DeviceCert> {
    space
        .state
        .members
        .values()
        .map(|m| &m.cert)
        .filter(|c| users.contains(&c.user.to_string()))
}

/// What binds a sealed field to its event and place (`title`, or
/// `20261202T090000/title` for one occurrence's).
fn aad(event: &str, place: &str) -> Vec<u8> {
    let mut aad = b"outpost/calendar-field/v1\0".to_vec();
    aad.extend_from_slice(event.as_bytes());
    aad.push(0);
    aad.extend_from_slice(place.as_bytes());
    aad
}

/// Seals one text field: nonce ‖ ciphertext.
pub(super) fn seal(key: &EpochKey, event: &str, place: &str, text: &str) -> Vec<u8> {
    let (nonce, ct) = key.seal_deterministic(&aad(event, place), text.as_bytes());
    [nonce.as_slice(), &ct].concat()
}

fn open(key: &EpochKey, event: &str, place: &str, bytes: &[u8]) -> Option<String> {
    let (nonce, ct) = bytes.split_at_checked(24)?;
    let plain = key.open(nonce.try_into().ok()?, &aad(event, place), ct).ok()?;
    String::from_utf8(plain).ok()
}

/// Moves the clear text fields of `fields` (for the series, or the occurrence
/// `key`) into their sealed form.
pub(super) fn seal_fields(key: &EpochKey, event: &str, occurrence: Option<&str>, fields: &mut Fields) {
    let place = |name: &str| occurrence.map_or(name.to_string(), |k| format!("{k}/{name}"));
    let clear = [
        ("title", fields.title.take()),
        ("location", fields.location.take()),
        ("description", fields.description.take()),
    ];
    for (name, value) in clear {
        if let Some(text) = value {
            fields.sealed.insert(name.into(), seal(key, event, &place(name), &text));
        }
    }
}

/// The same for an imported event (its overrides too).
pub(super) fn seal_data(key: &EpochKey, event: &str, data: &mut outpost_crdt::calendar::EventData) {
    for (name, text) in [
        ("title", std::mem::take(&mut data.title)),
        ("location", std::mem::take(&mut data.location)),
        ("description", std::mem::take(&mut data.description)),
    ] {
        if !text.is_empty() {
            data.sealed.insert(name.into(), seal(key, event, name, &text));
        }
    }
    for (k, o) in &mut data.overrides {
        for (name, value) in [
            ("title", o.title.take()),
            ("location", o.location.take()),
            ("description", o.description.take()),
        ] {
            if let Some(text) = value {
                o.sealed
                    .insert(name.into(), seal(key, event, &format!("{k}/{name}"), &text));
            }
        }
    }
}

/// Fills a private event's text fields from their sealed form when this
/// device holds its key; `false` when it does not (the event shows as busy).
pub(super) fn reveal(space: &SpaceId, event: &mut Event, keys: &DeviceKeys) -> bool {
    if !event.private || event.seal.is_empty() {
        return true;
    }
    let Some(key) = open_key(space, event, keys) else {
        return false;
    };
    let id = event.id.clone();
    for name in TEXT_FIELDS {
        if let Some(text) = event.sealed.get(name).and_then(|b| open(&key, &id, name, b)) {
            *field(&mut event.title, &mut event.location, &mut event.description, name) = text;
        }
    }
    for (k, o) in event.overrides.iter_mut() {
        reveal_override(&key, &id, k, o);
    }
    true
}

fn reveal_override(key: &EpochKey, event: &str, occurrence: &str, o: &mut Overrides) {
    for name in TEXT_FIELDS {
        if let Some(text) = o
            .sealed
            .get(name)
            .and_then(|b| open(key, event, &format!("{occurrence}/{name}"), b))
        {
            let slot = match name {
                "title" => &mut o.title,
                "location" => &mut o.location,
                _ => &mut o.description,
            };
            *slot = Some(text);
        }
    }
}

fn field<'a>(
    title: &'a mut String,
    location: &'a mut String,
    description: &'a mut String,
    name: &str,
) -> &'a mut String {
    match name {
        "title" => title,
        "location" => location,
        _ => description,
    }
}

#[cfg(test)]
mod tests {
    use outpost_crdt::{
        DocId,
        calendar::{CalendarDoc, Write, time::When},
        writer::actor_id,
    };

    use super::*;

    /// A private event written as the node writes it: no clear text in the
    /// document, readable with a wrapped key, not without.
    #[test]
    fn private_text_is_sealed_for_its_people_only() {
        let (alice, bob, carol) = (DeviceKeys::generate(), DeviceKeys::generate(), DeviceKeys::generate());
        let space = SpaceId([5; 16]);
        let (key, mut parts) = new_key(&space, "ev");
        parts.extend(wraps_for(&key, None, [alice.cert(), bob.cert()].iter()));
        let when: When = "2026-12-03T16:00:00/2026-12-03T17:00:00 UTC".parse().unwrap();
        let mut fields = Fields {
            title: Some("Dentist".into()),
            location: Some("Clinic".into()),
            when: Some(when),
            private: Some(true),
            seal: parts,
            ..Fields::default()
        };
        seal_fields(&key, "ev", None, &mut fields);
        assert!(fields.title.is_none() && fields.location.is_none());
        let doc_id = DocId([1; 16]);
        let mut cal = CalendarDoc::new(doc_id);
        let add = Write::Add {
            id: "ev".into(),
            uid: "ev@outpost".into(),
            organizer: alice.user_id().to_string(),
            fields,
            attendees: vec![],
            reminders: vec![],
        };
        cal.write(actor_id(&[1; 32], &doc_id, 1), &[add], 1).unwrap();
        let saved = cal.automerge().save();
        let inflated = automerge::Automerge::load(&saved).unwrap().save_nocompress();
        for clear in [&b"Dentist"[..], b"Clinic"] {
            assert!(
                !inflated.windows(clear.len()).any(|w| w == clear),
                "clear text in the document"
            );
        }
        let stored = cal.event("ev").unwrap();
        assert_eq!(stored.title, "");
        for (keys, readable) in [(&alice, true), (&bob, true), (&carol, false)] {
            let mut e = stored.clone();
            assert_eq!(reveal(&space, &mut e, keys), readable);
            assert_eq!(e.title, if readable { "Dentist" } else { "" });
        }
        // Another calendar's scope cannot open it.
        let mut e = stored.clone();
        assert!(!reveal(&SpaceId([6; 16]), &mut e, &bob));
        // Sealing is deterministic: the same text seals to the same bytes.
        assert_eq!(
            seal(&key, "ev", "title", "Dentist"),
            seal(&key, "ev", "title", "Dentist")
        );
        assert_ne!(
            seal(&key, "ev", "title", "Dentist"),
            seal(&key, "ev", "location", "Dentist")
        );
    }
}
