//! The metric sources against real servers on loopback: Debian's Prometheus (started by the
//! test kit, scraping an exporter the test sets) and exporters standing in for pods at
//! 127.0.0.x, all serving the Prometheus text format over real HTTP.
//!
//! These live next to the code because `hoist` is a binary crate: an integration test under
//! tests/ cannot call the module. They need the `prometheus` binary (tests/setup installs it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hoist_api::autoscaling::{BuiltinMetric, PodsMetric, PrometheusMetric};
use hoist_decide::autoscale::Metric;
use hoist_tests::prometheus::{DEMAND_METRIC, DEMAND_QUERY, Exporter, Prometheus};

use super::{MetricsClient, PodFailure, PodTarget, Reading, read};
use crate::error::OperatorError;

fn prometheus_metric(prom: &Prometheus, query: &str) -> BuiltinMetric {
    BuiltinMetric {
        prometheus: Some(PrometheusMetric {
            address: prom.address(),
            query: query.to_owned(),
            target: 5.0,
        }),
        pods: None,
    }
}

fn pods_metric(port: u16, name: &str) -> BuiltinMetric {
    BuiltinMetric {
        prometheus: None,
        pods: Some(PodsMetric {
            port: i32::from(port),
            path: None,
            metric_name: name.to_owned(),
            target: 10.0,
        }),
    }
}

/// The message of a `QueryPrometheus` error, or a failure naming what came instead.
fn query_error(result: Result<Reading, OperatorError>) -> String {
    match result {
        Err(e @ OperatorError::QueryPrometheus { .. }) => e.to_string(),
        other => panic!("expected a QueryPrometheus error, got {other:?}"),
    }
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "one Prometheus, every kind of answer it gives, in order"
)]
async fn prometheus_queries_read_one_value_and_say_what_went_wrong() {
    let mut prom = Prometheus::start().await.unwrap();
    let client = MetricsClient::new(Duration::from_secs(5)).unwrap();

    prom.set_value(12.5);
    prom.wait_for(DEMAND_QUERY, 12.5).await.unwrap();
    let reading = read(
        "ns/s",
        &prometheus_metric(&prom, DEMAND_QUERY),
        0,
        &[],
        &client,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        reading,
        Reading::Total {
            value: 12.5,
            target: 5.0
        }
    );
    assert_eq!(reading.metric(), Metric::total(12.5, 5.0));

    // A scalar answer.
    let reading = read(
        "ns/s",
        &prometheus_metric(&prom, "scalar(sum(hoist_test_demand)) * 2"),
        0,
        &[],
        &client,
        None,
    )
    .await
    .unwrap();
    assert_eq!(reading.metric(), Metric::total(25.0, 5.0));

    // Answers that are not one number, each named in the message with the field.
    let cases: &[(&str, &str)] = &[
        (r#"{__name__=~"hoist_test_demand|up"}"#, "returned 2 series"),
        ("sum(", "bad_data"),
        ("no_such_metric_anywhere", "no samples"),
        (
            "sum(hoist_test_demand) - sum(hoist_test_demand) / 0 * 0",
            "NaN",
        ),
        ("-sum(hoist_test_demand)", "cannot be negative"),
    ];
    for (query, piece) in cases {
        let text = query_error(
            read(
                "ns/s",
                &prometheus_metric(&prom, query),
                3,
                &[],
                &client,
                None,
            )
            .await,
        );
        assert!(
            text.contains("Scaler ns/s: spec.autoscaling.builtin.metrics[3].prometheus.query"),
            "{text}"
        );
        assert!(text.contains(piece), "{query}: {text:?} lacks {piece:?}");
    }

    // The exporter goes away: the series goes stale and the query has no sample.
    prom.stop_exporter().await.unwrap();
    let text = query_error(
        read(
            "ns/s",
            &prometheus_metric(&prom, DEMAND_QUERY),
            0,
            &[],
            &client,
            None,
        )
        .await,
    );
    assert!(text.contains("no samples"), "{text}");
    prom.start_exporter().await.unwrap();
    prom.wait_for(DEMAND_QUERY, 12.5).await.unwrap();

    // Prometheus itself goes away: the request fails.
    let address = prom.address();
    prom.stop();
    let text = query_error(
        read(
            "ns/s",
            &prometheus_metric(&prom, DEMAND_QUERY),
            0,
            &[],
            &client,
            None,
        )
        .await,
    );
    assert!(text.contains(&address), "{text}");
    assert!(text.contains("request to"), "{text}");

    // And comes back with the value.
    prom.restart().await.unwrap();
    let reading = read(
        "ns/s",
        &prometheus_metric(&prom, DEMAND_QUERY),
        0,
        &[],
        &client,
        None,
    )
    .await
    .unwrap();
    assert_eq!(reading.metric(), Metric::total(12.5, 5.0));
}

/// The pods that did not answer.
fn failures_of(reading: &Reading) -> &[PodFailure] {
    match reading {
        Reading::Pods(p) => &p.failures,
        Reading::Total { .. } => &[],
    }
}

/// Three "pods" on 127.0.0.2–4, the same port, as pod IPs would be.
async fn three_pods() -> (Vec<Exporter>, Vec<PodTarget>, u16) {
    let first = Exporter::start(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .await
        .unwrap();
    let port = first.addr().port();
    let mut exporters = vec![first];
    for last in [3, 4] {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), port);
        exporters.push(Exporter::start_at(addr).await.unwrap());
    }
    let targets = exporters
        .iter()
        .enumerate()
        .map(|(i, e)| PodTarget {
            name: format!("worker-{i}"),
            ip: e.addr().ip(),
        })
        .collect();
    (exporters, targets, port)
}

