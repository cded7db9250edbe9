//! [`BlockTap`], which reads pooled block features from a [`Backbone`].

use std::path::Path;
use std::sync::Arc;

use burn::tensor::{Tensor, TensorData};
use image::{DynamicImage, RgbImage};

use crate::arch::Block;
use crate::backbone::Backbone;
use crate::error::TapError;
use crate::preprocess::{DecodeLimits, INPUT_SIDE, centre_crop, crop_from_bytes, crop_from_file};
use crate::recipe::{Prepared, Recipe};

/// One output of a tap: its recipe, the block the recipe reads, a short name and the length
/// of its vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapInfo {
    /// The recipe.
    pub recipe: Recipe,
    /// The block it reads.
    pub block: Block,
    /// `block1`..`block5` for the paper's recipe, else `colour` or `texture`.
    pub name: String,
    /// Length of its vectors.
    pub dim: usize,
}

/// The vectors of one image: one per tap output, in the tap's order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Features {
    /// `blocks[i]` belongs to the tap's `i`-th output ([`BlockTap::taps`]).
    pub blocks: Vec<Vec<f32>>,
}

/// Vectors of ResNet blocks: global-average-pooled blocks (the paper's recipe), or
/// product-aware recipes ([`Recipe`]) built on the same forward pass.
///
/// The network runs only up to the deepest block asked for: a colour tap on block 2 never runs
/// stages 3 to 5, and any set of recipes shares one pass.
///
/// ```no_run
/// use std::sync::Arc;
/// use attrex::{Backbone, Block, BlockTap, Recipe};
///
/// let device = attrex::default_device()?;
/// let backbone = Arc::new(Backbone::load(None, &device)?);
/// let tap = BlockTap::new(backbone.clone(), &[Block::B2, Block::B4])?;
/// let features = tap.extract_paths(&["shirt.jpg"])?;
/// assert_eq!(features[0].blocks[0].len(), 256);
/// assert_eq!(features[0].blocks[1].len(), 1024);
/// // The product-aware recipes: colour (640-d) and texture (1024-d), one pass to block 4.
/// let product = BlockTap::with_recipes(backbone, &Recipe::PRODUCT)?;
/// let features = product.extract_paths(&["shirt.jpg"])?;
/// assert_eq!(features[0].blocks[0].len(), 640);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct BlockTap {
    backbone: Arc<Backbone>,
    recipes: Vec<Recipe>,
    batch_size: usize,
}

impl BlockTap {
    /// A tap on `blocks` (any order; duplicates are merged; outputs in block order), each
    /// globally average-pooled: the paper's recipe.
    ///
    /// # Errors
    /// [`TapError::NoBlocks`] for an empty list.
    pub fn new(backbone: Arc<Backbone>, blocks: &[Block]) -> Result<Self, TapError> {
        let mut blocks = blocks.to_vec();
        blocks.sort();
        blocks.dedup();
        let recipes: Vec<Recipe> = blocks.into_iter().map(Recipe::Paper).collect();
        Self::with_recipes(backbone, &recipes)
    }

    /// A tap whose outputs are `recipes`, in the order given (duplicates are merged).
    ///
    /// # Errors
    /// [`TapError::NoBlocks`] for an empty list.
    pub fn with_recipes(backbone: Arc<Backbone>, recipes: &[Recipe]) -> Result<Self, TapError> {
        let mut unique: Vec<Recipe> = Vec::with_capacity(recipes.len());
        for &r in recipes {
            if !unique.contains(&r) {
                unique.push(r);
            }
        }
        if unique.is_empty() {
            return Err(TapError::NoBlocks);
        }
        Ok(Self {
            backbone,
            recipes: unique,
            batch_size: 8,
        })
    }

    /// A tap on all five blocks.
    pub fn all(backbone: Arc<Backbone>) -> Self {
        Self {
            backbone,
            recipes: Block::ALL.map(Recipe::Paper).to_vec(),
            batch_size: 8,
        }
    }

    /// Sets how many images go through the network at once (default 8; at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Images per forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The backbone.
    pub fn backbone(&self) -> &Arc<Backbone> {
        &self.backbone
    }

    /// The outputs' recipes, in order.
    pub fn recipes(&self) -> &[Recipe] {
        &self.recipes
    }

