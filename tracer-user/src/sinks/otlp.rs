//! OTLP export of metrics, container spans and audit log records with the OpenTelemetry SDK. Endpoints, headers,
//! timeouts, the resource and the service name come from the standard `OTEL_*` variables,
//! which the SDK reads; the protocol from `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc`, the default,
//! or `http/protobuf`).
//!
//! A collector that is down must never stop or slow tracing: the SDK exports from its own
//! threads, spans and log records wait in bounded queues (and those of failed exports are held,
//! up to the same bound, for the next export), and every failed export is counted in
//! `clawtrace_export_errors_total{sink}` and logged at most once per minute.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::{
    LogExporter as OtlpLogExporter, MetricExporter, SpanExporter as OtlpSpanExporter,
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    logs::{
        BatchConfigBuilder as LogBatchConfigBuilder, BatchLogProcessor, LogBatch, LogExporter,
        SdkLogRecord, SdkLoggerProvider,
    },
    metrics::{
        data::ResourceMetrics, exporter::PushMetricExporter, PeriodicReader, SdkMeterProvider,
        Temporality,
    },
    trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter},
    Resource,
};

use super::metrics::Metrics;

/// How OTLP is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    /// From `OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn from_env(signal: &str) -> Result<Protocol> {
        let specific = format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL");
        let value = std::env::var(&specific)
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_else(|_| "grpc".to_string());
        Protocol::parse(&value)
            .with_context(|| format!("from {specific} or OTEL_EXPORTER_OTLP_PROTOCOL"))
    }

    pub fn parse(value: &str) -> Result<Protocol> {
        match value.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            other => bail!("unsupported OTLP protocol {other:?}; use grpc or http/protobuf"),
        }
    }
}

/// Whether the environment asks for OTLP export (an endpoint is set and the SDK is not disabled).
pub fn wanted_by_env() -> bool {
    if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return false;
    }
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
}

/// The resource: `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` (default `clawtrace`), plus
/// the host name.
pub fn resource() -> Resource {
    let mut builder = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none()
        && !std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="))
    {
        builder = builder.with_service_name("clawtrace");
    }
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        builder = builder.with_attribute(opentelemetry::KeyValue::new(
            "host.name",
            host.trim().to_string(),
        ));
    }
    builder.build()
}

/// Counts failed exports and logs them at most once per interval, with how many were hidden.
#[derive(Clone)]
struct FailureLog {
    sink: &'static str,
    metrics: Metrics,
    state: Arc<std::sync::Mutex<(Option<Instant>, u64)>>,
    failures: Arc<AtomicU64>,
}

const LOG_INTERVAL: Duration = Duration::from_secs(60);

impl FailureLog {
    fn new(sink: &'static str, metrics: Metrics) -> FailureLog {
        FailureLog {
            sink,
            metrics,
            state: Arc::default(),
            failures: Arc::default(),
        }
    }

    fn record(&self, result: &OTelSdkResult) {
        let Err(err) = result else {
            return;
        };
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.metrics.export_error(self.sink);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, hidden) = &mut *state;
        if last.is_none_or(|t| t.elapsed() >= LOG_INTERVAL) {
            let more = if *hidden > 0 {
                format!(" ({hidden} more since the last report)")
            } else {
                String::new()
            };
            log::warn!(
                "export to {} failed: {err}{more}; tracing goes on",
                self.sink
            );
            *last = Some(Instant::now());
            *hidden = 0;
        } else {
            *hidden += 1;
        }
    }
}

/// A metric exporter that counts its failures.
struct CountingMetricExporter {
    inner: MetricExporter,
    failures: FailureLog,
}

impl PushMetricExporter for CountingMetricExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.failures.record(&result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        // Cumulative: counters stay continuous across a collector outage.
        Temporality::Cumulative
    }
}

/// What failed exports held for the next one, up to a bound: past it the oldest are dropped.
struct Held<T> {
    items: std::sync::Mutex<std::collections::VecDeque<T>>,
    max: usize,
}

impl<T> Held<T> {
    fn new(max: usize) -> Held<T> {
        Held {
            items: Default::default(),
            max,
        }
    }

