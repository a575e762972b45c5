//! The daemon's own log: one init function (a journald layer will join it
//! here), a line format that relays operators' output without a second
//! level, and durations written for people.
//!
//! An operator's output line is logged with the target
//! [`OPERATOR_TARGET`] and the fields `operator` and `stream`; its text
//! already holds the operator's own level (`INFO operator{id=pingbot}:
//! ready`, see [`crate::structured`]). The default format would print the
//! daemon's level in front of it (`INFO INFO ...`), so such lines are
//! written as `<time> <operator>[<stream>] <text>` instead.

use std::fmt;
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

/// The target of relayed operator output (see `process::pump`).
pub const OPERATOR_TARGET: &str = "switchboard::operator";

/// Install the daemon's subscriber: `filter` unless `SWITCHBOARD_LOG` or
/// `RUST_LOG` says otherwise; JSON lines when `json` (or
/// `SWITCHBOARD_LOG_FORMAT=json`), else text with relayed operator lines
/// as [`OperatorLines`] writes them.
pub fn init(filter: &str, json: bool) {
    let json = match std::env::var(switchboard_proto::launch::LOG_FORMAT).as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => json,
    };
    if json {
        // Fields stay fields in JSON: nothing to tidy.
        switchboard_bus::init_tracing_with(filter, true);
        return;
    }
    let filter = std::env::var("SWITCHBOARD_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = text_subscriber(filter, std::io::stderr, ansi).try_init();
}

/// The text subscriber, writing to `writer` (stderr; a buffer in tests).
fn text_subscriber<W>(filter: EnvFilter, writer: W, ansi: bool) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .event_format(OperatorLines {
            inner: tracing_subscriber::fmt::format().with_target(false),
        })
        .finish()
}

/// The default text format, except for relayed operator output.
pub struct OperatorLines {
    inner: Format<Full, SystemTime>,
}

/// The fields of a relayed line.
#[derive(Default)]
struct Relayed {
    operator: String,
    stream: String,
    message: String,
}

impl Visit for Relayed {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "operator" => value.clone_into(&mut self.operator),
            "stream" => value.clone_into(&mut self.stream),
            "message" => value.clone_into(&mut self.message),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` fields and the message arrive here, formatted as Display.
        match field.name() {
            "operator" => self.operator = format!("{value:?}"),
            "stream" => self.stream = format!("{value:?}"),
            "message" => self.message = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S, N> FormatEvent<S, N> for OperatorLines
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
        if event.metadata().target() != OPERATOR_TARGET {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut relayed = Relayed::default();
        event.record(&mut relayed);
        SystemTime.format_time(&mut writer)?;
        writeln!(
            writer,
            " {}[{}] {}",
            relayed.operator, relayed.stream, relayed.message
        )
    }
}

/// A duration the daemon measured (a backoff delay), for people: whole
/// milliseconds below a second (`840ms`), tenths of a second below a
/// minute (`1.5s`), whole seconds beyond (`2m05s`). Configured durations
/// are printed as written instead (`switchboard_proto::duration::format_duration`).
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 >= 500_000);
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => {
            let tenths = (ms + 50) / 100;
            match tenths % 10 {
                0 => format!("{}s", tenths / 10),
                t => format!("{}.{t}s", tenths / 10),
            }
        }
        _ => {
            let s = (ms + 500) / 1000;
            match s {
                0..=3599 => format!("{}m{:02}s", s / 60, s % 60),
                _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn relayed_lines_carry_one_level_and_say_whose() {
        let buf = Buffer::default();
        let writer = buf.clone();
        let sub = text_subscriber(EnvFilter::new("info"), move || writer.clone(), false);
        tracing::subscriber::with_default(sub, || {
            let id = "pingbot";
            let text = "INFO operator{id=pingbot}: ready";
            tracing::info!(target: OPERATOR_TARGET, operator = %id, stream = "stderr", "{text}");
            tracing::info!(operator = %id, "state");
        });
        let out = String::from_utf8(buf.0.lock().expect("buffer").clone()).expect("utf-8");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(
            lines[0].ends_with(" pingbot[stderr] INFO operator{id=pingbot}: ready"),
            "{out}"
        );
        assert!(!lines[0].contains("INFO INFO"), "{out}");
        // The daemon's own events keep the usual format.
        assert!(
            lines[1].contains(" INFO ") && lines[1].contains("state operator=pingbot"),
            "{out}"
        );
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(human_duration(Duration::from_nanos(839_714_019)), "840ms");
        assert_eq!(human_duration(Duration::from_millis(3)), "3ms");
        assert_eq!(human_duration(Duration::from_millis(1_500)), "1.5s");
        assert_eq!(human_duration(Duration::from_millis(2_000)), "2s");
        assert_eq!(human_duration(Duration::from_millis(59_990)), "60s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m05s");
        assert_eq!(human_duration(Duration::from_secs(7300)), "2h01m");
    }
}
