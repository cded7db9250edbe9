//! The backends other than the default: each is reached by name, and a missing GPU is an error,
//! not a panic.

use attrex::DeviceError;

#[test]
fn unknown_backend_name_is_an_error() {
    assert!(matches!(
        attrex::device_from_name("tpu"),
        Err(DeviceError::Unknown(_))
    ));
}

#[cfg(not(feature = "wgpu"))]
#[test]
fn wgpu_without_the_feature_says_which_feature() {
    let err = attrex::device_from_name("wgpu").unwrap_err();
    assert!(
        matches!(
            err,
            DeviceError::NotCompiled {
                feature: "wgpu",
                ..
            }
        ),
        "{err:?}"
    );
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_is_a_typed_error_without_an_adapter_or_runs_with_one() {
    use attrex::burn::tensor::Tensor;
    match attrex::device_from_name("wgpu") {
        Err(DeviceError::NoAdapter { reason }) => eprintln!("no wgpu adapter here: {reason}"),
        Err(other) => panic!("expected NoAdapter, got {other:?}"),
        Ok(device) => {
            let x = Tensor::<1>::from_floats([1.0, 2.0, 3.0], &device);
            let sum: Vec<f32> = x.sum().into_data().try_into_vec().unwrap();
            assert_eq!(sum, [6.0]);
        }
    }
    // Asking twice gives the same answer (the runtime is initialised once per process).
    assert_eq!(
        attrex::device_from_name("wgpu").is_ok(),
        attrex::device_from_name("WGPU").is_ok()
    );
}

#[cfg(feature = "ndarray")]
#[test]
fn ndarray_backend_matches_the_reference() {
    use attrex::burn::tensor::{Tensor, TensorData};
    let device = attrex::device_from_name("ndarray").unwrap();
    let backbone = std::sync::Arc::new(attrex::Backbone::load(None, &device).unwrap());
    let r =
        crate::read_safetensors(&crate::shared().join("fixtures/reference_chelsea.safetensors"));
    let x = Tensor::<4>::from_data(
        TensorData::new(r["input_chw_caffe_rgb"].1.clone(), [1, 3, 224, 224]),
        &device,
    );
    let f = attrex::BlockTap::all(backbone).extract_tensor(x).unwrap();
    for (i, got) in f[0].blocks.iter().enumerate() {
        let err = crate::rel_l2(got, &r[&format!("pooled_{i}")].1);
        assert!(err < 1e-4, "ndarray block{}: {err:.2e}", i + 1);
    }
}
