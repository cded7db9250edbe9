//! The shape of a bottleneck ResNet, written once.
//!
//! [`ResNetConfig`] describes a network (ResNet-50 by default); `ResNetConfig::topology` lays
//! it out as a `Topology`: the stem convolution, then four stages of `Bottleneck`s, each
//! three convolutions plus a projection shortcut (`downsample`) in the first block of a stage.
//! Everything else in attrex walks this one structure: the weight import names its tensors
//! after it, folding fills it with weights (`Topology::try_map`), and both engines build
//! their layers from the folded copy. Nothing here depends on the rest of the crate.
//!
//! ```text
//! stem   conv1 7x7/2 (64)                                   block 1
//! layer1 3 x [1x1 64, 3x3 64, 1x1 256]   + downsample in .0  block 2
//! layer2 4 x [1x1 128, 3x3 128, 1x1 512] + downsample in .0  block 3
//! layer3 6 x [1x1 256, 3x3 256, 1x1 1024] + downsample in .0 block 4
//! layer4 3 x [1x1 512, 3x3 512, 1x1 2048] + downsample in .0 block 5
//! ```

use burn::config::Config;
use serde::{Deserialize, Serialize};

/// Where the stride-2 of the first bottleneck of stages 3 to 5 sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Variant {
    /// ResNet v1 (He et al. 2015, Caffe and Keras weights): on the first 1x1 convolution.
    V1,
    /// ResNet v1.5 (torchvision weights): on the 3x3 convolution.
    V1_5,
}

/// The shape of a ResNet with bottleneck blocks. The defaults are ResNet-50.
#[derive(Config, Debug, PartialEq)]
pub struct ResNetConfig {
    /// Where the stride of a downsampling bottleneck sits.
    #[config(default = "Variant::V1")]
    pub variant: Variant,
    /// Bottlenecks per stage.
    #[config(default = "[3, 4, 6, 3]")]
    pub layers: [usize; 4],
    /// Output channels of the stem convolution (block 1).
    #[config(default = 64)]
    pub stem_width: usize,
    /// Inner width of the bottlenecks of each stage; a stage outputs `width * expansion`.
    #[config(default = "[64, 128, 256, 512]")]
    pub widths: [usize; 4],
    /// Ratio of a bottleneck's output to its inner width.
    #[config(default = 4)]
    pub expansion: usize,
    /// Classes of the final linear layer; 0 builds no classifier head.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Epsilon of the BatchNorm layers that are folded at load time.
    #[config(default = 1e-5)]
    pub bn_epsilon: f64,
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
    /// [`NoSuchBlock`] outside 1..=5.
    pub fn new(n: u8) -> Result<Self, NoSuchBlock> {
        Self::ALL
            .get(usize::from(n).wrapping_sub(1))
            .copied()
            .ok_or(NoSuchBlock(n))
    }

    /// The block's number, 1..=5.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The block's name, `block1`..`block5`.
    pub fn name(self) -> String {
        format!("block{}", self.number())
    }

    pub(crate) fn index(self) -> usize {
        usize::from(self.number()) - 1
    }
}

impl std::fmt::Display for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "block{}", self.number())
    }
}

/// A block number outside 1..=5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("block {0} does not exist: ResNet-50 has blocks 1 to 5")]
pub struct NoSuchBlock(pub u8);

/// One convolution of the network, named as torchvision names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConvSpec {
    /// torchvision name of the convolution (`layer2.0.conv1`).
    pub conv: String,
    /// torchvision name of its BatchNorm (`layer2.0.bn1`).
    pub bn: String,
    /// Input and output channels.
    pub channels: [usize; 2],
    /// Square kernel side.
    pub kernel: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (all sides).
    pub padding: usize,
}

impl ConvSpec {
    fn new(conv: String, bn: String, channels: [usize; 2], kernel: usize, stride: usize) -> Self {
        Self {
            conv,
            bn,
            channels,
            kernel,
            stride,
            padding: kernel / 2,
        }
    }

    /// Shape of the torchvision (OIHW) weight.
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.channels[1], self.channels[0], self.kernel, self.kernel]
    }
}

