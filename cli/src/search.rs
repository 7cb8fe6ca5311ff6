//! `outpost search`: messages and documents this device can read.

use clap::Args;
use outpost_node::{
    client::Client,
    search::{Hit, HitKind},
};

use crate::{exit::Usage, output};

#[derive(Args)]
pub(crate) struct SearchArgs {
    /// Words to find (all of them), Chinese or any other language; a word also
    /// finds the words it begins (`deploy` finds "deployment", `报` finds "报告").
    query: String,
    /// Only this room or document (its id).
    #[arg(long)]
    space: Option<String>,
    /// Only messages by this person: their org name or e-mail name, or at
    /// least 8 hex characters of their user or device id.
    #[arg(long, value_name = "USER")]
    from: Option<String>,
    /// Written on or after this date (YYYY-MM-DD or "YYYY-MM-DD HH:MM", this machine's zone).
    #[arg(long, value_name = "DATE")]
    after: Option<String>,
    /// Written before this date.
    #[arg(long, value_name = "DATE")]
    before: Option<String>,
    /// Most results.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(client: &Client, args: SearchArgs) -> anyhow::Result<()> {
    let zone = outpost_node::clock::local_zone();
    let when = |typed: &Option<String>| -> anyhow::Result<Option<i64>> {
        typed
            .as_deref()
            .map(|t| crate::cal::moment(t, zone).map(|m| m.timestamp_millis()))
            .transpose()
    };
    let (after, before) = (when(&args.after)?, when(&args.before)?);
    if let (Some(a), Some(b)) = (after, before)
        && a >= b
    {
        return Err(Usage("--after must be earlier than --before".into()).into());
    }
    let mut path = format!(
        "/v1/search?q={}&limit={}",
        output::percent_encode(&args.query),
        args.limit
    );
    for (key, value) in [("space", &args.space), ("from", &args.from)] {
        if let Some(v) = value {
            path += &format!("&{key}={}", output::percent_encode(v));
        }
    }
    for (key, value) in [("after_ms", after), ("before_ms", before)] {
        if let Some(v) = value {
            path += &format!("&{key}={v}");
        }
    }
    let hits: Vec<Hit> = client.get(&path).await?;
    if args.json {
        return output::json(&hits);
    }
    if hits.is_empty() {
        eprintln!("nothing found");
    }
    for hit in &hits {
        let place = hit.space_name.clone().unwrap_or_else(|| hit.space.fmt_short());
        match hit.kind {
            HitKind::Message => println!(
                "{}  {}  {}  [{}]\n    {}",
                outpost_node::clock::utc(hit.at_ms),
                place,
                hit.author.map(|a| a.fmt_short()).unwrap_or_default(),
                hit.id.as_deref().unwrap_or(""),
                hit.snippet
            ),
            HitKind::Document => println!("document {place} ({})\n    {}", hit.space, hit.snippet),
        }
    }
    Ok(())
}
