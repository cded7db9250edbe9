//! [`Recipe`]: how an image becomes the vector that an index or a catalogue stores.

mod colour;

use std::fmt;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::arch::{Block, ResNetConfig};

/// How an image becomes a vector.
///
/// The paper's recipe is the global average of one block's feature map. On catalogue photos
/// (a model wearing the garment on a studio background) that average mixes the product with
/// skin, hair, other garments and the background. The product-aware recipes look where the
/// product is, still without training anything; their few constants were chosen on the
/// shared dev data (see the ablation in the README):
///
/// - [`Recipe::Colour`] (640-d): the background is estimated from the crop itself (pixels
///   within 24 levels of the border's median colour in every channel), a Gaussian centre prior
///   (sigma 0.2 of the side) weights the rest; a soft HSV histogram (24 x 4 x 4 tent bins) of
///   those weighted pixels, square-rooted and L2-normalised, is joined with block 2 pooled
///   under the same weights (square-rooted, L2-normalised) at 8 times its weight:
///   `[hist / 3, block2 * sqrt(8 / 9)]`, a unit vector.
/// - [`Recipe::Texture`] (1024-d): block 4 pooled under the same centre prior, L2-normalised.
///
/// One forward pass serves any set of recipes: the colour recipe reads block 2 and the input
/// pixels, the texture recipe block 4, so a tap on both runs the network to block 4 once.
/// Recipes are named ([`Recipe::name`]) in index and catalogue files, so that vectors of
/// different recipes are never compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Recipe {
    /// The paper's: the global average of one block's feature map, as pooled.
    Paper(Block),
    /// Product-aware colour: a background-masked, centre-weighted HSV histogram joined with
    /// block 2 pooled under the same weights (640-d for ResNet-50).
    Colour,
    /// Patterns: block 4 pooled under a centre prior, L2-normalised (1024-d for ResNet-50).
    Texture,
}

/// A recipe name that is none of attrex's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown recipe `{0}`: expected paper (block 2), paper:N (block N), colour, or texture")]
pub struct UnknownRecipe(pub String);

impl Recipe {
    /// The product-aware pair, colour then texture: what a shop's catalogue wants.
    pub const PRODUCT: [Recipe; 2] = [Recipe::Colour, Recipe::Texture];

    /// The stable name stored in files: `paper-block2`, `colour-v1`, `texture-v1`. A recipe
    /// whose definition changes gets a new version.
    pub fn name(self) -> String {
        match self {
            Recipe::Paper(b) => format!("paper-{b}"),
            Recipe::Colour => "colour-v1".into(),
            Recipe::Texture => "texture-v1".into(),
        }
    }

    /// The recipe called `name`: a stored name ([`Recipe::name`]) or a short one (`paper`,
    /// `paper:4`, `colour`, `color`, `texture`).
    ///
    /// # Errors
    /// [`UnknownRecipe`].
    pub fn from_name(name: &str) -> Result<Self, UnknownRecipe> {
        let unknown = || UnknownRecipe(name.to_owned());
        let lower = name.trim().to_ascii_lowercase();
        match lower.as_str() {
            "paper" => Ok(Recipe::Paper(Block::B2)),
            "colour" | "color" | "colour-v1" => Ok(Recipe::Colour),
            "texture" | "texture-v1" => Ok(Recipe::Texture),
            other => {
                let n = other
                    .strip_prefix("paper:")
                    .or_else(|| other.strip_prefix("paper-block"))
                    .ok_or_else(unknown)?;
                let n: u8 = n.parse().map_err(|_| unknown())?;
                Block::new(n).map(Recipe::Paper).map_err(|_| unknown())
            }
        }
    }

    /// The block whose feature map the recipe reads.
    pub fn block(self) -> Block {
        match self {
            Recipe::Paper(b) => b,
            Recipe::Colour => Block::B2,
            Recipe::Texture => Block::B4,
        }
    }

    /// The length of the recipe's vectors on a network of shape `config`.
    pub fn dim(self, config: &ResNetConfig) -> usize {
        let block = config.block_dims()[self.block().index()];
        match self {
            Recipe::Colour => colour::HIST_LEN + block,
            Recipe::Paper(_) | Recipe::Texture => block,
        }
    }

    /// Whether the recipe reads the input pixels besides a feature map (then it needs the
    /// image, not only a preprocessed tensor).
    pub fn needs_pixels(self) -> bool {
        matches!(self, Recipe::Colour)
    }

    /// Where the recipe looks in an input square ([`input_square`](crate::input_square)): one
    /// weight per pixel, row-major, for drawing (the colour recipe: its centre prior, zero on
    /// what it takes for background); `None` for recipes that weigh no pixels.
    pub fn pixel_weights(self, crop: &RgbImage) -> Option<Vec<f32>> {
        match self {
            Recipe::Colour => Some(
                colour::pixel_part(crop)
                    .weights
                    .into_iter()
                    .map(|w| w as f32)
                    .collect(),
            ),
            Recipe::Paper(_) | Recipe::Texture => None,
        }
    }