    /// The outputs with their names and dimensions, in order.
    pub fn taps(&self) -> Vec<TapInfo> {
        let config = self.backbone.config();
        self.recipes
            .iter()
            .map(|&recipe| TapInfo {
                recipe,
                block: recipe.block(),
                name: match recipe {
                    Recipe::Paper(b) => b.name(),
                    Recipe::Colour => "colour".into(),
                    _ => "texture".into(),
                },
                dim: recipe.dim(config),
            })
            .collect()
    }

    /// The vector `[n, dim]` of each output for a preprocessed batch `[n, 3, h, w]` on the
    /// backbone's device.
    ///
    /// # Errors
    /// [`TapError::InputShape`] for a batch that is empty, not 3-channel, or smaller than 32
    /// pixels a side; [`TapError::NotFinite`] for a NaN or infinity in it;
    /// [`TapError::NeedsPixels`] for a recipe that reads the image's pixels (colour): use the
    /// image calls ([`extract_paths`](Self::extract_paths), ...) for those.
    pub fn forward(&self, input: Tensor<4>) -> Result<Vec<Tensor<2>>, TapError> {
        const MIN_SIDE: usize = 32;
        let dims = input.dims();
        if dims[0] == 0 || dims[1] != 3 || dims[2] < MIN_SIDE || dims[3] < MIN_SIDE {
            return Err(TapError::InputShape {
                got: dims.to_vec(),
                min_side: MIN_SIDE,
            });
        }
        if let Some(&r) = self.recipes.iter().find(|r| r.needs_pixels()) {
            return Err(TapError::NeedsPixels { recipe: r.name() });
        }
        let device = input.device();
        let n = dims[0];
        if self.is_plain() && self.backbone.native.is_none() {
            // Checked on the device, without reading the batch back.
            if !input.clone().is_finite().all().into_scalar::<bool>() {
                return Err(TapError::NotFinite);
            }
            let (pooled, _) = self.backbone.net().pooled(input, self.wanted(), &[]);
            return Ok(pooled);
        }
        let prepared = self.prepare(&vec![None; n], [dims[2], dims[3]]);
        let pooled = match &self.backbone.native {
            Some(_) => {
                let values: Vec<f32> = input
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("converted to f32 just above");
                if values.iter().any(|v| !v.is_finite()) {
                    return Err(TapError::NotFinite);
                }
                self.run_host(&values, dims, &prepared)
            }
            None => {
                if !input.clone().is_finite().all().into_scalar::<bool>() {
                    return Err(TapError::NotFinite);
                }
                self.run_burn(input, &prepared)
            }
        };
        Ok(self
            .finish(&prepared, pooled)
            .into_iter()
            .map(|v| {
                let dim = v.len() / n;
                Tensor::from_data(TensorData::new(v, [n, dim]), &device)
            })
            .collect())
    }

    /// Whether every output is a plain block average (the paper's recipe).
    fn is_plain(&self) -> bool {
        self.recipes.iter().all(|r| matches!(r, Recipe::Paper(_)))
    }

    /// Which of the five blocks are averaged plainly.
    fn wanted(&self) -> [bool; 5] {
        let mut wanted = [false; 5];
        for r in &self.recipes {
            if let Recipe::Paper(b) = r {
                wanted[b.index()] = true;
            }
        }
        wanted
    }

    /// What each output's recipe needs of each image: `[output][image]`. `crops` holds the
    /// input squares, or `None` when only a tensor of `side` is at hand.
    fn prepare(&self, crops: &[Option<&RgbImage>], side: [usize; 2]) -> Vec<Vec<Prepared>> {
        use rayon::prelude::*;
        let config = self.backbone.config();
        self.recipes
            .iter()
            .map(|&r| {
                let map = config.map_side(r.block(), side[0].min(side[1]));
                crops.par_iter().map(|c| r.prepare(*c, map)).collect()
            })
            .collect()
    }

    /// The pooled block of each output, `[output][n * dim]`, by the native engine from a host
    /// NCHW buffer.
    fn run_host(
        &self,
        buf: &[f32],
        shape: [usize; 4],
        prepared: &[Vec<Prepared>],
    ) -> Vec<Vec<f32>> {
        let native = self
            .backbone
            .native
            .as_ref()
            .expect("run_host is called only with the native engine");
        let weights = self.weight_requests(prepared);
        let requests: Vec<(usize, &[f32])> = weights
            .iter()
            .flatten()
            .map(|(b, w)| (*b, w.as_slice()))
            .collect();
        let (plain, weighted) = native.pooled(buf, shape, self.wanted(), &requests);
        self.gather(plain, weighted, &weights)
    }

