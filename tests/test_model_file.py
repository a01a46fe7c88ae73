"""``_io.read_model_file``: a run's model.safetensors read safely; a damaged one is one line."""

import pytest
import torch
from safetensors.torch import save_file

from transferkit._io import read_model_file
from transferkit.errors import DataError


def test_reads_tensors_and_header(tmp_path):
    p = tmp_path / "model.safetensors"
    save_file({"w": torch.arange(3.0)}, str(p), metadata={"transferkit.strategy": "scratch"})
    state, meta = read_model_file(p, "train it again.")
    assert torch.equal(state["w"], torch.arange(3.0)) and meta == {"transferkit.strategy": "scratch"}


@pytest.mark.parametrize("content", [b"", b"not a safetensors file", b"\x80\x04pickle"])
def test_a_damaged_file_is_one_line_with_the_fix(tmp_path, content):
    p = tmp_path / "model.safetensors"
    p.write_bytes(content)
    with pytest.raises(DataError, match=r"is not a readable safetensors file .*; train it again\.$") as e:
        read_model_file(p, "train it again.")
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="not a readable"):
        read_model_file(tmp_path / "missing.safetensors", "train it again.")
