//! The PostgreSQL store against a real server: `scripts/postgres.sh start` prints the URL;
//! export it as `ATTREX_TEST_POSTGRES_URL`. Without it (or with the server down) these tests
//! skip with a message on stderr, unless `ATTREX_REQUIRE_POSTGRES=1` (as `.ci/run` sets),
//! which makes that a failure. Each test works in its own Postgres schema, dropped after.
//!
//! The memory store is the reference: the same catalogue through both stores must give the
//! same precision@10 on the dev catalogue (within 0.01: the Postgres store answers from HNSW
//! indexes), the same filtered results, and the same ids after idempotent ingestion.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use attrex::{
    AttributeIndex, Backbone, Block, By, Facet, FeatureNorm, Filter, PgConfig, PgError, PgStore,
    Ranking, Retriever, RetrieverConfig, RetrieverError,
};

use crate::retriever::{Row, rows};
use crate::{cached_extraction, keras};

const URL_VAR: &str = "ATTREX_TEST_POSTGRES_URL";
const REQUIRE_VAR: &str = "ATTREX_REQUIRE_POSTGRES";
const CHILD_VAR: &str = "ATTREX_TEST_PG_KILL_CHILD";

fn required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1")
}

/// The test server's URL, or `None` (after a message) when there is none and none is required.
fn url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(u) if !u.is_empty() => Some(u),
        _ if required() => panic!("{REQUIRE_VAR}=1 but {URL_VAR} is not set"),
        _ => {
            eprintln!(
                "SKIPPED: no PostgreSQL test server ({URL_VAR} unset); \
                 run `export {URL_VAR}=$(scripts/postgres.sh start)` to test the Postgres store"
            );
            None
        }
    }
}

/// A store on a schema of its own, dropped when the guard goes.
struct Scratch {
    url: String,
    schema: String,
}

impl Scratch {
    fn new(name: &str) -> Option<Self> {
        let url = url()?;
        let schema = format!("t_{name}_{}", std::process::id());
        let scratch = Self { url, schema };
        match scratch.store(PgConfig::with_schema(&scratch.schema)) {
            Ok(s) => s.drop_catalogue().unwrap(),
            Err(e) if !required() => {
                eprintln!("SKIPPED: the PostgreSQL test server does not answer: {e}");
                return None;
            }
            Err(e) => panic!("{REQUIRE_VAR}=1 and the server does not answer: {e:?}"),
        }
        Some(scratch)
    }

    fn config(&self) -> PgConfig {
        PgConfig::with_schema(&self.schema)
    }

    fn store(&self, config: PgConfig) -> Result<PgStore, PgError> {
        PgStore::connect(&self.url, config)
    }

    fn retriever(&self, norm: FeatureNorm) -> Retriever<PgStore> {
        let store = self.store(self.config()).unwrap();
        Retriever::with_store(keras(), config(norm), store).unwrap()
    }

    fn sql(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.store(self.config()).unwrap().execute_sql(sql).unwrap()
    }

    fn count(&self, sql: &str) -> i64 {
        self.sql(sql)[0][0].as_deref().unwrap().parse().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(s) = self.store(self.config()) {
            let _ = s.drop_catalogue();
        }
    }
}

fn config(norm: FeatureNorm) -> RetrieverConfig {
    RetrieverConfig {
        norm,
        ..RetrieverConfig::default()
    }
}

