"""RFC 9162 Merkle hashing, proof generation from perfect subtrees, and RFC verification."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.errors import VerificationError
from broker.protocol import _merkle

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "merkle_rfc6962.json").read_text())
LEAVES = [_merkle.leaf_hash(bytes.fromhex(leaf)) for leaf in VECTORS["leaves"]]


# -- naive reference: RFC 9162 sections 2.1.1, 2.1.3.1 and 2.1.4.1 over the list of all leaves --------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def leaves(n: int) -> list[bytes]:
    return [_merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def strict_reader(tree: _merkle.MemoryTree) -> _merkle.SubtreeReader:
    """A reader that, like a store, can only answer perfect aligned subtrees (MemoryTree checks)."""
    return tree.subtree


def build(n: int) -> tuple[list[bytes], _merkle.MemoryTree]:
    hashes = leaves(n)
    tree = _merkle.MemoryTree()
    for h in hashes:
        tree.append(h)
    return hashes, tree


BIG_LEAVES, BIG_TREE = build(3000)
EDGE_SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1023, 1024, 1025]


# -- hashing ------------------------------------------------------------------------------------------


def test_leaf_and_node_hashes_use_rfc_domain_prefixes() -> None:
    """A leaf is SHA-256(0x00||entry) and a node SHA-256(0x01||l||r)."""
    assert _merkle.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert _merkle.node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()


@pytest.mark.parametrize("size", range(9))
def test_root_from_leaves_matches_ct_vectors(size: int) -> None:
    """The reference root matches the CT test vector roots of sizes 0 to 8."""
    assert _merkle.root_from_leaves(LEAVES[:size]).hex() == VECTORS["roots"][size]


@pytest.mark.parametrize("size", range(9))
def test_frontier_root_matches_ct_vectors(size: int) -> None:
    """The frontier computes the same roots as the vectors while appending."""
    frontier = _merkle.Frontier()
    for h in LEAVES[:size]:
        frontier.append(h)
    assert frontier.root().hex() == VECTORS["roots"][size]


@pytest.mark.parametrize("case", VECTORS["inclusion"], ids=lambda c: f"{c['index']}-of-{c['tree_size']}")
def test_inclusion_proof_matches_ct_vectors(case: dict[str, object]) -> None:
    """Generated inclusion proofs equal the CT vectors and verify."""
    index, size = int(str(case["index"])), int(str(case["tree_size"]))
    _, tree = build(0)
    for h in LEAVES[:size]:
        tree.append(h)
    proof = _merkle.inclusion_proof(index, size, tree.subtree)
    assert [p.hex() for p in proof] == case["proof"]
    _merkle.verify_inclusion(LEAVES[index], index, size, proof, bytes.fromhex(VECTORS["roots"][size]))


@pytest.mark.parametrize("case", VECTORS["consistency"], ids=lambda c: f"{c['first']}-to-{c['second']}")
def test_consistency_proof_matches_ct_vectors(case: dict[str, object]) -> None:
    """Generated consistency proofs equal the CT vectors and verify."""
    first, second = int(str(case["first"])), int(str(case["second"]))
    tree = _merkle.MemoryTree()
    for h in LEAVES[:second]:
        tree.append(h)
    proof = _merkle.consistency_proof(first, second, tree.subtree)
    assert [p.hex() for p in proof] == case["proof"]
    roots = VECTORS["roots"]
    _merkle.verify_consistency(first, second, bytes.fromhex(roots[first]), bytes.fromhex(roots[second]), proof)


# -- generation from perfect subtrees against the naive reference -------------------------------------


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_inclusion_proof_equals_reference_for_random_sizes(data: st.DataObject) -> None:
    """For random sizes 1..3000 and leaves, the proof from perfect subtrees equals RFC PATH and verifies."""
    size = data.draw(st.integers(1, 3000), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = _merkle.inclusion_proof(index, size, strict_reader(BIG_TREE))
    assert proof == ref_path(index, BIG_LEAVES[:size])
    _merkle.verify_inclusion(BIG_LEAVES[index], index, size, proof, BIG_TREE.root(size))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_consistency_proof_equals_reference_for_random_sizes(data: st.DataObject) -> None:
    """For random sizes 1 <= m <= n <= 3000 the proof equals RFC PROOF and verifies."""
    second = data.draw(st.integers(1, 3000), label="second")
    first = data.draw(st.integers(1, second), label="first")
    proof = _merkle.consistency_proof(first, second, strict_reader(BIG_TREE))
    assert proof == ref_subproof(first, BIG_LEAVES[:second], True)
    _merkle.verify_consistency(first, second, BIG_TREE.root(first), BIG_TREE.root(second), proof)


@settings(max_examples=120, deadline=None)
@given(size=st.integers(1, 600), salt=st.binary(max_size=8))
def test_all_inclusion_proofs_at_once_equal_the_per_leaf_proofs_and_verify(size: int, salt: bytes) -> None:
    """Property: the one-pass level-by-level build gives the RFC root and, for every leaf, exactly
    the proof built from perfect subtrees for that leaf alone, and each proof verifies."""
    hashes = [_merkle.leaf_hash(salt + i.to_bytes(4, "big")) for i in range(size)]
    tree = _merkle.MemoryTree()
    for h in hashes:
        tree.append(h)
    root, proofs = _merkle.all_inclusion_proofs(hashes)
    assert root == tree.root() == _merkle.root_from_leaves(hashes)
    assert len(proofs) == size
    for index, proof in enumerate(proofs):
        assert proof == _merkle.inclusion_proof(index, size, strict_reader(tree))
        _merkle.verify_inclusion(hashes[index], index, size, proof, root)


@pytest.mark.parametrize("size", EDGE_SIZES)
def test_all_inclusion_proofs_equal_the_rfc_reference_at_edge_sizes(size: int) -> None:
    """At powers of two and off-by-one sizes the one-pass proofs equal RFC PATH (naive reference)."""
    root, proofs = _merkle.all_inclusion_proofs(BIG_LEAVES[:size])
    assert root == ref_mth(BIG_LEAVES[:size])
    checked = range(size) if size <= 129 else [0, 1, size // 2, size - 2, size - 1]
    for index in checked:
        assert proofs[index] == ref_path(index, BIG_LEAVES[:size])


def test_all_inclusion_proofs_refuses_an_empty_tree() -> None:
    """A tree without leaves has no proofs to give."""
    with pytest.raises(ValueError, match="without leaves"):
        _merkle.all_inclusion_proofs([])


@pytest.mark.parametrize("size", EDGE_SIZES)
def test_every_inclusion_proof_verifies_at_edge_sizes(size: int) -> None:
    """At powers of two and off-by-one sizes, every leaf's proof equals the reference and verifies."""
    root = BIG_TREE.root(size)
    assert root == ref_mth(BIG_LEAVES[:size])
    for index in range(size):
        proof = _merkle.inclusion_proof(index, size, BIG_TREE.subtree)
        if size <= 129:
            assert proof == ref_path(index, BIG_LEAVES[:size])
        _merkle.verify_inclusion(BIG_LEAVES[index], index, size, proof, root)


