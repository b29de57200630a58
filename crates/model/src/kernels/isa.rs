//! Which instruction set the kernels use on this machine.

use std::sync::OnceLock;

/// An instruction-set level of the CPU kernels, best last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust, the reference every other level is tested against.
    Scalar,
    /// AVX2 with FMA and F16C (x86-64-v3).
    Avx2,
    /// AVX-512 (F, BW, VL) with VNNI's byte dot products.
    Avx512Vnni,
}

impl Isa {
    /// The best level this CPU supports and the OS has enabled, unless
    /// `PROPHETKV_CPU_KERNELS` (`scalar`, `avx2`, `avx512`) asks for a lower one.
    pub fn detect() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let best = Self::supported().into_iter().max().unwrap_or(Isa::Scalar);
            let wanted = std::env::var("PROPHETKV_CPU_KERNELS")
                .ok()
                .and_then(|name| Self::from_name(&name));
            match wanted {
                Some(w) if w <= best => w,
                _ => best,
            }
        })
    }

    /// Every level usable here (always including [`Isa::Scalar`]).
    pub fn supported() -> Vec<Isa> {
        let mut levels = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            // std's detection checks the OS's XSAVE state (XCR0) as well as
            // cpuid, so a feature the kernel did not enable is reported absent.
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
                levels.push(Isa::Avx2);
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
                {
                    levels.push(Isa::Avx512Vnni);
                }
            }
        }
        levels
    }

    /// The level named `scalar`, `avx2` or `avx512`.
    pub fn from_name(name: &str) -> Option<Isa> {
        match name {
            "scalar" => Some(Isa::Scalar),
            "avx2" => Some(Isa::Avx2),
            "avx512" => Some(Isa::Avx512Vnni),
            _ => None,
        }
    }

    /// The level's short name.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512",
        }
    }
}
