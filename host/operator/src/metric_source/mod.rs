//! Metric sources of the builtin autoscaler: read one `spec.autoscaling.builtin.metrics[i]`.
//!
//! # API (what the builtin mode calls)
//!
//! ```text
//! let client = MetricsClient::new(MetricsClient::DEFAULT_TIMEOUT)?;      // once, shared
//! let pods: Vec<PodTarget> = pod_list.iter().filter_map(PodTarget::from_pod).collect();
//! for (i, m) in builtin.metrics.iter().enumerate() {
//!     match metric_source::read("ns/name", m, i, &pods, &client, None).await {
//!         Ok(reading) => {
//!             let metric: hoist_decide::autoscale::Metric = reading.metric();  // feed it in
//!             // Reading::Pods(p): p.failures are the pods that did not answer (logged)
//!         }
//!         Err(e) => { /* the source failed: MetricFreshness::assess(false, …) and hold the
//!                        last known Metric; e names the Scaler and the field */ }
//!     }
//! }
//! ```
//!
//! - [`read`] is the one entry point. `scaler` is `namespace/name` for messages; `index` is the
//!   metric's position in `spec.autoscaling.builtin.metrics`, used to name the field in errors
//!   (`spec.autoscaling.builtin.metrics[1].prometheus.query`); `pods` are the target's *ready*
//!   pods (only a pods metric uses them; build them with [`PodTarget::from_pod`]).
//! - A Prometheus metric gives a [`Reading::Total`]: the query's one value, the total demand.
//!   [`Reading::metric`] turns it into `Metric::total(value, target)` — the KPA divides the total
//!   by the target; the APA and the HPA formula divide it by the ready pods first.
//! - A pods metric gives a [`Reading::Pods`]: each answering pod's value (the sum over the
//!   metric's series within that pod) and the pods that failed. [`Reading::metric`] is the
//!   average over the pods that answered, `Metric::per_pod(sum / answered, target)`, so a pod
//!   that failed does not count as zero demand. With no ready pods at all there is nothing to
//!   scrape and the reading is `Metric::total(0.0, target)`: a pods metric cannot see demand at
//!   zero replicas (pair it with a Prometheus metric to scale up from zero).
//! - Errors ([`OperatorError`]): `CheckMetric` (the spec cannot be used: no source or two,
//!   target ≤ 0, bad address, port or path — checked before any request), `QueryPrometheus`
//!   (HTTP status, Prometheus's own error, no sample, several series, NaN — said in the
//!   message), `ScrapePods` (every ready pod failed; each pod's reason listed). A source that
//!   errors must not be read as zero demand: hold the last known value (see
//!   `hoist_decide::autoscale::MetricFreshness`).
//! - [`MetricsClient`] is cheap to clone and shares one connection pool; every request has the
//!   timeout it was built with, and pods are scraped at most
//!   [`MetricsClient::DEFAULT_MAX_CONCURRENT_SCRAPES`] at a time. It does not use proxies from
//!   the environment (pod IPs are never reached through a proxy).

mod pods;
mod prometheus;
#[cfg(test)]
mod real_tests;

use std::net::IpAddr;
use std::time::Duration;

use hoist_api::autoscaling::BuiltinMetric;
use hoist_decide::autoscale::Metric;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::error::OperatorError;
use crate::hook_access::OperatorEgress;

/// One ready pod to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTarget {
    /// The pod's name, for messages.
    pub name: String,
    /// `status.podIP`.
    pub ip: IpAddr,
}

impl PodTarget {
    /// The pod as a scrape target when it is Ready, not terminating, and has an IP.
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        if pod.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let status = pod.status.as_ref()?;
        let ready = status
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready {
            return None;
        }
        let ip = status.pod_ip.as_deref()?.parse().ok()?;
        Some(Self {
            name: pod.name_any(),
            ip,
        })
    }
}

/// The HTTP client every metric source shares.
#[derive(Debug, Clone)]
pub struct MetricsClient {
    http: reqwest::Client,
    max_concurrent_scrapes: usize,
}

