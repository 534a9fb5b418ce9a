//! `shorthorn watch`: the manager's watch stream (`GET /v1/watch`), a line per message.

use anyhow::Context;
use clap::Args;

use super::api_client::{ApiArgs, Client, with_query};
use crate::daemon;
use crate::output::line;

/// What to watch.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only objects of these kinds (repeat, or comma-separate): settings, node, volume,
    /// replica, engine, job, backup-target, backup, event. All if not given.
    #[arg(long = "kind", value_delimiter = ',')]
    kinds: Vec<String>,
    /// Print each message as one line of JSON: `{"type","kind","name","object"}`.
    #[arg(long)]
    json: bool,
}

/// `shorthorn watch …`: runs until the stream ends or the user interrupts it.
pub fn watch(api: &ApiArgs, args: WatchArgs) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    let path = if args.kinds.is_empty() {
        String::from("/v1/watch")
    } else {
        with_query("/v1/watch", "kinds", &args.kinds.join(","))?
    };
    daemon::runtime()?.block_on(async {
        let mut response = client.stream(&path).await?;
        let mut parser = SseParser::default();
        while let Some(chunk) = response.chunk().await.context("reading the watch stream")? {
            for (event, data) in parser.feed(&chunk) {
                print_message(&event, &data, args.json)?;
            }
        }
        anyhow::bail!("the manager ended the watch stream")
    })
}

fn print_message(event: &str, data: &str, json: bool) -> anyhow::Result<()> {
    let mut message: serde_json::Value =
        serde_json::from_str(data).with_context(|| format!("watch: bad message {data:?}"))?;
    if json {
        if let Some(fields) = message.as_object_mut() {
            fields.insert("type".into(), event.into());
        }
        return line(format_args!("{message}"));
    }
    let kind = message["kind"].as_str().unwrap_or_default();
    let name = message["name"].as_str().unwrap_or_default();
    let object = &message["object"];
    // The state says most, where an object has one; an event its reason and message.
    let detail = match (object["status"]["state"].as_str(), kind) {
        (Some(state), _) => state.to_string(),
        (None, "event") => format!(
            "{} {}/{}: {}",
            object["reason"].as_str().unwrap_or_default(),
            object["object_kind"].as_str().unwrap_or_default(),
            object["object"].as_str().unwrap_or_default(),
            object["message"].as_str().unwrap_or_default()
        ),
        (None, _) => String::new(),
    };
    match event {
        "put" | "delete" => line(format_args!("{event} {kind}/{name} {detail}")),
        other => line(format_args!("-- {other}")),
    }
}

/// Server-Sent Events from bytes as they come: complete `(event, data)` pairs.
#[derive(Default)]
struct SseParser {
    buffer: String,
    event: String,
    data: String,
}

impl SseParser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.buffer.push_str(&String::from_utf8_lossy(bytes));
        let mut done = Vec::new();
        while let Some(end) = self.buffer.find('\n') {
            let raw: String = self.buffer.drain(..=end).collect();
            let text = raw.trim_end_matches(['\n', '\r']);
            if text.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    let event = std::mem::take(&mut self.event);
                    let event = if event.is_empty() {
                        "message".to_string()
                    } else {
                        event
                    };
                    done.push((event, std::mem::take(&mut self.data)));
                }
            } else if let Some(value) = text.strip_prefix("event:") {
                self.event = value.trim_start().to_string();
            } else if let Some(value) = text.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
            // Comments (`:` keep-alives) and other fields carry nothing for us.
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_come_out_whole() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b"event: put\ndata: {\"a\"").is_empty());
        let got = parser.feed(b":1}\n\n: keep-alive\n\nevent: synced\r\ndata: {}\r\n\r\n");
        assert_eq!(
            got,
            vec![
                ("put".to_string(), "{\"a\":1}".to_string()),
                ("synced".to_string(), "{}".to_string())
            ]
        );
    }
}
