//! Each Lambda Python runtime's platform: the operating system it runs on, the glibc and libstdc++ it offers,
//! and so the manylinux wheels it can load (DESIGN section 4).
//!
//! The ceiling serves twice: cross installs ask for wheels up to it, and after every install each ELF file's
//! required `GLIBC_x.y` / `GLIBCXX_3.4.n` symbol versions are checked against it ([`Ceiling::check`]), so a
//! native install that picked a wheel for a newer glibc (numpy 2.3's `manylinux_2_28` wheels on the python3.11
//! runtime) fails the build instead of failing at import in Lambda.
//!
//! Sources (Amazon Linux can't be observed here):
//! - Runtime → OS: Lambda's runtime table (docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html):
//!   python3.10 and python3.11 run on Amazon Linux 2, python3.12 and later on Amazon Linux 2023.
//! - glibc: Amazon Linux 2 ships glibc 2.26; Amazon Linux 2023 ships 2.34 and keeps it for its lifetime
//!   (amazonlinux/container-images#131, a maintainer: "synced with CentOS 9 / RHEL 9").
//! - libstdc++: Amazon Linux 2's is GCC 7.3.1's (`libstdc++-7.3.1-*.amzn2`, docker-library/official-images#20651),
//!   whose newest symbol version is GLIBCXX_3.4.24 (software-mansion/starknet-jvm#171: AL2 lacks 3.4.26);
//!   Amazon Linux 2023's is GCC 11's (gcc 11.4.1, amazonlinux/amazon-linux-2023#803), GLIBCXX_3.4.29
//!   (duckdb/duckdb-node-neo#302: "the latest GLIBCXX version is GLIBCXX_3.4.29"). Newer AL2023 images carry a
//!   GCC 14 runtime (amazonlinux/container-images#132), but the ceiling stays at what every AL2023 Lambda
//!   environment has.

use std::fmt;

use crate::request::{Architecture, Runtime};

/// What a runtime's environment offers native code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceiling {
    /// `Amazon Linux 2` or `Amazon Linux 2023`.
    pub os: &'static str,
    /// glibc `major.minor`.
    pub glibc: (u32, u32),
    /// The newest `GLIBCXX_3.4.n` symbol version of the system libstdc++: `n`.
    pub glibcxx: u32,
}

/// python3.10 and python3.11: Amazon Linux 2.
pub const AMAZON_LINUX_2: Ceiling = Ceiling {
    os: "Amazon Linux 2",
    glibc: (2, 26),
    glibcxx: 24,
};

/// python3.12 and later: Amazon Linux 2023.
pub const AMAZON_LINUX_2023: Ceiling = Ceiling {
    os: "Amazon Linux 2023",
    glibc: (2, 34),
    glibcxx: 29,
};

/// The ceiling of `runtime`.
pub fn ceiling(runtime: Runtime) -> Ceiling {
    match runtime {
        Runtime::Python310 | Runtime::Python311 => AMAZON_LINUX_2,
        Runtime::Python312 | Runtime::Python313 | Runtime::Python314 => AMAZON_LINUX_2023,
    }
}

/// An ELF file that needs more than the runtime offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The zip entry name.
    pub file: String,
    /// The highest version it needs above the ceiling, e.g. `GLIBC_2.27`.
    pub needs: String,
    /// What the runtime has, e.g. `GLIBC_2.26 (Amazon Linux 2)`.
    pub ceiling: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} needs {}, above {}",
            self.file, self.needs, self.ceiling
        )
    }
}

impl Ceiling {
    /// The `GLIBC_2.x` symbol version of this glibc.
    pub fn glibc_version(&self) -> String {
        format!("GLIBC_{}.{}", self.glibc.0, self.glibc.1)
    }

    /// The `GLIBCXX_3.4.n` symbol version of this libstdc++.
    pub fn glibcxx_version(&self) -> String {
        format!("GLIBCXX_3.4.{}", self.glibcxx)
    }

