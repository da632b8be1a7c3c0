"""GF(2^8) parity: md's P/Q (checked against pyeclib's ISA-L Vandermonde code), recovery, raid6check."""

from __future__ import annotations

import numpy as np
import pytest

from cistern.storage.raid import gf


def _scalar_q(data: list[np.ndarray], pos: int) -> int:
    acc = 0
    for i, d in enumerate(data):
        acc ^= gf.gf_mul(gf.gf_pow2(i), int(d[pos]))
    return acc


def _data(k: int, n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, n, dtype=np.uint8) for _ in range(k)]


def test_tables_are_the_field() -> None:
    assert gf.gf_pow2(8) == 0x1D  # x^8 = x^4+x^3+x^2+1 under 0x11d
    for a in (1, 2, 3, 0x53, 0xFF):
        assert gf.gf_mul(a, gf.gf_inv(a)) == 1


def test_pq_matches_definition() -> None:
    data = _data(5, 64)
    p, q = gf.parity_pq(data)
    for pos in (0, 17, 63):
        assert int(p[pos]) == int(np.bitwise_xor.reduce([int(d[pos]) for d in data]))
        assert int(q[pos]) == _scalar_q(data, pos)


def test_pq_equals_isa_l_parity() -> None:
    """md's P and Q are ISA-L's Vandermonde parity rows (RESEARCH.md section 3): same bytes."""
    ec_iface = pytest.importorskip("pyeclib.ec_iface", reason="pyeclib is in the [test] extra")
    k, n = 4, 4096
    data = _data(k, n, 7)
    drv = ec_iface.ECDriver(k=k, m=2, ec_type="isa_l_rs_vand")
    frags = drv.encode(b"".join(d.tobytes() for d in data))
    hdr = len(frags[0]) - n
    p, q = gf.parity_pq(data)
    assert frags[k][hdr:] == p.tobytes()
    assert frags[k + 1][hdr:] == q.tobytes()


@pytest.mark.parametrize("k", [2, 3, 6])
def test_recover_any_two(k: int) -> None:
    data = _data(k, 256, k)
    p, q = gf.parity_pq(data)
    for a in range(k):
        masked = [None if i == a else d for i, d in enumerate(data)]
        assert np.array_equal(gf.recover_data_from_q(masked, q, a), data[a])
        for b in range(a + 1, k):
            masked2 = [None if i in (a, b) else d for i, d in enumerate(data)]
            da, db = gf.recover_two_data(masked2, p, q, a, b)
            assert np.array_equal(da, data[a]) and np.array_equal(db, data[b])


def test_identify_bad_member() -> None:
    data = _data(4, 512, 3)
    p, q = gf.parity_pq(data)
    assert gf.identify_bad(data, p, q) == ("ok", None)
    for z in range(4):
        bad = [d.copy() for d in data]
        bad[z][10:20] ^= 0x5A
        assert gf.identify_bad(bad, p, q) == ("D", z)
    p2 = p.copy()
    p2[3] ^= 1
    assert gf.identify_bad(data, p2, q) == ("P", None)
    q2 = q.copy()
    q2[3] ^= 1
    assert gf.identify_bad(data, p, q2) == ("Q", None)
    two = [d.copy() for d in data]
    two[0][0] ^= 1
    two[1][5] ^= 1
    assert gf.identify_bad(two, p, q) == ("multiple", None)  # no single member explains both errors