    /// As [`run_host`](Self::run_host), by Burn on the backbone's device.
    fn run_burn(&self, input: Tensor<4>, prepared: &[Vec<Prepared>]) -> Vec<Vec<f32>> {
        let device = input.device();
        let n = input.dims()[0];
        let weights = self.weight_requests(prepared);
        let requests: Vec<(usize, Tensor<3>)> = weights
            .iter()
            .flatten()
            .map(|(b, w)| {
                let side = (w.len() / n).isqrt();
                let t = Tensor::from_data(TensorData::new(w.clone(), [n, side, side]), &device);
                (*b, t)
            })
            .collect();
        let (plain, weighted) = self.backbone.net().pooled(input, self.wanted(), &requests);
        let host = |t: Tensor<2>| {
            t.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("converted to f32 just above")
        };
        self.gather(
            plain.into_iter().map(host).collect(),
            weighted.into_iter().map(host).collect(),
            &weights,
        )
    }

    /// Each output's pooled block, `[output][n * dim]`, from the plain averages (in block
    /// order) and the weighted ones (in output order, for the outputs with weights).
    fn gather(
        &self,
        plain: Vec<Vec<f32>>,
        weighted: Vec<Vec<f32>>,
        weights: &[Option<(usize, Vec<f32>)>],
    ) -> Vec<Vec<f32>> {
        let mut it = plain.into_iter();
        let plain: Vec<Option<Vec<f32>>> = self
            .wanted()
            .iter()
            .map(|&w| if w { it.next() } else { None })
            .collect();
        let mut weighted = weighted.into_iter();
        self.recipes
            .iter()
            .zip(weights)
            .map(|(r, w)| match w {
                Some(_) => weighted
                    .next()
                    .expect("one weighted pool per weighted output"),
                None => plain[r.block().index()]
                    .clone()
                    .expect("a plain average for every output without weights"),
            })
            .collect()
    }

    /// The weights of each output that pools under weights: `(block index, n * cells)`.
    fn weight_requests(&self, prepared: &[Vec<Prepared>]) -> Vec<Option<(usize, Vec<f32>)>> {
        self.recipes
            .iter()
            .zip(prepared)
            .map(|(r, per_image)| {
                per_image.first()?.weights.as_ref()?;
                let all = per_image
                    .iter()
                    .flat_map(|p| p.weights.iter().flatten().copied())
                    .collect();
                Some((r.block().index(), all))
            })
            .collect()
    }

    /// The recipes' vectors per image from each output's pooled block.
    fn finish(&self, prepared: &[Vec<Prepared>], pooled: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
        self.recipes
            .iter()
            .zip(prepared)
            .zip(pooled)
            .map(|((r, per_image), values)| {
                let n = per_image.len();
                let dim = values.len() / n.max(1);
                per_image
                    .iter()
                    .zip(values.chunks_exact(dim.max(1)))
                    .flat_map(|(p, row)| r.finish(p, row))
                    .collect()
            })
            .collect()
    }

    /// Features of decoded images (one batch), preprocessed on the host.
    pub(crate) fn extract_refs(&self, images: &[&DynamicImage]) -> Result<Vec<Features>, TapError> {
        use rayon::prelude::*;
        let crops: Vec<RgbImage> = images.par_iter().map(|i| centre_crop(i)).collect();
        self.extract_crops(&crops)
    }

    /// Features of input squares (one batch, `224 x 224` each). The native engine takes the
    /// host buffer as it is; Burn gets it as a tensor on the backbone's device.
    pub(crate) fn extract_crops(&self, crops: &[RgbImage]) -> Result<Vec<Features>, TapError> {
        if crops.is_empty() {
            return Err(TapError::EmptyBatch);
        }
        let n = crops.len();
        let shape = [n, 3, INPUT_SIDE, INPUT_SIDE];
        let buf = self.backbone.crops_to_buffer(crops);
        let refs: Vec<Option<&RgbImage>> = crops.iter().map(Some).collect();
        let prepared = self.prepare(&refs, [INPUT_SIDE, INPUT_SIDE]);
        let pooled = match &self.backbone.native {
            Some(_) => self.run_host(&buf, shape, &prepared),
            None => self.run_burn(
                Tensor::from_data(TensorData::new(buf, shape), self.backbone.device()),
                &prepared,
            ),
        };
        Ok(per_image(self.finish(&prepared, pooled), n))
    }

