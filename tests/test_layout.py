"""The layout of new collections (store/layout.py): chosen by size and cluster, overridden by
flags, and what each backend makes of it (qdrant-client's local mode keeps a vector's own
parameters; a recording client stands in for a 3-node cluster)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_store import SPEC, random_points
from xlir_qdrant.errors import ConfigError
from xlir_qdrant.records import CollectionOptions, Filter
from xlir_qdrant.store.edge import EdgeStore
from xlir_qdrant.store.layout import plan
from xlir_qdrant.store.server import ServerStore


def test_layout_is_chosen_by_size_and_nodes_and_flags_win() -> None:
    small = plan(CollectionOptions(expected_points=10_000))
    assert (small.shards, small.replicas, small.write_consistency, small.quantization, small.on_disk) == (
        1, 1, 1, "none", False)
    big = plan(CollectionOptions(expected_points=50_000_000), nodes=3)
    assert (big.shards, big.replicas, big.write_consistency, big.quantization, big.on_disk) == (6, 2, 2, "int8", True)
    assert big.hnsw_ef_construct > small.hnsw_ef_construct and big.index_on_disk("path") and not big.index_on_disk("dirs")
    assert plan(CollectionOptions(expected_points=2_000_000), nodes=3).shards == 3  # one per node at least
    forced = plan(CollectionOptions(expected_points=50_000_000, shards=4, replicas=3, quantization="none",
                                    on_disk=False), nodes=3)
    assert (forced.shards, forced.replicas, forced.write_consistency, forced.quantization, forced.on_disk) == (
        4, 3, 2, "none", False)
    with pytest.raises(ConfigError, match="--write-consistency"):
        plan(CollectionOptions(replicas=1, write_consistency=2))
    with pytest.raises(ConfigError, match="--shards"):
        plan(CollectionOptions(shards=0))


class _Recording:
    """A qdrant-client stand-in for a 3-node cluster: records create_collection, local mode does
    the rest."""

    def __init__(self) -> None:
        from qdrant_client import QdrantClient

        self.inner = QdrantClient(location=":memory:")
        self.created: dict[str, object] = {}

    def cluster_status(self):
        return type("Status", (), {"peers": {"1": None, "2": None, "3": None}})()

    def create_collection(self, name: str, **kw: object) -> bool:
        self.created = kw
        return self.inner.create_collection(name, **kw)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_new_server_collection_gets_the_clusters_layout() -> None:
    client = _Recording()
    store = ServerStore(client, location="http://cluster:6333", remote=True)  # type: ignore[arg-type]

    store.collection("photos", SPEC, create=True, options=CollectionOptions(expected_points=30_000_000))

    kw = client.created
    assert (kw["shard_number"], kw["replication_factor"], kw["write_consistency_factor"]) == (3, 2, 2)
    assert kw["on_disk_payload"] is True
    # what qdrant-client's local mode keeps of it: the vector's own parameters
    params = client.inner.get_collection("photos").config.params.vectors[SPEC.vector_name]
    assert params.on_disk is True and params.quantization_config.scalar.type == "int8"
    assert params.quantization_config.scalar.always_ram is True
    assert (params.hnsw_config.m, params.hnsw_config.ef_construct) == (16, 200)
    schema = client.inner.get_collection("photos").payload_schema  # local mode records no indexes
    assert schema == {} or set(schema) == {"path", "dirs", "sha256", "tags"}
    store.close()


def test_an_embedded_collection_keeps_its_int8_layout_and_exact_scores(tmp_path: Path) -> None:
    points = random_points(200)
    with EdgeStore(tmp_path / "edge", optimize_after=50) as edge:
        col = edge.collection("photos", SPEC, create=True, options=CollectionOptions(quantization="int8"))
        col.upsert(points)
        col.optimize()
    config = json.loads((tmp_path / "edge" / "collections" / "photos" / "edge_config.json").read_text())
    assert config["quantization_config"]["scalar"]["type"] == "int8"
    assert config["vectors"][SPEC.vector_name]["on_disk"] is True
    with EdgeStore(tmp_path / "edge", optimize_after=50) as edge:
        col = edge.collection("photos", SPEC)
        query = points[7].vector
        hits = col.query(query, limit=5)
        expected = np.stack([p.vector for p in points]) @ query
        order = np.argsort(-expected)[:5]
        assert [h.id for h in hits] == [points[i].id for i in order]
        assert [h.score for h in hits] == pytest.approx(expected[order].tolist(), abs=1e-5)  # rescored
    again = json.loads((tmp_path / "edge" / "collections" / "photos" / "edge_config.json").read_text())
    assert again["vectors"][SPEC.vector_name]["on_disk"] is True  # reopening kept it


def test_an_embedded_collection_keeps_its_unique_keyword_indexes_on_disk(tmp_path: Path) -> None:
    """Path and sha256 are memory-mapped at every size (a new process need not rebuild them);
    the lists every filtered search reads stay in RAM; filters by them still work."""
    import qdrant_edge as qe

    points = random_points(50)
    with EdgeStore(tmp_path / "edge") as edge:
        edge.collection("photos", SPEC, create=True).upsert(points)
    shard = qe.EdgeShard.load(str(tmp_path / "edge" / "collections" / "photos"))
    schema = shard.info().payload_schema
    shard.close()
    on_disk = {field: getattr(schema[field].params, "on_disk", None) for field in ("path", "sha256", "dirs", "tags")}
    assert on_disk == {"path": True, "sha256": True, "dirs": None, "tags": None}
    with EdgeStore(tmp_path / "edge") as edge:
        col = edge.collection("photos", SPEC)
        wanted = points[7]
        assert [h.id for h in col.query(wanted.vector, limit=3, filter=Filter(sha256=wanted.payload["sha256"]))] == [
            wanted.id]
        assert [h.id for h in col.query(wanted.vector, limit=3, filter=Filter(under=(wanted.payload["path"],)))] == [
            wanted.id]


def test_index_lays_out_a_new_embedded_collection_as_told(tmp_path: Path, colour_photos: Path) -> None:
    from typer.testing import CliRunner

    from xlir_cli import main

    store = tmp_path / "s"
    result = CliRunner().invoke(main.app, ["index", str(colour_photos), "--model", "fake-colour", "--store", str(store),
                                           "--quantization", "int8", "--in-memory"])
    assert result.exit_code == 0, result.stderr
    config = json.loads((store / "collections" / "photos" / "edge_config.json").read_text())
    assert config["quantization_config"]["scalar"]["type"] == "int8"
    assert not config["vectors"]["fake-colour"].get("on_disk")


@pytest.mark.parametrize(("args", "flag"), [(("--shards", "0"), "--shards"), (("--quantization", "int4"), "--quantization"),
                                            (("--replicas", "-1"), "--replicas")])
def test_a_bad_layout_flag_exits_2_naming_it(args: tuple[str, ...], flag: str) -> None:
    from typer.testing import CliRunner

    from xlir_cli import main

    result = CliRunner().invoke(main.app, ["index", "photos", *args])
    assert result.exit_code == 2 and flag in result.stderr