impl MetricsClient {
    /// Per-request timeout (connect, send, read the whole answer) when nothing else is said.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Pods scraped at the same time.
    pub const DEFAULT_MAX_CONCURRENT_SCRAPES: usize = 16;

    /// A client whose every request gives up after `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, OperatorError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .no_proxy()
            // Only the checked address is asked: a redirect would send the query to one no
            // HookPolicy was asked about (a 3xx is reported as the answer it is).
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hoist/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(OperatorError::BuildMetricsClient)?;
        Ok(Self {
            http,
            max_concurrent_scrapes: Self::DEFAULT_MAX_CONCURRENT_SCRAPES,
        })
    }
}

/// What one metric source said.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// A Prometheus query: the total demand across the target.
    Total {
        /// The query's value (finite, ≥ 0).
        value: f64,
        /// `target` of the metric: demand one replica should carry.
        target: f64,
    },
    /// A pods metric: what each ready pod said.
    Pods(PodsReading),
}

/// The pods' answers for a pods metric.
#[derive(Debug, Clone, PartialEq)]
pub struct PodsReading {
    /// `target` of the metric: the value one pod should carry.
    pub target: f64,
    /// Each pod that answered, in the order the pods were given.
    pub values: Vec<PodValue>,
    /// Each pod that did not, with the reason.
    pub failures: Vec<PodFailure>,
}

/// One pod's value.
#[derive(Debug, Clone, PartialEq)]
pub struct PodValue {
    /// The pod's name.
    pub pod: String,
    /// The metric summed over its series on this pod (finite, ≥ 0).
    pub value: f64,
}

/// One pod that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFailure {
    /// The pod's name.
    pub pod: String,
    /// What went wrong (connection refused, timeout, HTTP status, metric missing, …).
    pub reason: String,
}

impl PodsReading {
    /// Sum over the pods that answered.
    pub fn sum(&self) -> f64 {
        self.values.iter().map(|v| v.value).sum()
    }

    /// How many pods answered.
    pub fn answered(&self) -> usize {
        self.values.len()
    }
}

impl Reading {
    /// The value for the pure algorithms (see the module doc for what each source gives).
    pub fn metric(&self) -> Metric {
        match self {
            Self::Total { value, target } => Metric::total(*value, *target),
            Self::Pods(p) => match u32::try_from(p.answered()) {
                Ok(n) if n > 0 => Metric::per_pod(p.sum() / f64::from(n), p.target),
                _ => Metric::total(0.0, p.target),
            },
        }
    }
}