@pytest.mark.parametrize("second", EDGE_SIZES)
def test_every_consistency_proof_verifies_at_edge_sizes(second: int) -> None:
    """At powers of two and off-by-one sizes, proofs from every smaller size equal the reference and verify."""
    for first in range(1, second + 1):
        proof = _merkle.consistency_proof(first, second, BIG_TREE.subtree)
        if second <= 129:
            assert proof == ref_subproof(first, BIG_LEAVES[:second], True)
        _merkle.verify_consistency(first, second, BIG_TREE.root(first), BIG_TREE.root(second), proof)


def test_plans_only_name_perfect_aligned_subtrees() -> None:
    """Every subtree a plan asks for is a power of two in size and aligned to it."""
    for size in range(1, 300):
        plans = [_merkle.inclusion_plan(i, size) for i in range(size)]
        plans += [_merkle.consistency_plan(m, size) for m in range(size + 1)]
        for plan in plans:
            for element in plan:
                for start, end in element:
                    width = end - start
                    assert width > 0
                    assert width & (width - 1) == 0
                    assert start % width == 0
                    assert end <= size


def test_proof_reads_are_logarithmic() -> None:
    """A proof in a tree of a million leaves names at most 2*log2(n) subtrees."""
    size = 1_000_000
    for plan in (_merkle.inclusion_plan(777_777, size), _merkle.consistency_plan(654_321, size)):
        assert sum(len(element) for element in plan) <= 40


# -- frontier -----------------------------------------------------------------------------------------


def test_frontier_reports_every_completed_subtree() -> None:
    """Appending 64 leaves reports each level >= 1 node once, with its hash."""
    frontier = _merkle.Frontier()
    nodes: dict[tuple[int, int], bytes] = {}
    for h in BIG_LEAVES[:64]:
        for level, index, node in frontier.append(h):
            assert (level, index) not in nodes
            nodes[(level, index)] = node
    assert len(nodes) == 63
    assert nodes[(6, 0)] == ref_mth(BIG_LEAVES[:64])
    assert nodes[(2, 3)] == ref_mth(BIG_LEAVES[12:16])


def test_frontier_rebuilt_from_stored_ranges_continues_identically() -> None:
    """A frontier loaded from its `frontier_ranges` subtrees reaches the same roots."""
    size = 1234
    hashes = [BIG_TREE.subtree(index << level, (index + 1) << level) for level, index in _merkle.frontier_ranges(size)]
    frontier = _merkle.Frontier(size, hashes)
    assert frontier.root() == BIG_TREE.root(size)
    for h in BIG_LEAVES[size:1500]:
        frontier.append(h)
    assert frontier.root() == BIG_TREE.root(1500)