    /// The highest version in `needed` (symbol version names of an ELF file's version needs) above this
    /// ceiling, for each of glibc and libstdc++. Other names (`GLIBC_PRIVATE`, `CXXABI_*`, a bundled
    /// library's own versions) are not judged.
    pub fn check<'a>(&self, needed: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        // [glibc, libstdc++]: the highest version above the ceiling seen so far.
        let mut worst: [Option<(Vec<u32>, &str)>; 2] = [None, None];
        for name in needed {
            let (slot, text, max) = if let Some(v) = name.strip_prefix("GLIBCXX_") {
                (1, v, vec![3, 4, self.glibcxx])
            } else if let Some(v) = name.strip_prefix("GLIBC_") {
                (0, v, vec![self.glibc.0, self.glibc.1])
            } else {
                continue;
            };
            let Some(v) = version(text) else { continue };
            if v > max && worst[slot].as_ref().is_none_or(|(w, _)| v > *w) {
                worst[slot] = Some((v, name));
            }
        }
        worst
            .into_iter()
            .flatten()
            .map(|(_, name)| name.to_owned())
            .collect()
    }

    /// What a violation names as the ceiling for `needs`.
    pub fn describe_for(&self, needs: &str) -> String {
        let have = if needs.starts_with("GLIBCXX_") {
            self.glibcxx_version()
        } else {
            self.glibc_version()
        };
        format!("{have} ({})", self.os)
    }

    /// pip's `--platform` values for a cross install: every manylinux level up to this glibc. pip does not
    /// widen a `manylinux_2_X` tag to the levels below it (only `manylinux2014`/`manylinux2010`, see
    /// `_get_custom_platforms` in pip/_internal/utils/compatibility_tags.py), so each level is listed, newest
    /// first, with the legacy aliases of 2.17, 2.12 and 2.5.
    pub fn pip_platforms(&self, architecture: Architecture) -> Vec<String> {
        let machine = architecture.machine();
        let mut tags = Vec::new();
        for minor in (5..=self.glibc.1).rev() {
            tags.push(format!("manylinux_2_{minor}_{machine}"));
            let legacy = match (minor, architecture) {
                (17, _) => Some("manylinux2014"),
                (12, Architecture::X86_64) => Some("manylinux2010"),
                (5, Architecture::X86_64) => Some("manylinux1"),
                _ => None,
            };
            if let Some(legacy) = legacy {
                tags.push(format!("{legacy}_{machine}"));
            }
        }
        tags
    }

    /// uv's `--python-platform` for a cross install: the highest level uv knows that this glibc runs (uv
    /// offers `manylinux_2_17` and `manylinux_2_28` … `manylinux_2_40`; see `uv pip install --help`), which
    /// includes every level below it.
    pub fn uv_platform(&self, architecture: Architecture) -> String {
        const UV_LEVELS: [u32; 12] = [17, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40];
        let level = UV_LEVELS
            .into_iter()
            .rev()
            .find(|l| *l <= self.glibc.1)
            .unwrap_or(17);
        format!("{}-manylinux_2_{level}", architecture.machine())
    }
}

