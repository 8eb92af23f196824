//! One S3 service reached through several endpoints (the nodes of a
//! cluster, each serving the whole bucket): a request goes to the endpoint
//! that last answered, and moves on to the next when that one cannot be
//! reached or fails on its side. Answers about the object itself (not
//! found, refused credentials, a failed precondition) are final: another
//! node would give the same.
//!
//! A cluster that just lost a node may answer 503 from its other nodes
//! until it notices (Garage: a second or two), so when every endpoint
//! failed the round is repeated after a pause, a few times.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Rounds over all endpoints before giving up, and the pause after each
/// failed round (doubled each time): about 7 s for three endpoints that
/// refuse connections, so that `materialize` still falls back to the index
/// soon (a host that does not answer at all costs the connect timeout per
/// attempt on top).
const ROUNDS: u32 = 3;
const PAUSE: Duration = Duration::from_millis(1000);

/// The endpoints of one service, each with its client, tried in turn.
#[derive(Debug)]
pub struct Failover {
    inner: Arc<Endpoints>,
}

/// Shared with listings, which outlive the call that starts them.
#[derive(Debug)]
struct Endpoints {
    endpoints: Vec<(String, Arc<dyn ObjectStore>)>,
    /// The endpoint that answered last; where the next request goes.
    current: AtomicUsize,
}

/// Every endpoint failed: what each said.
#[derive(Debug)]
struct Unreachable(Vec<String>);

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no endpoint answered: {}", self.0.join("; "))
    }
}

impl std::error::Error for Unreachable {}

impl Failover {
    /// `endpoints`: (URL, client) pairs, the first tried first.
    pub fn new(endpoints: Vec<(String, Arc<dyn ObjectStore>)>) -> Self {
        assert!(!endpoints.is_empty(), "at least one endpoint");
        Self {
            inner: Arc::new(Endpoints {
                endpoints,
                current: AtomicUsize::new(0),
            }),
        }
    }

    /// How many endpoints there are: how often a request may be repeated.
    pub fn len(&self) -> usize {
        self.inner.endpoints.len()
    }

    async fn attempt<T, F, Fut>(&self, op: F) -> object_store::Result<T>
    where
        F: Fn(Arc<dyn ObjectStore>) -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        self.inner.attempt(op).await
    }
}

impl Endpoints {
    /// Runs `op` against each endpoint in turn, from the current one,
    /// until one answers (or gives a final answer); with several
    /// endpoints, a few rounds (see [`ROUNDS`]).
    async fn attempt<T, F, Fut>(&self, op: F) -> object_store::Result<T>
    where
        F: Fn(Arc<dyn ObjectStore>) -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        let count = self.endpoints.len();
        let rounds = if count > 1 { ROUNDS } else { 1 };
        let mut failures = Vec::new();
        for round in 0..rounds {
            if round > 0 {
                tokio::time::sleep(PAUSE * 2u32.pow(round - 1)).await;
            }
            failures.clear();
            let start = self.current.load(Ordering::Relaxed);
            for step in 0..count {
                let index = (start + step) % count;
                let (url, store) = &self.endpoints[index];
                match op(store.clone()).await {
                    Err(err) if fails_over(&err) => failures.push(format!("{url}: {err}")),
                    answer => {
                        if step > 0 {
                            self.current.store(index, Ordering::Relaxed);
                        }
                        return answer;
                    }
                }
            }
        }
        Err(object_store::Error::Generic {
            store: "S3",
            source: Box::new(Unreachable(failures)),
        })
    }
}

/// Whether another endpoint might do better: a transport failure or an
/// error on the server's side, not an answer about the object.
fn fails_over(err: &object_store::Error) -> bool {
    matches!(err, object_store::Error::Generic { .. })
}

impl fmt::Display for Failover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<&str> = self
            .inner
            .endpoints
            .iter()
            .map(|(u, _)| u.as_str())
            .collect();
        write!(f, "S3 at {}", urls.join(", "))
    }
}

// The trait is declared with `async_trait`; these are its signatures
// written out (boxed futures).
impl ObjectStore for Failover {
    fn put_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> BoxFuture<'c, object_store::Result<PutResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(self.attempt(move |store| {
            let (location, payload, opts) = (location.clone(), payload.clone(), opts.clone());
            async move { store.put_opts(&location, payload, opts).await }
        }))
    }

    fn put_multipart_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        opts: PutMultipartOptions,
    ) -> BoxFuture<'c, object_store::Result<Box<dyn MultipartUpload>>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(self.attempt(move |store| {
            let (location, opts) = (location.clone(), opts.clone());
            async move { store.put_multipart_opts(&location, opts).await }
        }))
    }

    fn get_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        options: GetOptions,
    ) -> BoxFuture<'c, object_store::Result<GetResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(self.attempt(move |store| {
            let (location, options) = (location.clone(), options.clone());
            async move { store.get_opts(&location, options).await }
        }))
    }

    fn delete<'a, 'b, 'c>(&'a self, location: &'b Path) -> BoxFuture<'c, object_store::Result<()>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(self.attempt(move |store| {
            let location = location.clone();
            async move { store.delete(&location).await }
        }))
    }

    /// A listing is a stream of pages from one endpoint, so it is read
    /// whole from one (a remote's listing is small: two files per
    /// distribution), then handed out.
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = self.inner.clone();
        let prefix = prefix.cloned();
        let listing = async move {
            inner
                .attempt(|store| {
                    let prefix = prefix.clone();
                    async move { store.list(prefix.as_ref()).try_collect::<Vec<_>>().await }
                })
                .await
        };
        futures::stream::once(listing)
            .map_ok(|metas| futures::stream::iter(metas.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    fn list_with_delimiter<'a, 'b, 'c>(
        &'a self,
        prefix: Option<&'b Path>,
    ) -> BoxFuture<'c, object_store::Result<ListResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(self.attempt(move |store| {
            let prefix = prefix.cloned();
            async move { store.list_with_delimiter(prefix.as_ref()).await }
        }))
    }

    fn copy<'a, 'b, 'c, 'd>(
        &'a self,
        from: &'b Path,
        to: &'c Path,
    ) -> BoxFuture<'d, object_store::Result<()>>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        Box::pin(self.attempt(move |store| {
            let (from, to) = (from.clone(), to.clone());
            async move { store.copy(&from, &to).await }
        }))
    }

    fn copy_if_not_exists<'a, 'b, 'c, 'd>(
        &'a self,
        from: &'b Path,
        to: &'c Path,
    ) -> BoxFuture<'d, object_store::Result<()>>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        Box::pin(self.attempt(move |store| {
            let (from, to) = (from.clone(), to.clone());
            async move { store.copy_if_not_exists(&from, &to).await }
        }))
    }
}
