//! Exit codes and the one-line error report.
//!
//! | code | meaning |
//! |---|---|
//! | 1 | other failure |
//! | 2 | bad usage or input (clap uses 2 as well) |
//! | 3 | daemon not running |
//! | 4 | not allowed |
//! | 5 | not found |
//! | 6 | key missing (cannot read the space yet) |
//! | 7 | storage failure |

use std::process::ExitCode;

use outpost_node::{client, identity, link};

pub(crate) fn report(err: &anyhow::Error) -> ExitCode {
    let (code, hint) = classify(err);
    eprintln!("error: {}", chain(err));
    if let Some(hint) = hint {
        eprintln!("hint: {hint}");
    }
    ExitCode::from(code)
}

fn chain(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// A person's input that cannot work, caught before anything is sent.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn classify(err: &anyhow::Error) -> (u8, Option<String>) {
    if err.downcast_ref::<Usage>().is_some() {
        return (2, None);
    }
    if let Some(e) = err.downcast_ref::<client::Error>() {
        return match e {
            client::Error::NotRunning(_) => (3, None),
            client::Error::Api(api, _) => {
                let code = match api.code.as_str() {
                    "invalid" | "unknown_device" => 2,
                    "forbidden" => 4,
                    "unknown_space" | "not_found" => 5,
                    "key_missing" => 6,
                    "store" => 7,
                    _ => 1,
                };
                (code, api.hint.clone())
            }
            client::Error::Transport(_) => (1, None),
        };
    }
    if err.downcast_ref::<link::TicketError>().is_some()
        || err.downcast_ref::<outpost_node::org::enroll::TicketError>().is_some()
    {
        return (2, None);
    }
    if let Some(e) = err.downcast_ref::<identity::Error>() {
        return match e {
            identity::Error::Missing(_) => (2, None),
            identity::Error::AlreadyExists(_) => (2, Some("each home holds one device; use another --home".into())),
            _ => (1, None),
        };
    }
    (1, None)
}
