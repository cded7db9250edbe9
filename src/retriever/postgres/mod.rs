//! [`PgStore`]: the catalogue in PostgreSQL with pgvector, for catalogues that outgrow memory.
//!
//! - `config`: [`PgConfig`], where the catalogue lives and how it is searched;
//! - `error`: [`PgError`];
//! - `schema`: the tables (version [`PG_SCHEMA_VERSION`]) and the `meta` table;
//! - this file: the store, its writes (batches, settle, the CenterL2 mean) and its queries.
//!
//! Design and sizing, up to 10M+ items: `docs/postgres.md`.

mod config;
mod error;
mod schema;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use pgvector::Vector;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{Kind, ToSql, Type};
use postgres::{Client, NoTls, SimpleQueryMessage, Statement, Transaction};

pub use config::PgConfig;
use error::Context;
pub use error::PgError;
pub use schema::PG_SCHEMA_VERSION;
use schema::{Meta, create_sql, index_name, order_operator};

use super::catalogue::{CatalogueStore, NewItem, PreparedQuery, StoreSpec, Summary, check_rows};
use super::item::{Facet, Filter};
use super::item::{ItemId, ItemRecord, Scored};
use super::norm::FeatureNorm;
use super::rank::{Ranking, median_distance, rank_candidates, scale_pairs};
use super::{Retriever, RetrieverError};
use crate::knn::Rows;

/// Items whose pairwise distances give the scales: all of them up to this many (so that
/// the scales are the memory store's exactly), else a fixed sample of this many.
const SCALE_SAMPLE: usize = 2000;

/// Rows read and rewritten at a time when the mean is taken again.
const PAGE: i64 = 2000;

/// A catalogue in PostgreSQL + pgvector: one row per item in `<schema>.items`, HNSW indexes on
/// both vector columns, scales and means in `<schema>.meta`. Queries are answered by the
/// indexes (approximate nearest neighbours) and ranked exactly on their candidates with the
/// same [`Ranking::score`] as the memory store.
///
/// ```no_run
/// use std::sync::Arc;
/// use attrex::{Backbone, ExtractOptions, PgConfig, PgStore, Retriever, RetrieverConfig};
///
/// let backbone = Arc::new(Backbone::load(None, &attrex::default_device()?)?);
/// let store = PgStore::connect("postgres://postgres@127.0.0.1:5432/shop", PgConfig::default())?;
/// let mut shop = Retriever::with_store(backbone, RetrieverConfig::default(), store)?;
/// let added = shop.ingest(["cat/a.jpg", "cat/b.jpg"], &ExtractOptions::default())?;
/// println!("{} added, {} already there", added.ids.len(), added.unchanged);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Differences from the memory store, by design:
/// - results come from HNSW indexes: recall below 1 on large catalogues
///   ([`PgConfig::ef_search`], [`PgConfig::depth`] trade it for time);
/// - above 2,000 items the scales come from all pairs of a fixed sample of 2,000 items (the
///   memory store draws 200,000 pairs); up to 2,000 they are the same;
/// - [`FeatureNorm::CenterL2`] centres on a frozen mean, taken again when the catalogue has
///   changed by [`PgConfig::refresh_growth`] ([`PgStore::refresh_mean`] forces it); the memory
///   store takes it after every change.
///
/// Positions ([`By::Item`](crate::By::Item), masks, [`Hit::item`](crate::Hit::item)) are
/// ranks by id, read from the database and cached until the catalogue changes; prefer ids.
///
/// Not for: several threads at once through one store (one connection, behind a mutex:
/// give each thread its own store).
pub struct PgStore {
    config: PgConfig,
    inner: Mutex<Inner>,
    pause: Option<Duration>,
    last_settle: Option<Duration>,
}

struct Inner {
    client: Client,
    statements: HashMap<String, Statement>,
    /// Set by `attach`.
    attached: Option<Attached>,
    /// The meta table as last read, and the item ids in position order once needed.
    cache: Option<Cache>,
}

struct Attached {
    spec: StoreSpec,
    /// The `vector` type (its OID is given when the extension is created).
    vector: Type,
}

