//! A Prometheus HTTP API instant query: `GET {address}/api/v1/query?query=…`, answered by one
//! number (a vector with exactly one sample, or a scalar).
//!
//! Failures are returned as a sentence saying what came back (HTTP status, Prometheus's own
//! error, no samples, several series, NaN); [`super::read`] puts it into
//! [`crate::error::OperatorError::QueryPrometheus`] with the Scaler and its field.

use serde::Deserialize;

use super::MetricsClient;

/// The largest response body read from Prometheus; an answer of one sample is far smaller.
const MAX_BODY_BYTES: usize = 4 << 20;

/// Runs `query` against the Prometheus at `address` (a base URL, checked by the caller) and
/// returns its one value.
pub(super) async fn instant_query(
    client: &MetricsClient,
    address: &str,
    query: &str,
) -> Result<f64, String> {
    let url = format!("{}/api/v1/query", address.trim_end_matches('/'));
    let response = client
        .http
        .get(&url)
        .query(&[("query", query)])
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("request to {url} failed: {}", super::error_chain(&e)))?;
    let status = response.status().as_u16();
    let body = super::read_body(response, MAX_BODY_BYTES).await?;
    parse_response(status, &body)
}

/// The envelope of every Prometheus HTTP API answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default)]
    error_type: Option<String>,
}

/// `data` of a query answer, by `resultType`.
#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum ApiData {
    Vector(Vec<VectorSample>),
    Scalar(SampleValue),
    Matrix(Vec<serde_json::Value>),
    /// Its value is never quoted back.
    String(serde::de::IgnoredAny),
}

/// One series of an instant vector; `value` is absent for a native histogram sample.
#[derive(Debug, Deserialize)]
struct VectorSample {
    #[serde(default)]
    value: Option<SampleValue>,
}

/// `[unix seconds, "value as a string"]`.
type SampleValue = (serde::de::IgnoredAny, String);

/// Turns an HTTP status and body from `/api/v1/query` into the one value, or a sentence saying
/// what came back instead. The sentence never quotes the body (labels, error texts, values):
/// it ends up in the Scaler's conditions, which the address's owner may not be meant to read.
pub(super) fn parse_response(status: u16, body: &[u8]) -> Result<f64, String> {
    let parsed: ApiResponse = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) if (200..300).contains(&status) => {
            return Err(format!(
                "the answer is not a Prometheus API response ({}; JSON invalid at line {} \
                 column {})",
                size(body),
                e.line(),
                e.column()
            ));
        }
        Err(_) => {
            return Err(format!(
                "HTTP {status} ({}, not a Prometheus API response)",
                size(body)
            ));
        }
    };
    if parsed.status != "success" {
        return Err(format!(
            "Prometheus answered HTTP {status} with {}; run the query in Prometheus to see its \
             message",
            error_type(parsed.error_type.as_deref())
        ));
    }
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status} ({})", size(body)));
    }
    match parsed.data {
        None => Err("the answer has no data".to_owned()),
        Some(ApiData::Scalar(v)) => number(&v.1),
        Some(ApiData::Vector(samples)) => match samples.as_slice() {
            [] => Err(
                "the query returned no samples (an empty vector); if no series means \
                 no demand, append `or vector(0)`"
                    .to_owned(),
            ),
            [one] => match &one.value {
                Some(v) => number(&v.1),
                None => Err(
                    "the query returned a native histogram sample; query a number, e.g. \
                     histogram_count(...)"
                        .to_owned(),
                ),
            },
            several => Err(format!(
                "the query returned {} series; aggregate them into one, e.g. sum(...)",
                several.len(),
            )),
        },
        Some(ApiData::Matrix(series)) => Err(format!(
            "the query returned a range vector (a matrix of {} series); use an instant query \
             such as sum(rate(x[1m]))",
            series.len()
        )),
        Some(ApiData::String(_)) => Err("the query returned a string, not a number".to_owned()),
    }
}

