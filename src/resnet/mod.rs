//! The Burn engine: ResNet built from Burn's layers, with BatchNorm already folded into the
//! convolutions ([`crate::weights`] does the folding).
//!
//! The field names follow torchvision (`conv1`, `layer1`..`layer4`, `downsample`, `fc`), so a
//! reader who knows ResNet knows the code. The layout comes from [`crate::arch`]; this module
//! only turns each folded convolution into a Burn layer.

mod block;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};

use block::Bottleneck;

use crate::weights::{Classifier, FoldedConv, FoldedNet};

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
fn global_avg_pool(x: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c])
}

/// Average of `x` (`[n, c, h, w]`) under per-image weights `w` (`[n, h, w]`), normalised to
/// sum 1 per image: `[n, c]`.
fn weighted_pool(x: Tensor<4>, w: Tensor<3>) -> Tensor<2> {
    let [n, c, h, wd] = x.dims();
    let w = w.reshape([n, 1, h * wd]);
    let total = w.clone().sum_dim(2).reshape([n, 1]);
    // All-zero weights: divide by 1 instead of 0, giving zeros.
    let total = total.clone().mask_fill(total.equal_elem(0.0), 1.0);
    let sums = (x.reshape([n, c, h * wd]) * w).sum_dim(2).reshape([n, c]);
    sums / total
}

impl ResNet {
    /// Builds the network on `device` from its folded weights.
    pub(crate) fn new(net: &FoldedNet, device: &Device) -> Self {
        let layers = net.convs.map(|c| burn_conv(c, device));
        let [layer1, layer2, layer3, layer4] = layers.stages.map(|stage| {
            stage
                .into_iter()
                .map(|b| Bottleneck::new(b.conv1, b.conv2, b.conv3, b.downsample))
                .collect()
        });
        Self {
            conv1: layers.stem,
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
            fc: net.fc.as_ref().map(|fc| burn_linear(fc, device)),
        }
    }

    /// Runs the network up to the deepest block asked for and returns the global-average-pooled
    /// output of each block in `wanted` (indices 0..5 for blocks 1..5), in block order; and of
    /// each `(block index, weights [n, h, w])` of `weighted`, in that order, averaged under the
    /// weights (normalised per image; all-zero weights give zeros). Stages past the deepest
    /// block asked for never run.
    pub(crate) fn pooled(
        &self,
        x: Tensor<4>,
        wanted: [bool; 5],
        weighted: &[(usize, Tensor<3>)],
    ) -> (Vec<Tensor<2>>, Vec<Tensor<2>>) {
        let deepest = wanted
            .iter()
            .rposition(|&w| w)
            .map_or(0, |i| i + 1)
            .max(weighted.iter().map(|(b, _)| b + 1).max().unwrap_or(0));
        let mut out = Vec::new();
        let mut out_weighted: Vec<Option<Tensor<2>>> = vec![None; weighted.len()];
        if deepest == 0 {
            return (out, Vec::new());
        }
        let mut take = |block: usize, x: &Tensor<4>, out: &mut Vec<Tensor<2>>| {
            if wanted[block] {
                out.push(global_avg_pool(x.clone()));
            }
            for (slot, (b, w)) in out_weighted.iter_mut().zip(weighted) {
                if *b == block {
                    *slot = Some(weighted_pool(x.clone(), w.clone()));
                }
            }
        };
        let mut x = relu(self.conv1.forward(x));
        take(0, &x, &mut out);
        x = self.maxpool.forward(x);
        let stages = [&self.layer1, &self.layer2, &self.layer3, &self.layer4];
        for (i, stage) in stages.into_iter().enumerate().take(deepest - 1) {
            x = stage.iter().fold(x, |x, b| b.forward(x));
            take(i + 1, &x, &mut out);
        }
        let weighted = out_weighted
            .into_iter()
            .map(|t| t.expect("every weighted block is at most as deep as the pass"))
            .collect();
        (out, weighted)
    }

    /// ImageNet logits `[n, num_classes]` for a preprocessed batch `[n, 3, h, w]`, or `None`
    /// when the network was built without a classifier head.
    pub fn forward(&self, x: Tensor<4>) -> Option<Tensor<2>> {
        let fc = self.fc.as_ref()?;
        let (pooled, _) = self.pooled(x, [false, false, false, false, true], &[]);
        pooled.into_iter().next().map(|p| fc.forward(p))
    }
}

/// A Burn convolution holding a folded weight and bias.
fn burn_conv(c: &FoldedConv, device: &Device) -> Conv2d {
    let spec = &c.spec;
    let p = spec.padding;
    let mut conv = Conv2dConfig::new(spec.channels, [spec.kernel, spec.kernel])
        .with_stride([spec.stride, spec.stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(true)
        .with_initializer(Initializer::Zeros)
        .init(device);
    conv.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(c.weight.clone(), spec.weight_shape()),
        device,
    ));
    conv.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(c.bias.clone(), [spec.channels[1]]),
        device,
    )));
    conv
}

/// A Burn linear layer holding the classifier head.
fn burn_linear(fc: &Classifier, device: &Device) -> Linear {
    let n = fc.bias.len();
    let d_in = fc.weight.len() / n.max(1);
    // torchvision stores [out, in]; Burn's Linear multiplies by [in, out].
    let mut wt = vec![0f32; fc.weight.len()];
    for o in 0..n {
        for i in 0..d_in {
            wt[i * n + o] = fc.weight[o * d_in + i];
        }
    }
    let mut linear = LinearConfig::new(d_in, n)
        .with_initializer(Initializer::Zeros)
        .init(device);
    linear.weight = Param::from_tensor(Tensor::from_data(TensorData::new(wt, [d_in, n]), device));
    linear.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(fc.bias.clone(), [n]),
        device,
    )));
    linear
}
