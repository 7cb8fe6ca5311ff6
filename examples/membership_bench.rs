//! Costs of membership changes: what a rotation costs its author and each
//! receiver for spaces of growing size, and what resolving a control log costs
//! as it grows, each next to its raw floor measured in the same run.
//!
//! ```sh
//! cargo run --release --example membership_bench            # about 30 s on 2 cores
//! cargo run --release --example membership_bench -- --json
//! ```
//!
//! - **rotation**: a `Remove` carrying a new epoch for M members (one X25519
//!   wrap each) made and self-checked by its author; checked and applied by a
//!   receiver; its size. Floor: M raw wraps (`EpochKey::wrap_for`) and one
//!   envelope signature check.
//! - **resolution**: a log of N operations (adds, role changes, removals with
//!   rotations, by several admins, some concurrent) applied one by one, as a node
//!   does at start-up or while syncing; then one more operation at the end. Floor:
//!   decoding and signature-checking the same N envelopes.

use std::time::{Duration, Instant};

use outpost_node::{
    control::{self, History, Keyring, Role, SpaceKind, SpaceState},
    crypto::EpochKey,
    envelope::Envelope,
    identity::{DeviceCert, DeviceKeys},
};

struct Row {
    metric: String,
    value: f64,
    unit: &'static str,
    floor: Option<f64>,
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let mut rows = Vec::new();
    for members in [100, 1000, 2000] {
        rotation(members, &mut rows);
    }
    for ops in [250, 1000, 2000] {
        resolution(ops, &mut rows);
    }
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|r| serde_json::json!({"metric": r.metric, "value": r.value, "unit": r.unit, "floor": r.floor}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out).unwrap());
        return;
    }
    println!("| metric | value | raw floor | ratio |");
    println!("|---|---|---|---|");
    for r in rows {
        match r.floor {
            Some(f) => println!(
                "| {} | {:.2} {} | {:.2} {} | {:.2}× |",
                r.metric,
                r.value,
                r.unit,
                f,
                r.unit,
                r.value / f
            ),
            None => println!("| {} | {:.2} {} |  |  |", r.metric, r.value, r.unit),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The median of `reps` runs of `f`.
fn median(reps: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..reps).map(|_| f()).collect();
    times.sort();
    times[reps / 2]
}

fn rotation(members: usize, rows: &mut Vec<Row>) {
    let owner = DeviceKeys::generate();
    let others: Vec<DeviceKeys> = (0..members).map(|_| DeviceKeys::generate()).collect();
    let certs: Vec<DeviceCert> = others.iter().map(DeviceKeys::cert).collect();
    let (genesis, key) =
        control::create_space(&owner, 1, "bench", SpaceKind::Chat, History::Shared, &certs, &[]).unwrap();
    let state = SpaceState::from_genesis(&genesis).unwrap();
    let gone = [others[0].device_id()];
    let mut made = None;
    let make = median(5, || {
        let start = Instant::now();
        let (env, _) = control::remove(
            &owner,
            &state,
            (rand::random(), 1, None),
            &gone,
            std::slice::from_ref(&key),
        )
        .unwrap();
        let took = start.elapsed();
        made = Some(env);
        took
    });
    let env = made.unwrap();
    let floor_make = median(5, || {
        let fresh = EpochKey::generate(state.space);
        let start = Instant::now();
        for cert in &certs[1..] {
            std::hint::black_box(fresh.wrap_for(cert));
        }
        start.elapsed()
    });
    let bytes = env.as_bytes().to_vec();
    let receive = median(5, || {
        let mut s = state.clone();
        let start = Instant::now();
        let env = Envelope::decode(bytes.clone()).unwrap();
        s.check(&env).unwrap();
        s.apply(&env);
        start.elapsed()
    });
    let floor_receive = median(5, || {
        let start = Instant::now();
        std::hint::black_box(Envelope::decode(bytes.clone()).unwrap());
        start.elapsed()
    });
    // A remaining member unlocking the new key (its wrap and the link back).
    let mut after = state.clone();
    after.apply(&env);
    let unlock = median(5, || {
        let start = Instant::now();
        let mut ring = Keyring::default();
        ring.unlock(&after, &others[1]);
        assert_eq!(ring.len(), 2);
        start.elapsed()
    });
    rows.push(Row {
        metric: format!("rotation for {members} members: make and self-check"),
        value: ms(make),
        unit: "ms",
        floor: Some(ms(floor_make)),
    });
    rows.push(Row {
        metric: format!("rotation for {members} members: receive (verify, check, apply)"),
        value: ms(receive),
        unit: "ms",
        floor: Some(ms(floor_receive)),
    });
    rows.push(Row {
        metric: format!("rotation for {members} members: a member unlocks its keys"),
        value: ms(unlock),
        unit: "ms",
        floor: None,
    });
    rows.push(Row {
        metric: format!("rotation for {members} members: size"),
        value: bytes.len() as f64 / 1024.0,
        unit: "KiB",
        floor: None,
    });
}

/// A log of `n` operations by three admins: adds, role changes and removals
/// (each with a rotation) in turn, so the space keeps a few dozen members
/// while its log grows.
fn resolution(n: usize, rows: &mut Vec<Row>) {
    let admins: Vec<DeviceKeys> = (0..3).map(|_| DeviceKeys::generate()).collect();
    let certs: Vec<DeviceCert> = admins[1..].iter().map(DeviceKeys::cert).collect();
    let (genesis, first) =
        control::create_space(&admins[0], 1, "bench", SpaceKind::Chat, History::Shared, &certs, &[]).unwrap();
    let mut state = SpaceState::from_genesis(&genesis).unwrap();
    // Every admin holds every key (they are members throughout).
    let mut ring = Keyring::default();
    ring.insert(first);
    let mut log: Vec<Vec<u8>> = Vec::new();
    for a in &admins[1..] {
        let env = control::set_role(&admins[0], &state, fresh(), a.device_id(), Role::Admin).unwrap();
        state.apply(&env);
        log.push(env.into_bytes());
    }
    let mut people: std::collections::VecDeque<DeviceKeys> = Default::default();
    while log.len() < n {
        let author = &admins[log.len() % 3];
        let (env, key) = match log.len() % 3 {
            0 => {
                let person = DeviceKeys::generate();
                let key = ring.key_for(&state.current().epoch).unwrap();
                let env = control::add_member(author, &state, &key, fresh(), &person.cert(), Role::Writer).unwrap();
                people.push_back(person);
                (env, None)
            }
            1 => match people.back() {
                Some(p) => (
                    control::set_role(author, &state, fresh(), p.device_id(), Role::Reader).unwrap(),
                    None,
                ),
                None => continue,
            },
            _ if people.len() > 32 => {
                let p = people.pop_front().unwrap();
                let tips = ring.keys_of(&state.current().tips).unwrap();
                control::remove(author, &state, fresh(), &[p.device_id()], &tips).unwrap()
            }
            _ => {
                let tips = ring.keys_of(&state.current().tips).unwrap();
                let (env, key) = control::rotate(author, &state, fresh(), &tips).unwrap();
                (env, Some(key))
            }
        };
        if let Some(key) = key {
            ring.insert(key);
        }
        state.apply(&env);
        log.push(env.into_bytes());
    }
    let load = median(3, || {
        let start = Instant::now();
        let mut s = SpaceState::from_genesis(&genesis).unwrap();
        for bytes in &log {
            let env = Envelope::decode(bytes.clone()).unwrap();
            s.check(&env).unwrap();
            s.apply(&env);
        }
        start.elapsed()
    });
    let floor = median(3, || {
        let start = Instant::now();
        for bytes in &log {
            std::hint::black_box(Envelope::decode(bytes.clone()).unwrap());
        }
        start.elapsed()
    });
    let tips = ring.keys_of(&state.current().tips).unwrap();
    let next = median(3, || {
        let mut s = state.clone();
        let start = Instant::now();
        let (env, _) = control::rotate(&admins[0], &s, fresh(), &tips).unwrap();
        s.apply(&env);
        start.elapsed()
    });
    rows.push(Row {
        metric: format!("control log of {n} ops: receive all, one by one"),
        value: ms(load),
        unit: "ms",
        floor: Some(ms(floor)),
    });
    rows.push(Row {
        metric: format!("control log of {n} ops: one more rotation (make, check, apply)"),
        value: ms(next),
        unit: "ms",
        floor: None,
    });
}

fn fresh() -> control::WriterPos {
    (rand::random(), 1, None)
}