/// `errorType` of a Prometheus error answer when it is one of the short identifiers
/// Prometheus uses (`bad_data`, `timeout`…), else a neutral phrase.
fn error_type(t: Option<&str>) -> String {
    match t {
        Some(t)
            if !t.is_empty()
                && t.len() <= 32
                && t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
        {
            format!("errorType {t}")
        }
        _ => "an error".to_owned(),
    }
}

/// The size of a body, for error messages.
fn size(body: &[u8]) -> String {
    if body.is_empty() {
        "empty body".to_owned()
    } else {
        format!("{} bytes", body.len())
    }
}

/// A sample value as Prometheus writes it ("1.5", "NaN", "+Inf"), which must be a finite
/// number ≥ 0 to mean demand.
fn number(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .parse()
        .map_err(|_| "the sample value is not a number".to_owned())?;
    if v.is_nan() {
        return Err(
            "the query returned NaN (e.g. a division by zero); guard it, e.g. with \
             `> 0 or vector(0)`"
                .to_owned(),
        );
    }
    if v.is_infinite() {
        return Err(format!("the query returned {text}, not a finite number"));
    }
    if v < 0.0 {
        return Err(format!("the query returned {v}; demand cannot be negative"));
    }
    Ok(v)
}

/// `{a="1", b="2"}` for a series' labels.
#[cfg(test)]
mod tests {
    use super::parse_response;

    /// `Ok(value)` or `Err(a piece of the message)`.
    enum Want {
        Value(f64),
        ErrorMentions(&'static str),
    }

    #[test]
    #[allow(clippy::too_many_lines)] // one table
    fn answers_are_parsed_into_one_value_or_a_clear_reason() {
        use Want::{ErrorMentions, Value};
        let cases: &[(&str, u16, &str, Want)] = &[
            (
                "vector with one sample",
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"a"},"value":[1700000000.5,"12.5"]}]}}"#,
                Value(12.5),
            ),
            (
                "vector without labels (sum)",
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"0"]}]}}"#,
                Value(0.0),
            ),
            (
                "scalar",
                200,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"3"]}}"#,
                Value(3.0),
            ),
            (
                "warnings are ignored",
                200,
                r#"{"status":"success","warnings":["w"],"data":{"resultType":"scalar","result":[1,"4"]}}"#,
                Value(4.0),
            ),
            (
                "empty vector",
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                ErrorMentions("no samples"),
            ),
            (
                "several series",
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"a"},"value":[1,"1"]},{"metric":{"pod":"b"},"value":[1,"2"]}]}}"#,
                ErrorMentions("returned 2 series; aggregate"),
            ),
            (
                "NaN",
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#,
                ErrorMentions("NaN"),
            ),
            (
                "+Inf",
                200,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#,
                ErrorMentions("+Inf, not a finite number"),
            ),
            (
                "negative",
                200,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"-2"]}}"#,
                ErrorMentions("cannot be negative"),
            ),
            (
                "matrix",
                200,
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                ErrorMentions("range vector"),
            ),
            (
                "native histogram",
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"h"},"histogram":[1,{"count":"2"}]}]}}"#,
                ErrorMentions("native histogram"),
            ),
            (
                "Prometheus error JSON",
                400,
                r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error: unexpected end of input"}"#,
                ErrorMentions("HTTP 400 with errorType bad_data; run the query"),
            ),
            (
                "HTTP error without JSON",
                502,
                "Bad Gateway",
                ErrorMentions("HTTP 502 (11 bytes, not a Prometheus API response)"),
            ),
            (
                "not JSON",
                200,
                "<html>login</html>",
                ErrorMentions("not a Prometheus API response"),
            ),
            (
                "value not a number",
                200,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"abc"]}}"#,
                ErrorMentions("the sample value is not a number"),
            ),
        ];
        for (name, status, body, want) in cases {
            let got = parse_response(*status, body.as_bytes());
            match (want, &got) {
                (Value(v), Ok(g)) => assert!((v - g).abs() < 1e-12, "{name}: {g} != {v}"),
                (ErrorMentions(piece), Err(e)) => {
                    assert!(
                        e.contains(piece),
                        "{name}: {e:?} does not mention {piece:?}"
                    );
                }
                _ => panic!("{name}: got {got:?}"),
            }
        }
    }
}
