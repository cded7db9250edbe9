//! ResNet-50 in Burn, with BatchNorm folded into the convolutions for inference.
//!
//! The field names follow torchvision (`conv1`, `layer1`..`layer4`, `downsample`, `fc`), so a
//! reader who knows ResNet knows the code. Every weight source is first brought to
//! torchvision's names and layouts ([`crate::weights`]); loading then folds each
//! BatchNorm (and any convolution bias) into the preceding convolution:
//!
//! ```text
//! s  = gamma / sqrt(running_var + eps)
//! W' = W * s            (per output channel)
//! b' = (b - running_mean) * s + beta
//! ```
//!
//! computed in f64 and stored as f32, which is exact up to f32 rounding.

mod block;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

pub(crate) use block::Bottleneck;

use crate::error::WeightsError;
use crate::weights::StateDict;

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

/// One convolution of the network as the weight files describe it.
#[derive(Debug, Clone, PartialEq)]
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

    /// Every convolution in forward order: the stem, then per bottleneck conv1..3 and the
    /// projection shortcut (`downsample.0`, with its BatchNorm `downsample.1`).
    pub(crate) fn convs(&self) -> Vec<ConvSpec> {
        let mut out = vec![ConvSpec {
            padding: 3,
            ..ConvSpec::new("conv1".into(), "bn1".into(), [3, self.stem_width], 7, 2)
        }];
        let mut cin = self.stem_width;
        for stage in 0..4 {
            let mid = self.widths[stage];
            let cout = mid * self.expansion;
            for i in 0..self.layers[stage] {
                let stride = if i == 0 && stage > 0 { 2 } else { 1 };
                let (s1, s2) = match self.variant {
                    Variant::V1 => (stride, 1),
                    Variant::V1_5 => (1, stride),
                };
                let p = format!("layer{}.{i}", stage + 1);
                out.push(ConvSpec::new(
                    format!("{p}.conv1"),
                    format!("{p}.bn1"),
                    [cin, mid],
                    1,
                    s1,
                ));
                out.push(ConvSpec::new(
                    format!("{p}.conv2"),
                    format!("{p}.bn2"),
                    [mid, mid],
                    3,
                    s2,
                ));
                out.push(ConvSpec::new(
                    format!("{p}.conv3"),
                    format!("{p}.bn3"),
                    [mid, cout],
                    1,
                    1,
                ));
                if i == 0 {
                    out.push(ConvSpec::new(
                        format!("{p}.downsample.0"),
                        format!("{p}.downsample.1"),
                        [cin, cout],
                        1,
                        stride,
                    ));
                }
                cin = cout;
            }
        }
        out
    }
}

/// A ResNet with BatchNorm folded into its convolutions, ready for inference.
///
/// Built from weights by [`crate::Backbone`]; use [`crate::BlockTap`] to read pooled block
/// features, or [`ResNet::forward`] for ImageNet logits.
#[derive(Module, Debug)]
pub struct ResNet {
    conv1: Conv2d,
    maxpool: MaxPool2d,
    layer1: Vec<Bottleneck>,
    layer2: Vec<Bottleneck>,
    layer3: Vec<Bottleneck>,
    layer4: Vec<Bottleneck>,
    fc: Option<Linear>,
}

/// Global average pool: `[n, c, h, w]` to `[n, c]`.
pub(crate) fn global_avg_pool(x: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c])
}

impl ResNet {
    /// Runs the network up to block `deepest` (1..=5) and returns the global-average-pooled
    /// output of each block in `wanted` (indices 0..5 for blocks 1..5), in block order.
    /// Stages past `deepest` never run.
    pub(crate) fn pooled(&self, x: Tensor<4>, wanted: [bool; 5]) -> Vec<Tensor<2>> {
        let deepest = wanted.iter().rposition(|&w| w).map_or(0, |i| i + 1);
        let mut out = Vec::new();
        if deepest == 0 {
            return out;
        }
        let mut x = relu(self.conv1.forward(x));
        if wanted[0] {
            out.push(global_avg_pool(x.clone()));
        }
        x = self.maxpool.forward(x);
        let stages = [&self.layer1, &self.layer2, &self.layer3, &self.layer4];
        for (i, stage) in stages.into_iter().enumerate().take(deepest - 1) {
            x = stage.iter().fold(x, |x, b| b.forward(x));
            if wanted[i + 1] {
                out.push(global_avg_pool(x.clone()));
            }
        }
        out
    }

    /// ImageNet logits `[n, num_classes]` for a preprocessed batch `[n, 3, h, w]`, or `None`
    /// when the network was built without a classifier head.
    pub fn forward(&self, x: Tensor<4>) -> Option<Tensor<2>> {
        let fc = self.fc.as_ref()?;
        let pooled = self.pooled(x, [false, false, false, false, true]);
        pooled.into_iter().next().map(|p| fc.forward(p))
    }