/// Reads `metric` (the `index`-th of `spec.autoscaling.builtin.metrics` of Scaler `scaler`,
/// given as `namespace/name`); `pods` are the target's ready pods (used by a pods metric only).
/// A Prometheus address is first checked against `egress` when given.
pub async fn read(
    scaler: &str,
    metric: &BuiltinMetric,
    index: usize,
    pods: &[PodTarget],
    client: &MetricsClient,
    egress: Option<&OperatorEgress>,
) -> Result<Reading, OperatorError> {
    let field = |tail: &str| format!("spec.autoscaling.builtin.metrics[{index}]{tail}");
    let check = |tail: &str, reason: String| OperatorError::CheckMetric {
        scaler: scaler.to_owned(),
        field: field(tail),
        reason,
    };
    match (&metric.prometheus, &metric.pods) {
        (Some(p), None) => {
            check_target(p.target).map_err(|r| check(".prometheus.target", r))?;
            check_address(&p.address).map_err(|r| check(".prometheus.address", r))?;
            if let Some(egress) = egress {
                egress
                    .check(&p.address)
                    .await
                    .map_err(|r| check(".prometheus.address", r))?;
            }
            let value = prometheus::instant_query(client, &p.address, &p.query)
                .await
                .map_err(|reason| OperatorError::QueryPrometheus {
                    scaler: scaler.to_owned(),
                    field: field(".prometheus.query"),
                    address: p.address.clone(),
                    reason,
                })?;
            Ok(Reading::Total {
                value,
                target: p.target,
            })
        }
        (None, Some(p)) => {
            check_target(p.target).map_err(|r| check(".pods.target", r))?;
            let port = u16::try_from(p.port)
                .ok()
                .filter(|port| *port > 0)
                .ok_or_else(|| {
                    check(".pods.port", format!("{} is not a port (1–65535)", p.port))
                })?;
            let path = p.path.as_deref().unwrap_or("/metrics");
            if !path.starts_with('/') {
                return Err(check(".pods.path", format!("{path:?} must start with /")));
            }
            if p.metric_name.is_empty() {
                return Err(check(".pods.metricName", "must not be empty".to_owned()));
            }
            let (values, failures) =
                pods::scrape_all(client, pods, port, path, &p.metric_name).await;
            if values.is_empty() && !failures.is_empty() {
                return Err(OperatorError::ScrapePods {
                    scaler: scaler.to_owned(),
                    field: field(".pods.metricName"),
                    failures: failures
                        .iter()
                        .map(|f| format!("{}: {}", f.pod, f.reason))
                        .collect::<Vec<_>>()
                        .join("; "),
                });
            }
            for f in &failures {
                tracing::warn!(scaler, pod = %f.pod, reason = %f.reason, "{}: a pod's metrics were not read", field(".pods"));
            }
            Ok(Reading::Pods(PodsReading {
                target: p.target,
                values,
                failures,
            }))
        }
        (None, None) => Err(check(
            "",
            "sets neither prometheus nor pods; set exactly one".to_owned(),
        )),
        (Some(_), Some(_)) => Err(check(
            "",
            "sets both prometheus and pods; set exactly one".to_owned(),
        )),
    }
}

/// A target must be a finite number > 0 (it divides).
fn check_target(target: f64) -> Result<(), String> {
    if target.is_finite() && target > 0.0 {
        Ok(())
    } else {
        Err(format!(
            "{target} is not a usable target; it must be a number > 0"
        ))
    }
}

/// An address must be an absolute http(s) URL.
fn check_address(address: &str) -> Result<(), String> {
    match reqwest::Url::parse(address) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        Ok(url) => Err(format!(
            "{address:?} is not an http(s) URL with a host (scheme {:?})",
            url.scheme()
        )),
        Err(e) => Err(format!(
            "{address:?} is not a URL ({e}); write it like http://prometheus.monitoring:9090"
        )),
    }
}

