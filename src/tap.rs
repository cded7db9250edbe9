//! [`BlockTap`], which reads pooled block features from a [`Backbone`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use burn::tensor::{Tensor, TensorData};
use image::{DynamicImage, RgbImage};

use crate::backbone::Backbone;
use crate::error::TapError;
use crate::preprocess::{DecodeLimits, INPUT_SIDE, centre_crop, crop_from_bytes, crop_from_file};

/// One of the five blocks of a ResNet-50 that can be tapped.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Block {
    /// The stem: conv 7x7/2, BN, ReLU, before max-pool (64-d).
    B1 = 1,
    /// The output of stage 1 (`layer1`, `conv2_x`; 256-d): colour.
    B2 = 2,
    /// The output of stage 2 (`layer2`, `conv3_x`; 512-d).
    B3 = 3,
    /// The output of stage 3 (`layer3`, `conv4_x`; 1024-d): texture.
    B4 = 4,
    /// The output of stage 4 (`layer4`, `conv5_x`; 2048-d).
    B5 = 5,
}

impl Block {
    /// All five blocks in order.
    pub const ALL: [Block; 5] = [Block::B1, Block::B2, Block::B3, Block::B4, Block::B5];

    /// The block numbered `n` (1..=5).
    ///
    /// # Errors
    /// [`TapError::NoSuchBlock`] outside 1..=5.
    pub fn new(n: u8) -> Result<Self, TapError> {
        Self::ALL
            .get(usize::from(n).wrapping_sub(1))
            .copied()
            .ok_or(TapError::NoSuchBlock(n))
    }

    /// The block's number, 1..=5.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The block's name, `block1`..`block5`.
    pub fn name(self) -> String {
        format!("block{}", self.number())
    }

    fn index(self) -> usize {
        usize::from(self.number()) - 1
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "block{}", self.number())
    }
}

/// Splits each tapped block's pooled rows (`[n][dim]`, row-major) into one [`Features`] per
/// image.
fn per_image(pooled: impl IntoIterator<Item = Vec<f32>>, n: usize) -> Vec<Features> {
    let mut out = vec![Features { blocks: Vec::new() }; n];
    for values in pooled {
        let dim = values.len() / n.max(1);
        for (f, row) in out.iter_mut().zip(values.chunks_exact(dim.max(1))) {
            f.blocks.push(row.to_vec());
        }
    }
    out
}

/// Name and dimension of one tapped block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapInfo {
    /// The block.
    pub block: Block,
    /// `block1`..`block5`.
    pub name: String,
    /// Length of its pooled vector.
    pub dim: usize,
}

/// Pooled features of one image: one vector per tapped block, in block order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Features {
    /// `blocks[i]` belongs to the tap's `i`-th block.
    pub blocks: Vec<Vec<f32>>,
}

/// Global-average-pooled outputs of a chosen set of ResNet blocks.
///
/// The network runs only up to the deepest block asked for: a colour tap on block 2 never runs
/// stages 3 to 5.
///
/// ```no_run
/// use std::sync::Arc;
/// use attrex::{Backbone, Block, BlockTap};
///
/// let device = attrex::default_device()?;
/// let backbone = Arc::new(Backbone::load(None, &device)?);
/// let tap = BlockTap::new(backbone, &[Block::B2, Block::B4])?;
/// let features = tap.extract_paths(&["shirt.jpg"])?;
/// assert_eq!(features[0].blocks[0].len(), 256);
/// assert_eq!(features[0].blocks[1].len(), 1024);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct BlockTap {
    backbone: Arc<Backbone>,
    blocks: Vec<Block>,
    batch_size: usize,
}

impl BlockTap {
    /// A tap on `blocks` (any order; duplicates are merged) of `backbone`.
    ///
    /// # Errors
    /// [`TapError::NoBlocks`] for an empty list.
    pub fn new(backbone: Arc<Backbone>, blocks: &[Block]) -> Result<Self, TapError> {
        let mut blocks = blocks.to_vec();
        blocks.sort();
        blocks.dedup();
        if blocks.is_empty() {
            return Err(TapError::NoBlocks);
        }
        Ok(Self {
            backbone,
            blocks,
            batch_size: 8,
        })
    }

    /// A tap on all five blocks.
    pub fn all(backbone: Arc<Backbone>) -> Self {
        Self {
            backbone,
            blocks: Block::ALL.to_vec(),
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

    /// The tapped blocks with their names and dimensions, in block order.
    pub fn taps(&self) -> Vec<TapInfo> {
        let dims = self.backbone.config().block_dims();
        self.blocks
            .iter()
            .map(|&block| TapInfo {
                block,
                name: block.name(),
                dim: dims[block.index()],
            })
            .collect()
    }

    /// The pooled features `[n, dim]` of each tapped block for a preprocessed batch
    /// `[n, 3, h, w]` on the backbone's device.
    ///
    /// # Errors
    /// [`TapError::InputShape`] for a batch that is empty, not 3-channel, or smaller than 32
    /// pixels a side.
    pub fn forward(&self, input: Tensor<4>) -> Result<Vec<Tensor<2>>, TapError> {
        const MIN_SIDE: usize = 32;
        let dims = input.dims();
        if dims[0] == 0 || dims[1] != 3 || dims[2] < MIN_SIDE || dims[3] < MIN_SIDE {
            return Err(TapError::InputShape {
                got: dims.to_vec(),
                min_side: MIN_SIDE,
            });
        }
        let wanted = self.wanted();
        let Some(native) = &self.backbone.native else {
            // Checked on the device, without reading the batch back.
            if !input.clone().is_finite().all().into_scalar::<bool>() {
                return Err(TapError::NotFinite);
            }
            return Ok(self.backbone.net().pooled(input, wanted));
        };
        let device = input.device();
        let values: Vec<f32> = input
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("converted to f32 just above");
        if values.iter().any(|v| !v.is_finite()) {
            return Err(TapError::NotFinite);
        }
        let pooled = native.pooled(&values, dims, wanted);
        Ok(pooled
            .into_iter()
            .map(|v| {
                let dim = v.len() / dims[0];
                Tensor::from_data(TensorData::new(v, [dims[0], dim]), &device)
            })
            .collect())
    }

    /// Which of the five blocks the tap reads.
    fn wanted(&self) -> [bool; 5] {
        let mut wanted = [false; 5];
        for b in &self.blocks {
            wanted[b.index()] = true;
        }
        wanted
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
        let (buf, shape) = (
            self.backbone.crops_to_buffer(crops),
            [crops.len(), 3, INPUT_SIDE, INPUT_SIDE],
        );
        match &self.backbone.native {
            Some(native) => Ok(per_image(
                native.pooled(&buf, shape, self.wanted()),
                shape[0],
            )),
            None => self.extract_tensor(Tensor::from_data(
                TensorData::new(buf, shape),
                self.backbone.device(),
            )),
        }
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
