"""Claims with a lease (fmolab.storage.claims), in a local folder and in a real S3-protocol server
(moto): exactly one of many racing claimants wins, a live claim is respected, an expired one is taken
over by exactly one late comer, renewal keeps it."""
from __future__ import annotations

import threading
import time

import pytest

from cluster_fakes import s3_server
from fmolab.storage.claims import Claims, create_exclusive


@pytest.fixture(scope="module")
def s3_vars():
    with s3_server(buckets=("fmo",)) as variables:
        yield variables


@pytest.fixture(params=["local", "s3"])
def folder(request, tmp_path, monkeypatch, work):
    if request.param == "local":
        return str(tmp_path / "claims")
    for k, v in request.getfixturevalue("s3_vars").items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("FMOLAB_HOME", str(work))
    return f"s3://fmo/claims-{time.time_ns()}"


def _race(fn, n=8):
    results, barrier = [None] * n, threading.Barrier(n)

    def run(i):
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_one_of_many_racing_creators_wins(folder):
    won = _race(lambda i: create_exclusive(f"{folder}/x/g0.json", str(i).encode()))
    assert won.count(True) == 1


def test_a_live_claim_is_respected_and_an_expired_one_taken_over_once(folder):
    a = Claims(folder, "driver-a", lease_s=3)
    assert a.claim("part-00000.parquet", block=0) is None
    assert a.claim("part-00000.parquet") is None  # its own claim: held again (an actor restarted)
    b = Claims(folder, "driver-b", lease_s=3)
    held = b.claim("part-00000.parquet")
    assert held["owner"] == "driver-a" and 0 < held["expires_in"] <= 3
    assert set(b.holders()) == {"part-00000.parquet"} and a.holders() == {}

    # renewal keeps a's claim alive past its first lease
    for _ in range(3):
        time.sleep(1.2)
        a.renew("part-00000.parquet")
    assert b.claim("part-00000.parquet")["owner"] == "driver-a"

    # a's driver dies: once the lease has passed, exactly one of several late comers takes it over
    time.sleep(3.5)
    assert b.holders() == {}
    late = [Claims(folder, f"late-{i}", lease_s=3) for i in range(6)]
    results = _race(lambda i: late[i].claim("part-00000.parquet"), n=6)
    assert results.count(None) == 1
    winner = late[results.index(None)].owner
    assert all(r["owner"] == winner for r in results if r is not None)
