/// What a range of a device holds, as far as the device knows without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtentKind {
    /// The range is allocated and may hold any bytes.
    Data,
    /// The range is unallocated (a hole) and reads as zeros.
    Zero,
}

/// A byte range of a device and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    /// First byte of the range.
    pub offset: u64,
    /// Length of the range in bytes (never zero).
    pub len: u64,
    /// Whether the range holds data or reads as zeros.
    pub kind: ExtentKind,
}

impl Extent {
    /// One past the last byte of the range.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// Appends `extent` to `list`, merging it into the last entry when they touch and have
    /// the same kind, so lists stay minimal.
    pub fn push_merged(list: &mut Vec<Extent>, extent: Extent) {
        if extent.len == 0 {
            return;
        }
        if let Some(last) = list.last_mut() {
            if last.kind == extent.kind && last.end() == extent.offset {
                last.len += extent.len;
                return;
            }
        }
        list.push(extent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_merged_joins_touching_extents_of_the_same_kind() {
        let mut list = Vec::new();
        let data = |offset, len| Extent {
            offset,
            len,
            kind: ExtentKind::Data,
        };
        Extent::push_merged(&mut list, data(0, 4096));
        Extent::push_merged(&mut list, data(4096, 4096));
        Extent::push_merged(
            &mut list,
            Extent {
                offset: 8192,
                len: 10,
                kind: ExtentKind::Zero,
            },
        );
        Extent::push_merged(&mut list, data(8202, 0));
        assert_eq!(
            list,
            vec![
                data(0, 8192),
                Extent {
                    offset: 8192,
                    len: 10,
                    kind: ExtentKind::Zero
                }
            ]
        );
    }
}
