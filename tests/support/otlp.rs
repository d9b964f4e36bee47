//! A real OTLP receiver the tests control: gRPC (the collector services generated from the
//! OTLP protocol definitions) and HTTP/protobuf, keeping every request it gets. Stopping it and
//! starting it again on the same port stands in for a collector outage.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{
            logs_service_server::{LogsService, LogsServiceServer},
            ExportLogsServiceRequest, ExportLogsServiceResponse,
        },
        metrics::v1::{
            metrics_service_server::{MetricsService, MetricsServiceServer},
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        },
        trace::v1::{
            trace_service_server::{TraceService, TraceServiceServer},
            ExportTraceServiceRequest, ExportTraceServiceResponse,
        },
    },
    common::v1::{any_value::Value as AnyValue, KeyValue},
    logs::v1::LogRecord,
    metrics::v1::{metric::Data, number_data_point::Value as NumberValue, Metric, NumberDataPoint},
    resource::v1::Resource,
    trace::v1::Span,
};
use prost::Message as _;

#[derive(Default)]
pub struct Received {
    pub metrics: Vec<ExportMetricsServiceRequest>,
    pub traces: Vec<ExportTraceServiceRequest>,
    pub logs: Vec<ExportLogsServiceRequest>,
}

#[derive(Clone, Default)]
struct Store(Arc<Mutex<Received>>);

#[tonic::async_trait]
impl MetricsService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().metrics.push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().traces.push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().logs.push(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// A running receiver. Dropping it stops it.
pub struct Receiver {
    store: Store,
    pub addr: SocketAddr,
    pub protocol: Protocol,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// Starts on a free port.
    pub fn start(protocol: Protocol) -> Receiver {
        Receiver::start_on(protocol, "127.0.0.1:0".parse().unwrap(), Store::default())
    }

    fn start_on(protocol: Protocol, addr: SocketAddr, store: Store) -> Receiver {
        let listener = std::net::TcpListener::bind(addr).expect("bind receiver");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = store.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let shutdown = async {
                    let _ = stopped.await;
                };
                match protocol {
                    Protocol::Grpc => {
                        tonic::transport::Server::builder()
                            .add_service(MetricsServiceServer::new(served.clone()))
                            .add_service(TraceServiceServer::new(served.clone()))
                            .add_service(LogsServiceServer::new(served))
                            .serve_with_incoming_shutdown(
                                tokio_stream::wrappers::TcpListenerStream::new(listener),
                                shutdown,
                            )
                            .await
                            .unwrap();
                    }
                    Protocol::HttpProtobuf => {
                        let metrics = served.clone();
                        let logs = served.clone();
                        let app = axum::Router::new()
                            .route(
                                "/v1/metrics",
                                axum::routing::post(move |body: axum::body::Bytes| {
                                    let store = metrics.clone();
                                    async move {
                                        let req =
                                            ExportMetricsServiceRequest::decode(body).unwrap();
                                        store.0.lock().unwrap().metrics.push(req);
                                        ExportMetricsServiceResponse::default().encode_to_vec()
                                    }
                                }),
                            )
                            .route(
                                "/v1/traces",
                                axum::routing::post(move |body: axum::body::Bytes| {
                                    let store = served.clone();
                                    async move {
                                        let req = ExportTraceServiceRequest::decode(body).unwrap();
                                        store.0.lock().unwrap().traces.push(req);
                                        ExportTraceServiceResponse::default().encode_to_vec()
                                    }
                                }),
                            )
                            .route(
                                "/v1/logs",
                                axum::routing::post(move |body: axum::body::Bytes| {
                                    let store = logs.clone();
                                    async move {
                                        let req = ExportLogsServiceRequest::decode(body).unwrap();
                                        store.0.lock().unwrap().logs.push(req);
                                        ExportLogsServiceResponse::default().encode_to_vec()
                                    }
                                }),
                            );
                        axum::serve(listener, app)
                            .with_graceful_shutdown(shutdown)
                            .await
                            .unwrap();
                    }
                }
            });
        });
        Receiver {
            store,
            addr,
            protocol,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The endpoint to give clawtrace in OTEL_EXPORTER_OTLP_ENDPOINT.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving; the port is closed until [`Receiver::restart`].
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Serves again on the same port, keeping what was received.
    pub fn restart(&mut self) {
        self.stop();
        let again = Receiver::start_on(self.protocol, self.addr, self.store.clone());
        *self = again;
    }

    pub fn with<T>(&self, f: impl FnOnce(&Received) -> T) -> T {
        f(&self.store.0.lock().unwrap())
    }

    /// Waits until `f` returns Some over what was received.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&Received) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.with(&f) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

pub fn attr_str(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attr(attributes, key)? {
        AnyValue::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

pub fn attr_int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attributes, key)? {
        AnyValue::IntValue(i) => Some(*i),
        _ => None,
    }
}

/// Each item of each scope of each resource of `requests`, in order, with the attributes of
/// its resource: what every signal's export request holds, flattened.
fn flatten<'a, Q, R: 'a, S: 'a, T: Clone + 'a>(
    requests: &'a [Q],
    resources: impl Fn(&'a Q) -> &'a [R],
    resource: impl Fn(&'a R) -> Option<&'a Resource>,
    scopes: impl Fn(&'a R) -> &'a [S],
    items: impl Fn(&'a S) -> &'a [T],
) -> Vec<(Vec<KeyValue>, T)> {
    let mut out = Vec::new();
    for request in requests {
        for r in resources(request) {
            let attributes = resource(r)
                .map(|r| r.attributes.clone())
                .unwrap_or_default();
            for scope in scopes(r) {
                out.extend(items(scope).iter().map(|i| (attributes.clone(), i.clone())));
            }
        }
    }
    out
}

/// Every metric with its resource attributes, newest request last.
pub fn metrics(received: &Received) -> Vec<(Vec<KeyValue>, Metric)> {
    flatten(
        &received.metrics,
        |q| &q.resource_metrics,
        |r| r.resource.as_ref(),
        |r| &r.scope_metrics,
        |s| &s.metrics,
    )
}

/// The newest data point of sum metric `name` whose attributes include all of `want`.
pub fn latest_sum(
    received: &Received,
    name: &str,
    want: &[(&str, &str)],
) -> Option<NumberDataPoint> {
    metrics(received)
        .into_iter()
        .rev()
        .filter(|(_, m)| m.name == name)
        .find_map(|(_, m)| match m.data {
            Some(Data::Sum(sum)) => sum.data_points.into_iter().find(|p| {
                want.iter()
                    .all(|(k, v)| attr_str(&p.attributes, k).as_deref() == Some(*v))
            }),
            _ => None,
        })
}

pub fn point_value(p: &NumberDataPoint) -> f64 {
    match p.value {
        Some(NumberValue::AsInt(i)) => i as f64,
        Some(NumberValue::AsDouble(d)) => d,
        None => f64::NAN,
    }
}

/// Every log record with its resource attributes, oldest first.
pub fn logs(received: &Received) -> Vec<(Vec<KeyValue>, LogRecord)> {
    flatten(
        &received.logs,
        |q| &q.resource_logs,
        |r| r.resource.as_ref(),
        |r| &r.scope_logs,
        |s| &s.log_records,
    )
}

/// Every span received, with its resource attributes.
pub fn spans(received: &Received) -> Vec<(Vec<KeyValue>, Span)> {
    flatten(
        &received.traces,
        |q| &q.resource_spans,
        |r| r.resource.as_ref(),
        |r| &r.scope_spans,
        |s| &s.spans,
    )
}
