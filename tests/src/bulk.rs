//! Many objects at once, for the benches: run a creation for each index a few dozen at a
//! time, count the objects that satisfy a predicate (paged lists), wait for a count.

use std::time::Duration;

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use kube::api::ListParams;
use kube::{Api, Resource};

use crate::wait;

/// Requests in flight at once.
pub const PARALLEL: usize = 48;

/// Runs `f(i)` for `0..total`, [`PARALLEL`] at a time; the first error ends it.
pub async fn for_each<F, Fut>(total: usize, f: F) -> Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    futures::stream::iter(0..total)
        .map(f)
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// How many objects of `api` satisfy `pred` (listed in pages of 500).
pub async fn count<K>(api: &Api<K>, pred: impl Fn(&K) -> bool) -> Result<usize>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut n = 0;
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        n += page.items.iter().filter(|o| pred(o)).count();
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => params = params.continue_token(&c),
            _ => return Ok(n),
        }
    }
}

/// Waits (up to 30 minutes, looking every half second) until exactly `want` objects of `api`
/// satisfy `pred`.
pub async fn wait_count<K>(
    api: &Api<K>,
    want: usize,
    what: &str,
    pred: impl Fn(&K) -> bool + Copy,
) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait::until(Duration::from_mins(30), what, || {
        let api = api.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(count(&api, pred).await? == want)
        }
    })
    .await
}
