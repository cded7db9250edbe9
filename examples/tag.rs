//! The shop's main job: tag product photos with a colour and a texture, learnt from folders of
//! labelled examples, training-free.
//!
//! ```text
//! cargo run --release --example tag -- --colours DIR --textures DIR IMAGE_OR_FOLDER...
//!     [--min-votes 3] [--k 5] [--device flex] [--weights PATH] [--engine auto]
//!     [--cache-dir DIR] [--no-cache]
//! ```
//!
//! `--colours` and `--textures` are folders of class folders (`red/`, `navy/`, ... and
//! `striped/`, `plain/`, ...). Their examples go into two `AttributeIndex`es, of the product-aware
//! colour recipe and of the texture recipe; the indexes are cached on disk (under the cache
//! folder, keyed by the weights, the recipe, k and each example's path, size and modification
//! time), so a second run reads no example image. Each photo then takes one forward pass for
//! both recipes, and prints one line:
//!
//! ```text
//! path=photo.jpg colour=red colour_votes=4/5 texture=striped texture_votes=3/5
//! ```
//!
//! A tag whose winner has fewer than `--min-votes` of the k votes is `unsure` (the best guess
//! follows as `colour_guess=`): a shop would rather leave a tag empty than set a wrong one.
//! An unreadable photo is reported on stderr, the others are still tagged, and the exit status
//! is then 1.

#[macro_use]
#[path = "common/mod.rs"]
mod common;

use std::error::Error;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use attrex::{
    Abstain, AttributeIndex, Backbone, BlockTap, Dataset, ExtractOptions, IMAGE_EXTENSIONS,
    OnUnreadable, Prediction, Recipe, extract_dataset,
};
use clap::Parser;
use sha2::{Digest, Sha256};

/// Tags photos with a colour and a texture from folders of labelled examples.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Folder of colour class folders (the examples).
    #[arg(long, value_name = "DIR")]
    colours: PathBuf,
    /// Folder of texture class folders (the examples).
    #[arg(long, value_name = "DIR")]
    textures: PathBuf,
    /// Photos to tag, or folders of them.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// The fewest of the k votes a tag needs; fewer is `unsure`.
    #[arg(long, default_value_t = 3)]
    min_votes: usize,
    /// Neighbours that vote.
    #[arg(long, default_value = "5")]
    k: NonZeroUsize,
    #[command(flatten)]
    setup: common::Setup,
}

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => common::fail(e.as_ref()),
    }
}

/// Tags every photo; `Ok(false)` when some could not be read.
fn run() -> Result<bool, Box<dyn Error>> {
    let args = Args::parse();
    if args.min_votes > args.k.get() {
        return Err(format!(
            "--min-votes {} is more than the {} votes there are: every tag would be unsure",
            args.min_votes, args.k
        )
        .into());
    }
    let backbone = Arc::new(args.setup.backbone()?);
    let abstain = Abstain::new(args.min_votes, None)?;
    let colour = index(&backbone, &args, &args.colours, Recipe::Colour)?.with_abstain(abstain);
    let texture = index(&backbone, &args, &args.textures, Recipe::Texture)?.with_abstain(abstain);

    let photos = photos(&args.images)?;
    if photos.is_empty() {
        return Err("no photos to tag (no files with an image extension)".into());
    }
    // One forward pass gives both recipes.
    let tap = BlockTap::with_recipes(backbone, &[Recipe::Colour, Recipe::Texture])?;
    let options = ExtractOptions {
        on_unreadable: OnUnreadable::Skip,
        cache: args.setup.cache(),
        progress: (photos.len() > 16)
            .then(|| common::progress("photos"))
            .flatten(),
    };
    let found = extract_dataset(&tap, photos.iter().map(PathBuf::as_path), &options)?;
    let colours = found.recipe(Recipe::Colour).ok_or("no colour vectors")?;
    let textures = found.recipe(Recipe::Texture).ok_or("no texture vectors")?;
    let (cp, tp) = (
        colour.classify_many(colours)?,
        texture.classify_many(textures)?,
    );
    for ((path, c), t) in found.paths.iter().zip(&cp).zip(&tp) {
        out!(
            "path={} {} {}",
            path.display(),
            tag("colour", c, args.k),
            tag("texture", t, args.k)
        );
    }
    for e in &found.skipped {
        eprintln!("error={e}");
    }
    Ok(found.skipped.is_empty())
}

