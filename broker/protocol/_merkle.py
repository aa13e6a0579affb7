"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing, proofs and their verification.

Internal: the audit log (`broker.audit`) and the offline verifier (`clients.audit`) call this; nobody
else should. Hashing follows RFC 9162 section 2.1: a leaf is `SHA-256(0x00 || entry)` and an interior
node `SHA-256(0x01 || left || right)`; the distinct prefixes stop a leaf from posing as a node
(second-preimage attacks on the tree).

Proof *generation* never rehashes the log. It reads hashes through a `SubtreeReader`, a callable
returning the hash of the leaves `[start, end)`, and only ever asks for *perfect* subtrees: `end -
start` a power of two and `start` a multiple of it. Those are exactly the nodes a log stores once they
are complete, so a proof costs O(log n) stored hashes. The RFC's `MTH(D[a:b])` of a range that is not a
power of two is decomposed into perfect aligned subtrees, largest first, and folded right to left,
which is how the RFC's recursive split (at the largest power of two smaller than the size) unrolls.

Proof *verification* is written step by step from RFC 9162 sections 2.1.3.2 and 2.1.4.2 and raises
`VerificationError` saying what did not match.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from broker.protocol.errors import VerificationError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""`MTH({})`, the root of the empty tree (RFC 9162 section 2.1.1)."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

SubtreeReader = Callable[[int, int], bytes]
"""`subtree(start, end)`: the hash of the perfect aligned subtree over leaves `[start, end)`."""

Range = tuple[int, int]
ProofPlan = list[list[Range]]
"""One list per proof element: the perfect subtrees whose right-to-left fold is that element."""


def leaf_hash(entry: bytes) -> bytes:
    """`SHA-256(0x00 || entry)`, the hash of one log entry."""
    return hashlib.sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """`SHA-256(0x01 || left || right)`, the hash of an interior node."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The RFC's k: the largest power of two strictly smaller than `n` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaves(leaf_hashes: Sequence[bytes]) -> bytes:
    """`MTH(D[n])` from all leaf hashes, by the RFC's recursive definition (a reference, O(n))."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(root_from_leaves(leaf_hashes[:k]), root_from_leaves(leaf_hashes[k:]))


def perfect_ranges(start: int, end: int) -> list[Range]:
    """Decompose `[start, end)` into perfect subtrees, largest first, as `MTH(D[start:end])` splits it."""
    out: list[Range] = []
    while start < end:
        size = 1 << ((end - start).bit_length() - 1)
        out.append((start, start + size))
        start += size
    return out


def fold(hashes: Sequence[bytes]) -> bytes:
    """Combine the hashes of consecutive perfect subtrees (largest first) into their MTH: right to left."""
    result = hashes[-1]
    for h in reversed(hashes[:-1]):
        result = node_hash(h, result)
    return result


def inclusion_plan(index: int, tree_size: int) -> ProofPlan:
    """The subtrees that make up `PATH(index, D[tree_size])` (RFC 9162 section 2.1.3.1), leaf first."""
    if not 0 <= index < tree_size:
        raise ValueError(f"leaf index {index} is not in a tree of size {tree_size}")
    plan: ProofPlan = []
    # Walk down from the root, remembering the sibling of each step; the RFC lists them leaf first.
    start, end = 0, tree_size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            plan.append(perfect_ranges(start + k, end))
            end = start + k
        else:
            plan.append([(start, start + k)])
            start += k
    plan.reverse()
    return plan


def consistency_plan(first: int, second: int) -> ProofPlan:
    """The subtrees that make up `PROOF(first, D[second])` (RFC 9162 section 2.1.4.1), in RFC order."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    if first in (0, second):
        return []
    plan: ProofPlan = []
    # SUBPROOF(m, D[start:end], b), unrolled: `whole` is the RFC's b (is this still the original tree?).
    start, end, m, whole = 0, second, first, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            plan.append(perfect_ranges(start + k, end))
            end = start + k
        else:
            plan.append([(start, start + k)])
            start += k
            m -= k
            whole = False
    if not whole:
        plan.append(perfect_ranges(start, end))
    plan.reverse()
    return plan


def proof_from_plan(plan: ProofPlan, subtree: SubtreeReader) -> list[bytes]:
    """Materialise a plan with stored subtree hashes."""
    return [fold([subtree(s, e) for s, e in element]) for element in plan]


def inclusion_proof(index: int, tree_size: int, subtree: SubtreeReader) -> list[bytes]:
    """The inclusion proof (audit path) of leaf `index` in the tree of `tree_size` leaves."""
    return proof_from_plan(inclusion_plan(index, tree_size), subtree)


def all_inclusion_proofs(leaf_hashes: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root of the tree over `leaf_hashes` and the inclusion proof of every leaf, in one pass.

    Built level by level: pair the nodes of a level left to right and carry an unpaired last node up
    unchanged. That is the RFC 9162 tree (its split at the largest power of two below the size puts
    the odd node at the right edge of every level), so each leaf's proof is its node's sibling at
    every level where it has one, leaf first. n - 1 node hashes in all, where proving each leaf on
    its own re-folds the right edge for every leaf.
    """
    if not leaf_hashes:
        raise ValueError("a tree without leaves has no inclusion proofs")
    levels: list[Sequence[bytes]] = [leaf_hashes]
    level: Sequence[bytes] = leaf_hashes
    while len(level) > 1:
        pairs = len(level) - 1
        up = [node_hash(level[i], level[i + 1]) for i in range(0, pairs, 2)]
        if len(level) & 1:
            up.append(level[-1])
        levels.append(up)
        level = up
    below = levels[:-1]
    proofs: list[list[bytes]] = []
    for index in range(len(leaf_hashes)):
        proof: list[bytes] = []
        position = index
        for nodes in below:
            sibling = position ^ 1
            if sibling < len(nodes):
                proof.append(nodes[sibling])
            position >>= 1
        proofs.append(proof)
    return level[0], proofs