struct Cache {
    meta: Meta,
    directory: Option<Vec<ItemId>>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn id_sql(id: ItemId) -> i64 {
    id.0 as i64
}

fn text(path: &Path) -> Result<&str, PgError> {
    path.to_str().ok_or_else(|| PgError::Path {
        path: path.to_owned(),
    })
}

fn record(id: i64, path: String, sha256: Option<Vec<u8>>) -> ItemRecord {
    ItemRecord {
        id: ItemId(id as u64),
        path: PathBuf::from(path),
        sha256: sha256.and_then(|s| s.try_into().ok()),
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/database`,
    /// or `host=... dbname=...`), without TLS, and makes sure it has the `vector` extension
    /// (creating it if it may). The catalogue's tables are made or checked when a retriever
    /// takes the store ([`Retriever::with_store`]).
    ///
    /// # Errors
    /// [`PgError::Config`] for a configuration that cannot work; [`PgError::Connect`] when the
    /// server cannot be reached or refuses the connection; [`PgError::NoVectorExtension`].
    pub fn connect(url: &str, config: PgConfig) -> Result<Self, PgError> {
        config.check()?;
        let target = |pg: Option<&postgres::Config>| match pg {
            None => "(unparsable URL)".to_owned(),
            Some(pg) => {
                let host = match pg.get_hosts().first() {
                    Some(postgres::config::Host::Tcp(h)) => h.clone(),
                    #[cfg(unix)]
                    Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
                    None => "localhost".into(),
                };
                let port = pg.get_ports().first().copied().unwrap_or(5432);
                format!("{host}:{port}/{}", pg.get_dbname().unwrap_or("(default)"))
            }
        };
        let mut pg: postgres::Config = url.parse().map_err(|source| PgError::Connect {
            target: target(None),
            source,
        })?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(10));
        }
        let mut client = pg.connect(NoTls).map_err(|source| PgError::Connect {
            target: target(Some(&pg)),
            source,
        })?;
        let have: bool = client
            .query_one("SELECT to_regtype('vector') IS NOT NULL", &[])
            .ctx("look for the vector type")?
            .get(0);
        if !have {
            client
                .batch_execute(
                    "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS vector",
                )
                .map_err(|source| PgError::NoVectorExtension { source })?;
        }
        // Session settings. The planner underrates HNSW scans against a sequential scan (it
        // prices a TOASTed 1024-d distance as one operator call): forbid the latter where an
        // index exists. Iterative scans let a filtered scan go on past ef_search candidates.
        // Custom plans, because LIMIT and filters change the best plan.
        client
            .batch_execute(&format!(
                "SET client_min_messages = warning; SET enable_seqscan = off; SET jit = off;
                 SET plan_cache_mode = force_custom_plan;
                 SET hnsw.ef_search = {}; SET hnsw.iterative_scan = relaxed_order;",
                config.ef_search
            ))
            .ctx("set up the session")?;
        Ok(Self {
            config,
            inner: Mutex::new(Inner {
                client,
                statements: HashMap::new(),
                attached: None,
                cache: None,
            }),
            pause: None,
            last_settle: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PgConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn schema(&self) -> &str {
        &self.config.schema
    }

    /// Runs `sql` (one or more statements, no parameters) as it is, and returns the rows of
    /// the statements that return rows, each value as text (`None` for NULL): for
    /// administration (`EXPLAIN`, counts, `DROP SCHEMA`) and tests.
    ///
    /// # Errors
    /// [`PgError::Statement`].
    pub fn execute_sql(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        let mut inner = self.lock();
        inner.cache = None;
        let messages = inner.client.simple_query(sql).ctx("run SQL")?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                }
                _ => None,
            })
            .collect())
    }

    /// Drops the catalogue: its Postgres schema and everything in it.
    ///
    /// # Errors
    /// [`PgError::Statement`].
    pub fn drop_catalogue(&self) -> Result<(), PgError> {
        self.execute_sql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema()))?;
        Ok(())
    }

    /// Takes the catalogue mean again and re-centres every stored vector on it now, under
    /// [`FeatureNorm::CenterL2`] (see [`PgConfig::refresh_growth`]); then the scales and
    /// indexes are rebuilt. Does nothing under other transforms.
    ///
    /// # Errors
    /// [`PgError::NotAttached`]; [`PgError::Statement`].
    pub fn refresh_mean(&mut self) -> Result<(), PgError> {
        self.settle_store(true)
    }

    /// How long the last settle took that had work to do (the mean, the scales, index
    /// builds): what a bulk load spends after its rows are in.
    pub fn last_settle_time(&self) -> Option<Duration> {
        self.last_settle
    }

    /// Test hook: sleep this long inside each write transaction, before it commits, so that
    /// a test can kill the process with a batch half-written.
    #[doc(hidden)]
    pub fn pause_inside_batches(&mut self, pause: Duration) {
        self.pause = Some(pause);
    }

    /// Brings the cached meta table up to date (one round trip when nothing changed).
    fn fresh<'a>(&self, inner: &'a mut Inner) -> Result<&'a mut Cache, PgError> {
        if inner.attached.is_none() {
            return Err(PgError::NotAttached);
        }
        let sql = format!(
            "SELECT (value #>> '{{}}')::bigint FROM {}.meta WHERE key = 'generation'",
            self.schema()
        );
        let statement = inner.prepare(&sql)?;
        let generation: i64 = inner
            .client
            .query_one(&statement, &[])
            .ctx("read the catalogue's generation")?
            .get(0);
        if inner
            .cache
            .as_ref()
            .is_none_or(|c| c.meta.generation != generation)
        {
            let meta = Meta::read(&mut inner.client, self.schema())?;
            inner.cache = Some(Cache {
                meta,
                directory: None,
            });
        }
        Ok(inner.cache.as_mut().expect("just filled"))
    }

    /// The ids in position order (cached until the catalogue changes).
    fn directory<'a>(&self, inner: &'a mut Inner) -> Result<&'a [ItemId], PgError> {
        self.fresh(inner)?;
        if inner.cache.as_ref().is_some_and(|c| c.directory.is_none()) {
            let rows = inner
                .client
                .query(
                    &format!("SELECT id FROM {}.items ORDER BY id", self.schema()),
                    &[],
                )
                .ctx("read the item ids")?;
            let ids = rows
                .iter()
                .map(|r| ItemId(r.get::<_, i64>(0) as u64))
                .collect();
            inner.cache.as_mut().expect("fresh").directory = Some(ids);
        }
        Ok(inner
            .cache
            .as_ref()
            .and_then(|c| c.directory.as_deref())
            .expect("just filled"))
    }

    /// Locks the catalogue for writing (other writers wait) and reads its meta table.
    fn begin_write<'a>(&self, inner: &'a mut Inner) -> Result<(Transaction<'a>, Meta), PgError> {
        inner.cache = None;
        let mut tx = inner.client.transaction().ctx("begin a transaction")?;
        tx.query_one(
            &format!(
                "SELECT value FROM {}.meta WHERE key = 'generation' FOR UPDATE",
                self.schema()
            ),
            &[],
        )
        .ctx("lock the catalogue")?;
        let meta = Meta::read(&mut tx, self.schema())?;
        Ok((tx, meta))
    }

    /// Writes `meta` (one generation on) and commits, after the test pause if any.
    fn commit(&self, mut tx: Transaction<'_>, mut meta: Meta) -> Result<(), PgError> {
        meta.generation += 1;
        meta.write(&mut tx, self.schema())?;
        if let Some(pause) = self.pause {
            std::thread::sleep(pause);
        }
        tx.commit().ctx("commit")
    }

    fn drop_indexes(&self, tx: &mut Transaction<'_>) -> Result<(), PgError> {
        let s = self.schema();
        tx.batch_execute(&format!(
            "DROP INDEX IF EXISTS {s}.{}; DROP INDEX IF EXISTS {s}.{};",
            index_name("colour"),
            index_name("texture")
        ))
        .ctx("drop the HNSW indexes")
    }

    /// Settles: the mean (CenterL2, when due or `force`), the scales, the indexes.
    fn settle_store(&mut self, force: bool) -> Result<(), PgError> {
        let start = std::time::Instant::now();
        let settled = self.settle_inner(force)?;
        if settled {
            self.last_settle = Some(start.elapsed());
        }
        Ok(())
    }

    /// [`settle_store`](Self::settle_store); true when there was work to do.
    fn settle_inner(&self, force: bool) -> Result<bool, PgError> {
        let mut inner = self.lock();
        let norm = inner
            .attached
            .as_ref()
            .ok_or(PgError::NotAttached)?
            .spec
            .norm;
        let vector = inner.attached.as_ref().expect("attached").vector.clone();
        let (mut tx, mut meta) = self.begin_write(&mut inner)?;
        let s = self.schema().to_owned();
        let missing: bool = tx
            .query_one(
                &format!(
                    "SELECT to_regclass('{s}.{}') IS NULL OR to_regclass('{s}.{}') IS NULL",
                    index_name("colour"),
                    index_name("texture")
                ),
                &[],
            )
            .ctx("look for the HNSW indexes")?
            .get(0);
        let recentre = norm == FeatureNorm::CenterL2
            && meta.count > 0
            && (force
                || meta.mean_count == 0
                || (meta.changes > 0
                    && meta.changes as f64
                        >= f64::from(self.config.refresh_growth) * meta.mean_count as f64));
        if meta.settled && !missing && !recentre {
            tx.commit().ctx("commit")?;
            return Ok(false);
        }
        if recentre {
            // Rewriting every vector through live HNSW graphs is far slower than building them.
            self.drop_indexes(&mut tx)?;
            recentre_vectors(&mut tx, &s, &mut meta, &vector)?;
        }
        meta.scales = scales(&mut tx, &s, meta.count)?;
        let [m, efc] = meta.hnsw;
        for facet in ["colour", "texture"] {
            tx.batch_execute(&format!(
                "CREATE INDEX IF NOT EXISTS {} ON {s}.items USING hnsw ({facet} {}) \
                 WITH (m = {m}, ef_construction = {efc})",
                index_name(facet),
                meta.opclass
            ))
            .ctx("build an HNSW index")?;
        }
        meta.settled = true;
        self.commit(tx, meta)?;
        Ok(true)
    }
}

impl Inner {
    /// A prepared statement, kept for the session.
    fn prepare(&mut self, sql: &str) -> Result<Statement, PgError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).ctx("prepare a statement")?;
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

/// One item's id and its colour and texture vectors.
type IdVectors = (i64, [Vec<f32>; 2]);

/// Takes the mean of the raw vectors again and re-centres every row on it: two passes over the
/// table a page at a time (raw vectors recovered from the stored ones, their lengths and the
/// old mean), in the caller's transaction.
fn recentre_vectors(
    tx: &mut Transaction<'_>,
    s: &str,
    meta: &mut Meta,
    vector: &Type,
) -> Result<(), PgError> {
    let norm = FeatureNorm::CenterL2;
    let page_sql = format!(
        "SELECT id, colour_len, texture_len, colour, texture FROM {s}.items \
         WHERE id > $1 ORDER BY id LIMIT {PAGE}"
    );
    let old = meta.means.clone();
    let raw_page = |tx: &mut Transaction<'_>, after: i64| -> Result<Vec<IdVectors>, PgError> {
        let rows = tx
            .query(&page_sql, &[&after])
            .ctx("read a page of vectors")?;
        Ok(rows
            .iter()
            .map(|r| {
                let lens: [f32; 2] = [r.get(1), r.get(2)];
                let mut v: [Vec<f32>; 2] = [
                    r.get::<_, Vector>(3).to_vec(),
                    r.get::<_, Vector>(4).to_vec(),
                ];
                for f in 0..2 {
                    norm.invert(&mut v[f], lens[f], &old[f]);
                }
                (r.get(0), v)
            })
            .collect())
    };
    let mut sums = [vec![0f64; meta.dims[0]], vec![0f64; meta.dims[1]]];
    let (mut after, mut n) = (0i64, 0usize);
    loop {
        let page = raw_page(tx, after)?;
        let Some(last) = page.last() else { break };
        after = last.0;
        for (_, v) in &page {
            for f in 0..2 {
                sums[f]
                    .iter_mut()
                    .zip(&v[f])
                    .for_each(|(s, x)| *s += f64::from(*x));
            }
            n += 1;
        }
    }
    let means: [Vec<f32>; 2] =
        sums.map(|s| s.iter().map(|x| (x / n.max(1) as f64) as f32).collect());
    let types = [
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT4,
        vector.clone(),
        vector.clone(),
    ];
    let mut after = 0i64;
    loop {
        let page = raw_page(tx, after)?;
        let Some(last) = page.last() else { break };
        after = last.0;
        let sink = tx
            .copy_in("COPY attrex_refresh (id, colour_len, texture_len, colour, texture) FROM STDIN (FORMAT binary)")
            .ctx("copy re-centred vectors")?;
        let mut w = BinaryCopyInWriter::new(sink, &types);
        for (id, mut v) in page {
            let lens = [0, 1].map(|f| norm.apply_len(&mut v[f], &means[f]));
            let [c, t] = v.map(Vector::from);
            w.write(&[&id, &lens[0], &lens[1], &c, &t])
                .ctx("copy re-centred vectors")?;
        }
        w.finish().ctx("copy re-centred vectors")?;
        tx.batch_execute(&format!(
            "UPDATE {s}.items i SET colour_len = r.colour_len, texture_len = r.texture_len, \
             colour = r.colour, texture = r.texture FROM attrex_refresh r WHERE i.id = r.id;
             DELETE FROM attrex_refresh;"
        ))
        .ctx("rewrite re-centred vectors")?;
    }
    meta.means = means;
    meta.mean_count = n as i64;
    meta.changes = 0;
    Ok(())
}

/// The median pairwise distances of the search vectors: all pairs of all items up to
/// [`SCALE_SAMPLE`] (the memory store's exactly), else all pairs of a fixed sample.
fn scales(tx: &mut Transaction<'_>, s: &str, count: i64) -> Result<[f32; 2], PgError> {
    let sql = if count as usize <= SCALE_SAMPLE {
        format!("SELECT colour, texture FROM {s}.items ORDER BY id")
    } else {
        format!(
            "WITH sample AS (SELECT id FROM {s}.items ORDER BY md5(id::text) LIMIT {SCALE_SAMPLE})
             SELECT colour, texture FROM {s}.items WHERE id IN (SELECT id FROM sample) ORDER BY id"
        )
    };
    let rows = tx.query(&sql, &[]).ctx("read the vectors for the scales")?;
    let mut flat = [Vec::new(), Vec::new()];
    for r in &rows {
        for (f, v) in flat.iter_mut().enumerate() {
            v.extend_from_slice(r.get::<_, Vector>(f).as_slice());
        }
    }
    let pairs = scale_pairs(rows.len());
    Ok([0, 1].map(|f| {
        let dim = flat[f].len() / rows.len().max(1);
        match Rows::new(&flat[f], dim.max(1)) {
            Ok(r) if !rows.is_empty() => median_distance(r, &pairs),
            _ => 1.0,
        }
    }))
}

impl CatalogueStore for PgStore {
    fn attach(&mut self, spec: &StoreSpec) -> Result<(), RetrieverError> {
        let hnsw = [
            self.config.hnsw_m.get(),
            self.config.hnsw_ef_construction.get(),
        ];
        let s = self.schema().to_owned();
        let mut inner = self.lock();
        inner.cache = None;
        let mut tx = inner.client.transaction().ctx("begin a transaction")?;
        // One creator at a time.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&s])
            .ctx("lock the schema name")?;
        let exists: bool = tx
            .query_one(&format!("SELECT to_regclass('{s}.meta') IS NOT NULL"), &[])
            .ctx("look for the catalogue")?
            .get(0);
        if exists {
            Meta::read(&mut tx, &s)?.check(spec, &s)?;
            // The columns themselves, in case the table was altered by hand.
            let types: Vec<String> = tx
                .query(
                    &format!(
                        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
                         WHERE attrelid = '{s}.items'::regclass AND attname IN ('colour', 'texture') \
                         ORDER BY attname"
                    ),
                    &[],
                )
                .ctx("read the vector columns")?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let want = vec![
                format!("vector({})", spec.dims[0]),
                format!("vector({})", spec.dims[1]),
            ];
            if types != want {
                return Err(PgError::Meta {
                    schema: s,
                    key: "dims".into(),
                    reason: format!("the vector columns are {types:?}, meta says {want:?}"),
                }
                .into());
            }
        } else {
            tx.batch_execute(&create_sql(&s, spec.dims))
                .ctx("create the catalogue's tables")?;
            Meta::new(spec, hnsw).write(&mut tx, &s)?;
        }
        tx.commit().ctx("commit")?;
        let [dc, dt] = spec.dims;
        inner
            .client
            .batch_execute(&format!(
                "CREATE TEMP TABLE IF NOT EXISTS attrex_staging (path text, sha256 bytea, \
                     colour_len real, texture_len real, colour vector({dc}), texture vector({dt})) \
                     ON COMMIT DELETE ROWS;
                 CREATE TEMP TABLE IF NOT EXISTS attrex_refresh (id bigint, \
                     colour_len real, texture_len real, colour vector({dc}), texture vector({dt})) \
                     ON COMMIT DELETE ROWS;"
            ))
            .ctx("create the staging tables")?;
        let row = inner
            .client
            .query_one(
                "SELECT t.oid, n.nspname::text FROM pg_type t \
                 JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = 'vector'::regtype",
                &[],
            )
            .ctx("look up the vector type")?;
        let vector = Type::new("vector".into(), row.get(0), Kind::Simple, row.get(1));
        inner.attached = Some(Attached {
            spec: spec.clone(),
            vector,
        });
        Ok(())
    }

    fn summary(&self) -> Result<Summary, RetrieverError> {
        let mut inner = self.lock();
        let meta = &self.fresh(&mut inner)?.meta;
        Ok(Summary {
            len: meta.count as usize,
            scales: meta.scales,
            means: meta.means.clone(),
            tagged: meta.tagged,
        })
    }

    fn ingest_batch(&self) -> NonZeroUsize {
        self.config.batch
    }

    fn lookup(&self, paths: &[PathBuf]) -> Result<Vec<Option<ItemRecord>>, RetrieverError> {
        let texts = paths
            .iter()
            .map(|p| text(p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut inner = self.lock();
        let sql = format!(
            "SELECT id, path, sha256 FROM {}.items WHERE path = ANY($1)",
            self.schema()
        );
        let statement = inner.prepare(&sql)?;
        let rows = inner
            .client
            .query(&statement, &[&texts])
            .ctx("look up stored paths")?;
        let found: HashMap<String, ItemRecord> = rows
            .into_iter()
            .map(|r| {
                let path: String = r.get(1);
                (path.clone(), record(r.get(0), path, r.get(2)))
            })
            .collect();
        Ok(texts.iter().map(|t| found.get(*t).cloned()).collect())
    }

    fn append(
        &mut self,
        items: Vec<NewItem>,
        colour: Rows<'_>,
        texture: Rows<'_>,
    ) -> Result<Vec<ItemId>, RetrieverError> {
        let mut inner = self.lock();
        let attached = inner.attached.as_ref().ok_or(PgError::NotAttached)?;
        let (spec, vector) = (attached.spec.clone(), attached.vector.clone());
        check_rows(spec.dims, items.len(), colour, texture)?;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let texts = items
            .iter()
            .map(|i| text(&i.path))
            .collect::<Result<Vec<_>, _>>()?;
        // One row per path: the last one given wins, as in memory.
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, t) in texts.iter().enumerate() {
            last.insert(t, i);
        }
        let rows: Vec<usize> = (0..items.len()).filter(|&i| last[texts[i]] == i).collect();
        let (mut tx, mut meta) = self.begin_write(&mut inner)?;
        let s = self.schema();
        if spec.norm == FeatureNorm::CenterL2 && meta.mean_count == 0 {
            // The first items of a catalogue: centred on their own mean until settle.
            meta.means = [(colour, spec.dims[0]), (texture, spec.dims[1])].map(|(r, d)| {
                let mut m = vec![0f64; d];
                for &i in &rows {
                    m.iter_mut()
                        .zip(r.row(i))
                        .for_each(|(m, x)| *m += f64::from(*x));
                }
                m.iter().map(|x| (x / rows.len() as f64) as f32).collect()
            });
            meta.mean_count = rows.len() as i64;
            meta.changes = -(rows.len() as i64);
        }
        if rows.len() as i64 >= meta.count && meta.count > 0 {
            // More rows than the catalogue holds: building the graphs afterwards is faster
            // than inserting into them.
            self.drop_indexes(&mut tx)?;
        }
        let sink = tx
            .copy_in("COPY attrex_staging (path, sha256, colour_len, texture_len, colour, texture) FROM STDIN (FORMAT binary)")
            .ctx("copy a batch")?;
        let types = [
            Type::TEXT,
            Type::BYTEA,
            Type::FLOAT4,
            Type::FLOAT4,
            vector.clone(),
            vector,
        ];
        let mut w = BinaryCopyInWriter::new(sink, &types);
        for &i in &rows {
            let mut v = [colour.row(i).to_vec(), texture.row(i).to_vec()];
            let lens = [0, 1].map(|f| spec.norm.apply_len(&mut v[f], &meta.means[f]));
            let [c, t] = v.map(Vector::from);
            let sha = items[i].sha256.map(|h| h.to_vec());
            w.write(&[&texts[i], &sha, &lens[0], &lens[1], &c, &t])
                .ctx("copy a batch")?;
        }
        w.finish().ctx("copy a batch")?;
        let returned = tx
            .query(
                &format!(
                    "INSERT INTO {s}.items (path, sha256, weights_id, recipe, colour_len, \
                         texture_len, colour, texture) \
                     SELECT path, sha256, $1, $2, colour_len, texture_len, colour, texture \
                     FROM attrex_staging \
                     ON CONFLICT (path) DO UPDATE SET sha256 = EXCLUDED.sha256, \
                         weights_id = EXCLUDED.weights_id, recipe = EXCLUDED.recipe, \
                         colour_len = EXCLUDED.colour_len, texture_len = EXCLUDED.texture_len, \
                         colour = EXCLUDED.colour, texture = EXCLUDED.texture, \
                         colour_attribute = NULL, texture_attribute = NULL, added = now() \
                     RETURNING id, path, (xmax = 0)"
                ),
                &[&spec.weights_id, &spec.recipe],
            )
            .ctx("insert a batch")?;
        let mut ids: HashMap<String, ItemId> = HashMap::new();
        for r in &returned {
            ids.insert(r.get(1), ItemId(r.get::<_, i64>(0) as u64));
            if r.get::<_, bool>(2) {
                meta.count += 1;
            }
        }
        meta.changes += rows.len() as i64;
        meta.settled = false;
        self.commit(tx, meta)?;
        Ok(texts.iter().map(|t| ids[*t]).collect())
    }

    fn settle(&mut self) -> Result<(), RetrieverError> {
        Ok(self.settle_store(false)?)
    }

    fn remove(&mut self, ids: &[ItemId]) -> Result<usize, RetrieverError> {
        let ids: Vec<i64> = ids.iter().map(|&i| id_sql(i)).collect();
        let removed = {
            let mut inner = self.lock();
            let (mut tx, mut meta) = self.begin_write(&mut inner)?;
            let n = tx
                .execute(
                    &format!("DELETE FROM {}.items WHERE id = ANY($1)", self.schema()),
                    &[&ids],
                )
                .ctx("remove items")?;
            if n == 0 {
                tx.rollback().ctx("roll back")?;
                return Ok(0);
            }
            meta.count -= n as i64;
            meta.changes += n as i64;
            meta.settled = false;
            self.commit(tx, meta)?;
            n as usize
        };
        self.settle()?;
        Ok(removed)
    }

    fn items(&self) -> Result<Cow<'_, [ItemRecord]>, RetrieverError> {
        let mut inner = self.lock();
        let rows = inner
            .client
            .query(
                &format!(
                    "SELECT id, path, sha256 FROM {}.items ORDER BY id",
                    self.schema()
                ),
                &[],
            )
            .ctx("read the items")?;
        Ok(Cow::Owned(
            rows.into_iter()
                .map(|r| record(r.get(0), r.get(1), r.get(2)))
                .collect(),
        ))
    }

    fn ids_at(&self, positions: &[usize]) -> Result<Vec<ItemId>, RetrieverError> {
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let mut inner = self.lock();
        let dir = self.directory(&mut inner)?;
        positions
            .iter()
            .map(|&item| {
                dir.get(item).copied().ok_or(RetrieverError::NoSuchItem {
                    item,
                    len: dir.len(),
                })
            })
            .collect()
    }

    fn positions(&self, ids: &[ItemId]) -> Result<Vec<Option<usize>>, RetrieverError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut inner = self.lock();
        let dir = self.directory(&mut inner)?;
        Ok(ids.iter().map(|id| dir.binary_search(id).ok()).collect())
    }

    fn search_vectors(&self, id: ItemId) -> Result<[Cow<'_, [f32]>; 2], RetrieverError> {
        let mut inner = self.lock();
        let sql = format!(
            "SELECT colour, texture FROM {}.items WHERE id = $1",
            self.schema()
        );
        let statement = inner.prepare(&sql)?;
        let row = inner
            .client
            .query_opt(&statement, &[&id_sql(id)])
            .ctx("read an item's vectors")?
            .ok_or(RetrieverError::NoSuchId { id })?;
        Ok([0, 1].map(|f| Cow::Owned(row.get::<_, Vector>(f).to_vec())))
    }

    fn raw(&self, facet: Facet) -> Result<Cow<'_, [f32]>, RetrieverError> {
        let mut inner = self.lock();
        let norm = inner
            .attached
            .as_ref()
            .ok_or(PgError::NotAttached)?
            .spec
            .norm;
        let mean = self.fresh(&mut inner)?.meta.means[facet.index()].clone();
        let f = facet.name();
        let rows = inner
            .client
            .query(
                &format!(
                    "SELECT {f}_len, {f} FROM {}.items ORDER BY id",
                    self.schema()
                ),
                &[],
            )
            .ctx("read raw vectors")?;
        let mut out = Vec::new();
        for r in rows {
            let mut v = r.get::<_, Vector>(1).to_vec();
            norm.invert(&mut v, r.get(0), &mean);
            out.extend_from_slice(&v);
        }
        Ok(Cow::Owned(out))
    }

    fn set_attributes(
        &mut self,
        facet: Facet,
        attributes: Vec<String>,
    ) -> Result<(), RetrieverError> {
        let mut inner = self.lock();
        let (mut tx, mut meta) = self.begin_write(&mut inner)?;
        let s = self.schema();
        let ids: Vec<i64> = tx
            .query(&format!("SELECT id FROM {s}.items ORDER BY id"), &[])
            .ctx("read the item ids")?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if ids.len() != attributes.len() {
            return Err(RetrieverError::FilterLength {
                items: ids.len(),
                flags: attributes.len(),
            });
        }
        let f = facet.name();
        tx.execute(
            &format!(
                "UPDATE {s}.items i SET {f}_attribute = u.a \
                 FROM unnest($1::int8[], $2::text[]) AS u(id, a) WHERE i.id = u.id"
            ),
            &[&ids, &attributes],
        )
        .ctx("store attributes")?;
        meta.tagged[facet.index()] = true;
        self.commit(tx, meta)?;
        Ok(())
    }

    fn attributes(
        &self,
        facet: Facet,
    ) -> Result<Option<Cow<'_, [Option<String>]>>, RetrieverError> {
        let mut inner = self.lock();
        if !self.fresh(&mut inner)?.meta.tagged[facet.index()] {
            return Ok(None);
        }
        let rows = inner
            .client
            .query(
                &format!(
                    "SELECT {}_attribute FROM {}.items ORDER BY id",
                    facet.name(),
                    self.schema()
                ),
                &[],
            )
            .ctx("read attributes")?;
        Ok(Some(Cow::Owned(rows.iter().map(|r| r.get(0)).collect())))
    }

    fn top_k(
        &self,
        query: &PreparedQuery,
        ranking: Ranking,
        filters: &[Filter<'_>],
        exclude: &[ItemId],
        k: NonZeroUsize,
    ) -> Result<Vec<Scored>, RetrieverError> {
        let mut inner = self.lock();
        let meta = &self.fresh(&mut inner)?.meta;
        let (scales, op) = (meta.scales, order_operator(&meta.opclass));
        let s = self.schema();
        let vectors = [
            Vector::from(query.vector(Facet::Colour).to_vec()),
            Vector::from(query.vector(Facet::Texture).to_vec()),
        ];
        let mut params: Vec<Box<dyn ToSql + Sync>> = Vec::new();
        let mut clauses = Vec::new();
        let mut mask: Option<Vec<bool>> = None;
        for f in filters {
            match f {
                Filter::Attribute { facet, any_of } => {
                    params.push(Box::new(any_of.clone()));
                    clauses.push(format!(
                        "{}_attribute = ANY(${})",
                        facet.name(),
                        params.len() + 2
                    ));
                }
                Filter::Mask(m) => {
                    let all = mask.get_or_insert_with(|| vec![true; m.len()]);
                    all.iter_mut().zip(m.iter()).for_each(|(a, b)| *a &= b);
                }
            }
        }
        if let Some(mask) = mask {
            let dir = self.directory(&mut inner)?;
            let ids: Vec<i64> = dir
                .iter()
                .zip(&mask)
                .filter(|(_, keep)| **keep)
                .map(|(id, _)| id_sql(*id))
                .collect();
            params.push(Box::new(ids));
            clauses.push(format!("id = ANY(${})", params.len() + 2));
        }
        if !exclude.is_empty() {
            let ids: Vec<i64> = exclude.iter().map(|&i| id_sql(i)).collect();
            params.push(Box::new(ids));
            clauses.push(format!("id <> ALL(${})", params.len() + 2));
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        // LIMIT as a literal: as a parameter the planner assumes a tenth of the table and
        // scans it. The exact distances of the candidates only: the ranking is Rust's.
        let [wc, wt] = ranking.weights();
        let select =
            format!("SELECT id, path, sha256, colour <-> $1, texture <-> $2 FROM {s}.items");
        let sql = if wc == 0.0 || wt == 0.0 {
            let (column, param) = if wt == 0.0 {
                ("colour", "$1")
            } else {
                ("texture", "$2")
            };
            format!("{select} {filter} ORDER BY {column} {op} {param} LIMIT {k}")
        } else {
            let depth = self.config.depth.get().max(k.get());
            format!(
                "WITH c AS (SELECT id FROM {s}.items {filter} ORDER BY colour {op} $1 LIMIT {depth}),
                      t AS (SELECT id FROM {s}.items {filter} ORDER BY texture {op} $2 LIMIT {depth})
                 {select} WHERE id IN (SELECT id FROM c UNION SELECT id FROM t)"
            )
        };
        let statement = inner.prepare(&sql)?;
        let mut args: Vec<&(dyn ToSql + Sync)> = vec![&vectors[0], &vectors[1]];
        args.extend(params.iter().map(|p| p.as_ref()));
        let rows = inner
            .client
            .query(&statement, &args)
            .ctx("query the catalogue")?;
        let candidates = rows
            .into_iter()
            .map(|r| {
                let d: [f64; 2] = [r.get(3), r.get(4)];
                (record(r.get(0), r.get(1), r.get(2)), d.map(|d| d as f32))
            })
            .collect();
        Ok(rank_candidates(candidates, ranking, scales, k.get()))
    }
}

impl Retriever<PgStore> {
    /// [`PgStore::refresh_mean`]: re-centres the catalogue on its current mean now.
    ///
    /// # Errors
    /// The store's errors.
    pub fn refresh_mean(&mut self) -> Result<(), RetrieverError> {
        Ok(self.store.refresh_mean()?)
    }
}
