//! The backupstore's objects: where each lives and how it is encoded.
//! docs/backupstore-format.md describes the same for readers written elsewhere.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use shorthorn_block::NameError;

/// The version of every JSON record this code writes; records of other versions are
/// refused, not guessed at.
pub const FORMAT_VERSION: u32 = 1;
/// Block size of a volume's first backup unless asked otherwise.
pub const DEFAULT_BLOCK_SIZE: u64 = 2 << 20;
/// Smallest and largest block sizes accepted.
pub const MIN_BLOCK_SIZE: u64 = 64 << 10;
/// See [`MIN_BLOCK_SIZE`].
pub const MAX_BLOCK_SIZE: u64 = 64 << 20;

/// First bytes of every block object.
const BLOCK_MAGIC: &[u8; 4] = b"SHBK";
/// Length of a block object's header.
const BLOCK_HEADER_LEN: usize = 12;

/// How block contents are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Stored as is.
    None,
    /// LZ4 block format: fast, modest ratio.
    #[default]
    Lz4,
    /// Zstandard level 3: slower, smaller.
    Zstd,
}

impl Compression {
    fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
            Compression::Zstd => 2,
        }
    }

    fn from_code(code: u8) -> Option<Compression> {
        match code {
            0 => Some(Compression::None),
            1 => Some(Compression::Lz4),
            2 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        })
    }
}

impl FromStr for Compression {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Compression, FormatError> {
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(FormatError::UnknownCompression(s.to_string())),
        }
    }
}

/// `volumes/<volume>/volume.json`: written by a volume's first backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The volume's name.
    pub name: String,
    /// Size of every block of this volume's backups, in bytes.
    pub block_size: u64,
    /// When the first backup began (RFC 3339).
    pub created: String,
}

/// One stored block of a backup's block map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockEntry {
    /// Byte offset in the volume (a multiple of the block size).
    pub offset: u64,
    /// blake3 of the block's uncompressed bytes, lowercase hex: also its object's name.
    pub hash: String,
}

/// What a backup wrote.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackupStats {
    /// Bytes read from the snapshot.
    pub read_bytes: u64,
    /// Blocks this backup uploaded (the others were stored already).
    pub uploaded_blocks: u64,
    /// Bytes uploaded for those blocks, after compression.
    pub uploaded_bytes: u64,
    /// Bytes of non-zero blocks in the backup (its restore size without holes).
    pub logical_bytes: u64,
}

/// `volumes/<volume>/backups/<name>.json`: one complete backup. It is written last, so
/// a backup without it never happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRecord {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The backup's name, `backup-<UTC time>-<random>`.
    pub name: String,
    /// The volume backed up.
    pub volume: String,
    /// The volume's size when its snapshot was taken.
    pub volume_size: u64,
    /// The volume's block size.
    pub block_size: u64,
    /// The snapshot backed up.
    pub snapshot: String,
    /// That snapshot's creation time as its replica reported it: with the name, it tells
    /// a later snapshot of the same name apart.
    pub snapshot_created: String,
    /// When the backup began and ended (RFC 3339).
    pub created: String,
    /// See `created`.
    pub completed: String,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// How this backup compressed the blocks it uploaded.
    pub compression: Compression,
    /// The backup this one was taken incrementally against, if any.
    pub base: Option<String>,
    /// What it wrote.
    pub stats: BackupStats,
    /// Every non-zero block of the volume, by offset; blocks not listed are zeros.
    pub blocks: Vec<BlockEntry>,
}

impl BackupRecord {
    /// Checks what a reader relies on: the version, block alignment and order.
    pub fn validate(&self) -> Result<(), FormatError> {
        if self.format_version != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion {
                backup: self.name.clone(),
                found: self.format_version,
            });
        }
        check_block_size(self.block_size)?;
        let mut previous = None;
        for block in &self.blocks {
            let (backup, offset) = (self.name.clone(), block.offset);
            if offset % self.block_size != 0 || offset >= self.volume_size {
                return Err(FormatError::OffGrid { backup, offset });
            }
            if previous.is_some_and(|p| p >= offset) {
                return Err(FormatError::Unordered { backup, offset });
            }
            if !is_hash(&block.hash) {
                return Err(FormatError::MalformedHash {
                    backup,
                    offset,
                    hash: block.hash.clone(),
                });
            }
            previous = Some(offset);
        }
        Ok(())
    }
}

/// Refuses block sizes outside the accepted range or not a power of two.
pub fn check_block_size(block_size: u64) -> Result<(), FormatError> {
    if block_size.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        Ok(())
    } else {
        Err(FormatError::BlockSize(block_size))
    }
}

fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The hash naming a block with these contents.
pub fn block_hash(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Where a volume's objects live, relative to the target's prefix.
pub fn volume_dir(volume: &str) -> String {
    format!("volumes/{volume}")
}

/// See [`VolumeRecord`].
pub fn volume_record_path(volume: &str) -> String {
    format!("volumes/{volume}/volume.json")
}

/// The directory of a volume's backup records.
pub fn backups_dir(volume: &str) -> String {
    format!("volumes/{volume}/backups")
}

/// See [`BackupRecord`].
pub fn backup_record_path(volume: &str, backup: &str) -> String {
    format!("volumes/{volume}/backups/{backup}.json")
}

/// The directory of a volume's blocks.
pub fn blocks_dir(volume: &str) -> String {
    format!("volumes/{volume}/blocks")
}

/// A block object: fanned out by its hash's first two bytes so no directory grows huge.
pub fn block_path(volume: &str, hash: &str) -> String {
    let (a, b) = (
        &hash[..2.min(hash.len())],
        &hash[2.min(hash.len())..4.min(hash.len())],
    );
    format!("volumes/{volume}/blocks/{a}/{b}/{hash}.blk")
}

/// The hash a block object's path names, if it is one.
pub fn block_hash_of_path(relative: &str) -> Option<&str> {
    let name = relative.rsplit('/').next()?;
    let hash = name.strip_suffix(".blk")?;
    is_hash(hash).then_some(hash)
}

/// The directory of a volume's locks.
pub fn locks_dir(volume: &str) -> String {
    format!("volumes/{volume}/locks")
}

/// Encodes a block: a 12-byte header (magic `SHBK`, version 1, codec, two zero bytes,
/// uncompressed length as u32 little-endian) and the payload. A block that does not
/// shrink is stored uncompressed.
pub fn encode_block(data: &[u8], compression: Compression) -> Result<Vec<u8>, FormatError> {
    let len = u32::try_from(data.len()).map_err(|_| FormatError::BlockTooLarge(data.len()))?;
    let compressed = match compression {
        Compression::None => None,
        Compression::Lz4 => Some(lz4_flex::block::compress(data)),
        Compression::Zstd => Some(zstd::bulk::compress(data, 3).map_err(FormatError::Zstd)?),
    };
    let (codec, payload) = match &compressed {
        Some(c) if c.len() < data.len() => (compression, c.as_slice()),
        _ => (Compression::None, data),
    };
    let mut out = Vec::with_capacity(BLOCK_HEADER_LEN + payload.len());
    out.extend_from_slice(BLOCK_MAGIC);
    out.extend_from_slice(&[1, codec.code(), 0, 0]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Decodes a block object and checks that its contents hash to `hash`.
pub fn decode_block(object: &[u8], hash: &str) -> Result<Vec<u8>, FormatError> {
    let hash_owned = || hash.to_string();
    let Some((header, payload)) = object.split_first_chunk::<BLOCK_HEADER_LEN>() else {
        return Err(FormatError::NotABlock { hash: hash_owned() });
    };
    let [m0, m1, m2, m3, version, code, _, _, l0, l1, l2, l3] = *header;
    if &[m0, m1, m2, m3] != BLOCK_MAGIC {
        return Err(FormatError::NotABlock { hash: hash_owned() });
    }
    if version != 1 {
        return Err(FormatError::BlockVersion {
            hash: hash_owned(),
            version,
        });
    }
    let codec = Compression::from_code(code).ok_or_else(|| FormatError::UnknownCodec {
        hash: hash_owned(),
        code,
    })?;
    let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    let decompress_error = |reason: String| FormatError::Decompress {
        hash: hash_owned(),
        codec,
        reason,
    };
    let data = match codec {
        Compression::None => payload.to_vec(),
        Compression::Lz4 => lz4_flex::block::decompress(payload, len)
            .map_err(|e| decompress_error(e.to_string()))?,
        Compression::Zstd => {
            zstd::bulk::decompress(payload, len).map_err(|e| decompress_error(e.to_string()))?
        }
    };
    if data.len() != len {
        return Err(FormatError::BlockLength {
            hash: hash_owned(),
            found: data.len(),
            expected: len,
        });
    }
    let actual = block_hash(&data);
    if actual != hash {
        return Err(FormatError::BlockHash {
            hash: hash_owned(),
            actual,
        });
    }
    Ok(data)
}

/// A backup's full address: `<target>?backup=<name>&volume=<volume>` (Longhorn's shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupUrl {
    /// The target URL.
    pub target: String,
    /// The volume.
    pub volume: String,
    /// The backup's name.
    pub backup: String,
}

impl BackupUrl {
    /// Parses a backup URL.
    pub fn parse(url: &str) -> Result<BackupUrl, FormatError> {
        let source = BackupSource::parse(url).map_err(|e| match e {
            FormatError::UrlNoVolume { url } => FormatError::UrlIncomplete { url },
            other => other,
        })?;
        let Some(backup) = source.backup else {
            return Err(FormatError::UrlIncomplete {
                url: url.to_string(),
            });
        };
        Ok(BackupUrl {
            target: source.target,
            volume: source.volume,
            backup,
        })
    }
}

/// The backups of one volume in a target, and perhaps one of them:
/// `TARGET?volume=VOLUME[&backup=NAME]` — what a standby volume follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSource {
    /// The target URL.
    pub target: String,
    /// The backed-up volume.
    pub volume: String,
    /// One backup of it, if the URL names one.
    pub backup: Option<String>,
}

impl BackupSource {
    /// Parses `TARGET?volume=VOLUME[&backup=NAME]`.
    pub fn parse(url: &str) -> Result<BackupSource, FormatError> {
        let (target, query) = url.split_once('?').ok_or_else(|| FormatError::UrlNoQuery {
            url: url.to_string(),
        })?;
        let (mut volume, mut backup) = (None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("volume", v)) if !v.is_empty() => volume = Some(v.to_string()),
                Some(("backup", b)) if !b.is_empty() => backup = Some(b.to_string()),
                _ => {
                    return Err(FormatError::UrlQuery {
                        url: url.to_string(),
                        pair: pair.to_string(),
                    });
                }
            }
        }
        let Some(volume) = volume else {
            return Err(FormatError::UrlNoVolume {
                url: url.to_string(),
            });
        };
        for (field, name) in std::iter::once(("volume", &volume))
            .chain(backup.as_ref().map(|backup| ("backup", backup)))
        {
            shorthorn_block::validate_name(name).map_err(|source| FormatError::UrlName {
                url: url.to_string(),
                field,
                source,
            })?;
        }
        Ok(BackupSource {
            target: target.to_string(),
            volume,
            backup,
        })
    }

    /// The URL of backup `backup` of this volume.
    pub fn backup_url(&self, backup: &str) -> BackupUrl {
        BackupUrl {
            target: self.target.clone(),
            volume: self.volume.clone(),
            backup: backup.to_string(),
        }
    }
}

