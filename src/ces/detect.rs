//! Content classification and the choice of codec for a chunk.
//!
//! Order of evidence: magic bytes (`infer`) → the file name's extension →
//! a text heuristic on a sample → "binary". Already-compressed media and
//! archives are stored without compression; images get a light level; text
//! and code a high one; binaries a moderate one. Binaries and images must also
//! pass a cheap compressibility probe (level-1 zstd of a small sample), so an
//! unknown encrypted or random blob costs microseconds, not a full
//! compression attempt. Pure: no I/O.

use super::codec::Codec;
use super::error::{ParamError, Result};

/// What a chunk holds, as far as compression is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentClass {
    /// Compressed media or an archive: compressing again wastes CPU.
    Compressed,
    /// Uncompressed raster images (bmp, tiff, psd...).
    Image,
    /// Text and source code.
    Text,
    /// Anything else.
    Binary,
}

/// What the caller knows about a chunk besides its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hint<'a> {
    /// The file's name (or path); only its extension is used.
    pub file_name: Option<&'a str>,
    /// Set for chunks after a file's first: magic bytes only appear at the
    /// start of a file, so they are not looked for.
    pub not_first_chunk: bool,
}

/// The zstd level per class. Levels are 1..=22; `None` disables compression
/// for that class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionPolicy {
    pub text: Option<i32>,
    pub binary: Option<i32>,
    pub image: Option<i32>,
    /// A probe sample that compresses to more than this fraction of its size
    /// marks the chunk incompressible (per mille).
    pub probe_keep_per_mille: u32,
}

impl Default for CompressionPolicy {
    /// Text and binaries at 3 (zstd's default), images at 1.
    ///
    /// Measured by `cargo bench --bench ces` (docs/PERFORMANCE.md, "CES"): on
    /// source code, level 6 runs at about 1/3 of level 3's speed (113 vs
    /// 402 MB/s per core; the whole pipeline 108 vs 331 MB/s) for output only
    /// ~15 % smaller (0.094 vs 0.111 of the input); levels 1-2 are barely
    /// faster and store 16-55 % more. Level 3 is the best trade-off.
    fn default() -> Self {
        CompressionPolicy {
            text: Some(3),
            binary: Some(3),
            image: Some(1),
            probe_keep_per_mille: 920,
        }
    }
}

impl CompressionPolicy {
    /// Every class at one level (`None`: never compress).
    pub fn uniform(level: Option<i32>) -> Self {
        CompressionPolicy {
            text: level,
            binary: level,
            image: level,
            ..Self::default()
        }
    }

    /// Checks the levels.
    pub fn validate(&self) -> Result<()> {
        for l in [self.text, self.binary, self.image].into_iter().flatten() {
            if !(1..=22).contains(&l) {
                return Err(ParamError::Level(l).into());
            }
        }
        Ok(())
    }

    /// Classifies `data` and picks its codec.
    pub fn choose(&self, data: &[u8], hint: &Hint<'_>) -> (ContentClass, Codec) {
        let class = classify(data, hint);
        let level = match class {
            ContentClass::Compressed => None,
            ContentClass::Text => self.text,
            ContentClass::Image => self.image,
            ContentClass::Binary => self.binary,
        };
        let codec = match level {
            None => Codec::None,
            Some(_) if data.is_empty() => Codec::None,
            Some(level) => {
                if class != ContentClass::Text
                    && !probe_compressible(data, self.probe_keep_per_mille)
                {
                    Codec::None
                } else {
                    Codec::Zstd { level: level as i8 }
                }
            }
        };
        (class, codec)
    }
}

/// Bytes looked at by the text heuristic.
const TEXT_SAMPLE: usize = 8 * 1024;
/// Bytes compressed by the compressibility probe.
const PROBE_SAMPLE: usize = 16 * 1024;
/// Below this size the probe is skipped: compressing the chunk itself is as cheap.
const PROBE_MIN_CHUNK: usize = 64 * 1024;

