//! Folding each BatchNorm (and any convolution bias) into the convolution before it, which
//! turns a state dict into the [`FoldedNet`] that both engines are built from:
//!
//! ```text
//! s  = gamma / sqrt(running_var + eps)
//! W' = W * s            (per output channel)
//! b' = (b - running_mean) * s + beta
//! ```
//!
//! computed in f64 and stored as f32, which is exact up to f32 rounding.

use super::StateDict;
use crate::arch::{ConvSpec, ResNetConfig, Topology};
use crate::error::WeightsError;

/// A convolution with its BatchNorm folded in.
#[derive(Debug, Clone)]
pub(crate) struct FoldedConv {
    /// Its place and shape in the network.
    pub spec: ConvSpec,
    /// The weight, OIHW (`spec.weight_shape()`).
    pub weight: Vec<f32>,
    /// One bias per output channel.
    pub bias: Vec<f32>,
}

/// The ImageNet classifier head: `logits = weight . pooled + bias`.
#[derive(Debug, Clone)]
pub(crate) struct Classifier {
    /// `[classes, dim]`, row-major (torchvision's layout).
    pub weight: Vec<f32>,
    /// One bias per class.
    pub bias: Vec<f32>,
}

/// A whole network ready for inference: every convolution folded, in the shape of its config.
#[derive(Debug, Clone)]
pub(crate) struct FoldedNet {
    /// The network's shape.
    pub config: ResNetConfig,
    /// The folded convolutions.
    pub convs: Topology<FoldedConv>,
    /// The classifier head, when `config.num_classes > 0`.
    pub fc: Option<Classifier>,
}

/// Folds every convolution of `config` found in `state`, and reads the classifier head.
///
/// # Errors
/// [`WeightsError::MissingTensor`] or [`WeightsError::UnexpectedShape`] naming the tensor.
pub(crate) fn fold(config: &ResNetConfig, state: &StateDict) -> Result<FoldedNet, WeightsError> {
    let convs = config.topology().try_map(|spec| {
        let (weight, bias) = fold_one(spec, state, config.bn_epsilon)?;
        Ok::<_, WeightsError>(FoldedConv {
            spec: spec.clone(),
            weight,
            bias,
        })
    })?;
    let fc = if config.num_classes > 0 {
        let (n, d) = (config.num_classes, config.block_dims()[4]);
        Some(Classifier {
            weight: state.get("fc.weight", &[n, d])?.to_vec(),
            bias: state.get("fc.bias", &[n])?.to_vec(),
        })
    } else {
        None
    };
    Ok(FoldedNet {
        config: config.clone(),
        convs,
        fc,
    })
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