/// `colour=red colour_votes=4/5`, or `colour=unsure colour_votes=2/5 colour_guess=red`.
fn tag(facet: &str, p: &Prediction, k: NonZeroUsize) -> String {
    let votes = p.winner_votes();
    match p.answer() {
        Some(a) => format!("{facet}={a} {facet}_votes={votes}/{k}"),
        None => format!(
            "{facet}=unsure {facet}_votes={votes}/{k} {facet}_guess={}",
            p.attribute
        ),
    }
}

/// The photos named, with folders expanded to their image files (sorted, not recursive).
fn photos(args: &[PathBuf]) -> Result<Vec<PathBuf>, Box<dyn Error>> {
    let mut out = Vec::new();
    for a in args {
        if a.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(a)
                .map_err(|e| format!("{}: {e}", a.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(a.clone());
        }
    }
    Ok(out)
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// The index of `recipe` vectors of the examples under `dir`: from the cache when the same
/// examples (by path, size and modification time), weights, recipe and k made one, else
/// extracted, built and cached.
fn index(
    backbone: &Arc<Backbone>,
    args: &Args,
    dir: &Path,
    recipe: Recipe,
) -> Result<AttributeIndex, Box<dyn Error>> {
    let data = Dataset::open(dir)?;
    let cache = args.setup.cache();
    let file = match &cache {
        Some(c) => Some(c.dir.join("indexes").join(format!(
            "{}-{}.idx",
            recipe.name(),
            key(backbone, &data, recipe, args.k)?
        ))),
        None => None,
    };
    if let Some(f) = &file
        && let Ok(index) = AttributeIndex::load(f)
        && index.recipe() == Some(recipe.name().as_str())
    {
        eprintln!("{}: {} examples (cached index)", dir.display(), index.len());
        return Ok(index.with_k(args.k));
    }
    let tap = BlockTap::with_recipes(backbone.clone(), &[recipe])?;
    let options = ExtractOptions {
        on_unreadable: OnUnreadable::Fail,
        cache,
        progress: common::progress(&format!("{recipe} examples")),
    };
    let found = extract_dataset(&tap, data.paths(), &options)?;
    let labels = found.select(&data.labels());
    let rows = found.recipe(recipe).ok_or("no vectors of the recipe")?;
    let mut index = AttributeIndex::new(rows.dim())?
        .with_k(args.k)
        .with_recipe(recipe.name());
    for (row, &label) in rows.iter().zip(&labels) {
        index.add(data.classes[label].clone(), row)?;
    }
    eprintln!(
        "{}: {} examples in {} classes",
        dir.display(),
        index.len(),
        data.classes.len()
    );
    if let Some(f) = &file {
        if let Some(parent) = f.parent() {
            std::fs::create_dir_all(parent)?;
        }
        index.save(f)?;
    }
    Ok(index)
}

/// What the cached index depends on, hashed: weights, recipe, k, and every example's class,
/// path, size and modification time.
fn key(
    backbone: &Backbone,
    data: &Dataset,
    recipe: Recipe,
    k: NonZeroUsize,
) -> Result<String, Box<dyn Error>> {
    let mut h = Sha256::new();
    h.update(backbone.weights_id().as_bytes());
    h.update(recipe.name().as_bytes());
    h.update(k.get().to_le_bytes());
    for item in &data.items {
        let meta =
            std::fs::metadata(&item.path).map_err(|e| format!("{}: {e}", item.path.display()))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        h.update(data.classes[item.label].as_bytes());
        h.update(item.path.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(meta.len().to_le_bytes());
        h.update(modified.to_le_bytes());
    }
    Ok(h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