    fn items(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<T>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything held, oldest first, and nothing held any more.
    fn take(&self) -> Vec<T> {
        self.items().drain(..).collect()
    }

    /// Keeps `items` after what is held; returns how many of the oldest were dropped to stay
    /// within the bound.
    fn hold(&self, items: impl IntoIterator<Item = T>) -> u64 {
        let mut held = self.items();
        held.extend(items);
        let excess = held.len().saturating_sub(self.max);
        held.drain(..excess);
        excess as u64
    }

    fn len(&self) -> usize {
        self.items().len()
    }
}

/// A span exporter that counts its failures and holds the spans of failed exports (up to a
/// bound; past it the oldest are dropped and counted in `clawtrace_spans_dropped_total`) to
/// send them with the next batch once the collector is back.
struct CountingSpanExporter {
    inner: OtlpSpanExporter,
    failures: FailureLog,
    held: Held<SpanData>,
}

impl fmt::Debug for CountingSpanExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingSpanExporter")
            .finish_non_exhaustive()
    }
}

impl SpanExporter for CountingSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        // Spans held from failed exports go first, in order.
        let mut all = self.held.take();
        all.extend(batch);
        let result = self.inner.export(all.clone()).await;
        self.failures.record(&result);
        if result.is_err() {
            self.failures.metrics.spans_dropped(self.held.hold(all));
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        let held = self.held.len();
        if held > 0 {
            self.failures.metrics.spans_dropped(held as u64);
            log::warn!("{held} span(s) not delivered at exit: the collector was unreachable");
        }
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A log record exporter that counts its failures and, like [`CountingSpanExporter`], holds
/// the records of failed exports (dropped past the bound and counted in
/// `clawtrace_log_records_dropped_total`) for the next export.
struct CountingLogExporter {
    inner: OtlpLogExporter,
    failures: FailureLog,
    held: Held<(SdkLogRecord, InstrumentationScope)>,
}

impl fmt::Debug for CountingLogExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingLogExporter")
            .finish_non_exhaustive()
    }
}

impl LogExporter for CountingLogExporter {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        // Records held from failed exports go first, in order; the batch's own are copied only
        // when they must be held.
        let held = self.held.take();
        let all: Vec<(&SdkLogRecord, &InstrumentationScope)> = held
            .iter()
            .map(|(record, scope)| (record, scope))
            .chain(batch.iter())
            .collect();
        let result = self.inner.export(LogBatch::new(&all)).await;
        self.failures.record(&result);
        if result.is_err() {
            let copies = all
                .iter()
                .skip(held.len())
                .map(|&(record, scope)| (record.clone(), scope.clone()))
                .collect::<Vec<_>>();
            let dropped = self.held.hold(held.into_iter().chain(copies));
            self.failures.metrics.log_records_dropped(dropped);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let held = self.held.len();
        if held > 0 {
            self.failures.metrics.log_records_dropped(held as u64);
            log::warn!("{held} log record(s) not delivered at exit: the collector was unreachable");
        }
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Settings of the OTLP sinks.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    pub metrics_protocol: Protocol,
    pub traces_protocol: Protocol,
    /// `None`: no log records (`OTEL_LOGS_EXPORTER=none`).
    pub logs_protocol: Option<Protocol>,
    /// How often metrics are pushed (`OTEL_METRIC_EXPORT_INTERVAL` is honoured when set).
    pub metric_interval: Duration,
    /// Spans waiting for export at most; past that they are dropped and counted. Log records
    /// are held to the same bound.
    pub max_queued_spans: usize,
}

/// The protocol for log records: none when `OTEL_LOGS_EXPORTER` is `none`, else as for the
/// other signals.
pub fn logs_protocol_from_env() -> Result<Option<Protocol>> {
    match std::env::var("OTEL_LOGS_EXPORTER") {
        Ok(v) if v.trim() == "none" => Ok(None),
        Ok(v) if v.trim() != "otlp" && !v.trim().is_empty() => {
            bail!("OTEL_LOGS_EXPORTER={v:?} is not supported; use otlp or none")
        }
        _ => Protocol::from_env("LOGS").map(Some),
    }
}

/// The SDK providers; shut them down in order on exit so the last batch is flushed.
pub struct Providers {
    pub meter: SdkMeterProvider,
    pub tracer: SdkTracerProvider,
    pub logger: Option<SdkLoggerProvider>,
}

impl Providers {
    /// Builds both providers. gRPC exporters must be built inside a tokio runtime context (the
    /// caller enters one); HTTP ones use a blocking client and must be built outside async code.
    pub fn build(config: &OtlpConfig, metrics: &Metrics) -> Result<Providers> {
        let resource = resource();
        let metric_exporter = match config.metrics_protocol {
            Protocol::Grpc => MetricExporter::builder().with_tonic().build(),
            Protocol::HttpProtobuf => MetricExporter::builder().with_http().build(),
        }
        .context("building the OTLP metric exporter")?;
        let interval = std::env::var("OTEL_METRIC_EXPORT_INTERVAL")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or(config.metric_interval);
        let reader = PeriodicReader::builder(CountingMetricExporter {
            inner: metric_exporter,
            failures: FailureLog::new(super::metrics::sink::OTLP_METRICS, metrics.clone()),
        })
        .with_interval(interval)
        .build();
        let meter = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(reader)
            .build();

        let span_exporter = match config.traces_protocol {
            Protocol::Grpc => OtlpSpanExporter::builder().with_tonic().build(),
            Protocol::HttpProtobuf => OtlpSpanExporter::builder().with_http().build(),
        }
        .context("building the OTLP span exporter")?;
        let processor = BatchSpanProcessor::builder(CountingSpanExporter {
            inner: span_exporter,
            failures: FailureLog::new(super::metrics::sink::OTLP_TRACES, metrics.clone()),
            held: Held::new(config.max_queued_spans),
        })
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(config.max_queued_spans)
                .with_scheduled_delay(Duration::from_millis(500))
                .build(),
        )
        .build();
        let tracer = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_span_processor(processor)
            .build();

