//! `vigil import`: replays NDJSON event files (RHAPSODY's checkpoint files,
//! `<session>.<start>.telemetry.jsonl`) into a running Vigil through
//! `POST /api/v2/events`, in batches. Event ids make a replay safe: what was
//! already forwarded live, or sent by an earlier interrupted import, comes
//! back as duplicates. Lines of other sections (`metric`, `span`) are skipped
//! by the server and counted.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

/// Flags of `vigil import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// NDJSON files, or directories (every `*.jsonl` in them, by name); `-` reads standard input.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Base URL of the Vigil API.
    #[arg(long, env = "VIGIL_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token with the write scope.
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Lines per request (at most the server's --max-items-per-request).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
}

/// Largest request body sent (the server's default limit is 16 MiB).
const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// What the server answered for one batch.
#[derive(Debug, Default, Deserialize)]
struct Answer {
    accepted: u64,
    duplicates: u64,
    #[serde(default)]
    skipped: BTreeMap<String, u64>,
}

/// Totals of one file (or of everything).
#[derive(Debug, Default)]
struct Totals {
    lines: u64,
    accepted: u64,
    duplicates: u64,
    skipped: BTreeMap<String, u64>,
}

impl Totals {
    /// Adds counts (and, for a file's totals, its lines) to these.
    fn add(&mut self, lines: u64, accepted: u64, duplicates: u64, skipped: &BTreeMap<String, u64>) {
        self.lines += lines;
        self.accepted += accepted;
        self.duplicates += duplicates;
        for (section, n) in skipped {
            *self.skipped.entry(section.clone()).or_default() += n;
        }
    }
    fn describe(&self) -> String {
        let mut s = format!(
            "{} lines: {} stored, {} already there",
            self.lines, self.accepted, self.duplicates
        );
        if !self.skipped.is_empty() {
            let parts: Vec<String> = self
                .skipped
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            s.push_str(&format!(", skipped {}", parts.join(", ")));
        }
        s
    }
}

/// The files to read, in order: each named file, and each directory's
/// `*.jsonl` files sorted by name.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            files.push(p.clone());
            continue;
        }
        let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "jsonl") && f.is_file())
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{}: no *.jsonl files in this directory",
                    p.display()
                ));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// Sends one batch, retrying what a retry can fix (connection errors, 429,
/// 503 and other 5xx) a few times; event ids make a repeat harmless.
async fn send(
    client: &reqwest::Client,
    args: &ImportArgs,
    body: Vec<u8>,
) -> Result<Answer, String> {
    let url = format!("{}/api/v2/events", args.url.trim_end_matches('/'));
    let mut delay = Duration::from_millis(500);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut req = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(body.clone());
        if let Some(t) = &args.token {
            req = req.bearer_auth(t);
        }
        let retryable = match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                if status.is_success() {
                    return serde_json::from_str(&text).map_err(|e| {
                        format!("the server's answer is not what Vigil answers: {e}")
                    });
                }
                let message = format!("{status}: {}", text.trim());
                if status.as_u16() == 429 || status.is_server_error() {
                    message
                } else {
                    return Err(message);
                }
            }
            Err(e) => format!("sending to {url}: {e}"),
        };
        if attempt >= 4 {
            return Err(retryable);
        }
        eprintln!("vigil import: {retryable}; retrying in {delay:?}");
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
}

/// Imports one file; `Err` names the lines that were refused.
async fn import_file(
    client: &reqwest::Client,
    args: &ImportArgs,
    path: &Path,
) -> Result<Totals, String> {
    let name = path.display().to_string();
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(path).map_err(|e| format!("{name}: {e}"))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut totals = Totals::default();
    let mut body: Vec<u8> = Vec::new();
    let (mut in_batch, mut first_line) = (0u32, 1u64);
    let mut lines = reader.split(b'\n');
    loop {
        let line = match lines.next() {
            Some(l) => Some(l.map_err(|e| format!("{name}: {e}"))?),
            None => None,
        };
        if let Some(l) = &line {
            totals.lines += 1;
            if !l.iter().all(u8::is_ascii_whitespace) {
                body.extend_from_slice(l);
                body.push(b'\n');
                in_batch += 1;
            }
        }
        let full = in_batch >= args.batch || body.len() >= MAX_REQUEST_BYTES;
        if in_batch > 0 && (full || line.is_none()) {
            let answer = send(client, args, std::mem::take(&mut body))
                .await
                .map_err(|e| {
                    format!(
                        "{name}, lines {first_line}–{}: {e}\n(batches before these lines are stored; importing the file again is safe)",
                        totals.lines
                    )
                })?;
            totals.add(0, answer.accepted, answer.duplicates, &answer.skipped);
            in_batch = 0;
            first_line = totals.lines + 1;
        }
        if line.is_none() {
            return Ok(totals);
        }
    }
}

/// Runs `vigil import`; prints what each file gave.
pub async fn run(args: ImportArgs) -> Result<(), String> {
    let files = expand(&args.paths)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let mut all = Totals::default();
    for f in &files {
        let t = import_file(&client, &args, f).await?;
        println!("{}: {}", f.display(), t.describe());
        all.add(t.lines, t.accepted, t.duplicates, &t.skipped);
    }
    if files.len() > 1 {
        println!("total: {}", all.describe());
    }
    Ok(())
}