    /// Builds the network from the output of [`fold`]; `state` provides the classifier head.
    pub(crate) fn from_folded(
        config: &ResNetConfig,
        folded: Vec<FoldedConv>,
        state: &StateDict,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        let mut convs = folded
            .into_iter()
            .map(|(spec, w, b)| Ok::<_, WeightsError>(burn_conv(&spec, w, b, device)));
        let mut next = || {
            convs
                .next()
                .expect("convs() lists every convolution the loop below takes")
        };
        let conv1 = next()?;
        let maxpool = MaxPool2dConfig::new([3, 3])
            .with_strides([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init();
        let mut stages: [Vec<Bottleneck>; 4] = Default::default();
        for (stage, blocks) in stages.iter_mut().enumerate() {
            for i in 0..config.layers[stage] {
                let (c1, c2, c3) = (next()?, next()?, next()?);
                let downsample = if i == 0 { Some(next()?) } else { None };
                blocks.push(Bottleneck::new(c1, c2, c3, downsample));
            }
        }
        let fc = if config.num_classes > 0 {
            let d_in = config.block_dims()[4];
            let w = state.get("fc.weight", &[config.num_classes, d_in])?;
            let b = state.get("fc.bias", &[config.num_classes])?;
            // torchvision stores [out, in]; Burn's Linear multiplies by [in, out].
            let mut wt = vec![0f32; w.len()];
            for o in 0..config.num_classes {
                for i in 0..d_in {
                    wt[i * config.num_classes + o] = w[o * d_in + i];
                }
            }
            let mut linear = LinearConfig::new(d_in, config.num_classes)
                .with_initializer(Initializer::Zeros)
                .init(device);
            linear.weight = Param::from_tensor(Tensor::from_data(
                TensorData::new(wt, [d_in, config.num_classes]),
                device,
            ));
            linear.bias = Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(b.to_vec(), [config.num_classes]),
                device,
            )));
            Some(linear)
        } else {
            None
        };
        let [layer1, layer2, layer3, layer4] = stages;
        Ok(Self {
            conv1,
            maxpool,
            layer1,
            layer2,
            layer3,
            layer4,
            fc,
        })
    }
}

/// A convolution with its BatchNorm folded in: its spec, OIHW weight and bias.
pub(crate) type FoldedConv = (ConvSpec, Vec<f32>, Vec<f32>);

/// Every convolution of `config` with its BatchNorm (and optional bias) folded in, in the order
/// of [`ResNetConfig::convs`].
///
/// # Errors
/// [`WeightsError::MissingTensor`] or [`WeightsError::UnexpectedShape`] naming the tensor.
pub(crate) fn fold(
    config: &ResNetConfig,
    state: &StateDict,
) -> Result<Vec<FoldedConv>, WeightsError> {
    config
        .convs()
        .into_iter()
        .map(|spec| {
            let (w, b) = fold_one(&spec, state, config.bn_epsilon)?;
            Ok((spec, w, b))
        })
        .collect()
}

/// One convolution with its BatchNorm (and optional bias) folded in.
fn fold_one(
    spec: &ConvSpec,
    state: &StateDict,
    eps: f64,
) -> Result<(Vec<f32>, Vec<f32>), WeightsError> {
    let [cin, cout] = spec.channels;
    let w = state.get(&format!("{}.weight", spec.conv), &spec.weight_shape())?;
    let bias = state.get_optional(&format!("{}.bias", spec.conv), &[cout])?;
    let gamma = state.get(&format!("{}.weight", spec.bn), &[cout])?;
    let beta = state.get(&format!("{}.bias", spec.bn), &[cout])?;
    let mean = state.get(&format!("{}.running_mean", spec.bn), &[cout])?;
    let var = state.get(&format!("{}.running_var", spec.bn), &[cout])?;
    let per_out = cin * spec.kernel * spec.kernel;
    let mut weight = Vec::with_capacity(w.len());
    let mut folded_bias = Vec::with_capacity(cout);
    for o in 0..cout {
        let s = f64::from(gamma[o]) / (f64::from(var[o]) + eps).sqrt();
        weight.extend(
            w[o * per_out..(o + 1) * per_out]
                .iter()
                .map(|&v| (f64::from(v) * s) as f32),
        );
        let b = bias.map_or(0.0, |b| f64::from(b[o]));
        folded_bias.push(((b - f64::from(mean[o])) * s + f64::from(beta[o])) as f32);
    }
    Ok((weight, folded_bias))
}

/// A Burn convolution holding a folded weight and bias.
fn burn_conv(spec: &ConvSpec, weight: Vec<f32>, bias: Vec<f32>, device: &Device) -> Conv2d {
    let cout = spec.channels[1];
    let p = spec.padding;
    let mut conv = Conv2dConfig::new(spec.channels, [spec.kernel, spec.kernel])
        .with_stride([spec.stride, spec.stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(true)
        .with_initializer(Initializer::Zeros)
        .init(device);
    conv.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(weight, spec.weight_shape()),
        device,
    ));
    conv.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(bias, [cout]),
        device,
    )));
    conv
}
