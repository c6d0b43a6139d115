//! `weft context`: trace-context headers for people and scripts. JSON on
//! standard input, JSON on standard output; the logic is in weft-propagation.

use std::io::{Read, Write};
use std::process::ExitCode;

use weft_propagation::{cli, ExtractOptions, Style};

#[derive(clap::Subcommand, Debug)]
pub enum ContextCommand {
    /// Read a JSON object of request headers ({"name": "value"} or
    /// {"name": ["v1", "v2"]}) and print the extracted context as JSON.
    Extract {
        /// Formats to read, in precedence order (default: tracecontext,
        /// datadog, b3, b3multi, jaeger, ottrace, xray, sw8, baggage).
        #[arg(long, value_delimiter = ',', value_name = "STYLE,...")]
        styles: Vec<String>,
        /// Stop at the first format that yields a context (no enrichment, no
        /// span links).
        #[arg(long)]
        extract_first: bool,
    },
    /// Read a context in the shape `extract` prints and print the headers
    /// that carry it, as a JSON object.
    Inject {
        /// Formats to write (default: all).
        #[arg(long, value_delimiter = ',', value_name = "STYLE,...")]
        styles: Vec<String>,
    },
    /// Convert one id pair between Datadog decimal (with `_dd.p.tid`) and
    /// OpenTelemetry hex, e.g. {"trace_id": "1234", "span_id": "5678"}.
    Convert,
}

/// Runs the subcommand: 0 on success (an invalid context prints
/// `"valid": false` and still exits 0), 2 on unreadable input or bad flags.
pub fn run(cmd: ContextCommand) -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("weft context: cannot read standard input: {e}");
        return ExitCode::from(2);
    }
    let result = match cmd {
        ContextCommand::Extract {
            styles,
            extract_first,
        } => parse_styles(&styles).and_then(|styles| {
            let mut opts = match styles {
                Some(s) => ExtractOptions::with_styles(&s),
                None => ExtractOptions::default(),
            };
            opts.extract_first = extract_first;
            cli::extract_json_with(&input, &opts).map_err(|e| e.to_string())
        }),
        ContextCommand::Inject { styles } => parse_styles(&styles).and_then(|styles| {
            cli::inject_json(&input, styles.as_deref()).map_err(|e| e.to_string())
        }),
        ContextCommand::Convert => cli::convert_json(&input).map_err(|e| e.to_string()),
    };
    match result {
        Ok(json) => {
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{json}").and_then(|_| out.flush()).is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("weft context: {msg}");
            ExitCode::from(2)
        }
    }
}

/// `None` when no style was given (the default list applies).
fn parse_styles(items: &[String]) -> Result<Option<Vec<Style>>, String> {
    if items.iter().all(|s| s.trim().is_empty()) {
        return Ok(None);
    }
    Style::parse_list(&items.join(","))
        .map(Some)
        .map_err(|e| e.to_string())
}