/// Classifies a chunk (see the module documentation for the order of evidence).
pub fn classify(data: &[u8], hint: &Hint<'_>) -> ContentClass {
    if !hint.not_first_chunk
        && let Some(t) = infer::get(data)
        && let Some(class) = class_of_extension(t.extension())
    {
        return class;
    }
    if let Some(class) = hint
        .file_name
        .and_then(extension_of)
        .and_then(|e| class_of_extension(&e))
    {
        return class;
    }
    if looks_like_text(data) {
        ContentClass::Text
    } else {
        ContentClass::Binary
    }
}

fn extension_of(name: &str) -> Option<String> {
    let base = name.rsplit('/').next().unwrap_or(name);
    let (stem, ext) = base.rsplit_once('.')?;
    if stem.is_empty() || ext.is_empty() || ext.len() > 8 {
        return None;
    }
    Some(ext.to_ascii_lowercase())
}

/// The class implied by a (lowercase) extension, if it is a known one.
fn class_of_extension(ext: &str) -> Option<ContentClass> {
    const COMPRESSED: &[&str] = &[
        // images with compressed pixels
        "jpg", "jpeg", "png", "gif", "webp", "heif", "heic", "avif", "jxl", "jxr", "jp2",
        // video and audio
        "mp4", "m4v", "mkv", "webm", "mov", "avi", "wmv", "mpg", "mpeg", "flv", "3gp", "ts", "mp3",
        "m4a", "ogg", "oga", "ogv", "opus", "flac", "aac", "amr", "ape", "wma",
        // archives and compressed containers
        "zip", "gz", "tgz", "bz2", "tbz", "tbz2", "xz", "txz", "7z", "rar", "zst", "zstd", "lz4",
        "lz", "lzma", "z", "br", "cab", "deb", "rpm", "msi", "apk", "jar", "war", "whl", "epub",
        "docx", "xlsx", "pptx", "odt", "ods", "odp", "woff", "woff2", "dmg", "crx", "swf", "xpi",
        "nupkg", "squashfs", "pack",
    ];
    const IMAGE: &[&str] = &[
        "bmp", "tif", "tiff", "psd", "ico", "ppm", "pgm", "pbm", "pnm", "tga", "exr", "hdr", "cr2",
        "nef", "dng", "ora", "dcm", "raw",
    ];
    const TEXT: &[&str] = &[
        "txt",
        "md",
        "rst",
        "adoc",
        "c",
        "h",
        "cc",
        "cpp",
        "cxx",
        "hpp",
        "hh",
        "rs",
        "go",
        "py",
        "pyi",
        "js",
        "mjs",
        "cjs",
        "jsx",
        "tsx",
        "java",
        "kt",
        "scala",
        "swift",
        "rb",
        "pl",
        "pm",
        "php",
        "sh",
        "bash",
        "zsh",
        "fish",
        "css",
        "scss",
        "less",
        "html",
        "htm",
        "xml",
        "xhtml",
        "svg",
        "json",
        "jsonl",
        "yaml",
        "yml",
        "toml",
        "ini",
        "cfg",
        "conf",
        "csv",
        "tsv",
        "log",
        "sql",
        "tex",
        "bib",
        "lua",
        "r",
        "mk",
        "cmake",
        "proto",
        "el",
        "lisp",
        "clj",
        "hs",
        "ml",
        "ex",
        "exs",
        "erl",
        "dart",
        "vue",
        "eml",
        "ics",
        "vcf",
        "diff",
        "patch",
        "po",
        "srt",
        "rtf",
        "ps",
        "asm",
        "s",
        "f90",
        "jl",
        "nim",
        "zig",
        "v",
        "sv",
        "vhd",
        "lock",
        "gradle",
        "properties",
        "mdx",
        "ipynb",
        "tf",
        "nix",
        "d",
        "pas",
    ];
    if COMPRESSED.contains(&ext) {
        Some(ContentClass::Compressed)
    } else if IMAGE.contains(&ext) {
        Some(ContentClass::Image)
    } else if TEXT.contains(&ext) {
        Some(ContentClass::Text)
    } else {
        None
    }
}