/// `2.2.5` → `[2, 2, 5]`; `None` for anything that is not dotted numbers.
fn version(text: &str) -> Option<Vec<u32>> {
    text.split('.').map(|p| p.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_runtime_has_its_amazon_linux_ceiling() {
        let table = [
            (Runtime::Python310, "Amazon Linux 2", (2, 26), 24),
            (Runtime::Python311, "Amazon Linux 2", (2, 26), 24),
            (Runtime::Python312, "Amazon Linux 2023", (2, 34), 29),
            (Runtime::Python313, "Amazon Linux 2023", (2, 34), 29),
            (Runtime::Python314, "Amazon Linux 2023", (2, 34), 29),
        ];
        for (runtime, os, glibc, glibcxx) in table {
            let c = ceiling(runtime);
            assert_eq!(
                (c.os, c.glibc, c.glibcxx),
                (os, glibc, glibcxx),
                "{runtime}"
            );
        }
    }

    #[test]
    fn versions_above_the_ceiling_are_found_and_the_highest_named() {
        let al2 = AMAZON_LINUX_2;
        let al2023 = AMAZON_LINUX_2023;
        // (needed versions, violations on AL2, violations on AL2023)
        let table: &[(&[&str], &[&str], &[&str])] = &[
            (&["GLIBC_2.2.5", "GLIBC_2.17", "GLIBC_2.26"], &[], &[]),
            (
                &["GLIBC_2.2.5", "GLIBC_2.27", "GLIBC_2.14"],
                &["GLIBC_2.27"],
                &[],
            ),
            (&["GLIBC_2.28", "GLIBC_2.34"], &["GLIBC_2.34"], &[]),
            (
                &["GLIBC_2.35", "GLIBC_2.29"],
                &["GLIBC_2.35"],
                &["GLIBC_2.35"],
            ),
            (&["GLIBCXX_3.4.24", "CXXABI_1.3.13"], &[], &[]),
            (
                &["GLIBCXX_3.4.26", "GLIBCXX_3.4.9"],
                &["GLIBCXX_3.4.26"],
                &[],
            ),
            (
                &["GLIBCXX_3.4.30"],
                &["GLIBCXX_3.4.30"],
                &["GLIBCXX_3.4.30"],
            ),
            (
                &["GLIBC_2.28", "GLIBCXX_3.4.29", "GLIBC_PRIVATE"],
                &["GLIBC_2.28", "GLIBCXX_3.4.29"],
                &[],
            ),
            (&["GLIBC_PRIVATE", "GLIBC_2.x", "OPENSSL_3.0.0"], &[], &[]),
        ];
        for (needed, on_al2, on_al2023) in table {
            assert_eq!(
                al2.check(needed.iter().copied()),
                *on_al2,
                "{needed:?} on AL2"
            );
            assert_eq!(
                al2023.check(needed.iter().copied()),
                *on_al2023,
                "{needed:?} on AL2023"
            );
        }
        assert_eq!(
            al2.describe_for("GLIBC_2.27"),
            "GLIBC_2.26 (Amazon Linux 2)"
        );
        assert_eq!(
            al2023.describe_for("GLIBCXX_3.4.30"),
            "GLIBCXX_3.4.29 (Amazon Linux 2023)"
        );
    }

    #[test]
    fn cross_installs_ask_for_every_level_up_to_the_ceiling() {
        let pip = AMAZON_LINUX_2.pip_platforms(Architecture::X86_64);
        assert_eq!(
            pip.first().map(String::as_str),
            Some("manylinux_2_26_x86_64")
        );
        for tag in [
            "manylinux_2_24_x86_64",
            "manylinux_2_17_x86_64",
            "manylinux2014_x86_64",
            "manylinux2010_x86_64",
            "manylinux1_x86_64",
        ] {
            assert!(pip.contains(&tag.to_owned()), "{tag} in {pip:?}");
        }
        assert!(!pip.iter().any(|t| t.contains("2_27") || t.contains("2_28")));
        let pip = AMAZON_LINUX_2023.pip_platforms(Architecture::Arm64);
        assert_eq!(
            pip.first().map(String::as_str),
            Some("manylinux_2_34_aarch64")
        );
        assert!(pip.contains(&"manylinux_2_28_aarch64".to_owned()));
        assert!(pip.contains(&"manylinux2014_aarch64".to_owned()));
        assert!(!pip.iter().any(|t| t.starts_with("manylinux1")));

        assert_eq!(
            AMAZON_LINUX_2.uv_platform(Architecture::Arm64),
            "aarch64-manylinux_2_17"
        );
        assert_eq!(
            AMAZON_LINUX_2023.uv_platform(Architecture::X86_64),
            "x86_64-manylinux_2_34"
        );
    }
}