def consistency_proof(first: int, second: int, subtree: SubtreeReader) -> list[bytes]:
    """The consistency proof between the trees of `first` and `second` leaves."""
    return proof_from_plan(consistency_plan(first, second), subtree)


def _skip_right_edge(fn: int, sn: int) -> tuple[int, int]:
    """Right-shift both until LSB(fn) is set or fn is 0: levels where a right-edge node has no sibling."""
    while fn and not fn & 1:
        fn >>= 1
        sn >>= 1
    return fn, sn


def _check_hashes(what: str, hashes: Sequence[bytes]) -> None:
    for i, h in enumerate(hashes):
        if len(h) != HASH_SIZE:
            raise VerificationError(f"{what}: element {i} is {len(h)} bytes, not a {HASH_SIZE}-byte hash")


def root_from_inclusion(leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes]) -> bytes:
    """The root that inclusion proof `proof` of leaf hash `leaf` at `index` leads to (RFC 9162 2.1.3.2
    steps 1-5 without the final comparison); raise `VerificationError` for a proof of the wrong shape."""
    _check_hashes("inclusion proof", [leaf, *proof])
    # 1. If leaf_index >= tree_size, fail.
    if not 0 <= index < tree_size:
        raise VerificationError(f"inclusion proof: leaf index {index} is not in a tree of size {tree_size}")
    # 2. fn = leaf_index, sn = tree_size - 1.  3. r = hash.
    fn, sn, r = index, tree_size - 1, leaf
    # 4. For each p in the path:
    for p in proof:
        # a. If sn is 0, the path is too long.
        if sn == 0:
            raise VerificationError(f"inclusion proof for leaf {index} of {tree_size} has too many hashes")
        # b. If LSB(fn) is set or fn == sn, p is a left sibling ...
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # ... and, on the right edge, skip the levels where this node has no sibling.
            if not fn & 1:
                fn, sn = _skip_right_edge(fn, sn)
        else:
            r = node_hash(r, p)
        # c. Right-shift both once.
        fn >>= 1
        sn >>= 1
    # 5. sn must be 0 (and the caller compares r with the root).
    if sn != 0:
        raise VerificationError(f"inclusion proof for leaf {index} of {tree_size} has too few hashes")
    return r