/// Text: no NUL byte in the sample, valid UTF-8 (a sequence cut by the sample's
/// end is allowed), and few control characters.
pub fn looks_like_text(data: &[u8]) -> bool {
    if data.is_empty() {
        return false;
    }
    let sample = &data[..data.len().min(TEXT_SAMPLE)];
    if sample.contains(&0) {
        return false;
    }
    if let Err(e) = std::str::from_utf8(sample) {
        // Valid up to a multi-byte character cut by the end of the sample.
        let cut_at_end = e.error_len().is_none() && e.valid_up_to() + 4 > sample.len();
        if !cut_at_end {
            return false;
        }
    }
    let control = sample
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0c | 0x1b))
        .count();
    control * 100 <= sample.len()
}

/// Compresses a sample from the middle of `data` at level 1; false when it
/// saves less than `1 - keep_per_mille/1000`.
fn probe_compressible(data: &[u8], keep_per_mille: u32) -> bool {
    if data.len() < PROBE_MIN_CHUNK {
        return true;
    }
    let start = (data.len() - PROBE_SAMPLE) / 2;
    let sample = &data[start..start + PROBE_SAMPLE];
    match super::codec::compressed_len(sample, 1) {
        Some(n) => (n as u64) * 1000 <= (sample.len() as u64) * u64::from(keep_per_mille),
        // The probe failing is no reason to fail the write: try for real.
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0u8; n];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    #[test]
    fn magic_bytes_beat_the_extension() {
        let png = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0];
        let hint = Hint {
            file_name: Some("notes.txt"),
            ..Hint::default()
        };
        assert_eq!(classify(&png, &hint), ContentClass::Compressed);
    }

    #[test]
    fn extension_classifies_when_there_is_no_magic() {
        let h = |n| Hint {
            file_name: Some(n),
            ..Hint::default()
        };
        assert_eq!(
            classify(b"\x01\x02", &h("a/b/photo.JPG")),
            ContentClass::Compressed
        );
        assert_eq!(classify(b"\x01\x02", &h("scan.tiff")), ContentClass::Image);
        assert_eq!(classify(b"\x01\x02", &h("main.rs")), ContentClass::Text);
        assert_eq!(classify(b"\x01\x02", &h(".bashrc")), ContentClass::Binary);
    }

    #[test]
    fn text_heuristic_accepts_utf8_and_rejects_binary() {
        assert!(looks_like_text(
            "fn main() { println!(\"héllo\"); }\n".as_bytes()
        ));
        assert!(!looks_like_text(b"\x7fELF\x02\x01\x01\x00\x00"));
        assert!(!looks_like_text(&random(4096, 1)));
        // A multi-byte character cut by the end of the sample still counts as text.
        let mut s = "é".repeat(TEXT_SAMPLE / 2).into_bytes();
        s.insert(0, b'a');
        assert!(looks_like_text(&s));
    }

    #[test]
    fn random_data_is_stored_uncompressed() {
        let p = CompressionPolicy::default();
        let (class, codec) = p.choose(&random(1 << 20, 2), &Hint::default());
        assert_eq!(class, ContentClass::Binary);
        assert_eq!(codec, Codec::None);
    }

    #[test]
    fn compressed_extensions_skip_zstd() {
        let p = CompressionPolicy::default();
        let text = "hello world\n".repeat(10_000);
        let hint = Hint {
            file_name: Some("x.zip"),
            ..Hint::default()
        };
        assert_eq!(p.choose(text.as_bytes(), &hint).1, Codec::None);
        assert_eq!(
            p.choose(text.as_bytes(), &Hint::default()).1,
            Codec::Zstd { level: 3 }
        );
    }

    #[test]
    fn policy_rejects_bad_levels() {
        assert!(CompressionPolicy::uniform(Some(0)).validate().is_err());
        assert!(CompressionPolicy::uniform(Some(23)).validate().is_err());
        assert!(CompressionPolicy::uniform(None).validate().is_ok());
    }
}
