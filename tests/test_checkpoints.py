import dataclasses
import json

import pytest
import torch
from torch import nn

from neurodecode._core.errors import (
    DataIntegrityError,
    MetadataMismatchError,
    MissingFileError,
    OfflineError,
    UnsafeCheckpointError,
)
from neurodecode.io import PretrainedMixin, load_state_dict, save_state_dict
from neurodecode.io.checkpoints import sniff_checkpoint


@dataclasses.dataclass
class TinyConfig:
    n_in: int = 7
    n_out: int = 9
    hidden: int = 8


class TinyNet(PretrainedMixin, nn.Module):
    config_class = TinyConfig

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.a = nn.Linear(config.n_in, config.hidden)
        self.b = nn.Linear(config.hidden, config.n_out)
        self.b.weight = nn.Parameter(torch.randn(config.n_out, config.hidden))

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_round_trip_bit_exact(tmp_path):
    torch.manual_seed(0)
    net = TinyNet(TinyConfig())
    net.save_pretrained(tmp_path / "ck", metadata={"subjects": ["nsd/subj01"]})
    info = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert info["model_class"] == "TinyNet" and info["config"]["n_out"] == 9
    back = TinyNet.from_pretrained(tmp_path / "ck")
    for (k, v), (k2, v2) in zip(net.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert back.pretrained_metadata_ == {"subjects": ["nsd/subj01"]}
    x = torch.randn(3, 7)
    assert torch.equal(net.eval()(x), back(x))


def test_config_override_and_wrong_class(tmp_path):
    net = TinyNet(TinyConfig())
    net.save_pretrained(tmp_path / "ck")

    class OtherNet(TinyNet):
        pass

    with pytest.raises(MetadataMismatchError, match="expected a OtherNet checkpoint, got a TinyNet"):
        OtherNet.from_pretrained(tmp_path / "ck")
    with pytest.raises(MetadataMismatchError, match=r"shape mismatches: .*model \(11, 8\) vs file \(9, 8\)"):
        TinyNet.from_pretrained(tmp_path / "ck", n_out=11)


def test_strict_lists_missing_and_unexpected(tmp_path):
    net = TinyNet(TinyConfig())
    net.save_pretrained(tmp_path / "ck")
    sd = load_state_dict(tmp_path / "ck" / "model.safetensors")
    sd.pop("a.bias")
    sd["extra.weight"] = torch.zeros(2)
    save_state_dict(sd, tmp_path / "ck" / "model.safetensors")
    with pytest.raises(MetadataMismatchError, match=r"1 missing key\(s\): a.bias .*1 unexpected key\(s\): extra.weight"):
        TinyNet.from_pretrained(tmp_path / "ck")
    loose = TinyNet.from_pretrained(tmp_path / "ck", strict=False)
    assert torch.equal(loose.a.weight, net.a.weight)


def test_pickle_refused_unless_opted_in(tmp_path):
    sd = {"w": torch.arange(6.0)}
    torch.save(sd, tmp_path / "model.pt")
    assert sniff_checkpoint(tmp_path / "model.pt") == "pickle"
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle: expected a safetensors checkpoint.*model.pt"):
        load_state_dict(tmp_path / "model.pt")
    out = load_state_dict(tmp_path / "model.pt", allow_pickle=True)
    assert torch.equal(out["w"], sd["w"])


def test_pickle_with_code_is_refused_even_when_opted_in(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_state_dict(tmp_path / "evil.pt", allow_pickle=True)


def test_lfs_pointer_detected(tmp_path):
    p = tmp_path / "model.safetensors"
    p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    with pytest.raises(DataIntegrityError, match="git-LFS pointer.*git lfs pull"):
        load_state_dict(p)


def test_truncated_safetensors_detected(tmp_path):
    p = tmp_path / "model.safetensors"
    save_state_dict({"w": torch.randn(50, 50)}, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataIntegrityError, match="truncated"):
        load_state_dict(p)
    p.write_bytes(data[:5])
    with pytest.raises(DataIntegrityError, match="only 5 bytes"):
        load_state_dict(p)


def test_missing_files(tmp_path):
    with pytest.raises(MissingFileError):
        load_state_dict(tmp_path / "none.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="config.json"):
        TinyNet.from_pretrained(tmp_path / "empty")
    with pytest.raises(MissingFileError, match="existing local folder or a hub id"):
        TinyNet.from_pretrained(tmp_path / "does" / "not" / "exist")


def test_offline_hub_id_fails_fast():
    with pytest.raises(OfflineError, match="'nobody/tiny-net'"):
        TinyNet.from_pretrained("nobody/tiny-net")
    with pytest.raises(OfflineError):
        TinyNet.from_pretrained("nobody/tiny-net", local_files_only=True)


def test_shared_weights_saved(tmp_path):
    lin = nn.Linear(4, 4)
    sd = {"a": lin.weight, "b": lin.weight}
    save_state_dict(sd, tmp_path / "t.safetensors")
    back = load_state_dict(tmp_path / "t.safetensors")
    assert torch.equal(back["a"], back["b"])


@pytest.mark.parametrize("header_len", [0x80 + 3 * 256, 0x4B50])  # starts with 0x80 (pickle) / "PK" (zip)
def test_safetensors_whose_header_length_starts_like_a_pickle_or_zip(tmp_path, header_len):
    """A safetensors file starts with its header length, so some begin with a pickle's or a zip's bytes."""
    import struct

    from neurodecode.io.checkpoints import load_state_dict, sniff_checkpoint

    values = torch.arange(7, dtype=torch.float32)
    header = json.dumps({"w": {"dtype": "F32", "shape": [7], "data_offsets": [0, 28]}}).encode()
    header += b" " * (header_len - len(header))  # the format allows space padding
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", header_len) + header + values.numpy().tobytes())
    assert path.read_bytes()[:1] == b"\x80" or path.read_bytes()[:2] == b"PK"
    assert sniff_checkpoint(path) == "safetensors"
    torch.testing.assert_close(load_state_dict(path)["w"], values)