fn k(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

fn paths(rows: &[Row]) -> Vec<PathBuf> {
    rows.iter().map(|r| r.path.clone()).collect()
}

fn precision<S: attrex::CatalogueStore>(
    r: &Retriever<S>,
    rows: &[Row],
    ranking: Ranking,
) -> [f64; 3] {
    let colours: Vec<&str> = rows.iter().map(|r| r.colour.as_str()).collect();
    let patterns: Vec<&str> = rows.iter().map(|r| r.pattern.as_str()).collect();
    attrex::eval::retrieval_precision(r, &colours, &patterns, ranking, k(10)).unwrap()
}

#[test]
fn postgres_precision_at_10_matches_the_memory_store() {
    let Some(scratch) = Scratch::new("parity") else {
        return;
    };
    let rows = rows();
    for norm in [FeatureNorm::None, FeatureNorm::CenterL2] {
        let mut memory = Retriever::new(keras(), config(norm)).unwrap();
        memory.ingest(paths(&rows), &cached_extraction()).unwrap();
        let mut pg = scratch.retriever(norm);
        let added = pg.ingest(paths(&rows), &cached_extraction()).unwrap();
        assert_eq!(added.ids.len(), rows.len());
        assert_eq!(pg.len().unwrap(), memory.len().unwrap());
        let (ms, ps) = (memory.scales().unwrap(), pg.scales().unwrap());
        for (m, p) in ms.iter().zip(ps) {
            // The same item pairs in both stores (`scale_pairs` of the same count, items in id
            // order): the same median up to rounding.
            assert!((m - p).abs() <= 1e-4 * m, "scales {ms:?} vs {ps:?}");
        }
        let rankings: &[(&str, Ranking)] = match norm {
            FeatureNorm::None => &[
                ("colour", Ranking::Colour),
                ("texture", Ranking::Texture),
                ("combined", Ranking::BOTH),
            ],
            _ => &[("combined_centred", Ranking::BOTH)],
        };
        for (name, ranking) in rankings {
            let (m, p) = (
                precision(&memory, &rows, *ranking),
                precision(&pg, &rows, *ranking),
            );
            eprintln!("{name}: p10 colour/pattern/both memory {m:.3?}, postgres {p:.3?}");
            for (a, b) in m.iter().zip(p) {
                assert!(
                    (a - b).abs() <= 0.01,
                    "{name}: memory {m:?} vs postgres {p:?}"
                );
            }
        }
        pg.store().drop_catalogue().unwrap();
    }
}

#[test]
fn postgres_ingestion_is_idempotent_and_filters_match_memory() {
    let Some(scratch) = Scratch::new("idem") else {
        return;
    };
    let rows = rows();
    let some: Vec<PathBuf> = paths(&rows).into_iter().step_by(5).collect();
    let mut pg = scratch.retriever(FeatureNorm::CenterL2);
    let first = pg.ingest(&some[..30], &cached_extraction()).unwrap();
    assert_eq!((first.ids.len(), first.unchanged), (30, 0));
    let again = pg.ingest(&some, &cached_extraction()).unwrap();
    assert_eq!(again.unchanged, 30, "the same images are not read again");
    assert_eq!(again.ids.len(), some.len() - 30);
    assert_eq!(pg.len().unwrap(), some.len());
    assert_eq!(
        scratch.count(&format!(
            "SELECT count(DISTINCT path) FROM {}.items",
            scratch.schema
        )),
        some.len() as i64
    );
    // The memory store over the same items, in the same order.
    let mut memory = Retriever::new(keras(), config(FeatureNorm::CenterL2)).unwrap();
    memory.ingest(&some, &cached_extraction()).unwrap();
    let paths_of = |hits: Vec<attrex::Hit>| hits.into_iter().map(|h| h.path).collect::<Vec<_>>();
    for i in [0, 7, 20] {
        assert_eq!(
            paths_of(
                pg.query(By::Item(i))
                    .rank(Ranking::Colour)
                    .top(k(5))
                    .unwrap()
            ),
            paths_of(
                memory
                    .query(By::Item(i))
                    .rank(Ranking::Colour)
                    .top(k(5))
                    .unwrap()
            ),
        );
    }
    // Stored attributes and masks filter as in memory.
    let colour_tap = attrex::BlockTap::new(keras(), &[Block::B2]).unwrap();
    let mut index = AttributeIndex::new(256).unwrap();
    let picks: Vec<&Row> = rows.iter().step_by(3).collect();
    let pick_paths: Vec<&PathBuf> = picks.iter().map(|r| &r.path).collect();
    for (row, f) in picks
        .iter()
        .zip(colour_tap.extract_paths(&pick_paths).unwrap())
    {
        index.add(&row.colour, &f.blocks[0]).unwrap();
    }
    let red = Filter::attribute(Facet::Colour, ["red", "pink"]);
    assert!(matches!(
        pg.query(By::Item(0)).filter(red.clone()).top(k(5)),
        Err(RetrieverError::NotTagged { facet: "colour" })
    ));
    pg.tag(Facet::Colour, &index).unwrap();
    memory.tag(Facet::Colour, &index).unwrap();
    let attributes =
        |p: Vec<attrex::Prediction>| p.into_iter().map(|p| p.attribute).collect::<Vec<_>>();
    assert_eq!(
        attributes(pg.predict(&index, Facet::Colour).unwrap()),
        attributes(memory.predict(&index, Facet::Colour).unwrap()),
        "raw vectors recovered from the stored ones predict the same"
    );
    let mask: Vec<bool> = (0..some.len()).map(|i| i % 3 != 1).collect();
    for ranking in [Ranking::BOTH, Ranking::Texture] {
        let p = paths_of(
            pg.query(By::Item(2))
                .rank(ranking)
                .filter(red.clone())
                .filter(&mask)
                .top(k(5))
                .unwrap(),
        );
        let m = paths_of(
            memory
                .query(By::Item(2))
                .rank(ranking)
                .filter(red.clone())
                .filter(&mask)
                .top(k(5))
                .unwrap(),
        );
        assert!(!p.is_empty());
        assert_eq!(p, m, "{ranking:?}");
    }
    // Removal: gone from the results, later positions move down, as in memory.
    let gone = pg.items().unwrap()[3].id;
    assert_eq!(pg.remove(&[gone]).unwrap(), 1);
    assert_eq!(pg.len().unwrap(), some.len() - 1);
    assert!(
        pg.query(By::Item(0))
            .top(k(50))
            .unwrap()
            .iter()
            .all(|h| h.id != gone)
    );
    assert_eq!(pg.items().unwrap()[3].path, some[4]);
}

#[test]
fn postgres_typed_errors() {
    let Some(scratch) = Scratch::new("errors") else {
        return;
    };
    // A refused connection: a port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = format!("postgres://postgres@127.0.0.1:{port}/attrex");
    match PgStore::connect(&closed, PgConfig::default()) {
        Err(e @ PgError::Connect { .. }) => {
            let chain = format!("{:?}", std::error::Error::source(&e));
            assert!(chain.to_lowercase().contains("refused"), "{chain}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        PgStore::connect(&scratch.url, PgConfig::with_schema("Bad-Name")),
        Err(PgError::Config { .. })
    ));
    // A catalogue made with blocks 2 and 4 refuses other dimensions and other weights.
    drop(scratch.retriever(FeatureNorm::None));
    let other_dims = RetrieverConfig {
        colour: attrex::Recipe::Paper(Block::B1),
        ..RetrieverConfig::default()
    };
    let store = scratch.store(scratch.config()).unwrap();
    match Retriever::with_store(keras(), other_dims, store) {
        Err(RetrieverError::Postgres(PgError::Dimension {
            stored, expected, ..
        })) => {
            assert_eq!((stored, expected), ([256, 1024], [64, 1024]));
        }
        other => panic!("{:?}", other.err()),
    }
    let random = std::sync::Arc::new(Backbone::random(
        attrex::ResNetConfig::keras_resnet50(),
        attrex::Preprocessing::Caffe,
        1,
        &crate::device(),
    ));
    let store = scratch.store(scratch.config()).unwrap();
    assert!(matches!(
        Retriever::with_store(random, RetrieverConfig::default(), store).err(),
        Some(RetrieverError::Postgres(PgError::Mismatch {
            field: "weights_id",
            ..
        }))
    ));
    let store = scratch.store(scratch.config()).unwrap();
    assert!(matches!(
        Retriever::with_store(keras(), config(FeatureNorm::L2), store).err(),
        Some(RetrieverError::Postgres(PgError::Mismatch {
            field: "norm",
            ..
        }))
    ));
    // A catalogue of another schema version.
    scratch.sql(&format!(
        "UPDATE {}.meta SET value = '99' WHERE key = 'schema_version'",
        scratch.schema
    ));
    let store = scratch.store(scratch.config()).unwrap();
    assert!(matches!(
        Retriever::with_store(keras(), RetrieverConfig::default(), store).err(),
        Some(RetrieverError::Postgres(PgError::SchemaVersion {
            found: 99,
            expected: 1,
            ..
        }))
    ));
    // A database without the vector extension, for a role that may not create it.
    let (role, db) = (
        format!("t_novector_{}", std::process::id()),
        format!("t_novector_{}", std::process::id()),
    );
    let admin = scratch.store(scratch.config()).unwrap();
    // One statement per call: several in one simple query run as one transaction, where
    // CREATE/DROP DATABASE are refused.
    let _ = admin.execute_sql(&format!("DROP DATABASE IF EXISTS {db}"));
    let _ = admin.execute_sql(&format!("DROP ROLE IF EXISTS {role}"));
    admin
        .execute_sql(&format!("CREATE ROLE {role} LOGIN"))
        .unwrap();
    admin
        .execute_sql(&format!("CREATE DATABASE {db} OWNER {role}"))
        .unwrap();
    let (head, _) = scratch.url.rsplit_once('/').unwrap();
    let host = head.rsplit_once('@').map_or(head, |(_, h)| h);
    let scheme = head.split_once("://").unwrap().0;
    let as_role = format!("{scheme}://{role}@{host}/{db}");
    let got = PgStore::connect(&as_role, PgConfig::default());
    admin
        .execute_sql(&format!("DROP DATABASE IF EXISTS {db}"))
        .unwrap();
    admin
        .execute_sql(&format!("DROP ROLE IF EXISTS {role}"))
        .unwrap();
    match got {
        Err(e @ PgError::NoVectorExtension { .. }) => {
            eprintln!("{e}: {:?}", std::error::Error::source(&e))
        }
        other => panic!("{other:?}"),
    }
}

/// The kill -9 test's child: ingests the dev catalogue slowly (a pause inside each
/// transaction) until the parent kills it. Does nothing unless the parent set `CHILD_VAR`.
#[test]
#[ignore = "run by postgres_ingestion_survives_kill_9 in a child process"]
fn postgres_kill_9_child() {
    let Ok(schema) = std::env::var(CHILD_VAR) else {
        return;
    };
    let url = std::env::var(URL_VAR).unwrap();
    let mut config = PgConfig::with_schema(schema);
    config.batch = NonZeroUsize::new(16).unwrap();
    let mut store = PgStore::connect(&url, config).unwrap();
    store.pause_inside_batches(Duration::from_millis(300));
    let mut r = Retriever::with_store(keras(), RetrieverConfig::default(), store).unwrap();
    r.ingest(paths(&rows()), &cached_extraction()).unwrap();
}

#[test]
fn postgres_ingestion_survives_kill_9() {
    let Some(scratch) = Scratch::new("kill") else {
        return;
    };
    let rows = rows();
    // Features cached once, so that the child spends its time in transactions.
    let mut warm = Retriever::new(keras(), RetrieverConfig::default()).unwrap();
    warm.ingest(paths(&rows), &cached_extraction()).unwrap();
    let s = &scratch.schema;
    let mut before = 0;
    for round in 1..=2 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "postgres::postgres_kill_9_child",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_VAR, s)
            .env(URL_VAR, &scratch.url)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait for a few more committed batches, then for a batch written but not committed.
        let deadline = Instant::now() + Duration::from_secs(300);
        let items = |x: &Scratch| {
            let made = x.count(&format!(
                "SELECT count(*) FROM pg_tables WHERE schemaname = '{s}'"
            ));
            if made == 2 {
                x.count(&format!("SELECT count(*) FROM {s}.items"))
            } else {
                0
            }
        };
        while items(&scratch) < before + 32 {
            assert!(Instant::now() < deadline, "the child did not ingest");
            assert!(child.try_wait().unwrap().is_none(), "the child ended early");
            std::thread::sleep(Duration::from_millis(20));
        }
        let open = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL \
             AND state = 'idle in transaction' AND query LIKE '%{s}.meta%'"
        );
        while scratch.count(&open) == 0 {
            assert!(Instant::now() < deadline, "no open batch seen");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // The server rolls the open transaction back when it sees the connection gone.
        let deadline = Instant::now() + Duration::from_secs(30);
        while scratch.count(&open) > 0 {
            assert!(Instant::now() < deadline, "the killed batch stays open");
            std::thread::sleep(Duration::from_millis(20));
        }
        let n = items(&scratch);
        eprintln!("round {round}: killed -9 with a batch open; {n} items committed");
        assert!(n > before && n < rows.len() as i64);
        assert_eq!(n % 16, 0, "whole batches only");
        before = n;
    }
    // Run again: the rest is added, nothing twice, and the catalogue is settled.
    let mut pg = scratch.retriever(FeatureNorm::None);
    let rerun = pg.ingest(paths(&rows), &cached_extraction()).unwrap();
    assert_eq!(rerun.unchanged as i64, before);
    assert_eq!(rerun.ids.len() as i64, rows.len() as i64 - before);
    let n = Some(rows.len().to_string());
    assert_eq!(
        scratch.sql(&format!(
            "SELECT count(*), count(DISTINCT path) FROM {s}.items"
        ))[0],
        [n.clone(), n],
        "nothing lost, nothing twice"
    );
    assert_eq!(pg.scales().unwrap(), warm.scales().unwrap());
    let top = |hits: Vec<attrex::Hit>| hits.into_iter().map(|h| h.path).collect::<Vec<_>>();
    assert_eq!(
        top(pg
            .query(By::Item(9))
            .rank(Ranking::BOTH)
            .top(k(10))
            .unwrap()),
        top(warm
            .query(By::Item(9))
            .rank(Ranking::BOTH)
            .top(k(10))
            .unwrap())
    );
}
