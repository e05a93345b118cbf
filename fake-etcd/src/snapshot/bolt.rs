//! The bbolt file format, as far as etcd's snapshots need it: a database of
//! top-level buckets holding byte keys and values, written whole in one go
//! and read back.
//!
//! A bbolt file is a sequence of 4096-byte pages. Pages 0 and 1 are meta
//! pages (the one with the higher transaction ID that checks out wins);
//! each names the root bucket's page. Every bucket is a B+tree: leaf pages
//! hold sorted key/value elements, branch pages hold the first key of each
//! child page; a node larger than a page spans the pages after it
//! (`overflow`). A bucket is itself a leaf element of its parent, flagged
//! as such, whose value is its root page number, or, for a bucket small
//! enough (a quarter of a page), the bucket's whole leaf page inline.
//!
//! The writer lays the tree out bottom-up with no free pages and no
//! freelist (as etcd's backend, which rebuilds the freelist on open), so
//! every page is reachable exactly once: bbolt's consistency check passes.
//! The reader checks every offset against the file, every page (overflow
//! pages included) against revisits, and every node's elements against its
//! size, so a file that is not a bbolt database is an error, never a panic
//! or a runaway allocation.

use std::collections::{BTreeMap, HashSet};

/// The page size etcd's backend uses.
pub(crate) const PAGE_SIZE: usize = 4096;

const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const BUCKET_HEADER: usize = 16;

const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const META_PAGE: u16 = 0x04;

/// A leaf element that is a bucket.
const BUCKET_LEAF: u32 = 0x01;

const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
/// The freelist page of a database that keeps no freelist on disk.
const NO_FREELIST: u64 = u64::MAX;
/// A page holds at most this many elements (its count is a u16, and bbolt
/// refuses 0xFFFF itself).
const MAX_ELEMENTS: usize = u16::MAX as usize - 1;
/// bbolt never splits a node below two elements: a page holds at least two,
/// overflowing if it must. So each level of a tree has at most half the
/// nodes of the one below, and building one always ends.
const MIN_ELEMENTS: usize = 2;

/// A database: top-level buckets by name, each a sorted map.
pub(crate) type Buckets = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;

/// Why a file is not a readable bbolt database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BoltError {
    #[error("not a bbolt database: {0}")]
    Format(String),
}

fn format(message: impl Into<String>) -> BoltError {
    BoltError::Format(message.into())
}

/// FNV-1a, 64 bits: bbolt's meta page checksum.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------- writing

/// One element of a leaf: flags, key, value.
type LeafElement<'a> = (u32, &'a [u8], &'a [u8]);

/// A page's bytes: a header (its ID and overflow are set when placed),
/// then elements, then keys and values.
fn leaf_page(elements: &[LeafElement<'_>]) -> Vec<u8> {
    let data_start = PAGE_HEADER + ELEMENT * elements.len();
    let mut page = vec![0; data_start];
    page[8..10].copy_from_slice(&LEAF_PAGE.to_le_bytes());
    page[10..12].copy_from_slice(&(elements.len() as u16).to_le_bytes());
    for (i, (flags, key, value)) in elements.iter().enumerate() {
        let element = PAGE_HEADER + ELEMENT * i;
        let pos = (page.len() - element) as u32;
        page[element..element + 4].copy_from_slice(&flags.to_le_bytes());
        page[element + 4..element + 8].copy_from_slice(&pos.to_le_bytes());
        page[element + 8..element + 12].copy_from_slice(&(key.len() as u32).to_le_bytes());
        page[element + 12..element + 16].copy_from_slice(&(value.len() as u32).to_le_bytes());
        page.extend_from_slice(key);
        page.extend_from_slice(value);
    }
    page
}

fn branch_page(children: &[(Vec<u8>, u64)]) -> Vec<u8> {
    let data_start = PAGE_HEADER + ELEMENT * children.len();
    let mut page = vec![0; data_start];
    page[8..10].copy_from_slice(&BRANCH_PAGE.to_le_bytes());
    page[10..12].copy_from_slice(&(children.len() as u16).to_le_bytes());
    for (i, (key, child)) in children.iter().enumerate() {
        let element = PAGE_HEADER + ELEMENT * i;
        let pos = (page.len() - element) as u32;
        page[element..element + 4].copy_from_slice(&pos.to_le_bytes());
        page[element + 4..element + 8].copy_from_slice(&(key.len() as u32).to_le_bytes());
        page[element + 8..element + 16].copy_from_slice(&child.to_le_bytes());
        page.extend_from_slice(key);
    }
    page
}

/// Splits elements of the given sizes into runs that each fit one page, as
/// bbolt splits nodes: a run of fewer than two elements never ends early
/// (such a run may be larger than a page: it overflows).
fn runs(sizes: impl Iterator<Item = usize>) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let (mut start, mut used) = (0, PAGE_HEADER);
    let mut end = 0;
    for (i, size) in sizes.enumerate() {
        let count = i - start;
        if count >= MIN_ELEMENTS && (used + size > PAGE_SIZE || count == MAX_ELEMENTS) {
            runs.push(start..i);
            start = i;
            used = PAGE_HEADER;
        }
        used += size;
        end = i + 1;
    }
    runs.push(start..end);
    runs
}

