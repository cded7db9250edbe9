//! The bottleneck block (1x1, 3x3, 1x1 with a projection shortcut on the first block of a stage).

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

/// A bottleneck with BatchNorm folded into each convolution. The strides live in the
/// convolutions, so the same block serves ResNet v1 and v1.5.
#[derive(Module, Debug)]
pub(super) struct Bottleneck {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    downsample: Option<Conv2d>,
}

impl Bottleneck {
    pub(super) fn new(
        conv1: Conv2d,
        conv2: Conv2d,
        conv3: Conv2d,
        downsample: Option<Conv2d>,
    ) -> Self {
        Self {
            conv1,
            conv2,
            conv3,
            downsample,
        }
    }

    pub(super) fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x.clone()),
            None => x.clone(),
        };
        let y = relu(self.conv1.forward(x));
        let y = relu(self.conv2.forward(y));
        let y = self.conv3.forward(y);
        relu(y + shortcut)
    }
}