    /// The weights over a `map x map` feature map that do not depend on the image, or
    /// `None` for a plain average.
    fn fixed_weights(self, map: usize) -> Option<Vec<f32>> {
        match self {
            Recipe::Texture => Some(
                (0..map * map)
                    .map(|c| colour::centre_weight(c % map, c / map, map) as f32)
                    .collect(),
            ),
            Recipe::Paper(_) | Recipe::Colour => None,
        }
    }

    /// What the recipe needs of one image before the forward pass: how to pool its block
    /// (`map x map` cells) and, for colour, the pixel part. `crop` is the network's input
    /// square; `None` when only a tensor is at hand.
    pub(crate) fn prepare(self, crop: Option<&RgbImage>, map: usize) -> Prepared {
        match (self, crop) {
            (Recipe::Colour, Some(crop)) => {
                let p = colour::pixel_part(crop);
                let side = crop.width() as usize;
                Prepared {
                    weights: Some(colour::box_average(&p.weights, side, map)),
                    pixels: Some(p.histogram),
                }
            }
            _ => Prepared {
                weights: self.fixed_weights(map),
                pixels: None,
            },
        }
    }

    /// The recipe's vector from what [`prepare`](Self::prepare) gave and the block pooled as
    /// it asked (weights normalised to sum 1, or the plain average).
    pub(crate) fn finish(self, prepared: &Prepared, pooled: &[f32]) -> Vec<f32> {
        match self {
            Recipe::Paper(_) => pooled.to_vec(),
            Recipe::Texture => l2(pooled.to_vec()),
            Recipe::Colour => {
                let hist = prepared.pixels.as_deref().unwrap_or(&[]);
                let block = l2(pooled.iter().map(|v| v.max(0.0).sqrt()).collect());
                // Unit parts joined at weight 1 : A (A = 8): squared distances add as
                // (d_hist^2 + 8 d_block^2) / 9.
                const A: f32 = 8.0;
                let (wh, wb) = ((1.0 / (1.0 + A)).sqrt(), (A / (1.0 + A)).sqrt());
                hist.iter()
                    .map(|h| h * wh)
                    .chain(block.iter().map(|b| b * wb))
                    .collect()
            }
        }
    }
}

/// `v / |v|`, or `v` when it is all zeros.
fn l2(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

/// What a recipe computed for one image before the forward pass.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Prepared {
    /// Weights over the block's cells (row-major), or `None` for the plain average.
    pub weights: Option<Vec<f32>>,
    /// The pixel part of the vector (the colour histogram).
    pub pixels: Option<Vec<f32>>,
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl std::str::FromStr for Recipe {
    type Err = UnknownRecipe;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s)
    }
}

impl Serialize for Recipe {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Recipe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Recipe::from_name(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in [
            Recipe::Paper(Block::B1),
            Recipe::Paper(Block::B4),
            Recipe::Colour,
            Recipe::Texture,
        ] {
            assert_eq!(Recipe::from_name(&r.name()), Ok(r));
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Recipe>(&json).unwrap(), r);
        }
        assert_eq!(Recipe::from_name("paper"), Ok(Recipe::Paper(Block::B2)));
        assert_eq!(Recipe::from_name("paper:3"), Ok(Recipe::Paper(Block::B3)));
        assert_eq!(Recipe::from_name("Color"), Ok(Recipe::Colour));
        assert!(Recipe::from_name("paper:9").is_err());
        assert!(Recipe::from_name("sepia").is_err());
    }

    #[test]
    fn dims_of_resnet50() {
        let c = ResNetConfig::keras_resnet50();
        assert_eq!(Recipe::Colour.dim(&c), 640);
        assert_eq!(Recipe::Texture.dim(&c), 1024);
        assert_eq!(Recipe::Paper(Block::B2).dim(&c), 256);
    }

    #[test]
    fn the_colour_vector_is_a_unit_vector_of_its_dimension() {
        let crop = RgbImage::from_fn(224, 224, |x, y| {
            if (60..160).contains(&x) && (40..200).contains(&y) {
                image::Rgb([180, 30, 40])
            } else {
                image::Rgb([245, 245, 245])
            }
        });
        let p = Recipe::Colour.prepare(Some(&crop), 56);
        let w = p.weights.as_ref().unwrap();
        assert_eq!(w.len(), 56 * 56);
        // The background corners get no weight, the red garment does.
        assert_eq!(w[0], 0.0);
        assert!(w[28 * 56 + 28] > 0.5);
        let v = Recipe::Colour.finish(&p, &vec![1.0; 256]);
        assert_eq!(v.len(), 640);
        let n: f32 = v.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-5, "{n}");
    }
}