    /// Features of a preprocessed batch, read back to the host, one [`Features`] per image.
    ///
    /// # Errors
    /// As [`BlockTap::forward`].
    pub fn extract_tensor(&self, input: Tensor<4>) -> Result<Vec<Features>, TapError> {
        let n = input.dims()[0];
        let pooled = self.forward(input)?.into_iter().map(|t| {
            t.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("converted to f32 just above")
        });
        Ok(per_image(pooled, n))
    }

    /// Features of decoded images, preprocessed as the weights expect.
    ///
    /// # Errors
    /// [`TapError::EmptyBatch`] for no images.
    pub fn extract_images(&self, images: &[DynamicImage]) -> Result<Vec<Features>, TapError> {
        if images.is_empty() {
            return Err(TapError::EmptyBatch);
        }
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch_size) {
            let refs: Vec<&DynamicImage> = chunk.iter().collect();
            out.extend(self.extract_refs(&refs)?);
        }
        Ok(out)
    }

    /// Features of encoded images held in memory (the bytes of a PNG, JPEG... file, as an
    /// upload or a database row gives them), decoded in parallel under the default limits.
    /// Errors name the image as `bytes[i]`, its position in `images`.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # use attrex::{Backbone, Block, BlockTap};
    /// # let tap = BlockTap::new(Arc::new(Backbone::load(None, &attrex::default_device()?)?), &[Block::B2])?;
    /// let upload: Vec<u8> = std::fs::read("shirt.jpg")?;
    /// let features = tap.extract_bytes(&[upload.as_slice()])?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`TapError::Image`] for the first image (in order) that cannot be decoded;
    /// [`TapError::EmptyBatch`] for none.
    pub fn extract_bytes<B: AsRef<[u8]> + Sync>(
        &self,
        images: &[B],
    ) -> Result<Vec<Features>, TapError> {
        use rayon::prelude::*;
        if images.is_empty() {
            return Err(TapError::EmptyBatch);
        }
        let mut out = Vec::with_capacity(images.len());
        for (c, chunk) in images.chunks(self.batch_size).enumerate() {
            let crops = chunk
                .par_iter()
                .enumerate()
                .map(|(i, b)| {
                    let name = format!("bytes[{}]", c * self.batch_size + i);
                    crop_from_bytes(b.as_ref(), Path::new(&name), &DecodeLimits::default())
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.extend(self.extract_crops(&crops)?);
        }
        Ok(out)
    }

    /// Features of image files, decoded (in parallel, one file per rayon task) under the
    /// default limits.
    ///
    /// # Errors
    /// [`TapError::Image`] naming the first file (in order) that cannot be read;
    /// [`TapError::EmptyBatch`] for no paths.
    pub fn extract_paths<P: AsRef<Path> + Sync>(
        &self,
        paths: &[P],
    ) -> Result<Vec<Features>, TapError> {
        use rayon::prelude::*;
        if paths.is_empty() {
            return Err(TapError::EmptyBatch);
        }
        let mut out = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(self.batch_size) {
            let limits = DecodeLimits::default();
            let crops = chunk
                .par_iter()
                .map(|p| crop_from_file(p.as_ref(), &limits))
                .collect::<Result<Vec<_>, _>>()?;
            out.extend(self.extract_crops(&crops)?);
        }
        Ok(out)
    }
}

/// Splits each output's rows (`[n][dim]`, row-major) into one [`Features`] per image.
fn per_image(outputs: impl IntoIterator<Item = Vec<f32>>, n: usize) -> Vec<Features> {
    let mut out = vec![Features { blocks: Vec::new() }; n];
    for values in outputs {
        let dim = values.len() / n.max(1);
        for (f, row) in out.iter_mut().zip(values.chunks_exact(dim.max(1))) {
            f.blocks.push(row.to_vec());
        }
    }
    out
}