        let logger = match config.logs_protocol {
            Some(protocol) => {
                let exporter = match protocol {
                    Protocol::Grpc => OtlpLogExporter::builder().with_tonic().build(),
                    Protocol::HttpProtobuf => OtlpLogExporter::builder().with_http().build(),
                }
                .context("building the OTLP log exporter")?;
                let processor = BatchLogProcessor::builder(CountingLogExporter {
                    inner: exporter,
                    failures: FailureLog::new(super::metrics::sink::OTLP_LOGS, metrics.clone()),
                    held: Held::new(config.max_queued_spans),
                })
                .with_batch_config(
                    LogBatchConfigBuilder::default()
                        .with_max_queue_size(config.max_queued_spans)
                        .with_scheduled_delay(Duration::from_millis(500))
                        .build(),
                )
                .build();
                Some(
                    SdkLoggerProvider::builder()
                        .with_resource(resource)
                        .with_log_processor(processor)
                        .build(),
                )
            }
            None => None,
        };
        Ok(Providers {
            meter,
            tracer,
            logger,
        })
    }

    /// Flushes and shuts down: spans and log records first (they may record nothing more),
    /// then metrics.
    pub fn shutdown(self) {
        if let Some(logger) = self.logger {
            if let Err(err) = logger.shutdown() {
                log::warn!("flushing log records at exit failed: {err}");
            }
        }
        if let Err(err) = self.tracer.shutdown() {
            log::warn!("flushing spans at exit failed: {err}");
        }
        if let Err(err) = self.meter.shutdown() {
            log::warn!("flushing metrics at exit failed: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_keeps_the_newest_within_the_bound_in_order() {
        let held = Held::new(3);
        assert_eq!(held.hold([1, 2]), 0);
        assert_eq!(held.hold([3, 4, 5]), 2, "the two oldest dropped");
        assert_eq!(held.len(), 3);
        assert_eq!(held.take(), [3, 4, 5]);
        assert_eq!(held.len(), 0);
    }

    #[test]
    fn protocol_names() {
        assert_eq!(Protocol::parse("grpc").unwrap(), Protocol::Grpc);
        assert_eq!(
            Protocol::parse(" http/protobuf\n").unwrap(),
            Protocol::HttpProtobuf
        );
        let err = Protocol::parse("http/json").unwrap_err().to_string();
        assert!(
            err.contains("unsupported OTLP protocol \"http/json\""),
            "{err}"
        );
    }

    #[test]
    fn failures_are_counted_and_logged_sparingly() {
        let metrics = Metrics::new(None);
        let log = FailureLog::new(crate::sinks::metrics::sink::OTLP_TRACES, metrics.clone());
        for _ in 0..5 {
            log.record(&Err(
                opentelemetry_sdk::error::OTelSdkError::InternalFailure("down".into()),
            ));
        }
        log.record(&Ok(()));
        assert_eq!(log.failures.load(Ordering::Relaxed), 5);
        assert_eq!(
            log.state.lock().unwrap().1,
            4,
            "four failures hidden until the next report"
        );
        assert!(metrics
            .encode()
            .contains(r#"clawtrace_export_errors_total{sink="otlp_traces"} 5"#));
    }
}