impl fmt::Display for BackupUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}?backup={}&volume={}",
            self.target, self.backup, self.volume
        )
    }
}

/// A backupstore object that is not as the format says, or input that breaks its rules.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// No compression has that name.
    #[error("unknown compression {0:?}; use lz4, zstd or none")]
    UnknownCompression(String),
    /// A backup record of another format version.
    #[error(
        "backup {backup} has format version {found}; this build reads {supported}",
        supported = FORMAT_VERSION
    )]
    UnsupportedVersion {
        /// The backup.
        backup: String,
        /// Its version.
        found: u32,
    },
    /// A block map entry off the volume's block grid or past its end.
    #[error("backup {backup}: block at offset {offset} is not a block of the volume")]
    OffGrid {
        /// The backup.
        backup: String,
        /// The entry's offset.
        offset: u64,
    },
    /// A block map not sorted by offset (or with an offset twice).
    #[error("backup {backup}: block map not in offset order at {offset}")]
    Unordered {
        /// The backup.
        backup: String,
        /// The first offset out of order.
        offset: u64,
    },
    /// A block map entry whose hash is not 64 lowercase hex digits.
    #[error("backup {backup}: block at offset {offset} has a malformed hash {hash:?}")]
    MalformedHash {
        /// The backup.
        backup: String,
        /// The entry's offset.
        offset: u64,
        /// Its hash.
        hash: String,
    },
    /// A block size out of range or not a power of two.
    #[error(
        "block size {0} must be a power of two from {min} to {max}",
        min = MIN_BLOCK_SIZE,
        max = MAX_BLOCK_SIZE
    )]
    BlockSize(u64),
    /// A block too large for its header's length field.
    #[error("block larger than 4 GiB ({0} bytes)")]
    BlockTooLarge(usize),
    /// zstd failed to compress a block.
    #[error("zstd compression")]
    Zstd(#[source] io::Error),
    /// A block object without the header every block object has.
    #[error("block {hash} is corrupt: not a Shorthorn block object")]
    NotABlock {
        /// The block's hash.
        hash: String,
    },
    /// A block object of a later version.
    #[error("block {hash}: unknown block format version {version}")]
    BlockVersion {
        /// The block's hash.
        hash: String,
        /// Its version.
        version: u8,
    },
    /// A block object naming no known codec.
    #[error("block {hash} is corrupt: unknown codec {code}")]
    UnknownCodec {
        /// The block's hash.
        hash: String,
        /// The codec byte.
        code: u8,
    },
    /// A block object whose payload does not decompress.
    #[error("block {hash} is corrupt: {codec}: {reason}")]
    Decompress {
        /// The block's hash.
        hash: String,
        /// Its codec.
        codec: Compression,
        /// What the decompressor said.
        reason: String,
    },
    /// A block object whose contents are not as long as its header says.
    #[error("block {hash} is corrupt: {found} bytes, header says {expected}")]
    BlockLength {
        /// The block's hash.
        hash: String,
        /// Bytes decoded.
        found: usize,
        /// Bytes the header records.
        expected: usize,
    },
    /// A block object whose contents hash to another name.
    #[error("block {hash} is corrupt: its contents hash to {actual}")]
    BlockHash {
        /// The block's hash (its name).
        hash: String,
        /// Its contents' hash.
        actual: String,
    },
    /// A backup URL without a query.
    #[error("backup URL {url:?} has no ?backup=NAME&volume=VOLUME (see `backup ls`)")]
    UrlNoQuery {
        /// The URL.
        url: String,
    },
    /// A backup URL's query holds something else.
    #[error("backup URL {url:?}: unexpected {pair:?} in the query")]
    UrlQuery {
        /// The URL.
        url: String,
        /// What it holds.
        pair: String,
    },
    /// A backup URL's query lacks the backup or the volume.
    #[error("backup URL {url:?} needs both backup=NAME and volume=VOLUME")]
    UrlIncomplete {
        /// The URL.
        url: String,
    },
    /// A backup source URL's query lacks the volume.
    #[error("backup URL {url:?} needs volume=VOLUME")]
    UrlNoVolume {
        /// The URL.
        url: String,
    },
    /// A backup URL names a volume or backup by an invalid name.
    #[error("backup URL {url:?}: {field}")]
    UrlName {
        /// The URL.
        url: String,
        /// `volume` or `backup`.
        field: &'static str,
        /// Which rule the name breaks.
        source: NameError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn blocks_round_trip_through_every_codec(
            data in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..20000),
        ) {
            let hash = block_hash(&data);
            for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
                let object = encode_block(&data, codec).unwrap();
                prop_assert_eq!(decode_block(&object, &hash).unwrap(), data.clone());
            }
        }
    }

    #[test]
    fn a_flipped_byte_is_reported_as_corruption() {
        let data = vec![7u8; 100_000];
        let hash = block_hash(&data);
        for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let mut object = encode_block(&data, codec).unwrap();
            let last = object.len() - 1;
            object[last] ^= 1;
            let err = decode_block(&object, &hash).unwrap_err();
            assert!(err.to_string().contains("corrupt"), "{codec}: {err:#}");
        }
        assert!(decode_block(b"junk", &hash).is_err());
    }

    #[test]
    fn compressible_blocks_shrink_and_random_ones_are_stored_raw() {
        let zeros_and_text = b"shorthorn ".repeat(10_000);
        assert!(
            encode_block(&zeros_and_text, Compression::Lz4)
                .unwrap()
                .len()
                < 10_000
        );
        let noise: Vec<u8> = (0..65536).map(|_| rand::random::<u8>()).collect();
        let object = encode_block(&noise, Compression::Zstd).unwrap();
        assert_eq!(object[5], Compression::None.code());
    }

    #[test]
    fn backup_urls_round_trip_and_bad_ones_say_why() {
        let url = BackupUrl::parse("s3://b@r/p?backup=backup-1&volume=vol").unwrap();
        assert_eq!(url.target, "s3://b@r/p");
        assert_eq!(url.to_string(), "s3://b@r/p?backup=backup-1&volume=vol");
        assert!(BackupUrl::parse("s3://b@r/p").is_err());
        assert!(BackupUrl::parse("s3://b@r/p?backup=x").is_err());
        assert!(BackupUrl::parse("s3://b@r/p?backup=x&volume=../etc").is_err());
    }

    #[test]
    fn block_paths_fan_out_and_parse_back() {
        let hash = block_hash(b"x");
        let path = block_path("vol", &hash);
        assert!(path.starts_with(&format!(
            "volumes/vol/blocks/{}/{}/",
            &hash[..2],
            &hash[2..4]
        )));
        assert_eq!(block_hash_of_path(&path), Some(hash.as_str()));
        assert_eq!(block_hash_of_path("volumes/vol/blocks/aa/bb/x.blk"), None);
    }
}
