"""Feature cache: hit, miss on a changed key or stimuli, corruption, resume, sources, in-process sharding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neurodecode._core.errors import DataIntegrityError, MetadataMismatchError, ValidationError
from neurodecode.latents import FeatureCache, embed_to_cache, get_space


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).integers(0, 256, (9, 23, 29, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def space():
    return get_space("clip-vit-l-14-tokens-tiny", batch_size=2)


class Counting:
    """Wrap a space, counting the stimuli it encodes and optionally failing after a number of them."""

    def __init__(self, space, fail_after=None):
        self.space, self.n, self.fail_after = space, 0, fail_after

    def __enter__(self):
        orig = self.space.encode

        def encode(items, **kw):
            if self.fail_after is not None and self.n >= self.fail_after:
                raise KeyboardInterrupt("simulated kill")
            self.n += len(items)
            return orig(items, **kw)

        self.space.encode = encode
        return self

    def __exit__(self, *exc):
        del self.space.encode


def test_fill_then_hit(tmp_path, space, images):
    with Counting(space) as c:
        cache = embed_to_cache(space, images, tmp_path, shard_size=4)
    assert c.n == 9 and cache.complete and len(cache) == 9 and cache.shape == (17, 16)
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["n_shards"] == 3 and [s["stop"] for s in man["shards"]] == [4, 8, 9]
    assert all(len(s["sha256"]) == 64 for s in man["shards"])
    feats = cache.load()
    assert feats.dtype == np.float32
    ref = space.encode_images(images)
    np.testing.assert_allclose(feats, ref.astype(np.float16).astype(np.float32))  # float16 storage by default
    # repeated ids in any order, as trials index stimuli
    np.testing.assert_array_equal(cache.load(ids=[8, 0, 8]), feats[[8, 0, 8]])
    with Counting(space) as c:
        again = embed_to_cache(space, images, tmp_path, shard_size=4)
    assert c.n == 0 and again.matches(space)
    with pytest.raises(ValidationError, match="unknown id"):
        cache.load(ids=[9])


def test_changed_key_or_stimuli_is_a_miss(tmp_path, space, images):
    embed_to_cache(space, images, tmp_path, shard_size=4)
    vd = get_space("clip-vit-l-14-tokens-tiny", normalize="vd")
    with pytest.raises(MetadataMismatchError, match=r"normalize \(None vs 'vd'\).*--overwrite"):
        embed_to_cache(vd, images, tmp_path)
    with pytest.raises(MetadataMismatchError, match="differences in .*normalize"):
        FeatureCache(tmp_path).load(key=vd)
    other = images.copy()
    other[3, 0, 0, 0] ^= 1  # one pixel
    with pytest.raises(MetadataMismatchError, match="stimuli"):
        embed_to_cache(space, other, tmp_path)
    with pytest.raises(MetadataMismatchError, match="dtype"):
        embed_to_cache(space, images, tmp_path, dtype="float32")
    cache = embed_to_cache(vd, images, tmp_path, overwrite=True)
    assert cache.matches(vd) and not cache.matches(space)
    np.testing.assert_allclose(np.linalg.norm(cache.load()[:, 0], axis=-1), 1.0, rtol=2e-3)


def test_corruption_detected_and_repaired(tmp_path, space, images):
    embed_to_cache(space, images, tmp_path, shard_size=4)
    shard = sorted(tmp_path.glob("shard-00001-*.safetensors"))[0]
    raw = bytearray(shard.read_bytes())
    raw[-3] ^= 0xFF
    shard.write_bytes(bytes(raw))
    cache = FeatureCache(tmp_path)
    with pytest.raises(DataIntegrityError, match="SHA-256.*shard-00001"):
        cache.load()
    cache.load(ids=[0, 1], verify=True)  # other shards still readable
    with Counting(space) as c:
        fixed = embed_to_cache(space, images, tmp_path, shard_size=4)
    assert c.n == 4  # only the corrupted shard is recomputed
    fixed.verify()


def test_resume_after_interruption(tmp_path, space, images):
    with Counting(space, fail_after=4) as c, pytest.raises(KeyboardInterrupt):
        embed_to_cache(space, images, tmp_path, shard_size=4)
    assert c.n == 4
    assert sorted(p.name for p in tmp_path.glob("shard-*.json")) == ["shard-00000.json"]
    assert not list(tmp_path.glob(".*"))  # no temporary leftovers
    with pytest.raises(DataIntegrityError, match="re-run"):
        FeatureCache(tmp_path).load()
    with Counting(space) as c:
        cache = embed_to_cache(space, images, tmp_path, shard_size=99)  # an existing cache keeps its shard size
    assert c.n == 5 and cache.complete
    np.testing.assert_allclose(cache.load(), space.encode_images(images).astype(np.float16), rtol=1e-3)


def test_in_process_sharding_by_rank(tmp_path, monkeypatch, space, images):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with Counting(space) as c:
        part = embed_to_cache(space, images, tmp_path, shard_size=2)
    assert c.n == 4  # shards 1 and 3 of 0..4
    assert not part.complete
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["shard-00001-p1.safetensors",
                                                                      "shard-00003-p1.safetensors"]
    monkeypatch.setenv("RANK", "0")
    with Counting(space) as c:
        full = embed_to_cache(space, images, tmp_path, shard_size=2)
    assert c.n == 5 and full.complete
    assert {s["rank"] for s in full.manifest["shards"]} == {0, 1}
    np.testing.assert_allclose(full.load(), space.encode_images(images).astype(np.float16), rtol=1e-3)


def test_nsd_hdf5_source_with_ids(tmp_path, space, images):
    import h5py

    path = tmp_path / "nsd_stimuli.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("imgBrick", data=images)
    cache = embed_to_cache(space, path, tmp_path / "c", ids=[7, 2, 5], dtype="float32")
    assert cache.ids.tolist() == [7, 2, 5]
    np.testing.assert_allclose(cache.load(ids=[5, 7]), space.encode_images(images[[5, 7]]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValidationError, match="0-based"):
        embed_to_cache(space, path, tmp_path / "d", ids=[9])


def test_image_folder_and_text_file_sources(tmp_path, images):
    from PIL import Image

    folder = tmp_path / "things" / "aardvark"
    folder.mkdir(parents=True)
    for i in (2, 0, 1):
        Image.fromarray(images[i]).save(folder / f"aardvark_{i:02d}.png")
    sp = get_space("clip-vit-h-14-tiny")
    cache = embed_to_cache(sp, tmp_path / "things", tmp_path / "c1", dtype="float32")
    assert cache.ids.tolist() == ["aardvark/aardvark_00.png", "aardvark/aardvark_01.png", "aardvark/aardvark_02.png"]
    np.testing.assert_allclose(cache.load(ids=["aardvark/aardvark_02.png"]), sp.encode_images(images[[2]]), rtol=1e-5)

    txt = tmp_path / "captions.txt"
    txt.write_text("a cat on a mat\n\na red bus\n", encoding="utf-8")
    tsp = get_space("minilm-l6-tiny")
    tcache = embed_to_cache(tsp, txt, tmp_path / "c2")
    assert tcache.ids.tolist() == [0, 1] and tcache.shape == (32,)
    with pytest.raises(ValidationError, match="image stimuli"):
        embed_to_cache(sp, txt, tmp_path / "c3")


def _nsd_file(folder, images):
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "nsd_stimuli.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("imgBrick", data=images)
    return path


def test_two_trees_sharing_nsd_ids_never_share_features(tmp_path, space, images, caplog):
    """Same file name, same size, same ids, same first and last image: only row 4's pixels differ."""
    a = _nsd_file(tmp_path / "treeA", images)
    other = images.copy()
    other[4] = 255 - other[4]
    b = _nsd_file(tmp_path / "treeB", other)
    ids = [1, 4, 6]
    cache = embed_to_cache(space, a, tmp_path / "c", ids=ids, dtype="float32")
    assert cache.matches_stimuli(a, ids)
    # a byte-identical copy elsewhere holds the same content: still a hit
    copy = _nsd_file(tmp_path / "copyA", images)
    assert cache.matches_stimuli(copy, ids)
    with caplog.at_level("WARNING", logger="neurodecode"):
        assert not cache.matches_stimuli(b, ids)
    assert "other stimuli" in caplog.text and "stimulus content" in caplog.text
    assert not cache.matches_stimuli(a, [1, 4])  # other ids
    with pytest.raises(MetadataMismatchError, match="stimuli stimulus content"):
        embed_to_cache(space, b, tmp_path / "c", ids=ids, dtype="float32")
    caplog.clear()
    with Counting(space) as c, caplog.at_level("WARNING", logger="neurodecode"):
        fresh = embed_to_cache(space, b, tmp_path / "c", ids=ids, dtype="float32", overwrite=True)
    assert c.n == 3 and "overwriting the feature cache" in caplog.text and "stimulus content" in caplog.text
    # the targets now follow tree B's images, computed independently of the cache
    np.testing.assert_allclose(fresh.load(ids=[4]), space.encode_images(other[[4]]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(fresh.load(ids=[4]), space.encode_images(images[[4]]), atol=1e-3)


def test_content_change_under_the_same_path_is_seen(tmp_path, space, images):
    import os

    a = _nsd_file(tmp_path / "tree", images)
    cache = embed_to_cache(space, a, tmp_path / "c", ids=[2, 3, 4], dtype="float32")
    recorded = cache.manifest["stimuli_stat"]
    assert recorded["size"] == a.stat().st_size
    changed = images.copy()
    changed[3, 5, 5] ^= 1  # one pixel of an embedded image, same file size
    st = a.stat()
    _nsd_file(tmp_path / "tree", changed)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    assert not FeatureCache(tmp_path / "c").matches_stimuli(a, [2, 3, 4])
    # an image that is not embedded does not matter
    _nsd_file(tmp_path / "tree", images)
    again = images.copy()
    again[8] = 0
    _nsd_file(tmp_path / "tree", again)
    assert FeatureCache(tmp_path / "c").matches_stimuli(a, [2, 3, 4])


def test_unchanged_files_are_checked_without_reading_them(tmp_path, space, images, monkeypatch):
    from neurodecode.latents import _stimuli

    a = _nsd_file(tmp_path / "tree", images)
    cache = embed_to_cache(space, a, tmp_path / "c", ids=[0, 5], dtype="float32")

    def no_read(self, start, stop):
        raise AssertionError("the content was read although the file is unchanged")

    monkeypatch.setattr(_stimuli.NSDStimuli, "read", no_read)
    assert FeatureCache(cache.path).matches_stimuli(a, [0, 5])
