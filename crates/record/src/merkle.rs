//! RFC 9162 Merkle tree hashing (identical to RFC 6962 §2.1), computed incrementally.
//!
//! Recordings and the manifest log commit to their entries with the standard Certificate
//! Transparency tree so that any existing tooling (or a fifty-line script) can recompute a
//! root: `leaf = SHA-256(0x00 ‖ data)`, `node = SHA-256(0x01 ‖ left ‖ right)`, the empty tree
//! hashes to `SHA-256("")`, and a tree of `n` leaves splits at the largest power of two
//! smaller than `n`.

use sha2::{Digest, Sha256};

/// A SHA-256 output: leaf hashes, node hashes and tree roots.
pub type Hash = [u8; 32];

/// The root of the empty tree, `SHA-256("")`.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The hash of one leaf: `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    leaf_hash_parts(&[data])
}

/// The leaf hash of the concatenation of `parts`, without concatenating them first
/// (the recorder hashes `binding ‖ record` straight out of its frame buffer).
pub(crate) fn leaf_hash_parts(parts: &[&[u8]]) -> Hash {
    // Most events are small: hashing them from one stack buffer in a single call costs less
    // than feeding the hasher piece by piece (one event per message makes this the verifier's
    // and the recorder's inner loop).
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len < SMALL_LEAF {
        let mut buf = [0u8; SMALL_LEAF];
        let mut at = 1;
        for part in parts {
            buf[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        return Sha256::digest(&buf[..at]).into();
    }
    let mut h = Sha256::new();
    h.update([0x00]);
    for part in parts {
        h.update(part);
    }
    h.finalize().into()
}

/// Leaves shorter than this (with their 0x00 prefix) are hashed from a stack buffer.
const SMALL_LEAF: usize = 256;

/// The hash of an interior node: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 0x01;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    Sha256::digest(buf).into()
}

/// An append-only Merkle tree that keeps only its right edge.
///
/// The writer appends one leaf per event on the hot path and needs the root at every
/// checkpoint, so it stores the roots of the perfect subtrees that make up the tree
/// (one per set bit of the size): appending is amortised O(1) hashing and O(log n) memory,
/// and the root costs O(log n). Cloning is cheap, which the best-effort writer uses to roll
/// back leaves that never reached the sink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MerkleTree {
    size: u64,
    /// Roots of perfect subtrees, largest (leftmost) first.
    edge: Vec<Hash>,
}

impl MerkleTree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a leaf given its leaf hash (see [`leaf_hash`]).
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut n = self.size;
        // Every trailing one bit of the old size is a perfect subtree of the same height
        // as the one being carried: merge them, like binary addition.
        while n & 1 == 1 {
            let left = self.edge.pop().expect("edge holds one subtree per set bit");
            hash = node_hash(&left, &hash);
            n >>= 1;
        }
        self.edge.push(hash);
        self.size += 1;
    }

    /// Append a leaf given its data.
    pub fn push_data(&mut self, data: &[u8]) {
        self.push(leaf_hash(data));
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The RFC 9162 root of the tree at its current size.
    pub fn root(&self) -> Hash {
        let mut iter = self.edge.iter().rev();
        let Some(last) = iter.next() else {
            return EMPTY_ROOT;
        };
        // MTH(D[0:n]) = node(MTH(D[0:k]), MTH(D[k:n])) with k the largest power of two
        // below n: the leftmost perfect subtree, then recursively the rest — which folds the
        // edge from the right.
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    // The leaves and roots published with the RFC 6962 reference implementation
    // (certificate-transparency, and transparency-dev/merkle testonly/constants.go):
    // root[n] is the tree head over the first n leaves.
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn empty_tree_is_sha256_of_nothing() {
        assert_eq!(MerkleTree::new().root().to_vec(), h(ROOTS[0]));
        assert_eq!(EMPTY_ROOT.to_vec(), h(ROOTS[0]));
    }

    #[test]
    fn matches_published_rfc6962_roots_at_every_size() {
        let mut tree = MerkleTree::new();
        for (i, leaf) in LEAVES.iter().enumerate() {
            tree.push_data(&h(leaf));
            assert_eq!(tree.size(), i as u64 + 1);
            assert_eq!(hex::encode(tree.root()), ROOTS[i + 1], "size {}", i + 1);
        }
    }

    #[test]
    fn leaf_and_node_prefixes() {
        // The one-leaf tree is the leaf hash of the empty string: SHA-256(0x00).
        assert_eq!(hex::encode(leaf_hash(b"")), ROOTS[1]);
        // Two leaves: node(leaf(""), leaf(0x00)).
        let node = node_hash(&leaf_hash(b""), &leaf_hash(&[0x00]));
        assert_eq!(hex::encode(node), ROOTS[2]);
        // Hashing in pieces equals hashing the concatenation.
        assert_eq!(leaf_hash_parts(&[b"ab", b"", b"c"]), leaf_hash(b"abc"));
    }

    #[test]
    fn small_and_large_leaves_hash_alike() {
        // Small leaves are hashed from a stack buffer, large ones streamed: both must be
        // SHA-256(0x00 ‖ data), on either side of the threshold and across block boundaries.
        for len in [
            0, 54, 55, 56, 63, 64, 119, 120, 200, 254, 255, 256, 257, 1000,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut prefixed = vec![0x00];
            prefixed.extend_from_slice(&data);
            let want: Hash = Sha256::digest(&prefixed).into();
            let (a, b) = data.split_at(len / 3);
            assert_eq!(leaf_hash_parts(&[a, b]), want, "{len} bytes");
        }
    }

    /// A direct transcription of RFC 9162 §2.1.1's recursive definition, to cross-check the
    /// incremental tree on shapes the 8-leaf vectors do not reach.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => EMPTY_ROOT,
            1 => leaves[0],
            n => {
                // The largest power of two strictly smaller than n.
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn incremental_equals_recursive_definition() {
        let leaves: Vec<Hash> = (0u32..300).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut tree = MerkleTree::new();
        for (i, leaf) in leaves.iter().enumerate() {
            tree.push(*leaf);
            assert_eq!(tree.root(), reference_root(&leaves[..=i]), "size {}", i + 1);
        }
    }
}