/// An error with its sources, `a: b: c` (reqwest's own message hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The whole body, or an error when it is larger than `limit` bytes or breaks off.
async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading the answer: {}", error_chain(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(format!("the answer is larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use hoist_api::autoscaling::{BuiltinMetric, PodsMetric, PrometheusMetric};
    use hoist_decide::autoscale::{Metric, MetricValue};
    use k8s_openapi::api::core::v1::Pod;

    use super::{
        MetricsClient, PodFailure, PodTarget, PodValue, PodsReading, Reading, check_address, read,
    };
    use crate::error::OperatorError;

    #[test]
    fn readings_become_the_algorithms_metric() {
        let pods = |values: &[f64], failed: usize| {
            Reading::Pods(PodsReading {
                target: 10.0,
                values: values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| PodValue {
                        pod: format!("p{i}"),
                        value: *v,
                    })
                    .collect(),
                failures: (0..failed)
                    .map(|i| PodFailure {
                        pod: format!("f{i}"),
                        reason: "down".to_owned(),
                    })
                    .collect(),
            })
        };
        let cases: &[(&str, Reading, Metric)] = &[
            (
                "prometheus total",
                Reading::Total {
                    value: 42.0,
                    target: 7.0,
                },
                Metric::total(42.0, 7.0),
            ),
            (
                "pods average",
                pods(&[3.0, 5.0], 0),
                Metric::per_pod(4.0, 10.0),
            ),
            (
                "a failed pod is not zero demand",
                pods(&[3.0, 5.0], 1),
                Metric::per_pod(4.0, 10.0),
            ),
            ("no pods at all", pods(&[], 0), Metric::total(0.0, 10.0)),
        ];
        for (name, reading, want) in cases {
            assert_eq!(reading.metric(), *want, "{name}");
        }
        let Reading::Pods(p) = pods(&[1.0], 2) else {
            unreachable!()
        };
        assert_eq!(p.failures.len(), 2);
        assert!(matches!(
            pods(&[1.0], 0).metric().value,
            MetricValue::PerPod(_)
        ));
    }

    #[test]
    fn only_ready_pods_with_an_ip_are_targets() {
        let pod = |ready: &str, ip: Option<&str>, deleting: bool| -> Pod {
            let mut v = serde_json::json!({
                "metadata": {"name": "w-0"},
                "status": {"conditions": [{"type": "Ready", "status": ready}]}
            });
            if let Some(ip) = ip {
                v["status"]["podIP"] = ip.into();
            }
            if deleting {
                v["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
            }
            serde_json::from_value(v).unwrap()
        };
        let target = Some(PodTarget {
            name: "w-0".to_owned(),
            ip: "10.0.0.7".parse().unwrap(),
        });
        assert_eq!(
            PodTarget::from_pod(&pod("True", Some("10.0.0.7"), false)),
            target
        );
        assert_eq!(
            PodTarget::from_pod(&pod("False", Some("10.0.0.7"), false)),
            None
        );
        assert_eq!(PodTarget::from_pod(&pod("True", None, false)), None);
        assert_eq!(
            PodTarget::from_pod(&pod("True", Some("10.0.0.7"), true)),
            None
        );
        assert_eq!(
            PodTarget::from_pod(&pod("True", Some("nonsense"), false)),
            None
        );
        assert_eq!(PodTarget::from_pod(&Pod::default()), None);
    }

    #[test]
    fn addresses_must_be_http_urls() {
        assert!(check_address("http://prometheus.monitoring:9090").is_ok());
        assert!(check_address("https://p.example/prefix/").is_ok());
        for bad in ["prometheus:9090", "ftp://x", "", "http://"] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    /// Specs that cannot be used fail before any request, naming the field.
    #[tokio::test]
    async fn unusable_specs_name_their_field() {
        let client = MetricsClient::new(MetricsClient::DEFAULT_TIMEOUT).unwrap();
        let prom = |address: &str, target: f64| BuiltinMetric {
            prometheus: Some(PrometheusMetric {
                address: address.to_owned(),
                query: "up".to_owned(),
                target,
            }),
            pods: None,
        };
        let pods = |port: i32, path: Option<&str>, target: f64| BuiltinMetric {
            prometheus: None,
            pods: Some(PodsMetric {
                port,
                path: path.map(str::to_owned),
                metric_name: "m".to_owned(),
                target,
            }),
        };
        let cases: Vec<(BuiltinMetric, &str)> = vec![
            (
                BuiltinMetric::default(),
                "spec.autoscaling.builtin.metrics[2]: sets neither",
            ),
            (
                BuiltinMetric {
                    prometheus: prom("http://p", 1.0).prometheus,
                    pods: pods(80, None, 1.0).pods,
                },
                "sets both",
            ),
            (
                prom("p:9090", 1.0),
                "metrics[2].prometheus.address: \"p:9090\" is not an http(s) URL",
            ),
            (
                prom("http://p", 0.0),
                "metrics[2].prometheus.target: 0 is not a usable target",
            ),
            (
                pods(70000, None, 1.0),
                "metrics[2].pods.port: 70000 is not a port",
            ),
            (
                pods(80, Some("metrics"), 1.0),
                "metrics[2].pods.path: \"metrics\" must start",
            ),
            (
                pods(80, None, f64::NAN),
                "metrics[2].pods.target: NaN is not a usable target",
            ),
        ];
        for (metric, piece) in cases {
            let err = read("ns/s", &metric, 2, &[], &client, None)
                .await
                .unwrap_err();
            assert!(matches!(err, OperatorError::CheckMetric { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains("Scaler ns/s"), "{text}");
            assert!(text.contains(piece), "{text:?} lacks {piece:?}");
        }
    }
}
