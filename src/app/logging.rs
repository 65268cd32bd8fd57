//! Logging with tracing: `log.level`, `log.formatter` (text, or json for `json` and `logstash`) and
//! `log.fields`, which are added to every line, as distribution adds them.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::{Log, LogFormat};

/// Sets the process-wide subscriber: lines to stderr (colours only on a terminal), `RUST_LOG`
/// overriding `log.level` (see [`directives`]).
pub fn init(log: &Log) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(directives(&log.level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match log.formatter {
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(WithFields::json(
                tracing_subscriber::fmt::format().json(),
                &log.fields,
            ))
            .init(),
        LogFormat::Text => builder
            .event_format(WithFields::text(
                tracing_subscriber::fmt::format(),
                &log.fields,
            ))
            .init(),
    }
}

/// The filter for `log.level`: at `debug` and `trace` that level is berth's own (its routes, auth
/// decisions and storage calls), while libraries stay at `info`, so that their TLS and HTTP/2 frame
/// lines do not drown berth's.
pub fn directives(level: &str) -> String {
    match level {
        "debug" | "trace" => format!("info,berth={level}"),
        other => other.to_owned(),
    }
}

/// An event formatter that adds fixed fields to every line another formatter writes.
pub struct WithFields<F> {
    inner: F,
    json: bool,
    /// Pre-rendered: `"k":"v",` for JSON, ` k=v` for text.
    rendered: String,
}

impl<F> WithFields<F> {
    pub fn json(inner: F, fields: &BTreeMap<String, String>) -> WithFields<F> {
        let mut rendered = String::new();
        for (k, v) in fields {
            let k = serde_json::to_string(k).unwrap_or_default();
            let v = serde_json::to_string(v).unwrap_or_default();
            let _ = write!(rendered, "{k}:{v},");
        }
        WithFields {
            inner,
            json: true,
            rendered,
        }
    }

    pub fn text(inner: F, fields: &BTreeMap<String, String>) -> WithFields<F> {
        let mut rendered = String::new();
        for (k, v) in fields {
            if v.is_empty() || v.contains(|c: char| c.is_whitespace() || c == '"' || c == '=') {
                let _ = write!(rendered, " {k}={v:?}");
            } else {
                let _ = write!(rendered, " {k}={v}");
            }
        }
        WithFields {
            inner,
            json: false,
            rendered,
        }
    }

    /// Adds the fields to one formatted line.
    fn decorate(&self, line: &str) -> String {
        if self.rendered.is_empty() {
            return line.to_owned();
        }
        let (body, newline) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        if self.json {
            match body.strip_prefix('{') {
                Some(rest) if rest.starts_with('}') => {
                    format!("{{{}{rest}{newline}", self.rendered.trim_end_matches(','))
                }
                Some(rest) => format!("{{{}{rest}{newline}", self.rendered),
                None => line.to_owned(),
            }
        } else {
            format!("{body}{}{newline}", self.rendered)
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithFields<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&self.decorate(&line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_berths_own() {
        assert_eq!(directives("debug"), "info,berth=debug");
        assert_eq!(directives("trace"), "info,berth=trace");
        assert_eq!(directives("info"), "info");
        assert_eq!(directives("error"), "error");
    }

    #[test]
    fn fields_join_every_line() {
        let mut fields = BTreeMap::new();
        fields.insert("service".to_owned(), "registry".to_owned());
        fields.insert("env".to_owned(), "prod eu".to_owned());
        let json = WithFields::json((), &fields);
        assert_eq!(
            json.decorate("{\"level\":\"INFO\"}\n"),
            "{\"env\":\"prod eu\",\"service\":\"registry\",\"level\":\"INFO\"}\n"
        );
        assert_eq!(
            json.decorate("{}\n"),
            "{\"env\":\"prod eu\",\"service\":\"registry\"}\n"
        );
        let text = WithFields::text((), &fields);
        assert_eq!(
            text.decorate("INFO berth: listening addr=1\n"),
            "INFO berth: listening addr=1 env=\"prod eu\" service=registry\n"
        );
        let none = WithFields::text((), &BTreeMap::new());
        assert_eq!(none.decorate("x\n"), "x\n");
    }
}