def verify_inclusion(leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that leaf hash `leaf` is at `index` of the tree of `tree_size` with `root` (RFC 9162 2.1.3.2)."""
    _check_hashes("inclusion proof", [root])
    r = root_from_inclusion(leaf, index, tree_size, proof)
    if r != root:
        raise VerificationError(
            f"inclusion proof for leaf {index} of {tree_size} leads to root {r.hex()}, not {root.hex()}"
        )


def _verify_degenerate_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    # Cases the RFC leaves to the caller: equal sizes need equal roots and no proof; every tree
    # extends the empty tree; nothing extends a larger tree.
    what = f"consistency proof from size {size1} to {size2}"
    if not 0 <= size1 <= size2:
        raise VerificationError(f"{what}: the first tree is larger than the second")
    if proof:
        raise VerificationError(f"{what}: expected an empty proof, got {len(proof)} hashes")
    if size1 == size2 and root1 != root2:
        raise VerificationError(f"{what}: the roots of two trees of the same size differ")
    if size1 == 0 and root1 != EMPTY_ROOT:
        raise VerificationError(f"{what}: the first root is not the empty tree's root")


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    """Check that the tree (`size2`, `root2`) extends the tree (`size1`, `root1`) (RFC 9162 2.1.4.2)."""
    _check_hashes("consistency proof", [root1, root2, *proof])
    if not 0 < size1 < size2:
        _verify_degenerate_consistency(size1, size2, root1, root2, proof)
        return
    what = f"consistency proof from size {size1} to {size2}"
    # 1. An empty path fails.
    if not proof:
        raise VerificationError(f"{what}: the proof is empty")
    path = list(proof)
    # 2. If first is an exact power of 2, prepend first_hash.
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    # 3. fn = first - 1, sn = second - 1.
    fn, sn = size1 - 1, size2 - 1
    # 4. If LSB(fn) is set, right-shift both until it is not.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. fr = sr = first value.
    fr = sr = path[0]
    # 6. For each subsequent value c:
    for c in path[1:]:
        # a. If sn is 0, the path is too long.
        if sn == 0:
            raise VerificationError(f"{what}: the proof has too many hashes")
        # b. If LSB(fn) is set or fn == sn, c is a left sibling in both trees ...
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                fn, sn = _skip_right_edge(fn, sn)
        else:
            # ... otherwise a right sibling that only the second tree has.
            sr = node_hash(sr, c)
        # c. Right-shift both once.
        fn >>= 1
        sn >>= 1
    # 7. fr must be first_hash, sr second_hash, and sn 0.
    if sn != 0:
        raise VerificationError(f"{what}: the proof has too few hashes")
    if fr != root1:
        raise VerificationError(f"{what}: the proof does not lead to the first root {root1.hex()}")
    if sr != root2:
        raise VerificationError(f"{what}: the proof does not lead to the second root {root2.hex()}")


def frontier_ranges(size: int) -> list[tuple[int, int]]:
    """`(level, index)` of the perfect subtrees on the right edge of the tree of `size`, largest first."""
    out: list[tuple[int, int]] = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            out.append((level, start >> level))
            start += 1 << level
    return out


class Frontier:
    """The right edge of a growing tree (a compact range): the roots of its perfect subtrees.

    Appending is O(1) amortised and reports each subtree it completes, so a log can store every
    complete node as it appears; the root is O(log n).
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        """A frontier for `size` leaves from its subtree roots, largest first (see `frontier_ranges`)."""
        if size < 0 or len(hashes) != size.bit_count():
            expected = size.bit_count()
            raise ValueError(f"a tree of {size} leaves has {expected} frontier hashes, not {len(hashes)}")
        self._size = size
        self._hashes = list(hashes)

    @property
    def size(self) -> int:
        """The number of leaves."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The perfect subtree roots, largest first."""
        return tuple(self._hashes)

    def copy(self) -> Frontier:
        """An independent copy (O(log n))."""
        return Frontier(self._size, self._hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; return the `(level, index, hash)` of each subtree of level >= 1 it completes."""
        position = self._size
        completed: list[tuple[int, int, bytes]] = []
        h, level, n = leaf, 0, position
        # Each trailing one bit of the old size is a subtree of the same level waiting for a sibling.
        while n & 1:
            h = node_hash(self._hashes.pop(), h)
            level += 1
            n >>= 1
            completed.append((level, position >> level, h))
        self._hashes.append(h)
        self._size = position + 1
        return completed

    def root(self) -> bytes:
        """`MTH` of all leaves so far."""
        if not self._hashes:
            return EMPTY_ROOT
        return fold(self._hashes)


class MemoryTree:
    """Every complete node of a tree, in memory (32 bytes per node, about 64 bytes per leaf).

    For the offline verifier and tests: it answers `subtree(start, end)` for any perfect subtree of the
    leaves appended so far, so proofs can be generated over a tree rebuilt from an export.
    """

    __slots__ = ("_frontier", "_levels")

    def __init__(self) -> None:
        """An empty tree."""
        self._levels: list[bytearray] = []
        self._frontier = Frontier()

    @property
    def size(self) -> int:
        """The number of leaves."""
        return self._frontier.size

    def append(self, leaf: bytes) -> None:
        """Add a leaf hash."""
        if len(leaf) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        completed = self._frontier.append(leaf)
        if not self._levels:
            self._levels.append(bytearray())
        self._levels[0] += leaf
        for level, _index, h in completed:
            if level == len(self._levels):
                self._levels.append(bytearray())
            self._levels[level] += h

    def subtree(self, start: int, end: int) -> bytes:
        """The hash of the perfect aligned subtree `[start, end)`; a `SubtreeReader`."""
        size = end - start
        level = size.bit_length() - 1
        if size <= 0 or size & (size - 1) or start % size or end > self.size:
            raise ValueError(f"[{start}, {end}) is not a complete perfect subtree of a tree of {self.size}")
        offset = (start >> level) * HASH_SIZE
        return bytes(self._levels[level][offset : offset + HASH_SIZE])

    def root(self, size: int | None = None) -> bytes:
        """`MTH` of the first `size` leaves (default all), from stored nodes in O(log n)."""
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"no tree of size {size} in a tree of {self.size}")
        if size == 0:
            return EMPTY_ROOT
        return fold([self.subtree(s, e) for s, e in perfect_ranges(0, size)])
