//! Scraping one metric from every ready pod's own endpoint, `http://{podIP}:{port}{path}`, in
//! the Prometheus text exposition format (parsed with the `prometheus-parse` crate).
//!
//! Within one pod the samples of the named metric are summed over their label sets (a gauge
//! per worker thread becomes the pod's value). A pod that does not answer, answers with an
//! error status, or lacks the metric is reported as a [`PodFailure`], never dropped silently.

use futures::StreamExt;
use prometheus_parse::{Scrape, Value};

use super::{MetricsClient, PodFailure, PodTarget, PodValue};

/// The largest metrics page read from a pod.
const MAX_PAGE_BYTES: usize = 8 << 20;

/// Scrapes `pods` (at most `client.max_concurrent_scrapes` at a time), in the order given.
pub(super) async fn scrape_all(
    client: &MetricsClient,
    pods: &[PodTarget],
    port: u16,
    path: &str,
    metric_name: &str,
) -> (Vec<PodValue>, Vec<PodFailure>) {
    // Owned pods: a closure over `&PodTarget` makes the future not `Send` for every lifetime
    // (rustc's higher-ranked closure limitation), which the controller's reconcile needs.
    let results: Vec<(String, Result<f64, String>)> = futures::stream::iter(pods.to_vec())
        .map(|pod| async move {
            let result = scrape_one(client, &pod, port, path, metric_name).await;
            (pod.name, result)
        })
        .buffered(client.max_concurrent_scrapes.max(1))
        .collect()
        .await;
    let mut values = Vec::with_capacity(results.len());
    let mut failures = Vec::new();
    for (pod, result) in results {
        match result {
            Ok(value) => values.push(PodValue { pod, value }),
            Err(reason) => failures.push(PodFailure { pod, reason }),
        }
    }
    (values, failures)
}

/// One pod's value of `metric_name`.
async fn scrape_one(
    client: &MetricsClient,
    pod: &PodTarget,
    port: u16,
    path: &str,
    metric_name: &str,
) -> Result<f64, String> {
    let url = format!("http://{}{path}", std::net::SocketAddr::new(pod.ip, port));
    let response = client
        .http
        .get(&url)
        .header(reqwest::header::ACCEPT, "text/plain;version=0.0.4")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", super::error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("GET {url}: HTTP {}", status.as_u16()));
    }
    let body = super::read_body(response, MAX_PAGE_BYTES)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let text = String::from_utf8_lossy(&body);
    pick(&text, metric_name).map_err(|e| format!("{url}: {e}"))
}

/// The value of `metric_name` in a metrics page: the sum over its series.
pub(super) fn pick(page: &str, metric_name: &str) -> Result<f64, String> {
    let scrape = Scrape::parse(page.lines().map(|l| Ok(l.to_owned())))
        .map_err(|_| "the metrics page is not in the Prometheus text format".to_owned())?;
    let mut sum = 0.0;
    let mut found = 0usize;
    for sample in scrape.samples.iter().filter(|s| s.metric == metric_name) {
        match sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => {
                sum += v;
                found += 1;
            }
            Value::Histogram(_) => {
                return Err(format!(
                    "{metric_name} is a histogram; name one of its number series, \
                     {metric_name}_sum or {metric_name}_count"
                ));
            }
            Value::Summary(_) => {
                return Err(format!(
                    "{metric_name} is a summary; name one of its number series, \
                     {metric_name}_sum or {metric_name}_count"
                ));
            }
        }
    }
    if found == 0 {
        let mut names: Vec<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        // The page's metric names are not quoted: conditions report errors, not contents.
        return Err(if names.is_empty() {
            format!("no metric named {metric_name}: the page has no samples")
        } else {
            format!(
                "no metric named {metric_name} on the page (it has {} other metric names)",
                names.len()
            )
        });
    }
    if !sum.is_finite() {
        return Err(format!("{metric_name} is {sum}, not a finite number"));
    }
    if sum < 0.0 {
        return Err(format!("{metric_name} is {sum}; demand cannot be negative"));
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::pick;

    const PAGE: &str = r#"# HELP http_requests_in_flight Requests being served.
# TYPE http_requests_in_flight gauge
http_requests_in_flight{handler="/query"} 3
http_requests_in_flight{handler="/ui"} 1.5

# HELP queue_depth Waiting work.
# TYPE queue_depth gauge
queue_depth 7 1700000000000
# TYPE requests_total counter
requests_total{code="200"} 100
requests_total{code="500"} 4
untyped_thing 2
# HELP latency_seconds Request latency.
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.1"} 5
latency_seconds_bucket{le="+Inf"} 9
latency_seconds_sum 1.25
latency_seconds_count 9
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.5"} 0.2
rpc_seconds_sum 4
rpc_seconds_count 20
not_a_number_here NaN
negative_gauge -1
"#;

    #[test]
    fn picks_the_named_metric_summed_over_its_series() {
        let ok: &[(&str, f64)] = &[
            ("http_requests_in_flight", 4.5),
            ("queue_depth", 7.0),
            ("requests_total", 104.0),
            ("untyped_thing", 2.0),
            ("latency_seconds_count", 9.0),
            ("latency_seconds_sum", 1.25),
            ("rpc_seconds_count", 20.0),
        ];
        for (name, want) in ok {
            let got = pick(PAGE, name);
            assert_eq!(got, Ok(*want), "{name}");
        }
        let bad: &[(&str, &str, &str)] = &[
            (PAGE, "latency_seconds", "is a histogram"),
            (PAGE, "rpc_seconds", "is a summary"),
            (
                PAGE,
                "missing",
                "no metric named missing on the page (it has",
            ),
            (PAGE, "not_a_number_here", "not a finite number"),
            (PAGE, "negative_gauge", "cannot be negative"),
            ("# only comments\n\n", "x", "the page has no samples"),
            ("", "x", "the page has no samples"),
        ];
        for (page, name, piece) in bad {
            let got = pick(page, name);
            match got {
                Err(e) => assert!(e.contains(piece), "{name}: {e:?} lacks {piece:?}"),
                Ok(v) => panic!("{name}: expected an error, got {v}"),
            }
        }
    }
}