# -- rejection ----------------------------------------------------------------------------------------


def test_inclusion_rejects_a_tampered_proof_hash() -> None:
    """Flipping one bit in any proof hash fails verification."""
    size, index = 1000, 421
    proof = _merkle.inclusion_proof(index, size, BIG_TREE.subtree)
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
        with pytest.raises(VerificationError, match="leads to root"):
            _merkle.verify_inclusion(BIG_LEAVES[index], index, size, bad, BIG_TREE.root(size))


def test_inclusion_rejects_the_wrong_leaf_index() -> None:
    """A valid proof does not prove the leaf at another index."""
    proof = _merkle.inclusion_proof(5, 100, BIG_TREE.subtree)
    with pytest.raises(VerificationError):
        _merkle.verify_inclusion(BIG_LEAVES[5], 6, 100, proof, BIG_TREE.root(100))


def test_inclusion_rejects_a_proof_with_an_extra_or_missing_hash() -> None:
    """Proofs that are too long or too short are rejected as such."""
    proof = _merkle.inclusion_proof(5, 100, BIG_TREE.subtree)
    root = BIG_TREE.root(100)
    with pytest.raises(VerificationError, match="too many"):
        _merkle.verify_inclusion(BIG_LEAVES[5], 5, 100, [*proof, proof[0]], root)
    with pytest.raises(VerificationError, match="too few"):
        _merkle.verify_inclusion(BIG_LEAVES[5], 5, 100, proof[:-1], root)


def test_inclusion_rejects_an_index_outside_the_tree() -> None:
    """A leaf index >= tree size is refused before any hashing."""
    with pytest.raises(VerificationError, match="not in a tree"):
        _merkle.verify_inclusion(BIG_LEAVES[0], 8, 8, [], BIG_TREE.root(8))


def test_inclusion_rejects_hashes_of_the_wrong_length() -> None:
    """A truncated hash in a proof is reported, not hashed."""
    proof = _merkle.inclusion_proof(1, 4, BIG_TREE.subtree)
    with pytest.raises(VerificationError, match="31 bytes"):
        _merkle.verify_inclusion(BIG_LEAVES[1], 1, 4, [proof[0][:31], proof[1]], BIG_TREE.root(4))


def test_consistency_rejects_a_tampered_proof_hash() -> None:
    """Flipping one bit in any consistency proof hash fails verification."""
    first, second = 700, 2049
    proof = _merkle.consistency_proof(first, second, BIG_TREE.subtree)
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
        with pytest.raises(VerificationError):
            _merkle.verify_consistency(first, second, BIG_TREE.root(first), BIG_TREE.root(second), bad)


def test_consistency_rejects_a_forked_second_root() -> None:
    """A second tree whose first part differs is not consistent with the first."""
    forked = list(BIG_LEAVES[:20])
    forked[3] = _merkle.leaf_hash(b"rewritten")
    proof = _merkle.consistency_proof(10, 20, BIG_TREE.subtree)
    with pytest.raises(VerificationError, match="second root"):
        _merkle.verify_consistency(10, 20, BIG_TREE.root(10), ref_mth(forked), proof)


def test_consistency_rejects_an_empty_proof_between_different_sizes() -> None:
    """RFC 9162 2.1.4.2 step 1: an empty path fails."""
    with pytest.raises(VerificationError, match="empty"):
        _merkle.verify_consistency(3, 5, BIG_TREE.root(3), BIG_TREE.root(5), [])


def test_consistency_of_equal_sizes_needs_equal_roots() -> None:
    """Two checkpoints of the same size must carry the same root."""
    _merkle.verify_consistency(7, 7, BIG_TREE.root(7), BIG_TREE.root(7), [])
    with pytest.raises(VerificationError, match="same size differ"):
        _merkle.verify_consistency(7, 7, BIG_TREE.root(7), BIG_TREE.root(6), [])


def test_consistency_rejects_a_shrinking_tree() -> None:
    """A larger first tree is never consistent with a smaller second one."""
    with pytest.raises(VerificationError, match="larger"):
        _merkle.verify_consistency(9, 8, BIG_TREE.root(9), BIG_TREE.root(8), [])


def test_memory_tree_refuses_a_subtree_that_is_not_perfect() -> None:
    """The store-like reader refuses unaligned or non power-of-two ranges."""
    with pytest.raises(ValueError, match="perfect"):
        BIG_TREE.subtree(2, 6)
    with pytest.raises(ValueError, match="perfect"):
        BIG_TREE.subtree(0, 3)