/// One bottleneck block: 1x1, 3x3, 1x1 convolutions, and a projection shortcut in the first
/// block of each stage. `C` is whatever stands for a convolution: its [`ConvSpec`], its folded
/// weights, or an engine's layer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bottleneck<C> {
    /// The first 1x1 convolution (`conv1`).
    pub conv1: C,
    /// The 3x3 convolution (`conv2`).
    pub conv2: C,
    /// The last 1x1 convolution (`conv3`), which the shortcut is added to.
    pub conv3: C,
    /// The projection shortcut (`downsample.0`), first block of a stage only.
    pub downsample: Option<C>,
}

/// The convolutions of a ResNet in its shape: the stem (block 1), then four stages (blocks 2
/// to 5) of bottlenecks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Topology<C> {
    /// The stem convolution (`conv1`), followed by ReLU and a 3x3/2 max-pool.
    pub stem: C,
    /// The bottlenecks of `layer1`..`layer4`.
    pub stages: [Vec<Bottleneck<C>>; 4],
}

impl<C> Topology<C> {
    /// Every convolution in forward order: the stem, then per bottleneck `conv1`, `conv2`,
    /// `conv3` and the shortcut.
    pub fn iter(&self) -> impl Iterator<Item = &C> {
        std::iter::once(&self.stem).chain(self.stages.iter().flatten().flat_map(|b| {
            [&b.conv1, &b.conv2, &b.conv3]
                .into_iter()
                .chain(b.downsample.as_ref())
        }))
    }

    /// The same shape with each convolution mapped by `f`, called in forward order; the first
    /// error stops the walk.
    ///
    /// # Errors
    /// The first error `f` returns.
    pub fn try_map<D, E>(&self, mut f: impl FnMut(&C) -> Result<D, E>) -> Result<Topology<D>, E> {
        let stem = f(&self.stem)?;
        let mut stages: [Vec<Bottleneck<D>>; 4] = Default::default();
        for (out, stage) in stages.iter_mut().zip(&self.stages) {
            for b in stage {
                out.push(Bottleneck {
                    conv1: f(&b.conv1)?,
                    conv2: f(&b.conv2)?,
                    conv3: f(&b.conv3)?,
                    downsample: b.downsample.as_ref().map(&mut f).transpose()?,
                });
            }
        }
        Ok(Topology { stem, stages })
    }

    /// The same shape with each convolution mapped by `f`, called in forward order.
    pub fn map<D>(&self, mut f: impl FnMut(&C) -> D) -> Topology<D> {
        match self.try_map(|c| Ok::<D, std::convert::Infallible>(f(c))) {
            Ok(t) => t,
            Err(never) => match never {},
        }
    }
}

impl ResNetConfig {
    /// ResNet-50 v1 with the Keras BatchNorm epsilon (0.001), for the Keras ImageNet weights.
    pub fn keras_resnet50() -> Self {
        Self::new().with_variant(Variant::V1).with_bn_epsilon(1e-3)
    }

    /// ResNet-50 v1.5 as in torchvision (BatchNorm epsilon 1e-5).
    pub fn torchvision_resnet50() -> Self {
        Self::new().with_variant(Variant::V1_5)
    }

    /// Pooled dimension of each of the five blocks.
    pub fn block_dims(&self) -> [usize; 5] {
        let w = self.widths.map(|w| w * self.expansion);
        [self.stem_width, w[0], w[1], w[2], w[3]]
    }

    /// The side of block `block`'s feature map for a square input of side `input`: the stem
    /// halves it (7x7/2, padding 3), the max-pool halves it again (3x3/2, padding 1), and each
    /// stage after the first halves it once more (224: 112, 56, 28, 14, 7).
    pub fn map_side(&self, block: Block, input: usize) -> usize {
        let half = |s: usize| s.div_ceil(2);
        let stem = (input + 2 * 3 - 7) / 2 + 1;
        match block {
            Block::B1 => stem,
            b => (2..b.number()).fold(half(stem), |s, _| half(s)),
        }
    }

