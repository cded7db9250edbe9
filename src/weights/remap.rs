//! Keras names and layouts to torchvision's: the one place where the foreign weight format is
//! mapped onto the network.
//!
//! | Keras | torchvision |
//! |---|---|
//! | `conv1/kernel` (HWIO, BGR input) | `conv1.weight` (OIHW, RGB input: input channels reversed) |
//! | `conv1/bias` | `conv1.bias` (folded with the BatchNorm at build time) |
//! | `bn_conv1/{gamma,beta,moving_mean,moving_variance}` | `bn1.{weight,bias,running_mean,running_var}` |
//! | `res{S}{b}_branch2{a,b,c}` | `layer{S-1}.{i}.conv{1,2,3}` (`b` = a, b, c... for block i = 0, 1, 2...) |
//! | `bn{S}{b}_branch2{a,b,c}` | `layer{S-1}.{i}.bn{1,2,3}` |
//! | `res{S}a_branch1`, `bn{S}a_branch1` | `layer{S-1}.0.downsample.0`, `layer{S-1}.0.downsample.1` |
//! | `fc1000/kernel` ([in, out]) | `fc.weight` ([out, in]) |
//! | `fc1000/bias` | `fc.bias` |

use std::collections::BTreeMap;

use super::StateDict;
use super::keras::KerasModel;
use crate::arch::{ConvSpec, ResNetConfig};
use crate::error::WeightsError;

/// Keras layer names (convolution, BatchNorm) of the convolution torchvision calls `tv`.
fn keras_names(tv: &str) -> Option<(String, String)> {
    if tv == "conv1" {
        return Some(("conv1".into(), "bn_conv1".into()));
    }
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    let rest = tv.strip_prefix("layer")?;
    let mut parts = rest.split('.');
    let stage: usize = parts.next()?.parse().ok()?;
    let block: usize = parts.next()?.parse().ok()?;
    let branch = match (parts.next()?, parts.next()) {
        ("conv1", None) => "2a",
        ("conv2", None) => "2b",
        ("conv3", None) => "2c",
        ("downsample", Some("0")) => "1",
        _ => return None,
    };
    let letter = *LETTERS.get(block)? as char;
    let id = format!("{}{letter}_branch{branch}", stage + 1);
    Some((format!("res{id}"), format!("bn{id}")))
}

/// Builds the torchvision-named state dict from the Keras tensors, checking every shape and
/// every convolution's stride against `config`.
pub(super) fn keras_to_torchvision(
    model: &KerasModel,
    config: &ResNetConfig,
) -> Result<StateDict, WeightsError> {
    let source_name = model.path.display().to_string();
    let take = |name: &str, shape: &[usize]| -> Result<&[f32], WeightsError> {
        let t = model
            .tensors
            .get(name)
            .ok_or_else(|| WeightsError::MissingTensor {
                source_name: source_name.clone(),
                tensor: name.to_owned(),
            })?;
        if t.shape != shape {
            return Err(WeightsError::UnexpectedShape {
                source_name: source_name.clone(),
                tensor: name.to_owned(),
                expected: shape.to_vec(),
                got: t.shape.clone(),
            });
        }
        Ok(&t.values)
    };
    let mut out = BTreeMap::new();
    for spec in config.topology().iter() {
        let (kconv, kbn) = keras_names(&spec.conv)
            .expect("ResNetConfig::topology names only convolutions of the table above");
        check_stride(model, &kconv, spec)?;
        let [cin, cout] = spec.channels;
        let k = spec.kernel;
        let hwio = take(&format!("{kconv}/kernel"), &[k, k, cin, cout])?;
        let reverse_input = spec.conv == "conv1";
        let mut oihw = vec![0f32; hwio.len()];
        for h in 0..k {
            for w in 0..k {
                for i in 0..cin {
                    let i_dst = if reverse_input { cin - 1 - i } else { i };
                    for o in 0..cout {
                        oihw[((o * cin + i_dst) * k + h) * k + w] =
                            hwio[((h * k + w) * cin + i) * cout + o];
                    }
                }
            }
        }
        out.insert(
            format!("{}.weight", spec.conv),
            (spec.weight_shape().to_vec(), oihw),
        );
        out.insert(
            format!("{}.bias", spec.conv),
            (
                vec![cout],
                take(&format!("{kconv}/bias"), &[cout])?.to_vec(),
            ),
        );
        for (keras, tv) in [
            ("gamma", "weight"),
            ("beta", "bias"),
            ("moving_mean", "running_mean"),
            ("moving_variance", "running_var"),
        ] {
            let v = take(&format!("{kbn}/{keras}"), &[cout])?.to_vec();
            out.insert(format!("{}.{tv}", spec.bn), (vec![cout], v));
        }
    }
    if config.num_classes > 0 {
        let (d_in, n) = (config.block_dims()[4], config.num_classes);
        let kernel = take("fc1000/kernel", &[d_in, n])?;
        let mut w = vec![0f32; kernel.len()];
        for i in 0..d_in {
            for o in 0..n {
                w[o * d_in + i] = kernel[i * n + o];
            }
        }
        out.insert("fc.weight".into(), (vec![n, d_in], w));
        out.insert(
            "fc.bias".into(),
            (vec![n], take("fc1000/bias", &[n])?.to_vec()),
        );
    }
    Ok(StateDict {
        source_name,
        tensors: out,
    })
}

/// The topology's stride for `layer` must be the one the configured variant puts there: this is
/// what tells ResNet v1 from v1.5.
fn check_stride(model: &KerasModel, layer: &str, spec: &ConvSpec) -> Result<(), WeightsError> {
    let topo = |reason: String| WeightsError::Topology {
        path: model.path.join("model.json"),
        layer: layer.to_owned(),
        reason,
    };
    match model.conv_strides.get(layer) {
        None => Err(topo("no Conv2D layer of this name in the topology".into())),
        Some(&s) if s != [spec.stride; 2] => Err(topo(format!(
            "strides {s:?}, but the network places stride {} here (is this ResNet v1?)",
            spec.stride
        ))),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::keras_names;

    #[test]
    fn keras_names_follow_the_keras_applications_scheme() {
        let n = |tv: &str| keras_names(tv).unwrap();
        assert_eq!(n("conv1"), ("conv1".into(), "bn_conv1".into()));
        assert_eq!(
            n("layer1.0.conv1"),
            ("res2a_branch2a".into(), "bn2a_branch2a".into())
        );
        assert_eq!(
            n("layer3.5.conv3"),
            ("res4f_branch2c".into(), "bn4f_branch2c".into())
        );
        assert_eq!(
            n("layer4.0.downsample.0"),
            ("res5a_branch1".into(), "bn5a_branch1".into())
        );
        assert_eq!(keras_names("fc"), None);
    }
}
