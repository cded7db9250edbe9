//! torchvision ResNet state dicts (`.pth` from `torch.save`, or `.safetensors`), read through
//! `burn-store`. Names are torchvision's already; a `module.` prefix (from `DataParallel`) is
//! dropped, and integer bookkeeping such as `num_batches_tracked` is skipped.

use std::collections::BTreeMap;
use std::path::Path;

use burn::store::{ModuleStore, PytorchStore, SafetensorsStore};
use burn::tensor::DType;
use sha2::{Digest, Sha256};

use super::{StateDict, WeightsFormat};
use crate::error::WeightsError;

/// Reads every floating-point tensor of the file as f32, and the file's sha256.
pub(super) fn read(
    path: &Path,
    format: WeightsFormat,
) -> Result<(StateDict, String), WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        path: path.to_owned(),
        source,
    })?;
    let id: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let store_err = |tensor: Option<&str>, source: Box<dyn std::error::Error + Send + Sync>| {
        WeightsError::Store {
            path: path.to_owned(),
            tensor: tensor.map(str::to_owned),
            source,
        }
    };
    let mut tensors = BTreeMap::new();
    let mut collect =
        |all: &BTreeMap<String, burn::store::burn_pack::Tensor>| -> Result<(), WeightsError> {
            for (name, t) in all {
                if !matches!(t.dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
                    continue;
                }
                let data = burn::store::bridge::to_data(t)
                    .map_err(|e| store_err(Some(name), Box::new(e)))?
                    .convert::<f32>();
                let shape = data.shape().to_vec();
                let values = data
                    .try_into_vec::<f32>()
                    .map_err(|e| store_err(Some(name), format!("{e:?}").into()))?;
                let key = name.strip_prefix("module.").unwrap_or(name).to_owned();
                tensors.insert(key, (shape, values));
            }
            Ok(())
        };
    match format {
        WeightsFormat::TorchvisionSafetensors => {
            let mut store = SafetensorsStore::from_bytes(Some(bytes));
            let all = store
                .get_all_tensors()
                .map_err(|e| store_err(None, Box::new(e)))?;
            collect(all)?;
        }
        _ => {
            drop(bytes);
            let mut store = PytorchStore::from_file(path);
            let all = store
                .get_all_tensors()
                .map_err(|e| store_err(None, Box::new(e)))?;
            collect(all)?;
        }
    }
    Ok((
        StateDict {
            source_name: path.display().to_string(),
            tensors,
        },
        id,
    ))
}
