//! The logs of the programs that run a scheduler or workers: the level from `RUST_LOG`
//! (`RASK_LOG` is read when `RUST_LOG` is not set), and one of two formats chosen with
//! `--log-format`:
//!
//! - `text`, as Dask's logs read: `TIME - TARGET - LEVEL - message`, the start-up lines
//!   under the targets `rask.scheduler`, `rask.worker` and `rask.cuda-worker`
//!   (`2025-05-01T10:00:00.123456Z - rask.scheduler - INFO -   Scheduler at: tcp://…`);
//! - `json`: one JSON object per line, with `timestamp`, `level`, `message`, `target` and
//!   the event's fields at the top level (and its spans under `spans`).
//!
//! Colour only on a terminal: a log file gets plain text. Start-up lines are log events
//! like any other, so they obey the level and the format. This module does not print a
//! command's output (`rask info`, `rask config` write to stdout) nor the error that ends a
//! command.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `TIME - TARGET - LEVEL - message`, as Dask's logs.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Logs to stderr in `format` at `default` level unless `RUST_LOG` (or `RASK_LOG`) says
/// otherwise; colour only on a terminal (a log file gets plain text). Does nothing if the
/// program already set up logging.
pub fn init_logging(default: &str, format: LogFormat) {
    let filter = env_filter(default, |k| std::env::var(k).ok());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .event_format(DaskLike)
            .try_init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .try_init(),
    };
}

/// The filter of `RUST_LOG`, else of `RASK_LOG`, else `default`, with `var` reading the
/// environment. An empty variable, or one that does not parse, counts as not set.
pub(crate) fn env_filter(default: &str, var: impl Fn(&str) -> Option<String>) -> EnvFilter {
    ["RUST_LOG", "RASK_LOG"]
        .into_iter()
        .filter_map(var)
        .filter(|v| !v.trim().is_empty())
        .find_map(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(default))
}

/// A level by the name Dask's logs give it.
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// The colour of a level on a terminal (an SGR code).
fn level_colour(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "31",
        Level::WARN => "33",
        Level::INFO => "32",
        Level::DEBUG => "34",
        Level::TRACE => "35",
    }
}

/// The `text` format: `TIME - TARGET - LEVEL - span{fields}: message fields`.
struct DaskLike;

impl<S, N> FormatEvent<S, N> for DaskLike
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        SystemTime.format_time(&mut writer)?;
        write!(writer, " - {} - ", meta.target())?;
        let level = level_name(meta.level());
        if writer.has_ansi_escapes() {
            write!(writer, "\x1b[{}m{level}\x1b[0m", level_colour(meta.level()))?;
        } else {
            writer.write_str(level)?;
        }
        writer.write_str(" - ")?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.name())?;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(writer, "{{{fields}}}")?;
                    }
                }
                writer.write_str(": ")?;
            }
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(rust_log: Option<&str>, rask_log: Option<&str>) -> String {
        env_filter("info", |k| match k {
            "RUST_LOG" => rust_log.map(String::from),
            "RASK_LOG" => rask_log.map(String::from),
            _ => None,
        })
        .to_string()
    }

    #[test]
    fn rust_log_then_rask_log_then_the_default() {
        assert_eq!(filter(None, None), "info");
        assert_eq!(filter(Some("debug"), None), "debug");
        assert_eq!(filter(None, Some("debug")), "debug");
        assert_eq!(filter(Some("warn"), Some("debug")), "warn");
        assert_eq!(filter(Some(""), Some("debug")), "debug");
        assert_eq!(filter(Some("rask_worker=trace"), None), "rask_worker=trace");
    }

    #[test]
    fn log_formats_read_back_as_written() {
        use clap::ValueEnum;
        for f in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(LogFormat::from_str(&f.to_string(), false), Ok(f));
        }
    }
}