#[tokio::test]
async fn pods_are_scraped_and_failures_reported() {
    let (mut exporters, pods, port) = three_pods().await;
    let mut client = MetricsClient::new(Duration::from_secs(5)).unwrap();
    client.max_concurrent_scrapes = 2;
    exporters[0].set_page(
        "# HELP inflight In flight.\n# TYPE inflight gauge\ninflight{h=\"a\"} 2\ninflight{h=\"b\"} 4\n# TYPE other counter\nother 9\n",
    );
    exporters[1].set("inflight", 3.0);
    exporters[2].set("inflight", 0.0);

    let reading = read(
        "ns/s",
        &pods_metric(port, "inflight"),
        0,
        &pods,
        &client,
        None,
    )
    .await
    .unwrap();
    let Reading::Pods(p) = &reading else {
        panic!("{reading:?}")
    };
    let values: Vec<(&str, f64)> = p.values.iter().map(|v| (v.pod.as_str(), v.value)).collect();
    assert_eq!(
        values,
        [("worker-0", 6.0), ("worker-1", 3.0), ("worker-2", 0.0)]
    );
    assert!(p.failures.is_empty());
    assert_eq!(reading.metric(), Metric::per_pod(3.0, 10.0));

    // One pod lacks the metric, one is down: both are reported, the third still counts.
    exporters[1].set_page("# TYPE something_else gauge\nsomething_else 1\n");
    exporters[2].stop().await;
    let reading = read(
        "ns/s",
        &pods_metric(port, "inflight"),
        0,
        &pods,
        &client,
        None,
    )
    .await
    .unwrap();
    assert_eq!(reading.metric(), Metric::per_pod(6.0, 10.0));
    let failures = failures_of(&reading);
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(failures[0].pod, "worker-1");
    assert!(
        failures[0]
            .reason
            .contains("no metric named inflight on the page (it has 1 other metric names)"),
        "{failures:?}"
    );
    assert_eq!(failures[1].pod, "worker-2");
    assert!(
        failures[1].reason.contains("http://127.0.0.4:"),
        "{failures:?}"
    );

    // No pod answers: an error naming the field and each pod.
    exporters[0].stop().await;
    let err = read(
        "ns/s",
        &pods_metric(port, "inflight"),
        1,
        &pods,
        &client,
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, OperatorError::ScrapePods { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("Scaler ns/s: spec.autoscaling.builtin.metrics[1].pods.metricName"),
        "{text}"
    );
    for pod in ["worker-0", "worker-1", "worker-2"] {
        assert!(text.contains(pod), "{text}");
    }

    // A pod that comes back counts again.
    exporters[2].restart().await.unwrap();
    let reading = read(
        "ns/s",
        &pods_metric(port, "inflight"),
        0,
        &pods,
        &client,
        None,
    )
    .await
    .unwrap();
    assert_eq!(reading.metric(), Metric::per_pod(0.0, 10.0));
    assert_eq!(failures_of(&reading).len(), 2);
}

#[tokio::test]
async fn a_pod_that_never_answers_times_out() {
    // Accepts connections and never writes a byte.
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::new(127, 0, 0, 5), 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let answering = Exporter::start_at(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)),
        port,
    ))
    .await
    .unwrap();
    answering.set(DEMAND_METRIC, 8.0);
    let pods = [
        PodTarget {
            name: "silent".to_owned(),
            ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5)),
        },
        PodTarget {
            name: "answering".to_owned(),
            ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)),
        },
    ];
    let client = MetricsClient::new(Duration::from_millis(500)).unwrap();
    let reading = read(
        "ns/s",
        &pods_metric(port, DEMAND_METRIC),
        0,
        &pods,
        &client,
        None,
    )
    .await
    .unwrap();
    assert_eq!(reading.metric(), Metric::per_pod(8.0, 10.0));
    let failures = failures_of(&reading);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].pod, "silent");
    assert!(failures[0].reason.contains("timed out"), "{failures:?}");
    silent.abort();
}

/// A Prometheus address that redirects elsewhere: the query is not sent there (the address
/// the policy checked is the only one asked) and the error says what came back.
#[tokio::test]
async fn a_redirect_from_prometheus_is_not_followed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    let elsewhere = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere_addr = elsewhere.local_addr().unwrap();
    let asked_elsewhere = Arc::new(AtomicUsize::new(0));
    let counter = asked_elsewhere.clone();
    tokio::spawn(async move {
        while let Ok((_stream, _)) = elsewhere.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let redirecting = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", redirecting.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = redirecting.accept().await {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let answer = format!(
                "HTTP/1.1 302 Found\r\nLocation: http://{elsewhere_addr}/api/v1/query\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });

    let client = MetricsClient::new(Duration::from_secs(5)).unwrap();
    let metric = BuiltinMetric {
        prometheus: Some(PrometheusMetric {
            address,
            query: DEMAND_QUERY.to_owned(),
            target: 5.0,
        }),
        pods: None,
    };
    let text = query_error(read("ns/s", &metric, 0, &[], &client, None).await);
    assert!(text.contains("302"), "{text}");
    assert_eq!(
        asked_elsewhere.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}