/// The file being written: whole pages, appended.
struct Writer {
    file: Vec<u8>,
}

impl Writer {
    /// Places a node's bytes at the next free page (and the pages after it
    /// if it overflows); its page ID.
    fn place(&mut self, mut node: Vec<u8>) -> u64 {
        let id = (self.file.len() / PAGE_SIZE) as u64;
        let span = node.len().div_ceil(PAGE_SIZE).max(1);
        node[0..8].copy_from_slice(&id.to_le_bytes());
        node[12..16].copy_from_slice(&((span - 1) as u32).to_le_bytes());
        node.resize(span * PAGE_SIZE, 0);
        self.file.extend_from_slice(&node);
        id
    }

    /// Writes a B+tree of sorted elements; its root page.
    fn tree(&mut self, elements: &[LeafElement<'_>]) -> u64 {
        let sizes = elements.iter().map(|(_, k, v)| ELEMENT + k.len() + v.len());
        let mut level: Vec<(Vec<u8>, u64)> = runs(sizes)
            .into_iter()
            .map(|run| {
                let first = elements.get(run.start).map_or(Vec::new(), |e| e.1.to_vec());
                (first, self.place(leaf_page(&elements[run])))
            })
            .collect();
        while level.len() > 1 {
            let sizes = level.iter().map(|(key, _)| ELEMENT + key.len());
            level = runs(sizes)
                .into_iter()
                .map(|run| {
                    let first = level[run.start].0.clone();
                    (first, self.place(branch_page(&level[run])))
                })
                .collect();
        }
        level[0].1
    }

    /// A bucket's value in its parent: the bucket inline if it is small
    /// and flat (bbolt's rule), else the root of its own tree.
    fn bucket(&mut self, entries: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<u8> {
        let elements: Vec<LeafElement<'_>> = entries
            .iter()
            .map(|(k, v)| (0, k.as_slice(), v.as_slice()))
            .collect();
        let inline_size = PAGE_HEADER
            + elements
                .iter()
                .map(|(_, k, v)| ELEMENT + k.len() + v.len())
                .sum::<usize>();
        let mut value = vec![0; BUCKET_HEADER];
        if inline_size <= PAGE_SIZE / 4 {
            value.extend_from_slice(&leaf_page(&elements));
        } else {
            let root = self.tree(&elements);
            value[0..8].copy_from_slice(&root.to_le_bytes());
        }
        value
    }
}

fn meta_page(id: u64, root: u64, pages: u64, txid: u64) -> Vec<u8> {
    let mut page = vec![0; PAGE_SIZE];
    page[0..8].copy_from_slice(&id.to_le_bytes());
    page[8..10].copy_from_slice(&META_PAGE.to_le_bytes());
    let mut meta = Vec::with_capacity(64);
    meta.extend_from_slice(&MAGIC.to_le_bytes());
    meta.extend_from_slice(&VERSION.to_le_bytes());
    meta.extend_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
    meta.extend_from_slice(&0u32.to_le_bytes()); // flags
    meta.extend_from_slice(&root.to_le_bytes());
    meta.extend_from_slice(&0u64.to_le_bytes()); // the root's sequence
    meta.extend_from_slice(&NO_FREELIST.to_le_bytes());
    meta.extend_from_slice(&pages.to_le_bytes());
    meta.extend_from_slice(&txid.to_le_bytes());
    let checksum = fnv1a64(&meta);
    meta.extend_from_slice(&checksum.to_le_bytes());
    page[PAGE_HEADER..PAGE_HEADER + meta.len()].copy_from_slice(&meta);
    page
}

/// Writes `buckets` as a bbolt database file, as of transaction `txid`.
pub(crate) fn write(buckets: &Buckets, txid: u64) -> Vec<u8> {
    // Pages 0 and 1 are the meta pages, written last.
    let mut writer = Writer {
        file: vec![0; 2 * PAGE_SIZE],
    };
    let values: Vec<(Vec<u8>, Vec<u8>)> = buckets
        .iter()
        .map(|(name, entries)| (name.clone(), writer.bucket(entries)))
        .collect();
    let elements: Vec<LeafElement<'_>> = values
        .iter()
        .map(|(name, value)| (BUCKET_LEAF, name.as_slice(), value.as_slice()))
        .collect();
    let root = writer.tree(&elements);
    let pages = (writer.file.len() / PAGE_SIZE) as u64;
    // Both metas valid; bbolt keeps transaction t on page t % 2 (its next
    // commit overwrites the other), and reads the higher one.
    let txid = txid.max(1);
    for (id, tx) in [(txid % 2, txid), ((txid - 1) % 2, txid - 1)] {
        let at = id as usize * PAGE_SIZE;
        writer.file[at..at + PAGE_SIZE].copy_from_slice(&meta_page(id, root, pages, tx));
    }
    writer.file
}

// ---------------------------------------------------------------- reading

/// A bounds-checked view of the file.
struct Reader<'f> {
    file: &'f [u8],
    page_size: usize,
    visited: HashSet<u64>,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// The meta of one meta page, if it checks out: (root page, transaction,
/// page size).
fn meta_at(file: &[u8], at: usize) -> Option<(u64, u64, usize)> {
    let meta = file.get(at + PAGE_HEADER..at + PAGE_HEADER + 64)?;
    let ok = u32_at(meta, 0)? == MAGIC
        && u32_at(meta, 4)? == VERSION
        && u64_at(meta, 56)? == fnv1a64(&meta[..56]);
    ok.then_some((
        u64_at(meta, 16)?,
        u64_at(meta, 48)?,
        u32_at(meta, 8)? as usize,
    ))
}

impl Reader<'_> {
    /// A node's bytes (with its overflow pages): the page at `id`, whole.
    fn node(&mut self, id: u64) -> Result<&[u8], BoltError> {
        if id < 2 || !self.visited.insert(id) {
            return Err(format(format!("page {id} is a meta page or reached twice")));
        }
        let start = usize::try_from(id)
            .ok()
            .and_then(|id| id.checked_mul(self.page_size))
            .filter(|&start| start < self.file.len())
            .ok_or_else(|| format(format!("page {id} is past the end of the file")))?;
        let overflow = u32_at(self.file, start + 12).unwrap_or(0) as usize;
        // An overflow page belongs to its node: reaching it again is an
        // error too, so no page is read twice.
        for page in 1..=overflow as u64 {
            if !self.visited.insert(id.saturating_add(page)) {
                return Err(format(format!(
                    "page {id} overflows into a page reached before"
                )));
            }
        }
        let end = overflow
            .checked_add(1)
            .and_then(|span| span.checked_mul(self.page_size))
            .and_then(|len| start.checked_add(len))
            .filter(|&end| end <= self.file.len())
            .ok_or_else(|| format(format!("page {id} overflows the file")))?;
        Ok(&self.file[start..end])
    }

    /// Every element of a tree of leaves, in order: (flags, key, value).
    fn tree(
        &mut self,
        root: u64,
        depth: usize,
        out: &mut Vec<(u32, Vec<u8>, Vec<u8>)>,
    ) -> Result<(), BoltError> {
        if depth > 64 {
            return Err(format("a bucket's tree is deeper than any real one"));
        }
        let node = self.node(root)?.to_vec();
        match u16_at(&node, 8) {
            Some(BRANCH_PAGE) => {
                for child in branch_children(&node)? {
                    self.tree(child, depth + 1, out)?;
                }
                Ok(())
            }
            Some(LEAF_PAGE) => leaf_elements(&node, out),
            other => Err(format(format!(
                "page {root} has flags {other:?}, not a branch or a leaf"
            ))),
        }
    }

    /// A bucket's entries, from its value in the parent.
    fn bucket(&mut self, value: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, BoltError> {
        let root = u64_at(value, 0).ok_or_else(|| format("a bucket value is too short"))?;
        let mut elements = Vec::new();
        if root == 0 {
            let inline = &value[BUCKET_HEADER.min(value.len())..];
            leaf_elements(inline, &mut elements)?;
        } else {
            self.tree(root, 0, &mut elements)?;
        }
        elements
            .into_iter()
            .map(|(flags, key, value)| {
                if flags & BUCKET_LEAF != 0 {
                    Err(format("nested buckets are not part of an etcd database"))
                } else {
                    Ok((key, value))
                }
            })
            .collect()
    }
}

fn branch_children(node: &[u8]) -> Result<Vec<u64>, BoltError> {
    let count = u16_at(node, 10).unwrap_or(0) as usize;
    (0..count)
        .map(|i| {
            u64_at(node, PAGE_HEADER + ELEMENT * i + 8)
                .ok_or_else(|| format("a branch element is past its page"))
        })
        .collect()
}

fn leaf_elements(node: &[u8], out: &mut Vec<(u32, Vec<u8>, Vec<u8>)>) -> Result<(), BoltError> {
    if u16_at(node, 8) != Some(LEAF_PAGE) {
        return Err(format("a bucket's page is not a leaf"));
    }
    let count = u16_at(node, 10).unwrap_or(0) as usize;
    // Elements own disjoint bytes of their node: more than the node holds
    // is a crafted file, refused before it can make the copies explode.
    let mut claimed = 0usize;
    for i in 0..count {
        let element = PAGE_HEADER + ELEMENT * i;
        let field = |at| u32_at(node, element + at).map(|v| v as usize);
        let (Some(flags), Some(pos), Some(key_len), Some(value_len)) =
            (field(0), field(4), field(8), field(12))
        else {
            return Err(format("a leaf element is past its page"));
        };
        let key_start = element.checked_add(pos);
        let key_end = key_start.and_then(|s| s.checked_add(key_len));
        let value_end = key_end.and_then(|e| e.checked_add(value_len));
        let (Some(key_start), Some(key_end), Some(value_end)) = (key_start, key_end, value_end)
        else {
            return Err(format("a leaf element's sizes overflow"));
        };
        let (Some(key), Some(value)) = (node.get(key_start..key_end), node.get(key_end..value_end))
        else {
            return Err(format("a leaf element's key or value is past its page"));
        };
        claimed = claimed.saturating_add(key_len + value_len);
        if claimed > node.len() {
            return Err(format("a page's elements claim more bytes than it has"));
        }
        out.push((flags as u32, key.to_vec(), value.to_vec()));
    }
    Ok(())
}

/// Reads a bbolt database file: its top-level buckets.
///
/// # Errors
///
/// If the file is not a bbolt database, or is damaged.
pub(crate) fn read(file: &[u8]) -> Result<Buckets, BoltError> {
    let first = meta_at(file, 0);
    let page_size = first.map_or(PAGE_SIZE, |(_, _, size)| size);
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(format(format!("page size {page_size}")));
    }
    let second = meta_at(file, page_size);
    let (root, _, _) = match (first, second) {
        (Some(a), Some(b)) => {
            if b.1 > a.1 {
                b
            } else {
                a
            }
        }
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return Err(format("no valid meta page (magic, version or checksum)")),
    };
    let mut reader = Reader {
        file,
        page_size,
        visited: HashSet::new(),
    };
    let mut elements = Vec::new();
    reader.tree(root, 0, &mut elements)?;
    let mut buckets = Buckets::new();
    for (flags, name, value) in elements {
        if flags & BUCKET_LEAF == 0 {
            return Err(format("a key outside any bucket"));
        }
        let entries = reader.bucket(&value)?;
        buckets.insert(name, entries);
    }
    Ok(buckets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(keys: usize, value_len: usize) -> Buckets {
        let mut buckets = Buckets::new();
        buckets.insert(b"empty".to_vec(), BTreeMap::new());
        buckets.insert(
            b"small".to_vec(),
            BTreeMap::from([(b"a".to_vec(), b"1".to_vec())]),
        );
        buckets.insert(
            b"key".to_vec(),
            (0..keys)
                .map(|i| (format!("{i:08}").into_bytes(), vec![b'v'; value_len]))
                .collect(),
        );
        buckets
    }

    #[test]
    fn a_database_reads_back_as_written() {
        for (keys, value_len) in [(0, 0), (10, 10), (5_000, 50), (70_000, 1), (3, 10_000)] {
            let buckets = sample(keys, value_len);
            let file = write(&buckets, 2);
            assert_eq!(file.len() % PAGE_SIZE, 0);
            assert_eq!(read(&file), Ok(buckets), "{keys} keys of {value_len} bytes");
        }
    }

    #[test]
    fn keys_larger_than_a_page_make_a_finite_tree() {
        let mut buckets = Buckets::new();
        buckets.insert(
            b"key".to_vec(),
            [3000usize, 10_000, 2100, 2100, 5000]
                .iter()
                .enumerate()
                .map(|(i, &len)| {
                    let mut key = vec![b'a' + i as u8; len];
                    key.push(b'k');
                    (key, b"v".to_vec())
                })
                .collect(),
        );
        let file = write(&buckets, 3);
        assert_eq!(read(&file), Ok(buckets));
    }

    #[test]
    fn the_newest_meta_is_on_the_page_bbolt_expects() {
        for txid in [2u64, 7] {
            let file = write(&sample(1, 1), txid);
            let on_page = |page: usize| u64_at(&file, page * PAGE_SIZE + PAGE_HEADER + 48).unwrap();
            assert_eq!(on_page((txid % 2) as usize), txid);
            assert_eq!(on_page(((txid - 1) % 2) as usize), txid - 1);
        }
    }

    #[test]
    fn small_buckets_are_inline_and_large_ones_have_pages() {
        let file = write(&sample(10, 10), 2);
        // Meta pages, then the root leaf: everything else fits inline.
        assert_eq!(file.len(), 3 * PAGE_SIZE);
        let file = write(&sample(5_000, 50), 2);
        assert!(file.len() > 80 * PAGE_SIZE);
    }

    #[test]
    fn the_meta_pages_are_checked() {
        let mut file = write(&sample(10, 10), 2);
        assert!(read(&file).is_ok());
        // The newer meta damaged: the older one is used.
        file[PAGE_SIZE + PAGE_HEADER + 20] ^= 1;
        assert!(read(&file).is_ok());
        file[PAGE_HEADER + 20] ^= 1;
        assert!(read(&file).is_err());
    }

    #[test]
    fn anything_else_is_an_error_not_a_panic() {
        assert!(read(b"").is_err());
        assert!(read(b"not a database at all").is_err());
        assert!(read(&vec![0; 3 * PAGE_SIZE]).is_err());
        let file = write(&sample(5_000, 50), 2);
        // Truncated, and with every byte of a page flipped in turn.
        assert!(read(&file[..file.len() / 2]).is_err());
        for at in (2 * PAGE_SIZE..3 * PAGE_SIZE).step_by(7) {
            let mut damaged = file.clone();
            damaged[at] ^= 0xff;
            let _ = read(&damaged);
        }
    }
}