    /// The network laid out: the stem (7x7/2, padding 3), then per stage its bottlenecks,
    /// the first of each stage with a projection shortcut and, past stage 1, a stride of 2
    /// on `conv1` (v1) or `conv2` (v1.5) and on the shortcut.
    pub(crate) fn topology(&self) -> Topology<ConvSpec> {
        let stem = ConvSpec {
            padding: 3,
            ..ConvSpec::new("conv1".into(), "bn1".into(), [3, self.stem_width], 7, 2)
        };
        let mut stages: [Vec<Bottleneck<ConvSpec>>; 4] = Default::default();
        let mut cin = self.stem_width;
        for (stage, blocks) in stages.iter_mut().enumerate() {
            let mid = self.widths[stage];
            let cout = mid * self.expansion;
            for i in 0..self.layers[stage] {
                let stride = if i == 0 && stage > 0 { 2 } else { 1 };
                let (s1, s2) = match self.variant {
                    Variant::V1 => (stride, 1),
                    Variant::V1_5 => (1, stride),
                };
                let p = format!("layer{}.{i}", stage + 1);
                let conv = |name: &str, bn: &str, channels, kernel, stride| {
                    ConvSpec::new(
                        format!("{p}.{name}"),
                        format!("{p}.{bn}"),
                        channels,
                        kernel,
                        stride,
                    )
                };
                blocks.push(Bottleneck {
                    conv1: conv("conv1", "bn1", [cin, mid], 1, s1),
                    conv2: conv("conv2", "bn2", [mid, mid], 3, s2),
                    conv3: conv("conv3", "bn3", [mid, cout], 1, 1),
                    downsample: (i == 0)
                        .then(|| conv("downsample.0", "downsample.1", [cin, cout], 1, stride)),
                });
                cin = cout;
            }
        }
        Topology { stem, stages }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet50_has_the_published_shape() {
        let t = ResNetConfig::keras_resnet50().topology();
        let names: Vec<&str> = t.iter().map(|c| c.conv.as_str()).collect();
        assert_eq!(names.len(), 53);
        assert_eq!(
            &names[..6],
            [
                "conv1",
                "layer1.0.conv1",
                "layer1.0.conv2",
                "layer1.0.conv3",
                "layer1.0.downsample.0",
                "layer1.1.conv1"
            ]
        );
        assert_eq!(names[52], "layer4.2.conv3");
        let stem = &t.stem;
        assert_eq!((stem.kernel, stem.stride, stem.padding), (7, 2, 3));
        // The spatial side shrinks 224 -> 112 (stem) -> 56 (max-pool) -> 56, 28, 14, 7.
        let out = |c: &ConvSpec, side: usize| (side + 2 * c.padding - c.kernel) / c.stride + 1;
        assert_eq!(out(stem, 224), 112);
        let mut side = 56;
        for stage in &t.stages {
            let b = &stage[0];
            side = out(&b.conv2, out(&b.conv1, side));
        }
        assert_eq!(side, 7);
    }

    #[test]
    fn map_sides_follow_the_strides() {
        let c = ResNetConfig::keras_resnet50();
        let sides: Vec<usize> = Block::ALL.iter().map(|&b| c.map_side(b, 224)).collect();
        assert_eq!(sides, [112, 56, 28, 14, 7]);
        assert_eq!(c.map_side(Block::B2, 67), 17);
    }

    #[test]
    fn v1_5_moves_the_stride_to_the_3x3() {
        let t = ResNetConfig::torchvision_resnet50().topology();
        let b = &t.stages[2][0];
        assert_eq!((b.conv1.stride, b.conv2.stride), (1, 2));
        assert_eq!(b.downsample.as_ref().map(|d| d.stride), Some(2));
    }

    #[test]
    fn map_visits_in_forward_order() {
        let t = ResNetConfig::new().with_layers([1, 1, 1, 1]).topology();
        let mut order = Vec::new();
        let numbered = t.map(|c| {
            order.push(c.conv.clone());
            order.len()
        });
        assert_eq!(
            numbered.iter().copied().collect::<Vec<_>>(),
            (1..=17).collect::<Vec<_>>()
        );
        assert_eq!(order, t.iter().map(|c| c.conv.clone()).collect::<Vec<_>>());
    }
}
